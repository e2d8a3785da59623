-- wrk script for herald-provsim: POST one SMS send per request.
--   wrk -t2 -c64 -d10s -s infra/provsim/wrk-send.lua http://127.0.0.1:PORT
-- Every request carries the same message_id, so after the first one all are
-- counted as duplicates; that costs the simulator the same as a fresh id.
wrk.method = "POST"
wrk.path = "/v1/send/sms/bench"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"tenant":"t1","to":"+15550001234","message_id":"bench-1","text":"Your code is 1234"}'
