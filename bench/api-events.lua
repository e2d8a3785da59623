-- bench/api-events.lua -- wrk script for bench/api: POST /v1/events with a
-- batch of BATCH events (anonymous, 3 properties, occurred_at set).
-- usage: wrk ... -s bench/api-events.lua URL -- KEY BATCH
-- Prints non_202=N at the end: answers other than 202 (each 202 comes after
-- the batch is committed).
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  local key, batch = args[1], tonumber(args[2])
  local items = {}
  for i = 1, batch do
    items[i] = string.format(
      '{"name":"page_view","properties":{"url":"/p/%d","ref":"utm_bench","n":%d},"occurred_at":"2026-01-02T03:04:05Z"}',
      i, i)
  end
  wrk.method = "POST"
  wrk.body = '{"events":[' .. table.concat(items, ",") .. ']}'
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. key
  bad = 0
end
function response(status, headers, body)
  if status ~= 202 then bad = bad + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("bad") end
  io.write(string.format("non_202=%d\n", n))
end
