-- wrk: POST /publish?topic=T with a small JSON body, keep-alive.
--   wrk -t1 -c32 -d10s -s scripts/wrk/publish.lua http://127.0.0.1:8080
-- Environment: WRK_TOPIC [bench]; WRK_TOPICS [1] (>1: spread over T0..T{n-1});
-- WRK_BODY [{"seq":0,"t":0,"msg":"hello"}].
-- Prints one line "WRK_JSON {...}" at the end for scripts/lib/benchtool.py.

local topic = os.getenv("WRK_TOPIC") or "bench"
local ntopics = tonumber(os.getenv("WRK_TOPICS") or "1")
local body = os.getenv("WRK_BODY") or '{"seq":0,"t":0,"msg":"hello"}'

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.path = "/publish?topic=" .. topic

if ntopics > 1 then
  local n = 0
  request = function()
    n = n + 1
    return wrk.format(nil, "/publish?topic=" .. topic .. (n % ntopics))
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"rps":%.1f,"non2xx":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_timeout":%d,' ..
    '"latency_p50_us":%d,"latency_p99_us":%d,"latency_max_us":%d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
