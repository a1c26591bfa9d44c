-- wrk: GET /healthz over keep-alive (the HTTP path's baseline, no pub/sub).
--   wrk -t1 -c32 -d10s -s scripts/wrk/healthz.lua http://127.0.0.1:8080
-- Prints one line "WRK_JSON {...}" at the end for scripts/lib/benchtool.py.

wrk.method = "GET"
wrk.path = "/healthz"

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
