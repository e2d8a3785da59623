-- Like wrk-send.lua, but each request gets a fresh message_id and one of
-- 10,000 recipients (costs wrk a Lua call per request).  Ids are
-- "<run>-<thread>-<n>", unique across wrk threads and runs.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tno", threads)
end
function init(args)
  prefix = string.format("w%d-%d", os.time(), tno)
  n = 0
end
function request()
  n = n + 1
  local body = string.format(
    '{"tenant":"t1","to":"+1555%07d","message_id":"%s-%d","text":"Your code is 1234"}',
    n % 10000, prefix, n)
  return wrk.format("POST", "/v1/send/sms/bench", {["Content-Type"] = "application/json"}, body)
end
