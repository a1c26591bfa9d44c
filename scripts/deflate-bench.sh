#!/usr/bin/env bash
# permessage-deflate against plain WebSocket: 1 KiB JSON messages to SUBS subscribers.
#
#   scripts/deflate-bench.sh            # SUBS=10000 MESSAGES=300 RATE=10 RUNS=3
#
# For each run, alternating: a release server with `--ws-deflate off` and subscribers
# that offer nothing (plain), then one with `--ws-deflate on` and subscribers that
# offer permessage-deflate (deflate). The server runs with --cores 1 pinned to CPU 0,
# the bench on CPU 1. Reports per mode (medians of the runs): bytes the subscribers
# read per delivery, server CPU per delivery, deliveries/s; then the server's RSS per
# idle WebSocket connection (IDLE connections, `ringcast bench idle`) in both modes.
# Payloads: `--payload-size 1KiB --payload-json` (quotes with varying symbols, prices,
# volumes and times; the envelope is about 1.1 KB). Environment: SUBS, MESSAGES,
# RUNS, IDLE [10000], RINGCAST_BIN (skip the build). RATE [10] (messages/s) keeps the bench,
# which inflates every message on one core, from falling behind: the server's CPU is
# read when the phase ends, so a bench that lags would hide work still to be done
# (check that the p50 latency stays in milliseconds).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
: "${SUBS:=10000}" "${MESSAGES:=300}" "${RATE:=10}" "${RUNS:=3}" "${IDLE:=10000}"
if [ -z "${RINGCAST_BIN:-}" ]; then
    (cd "$root" && cargo build --release --quiet)
    RINGCAST_BIN=${CARGO_TARGET_DIR:-$root/target}/release/ringcast
fi
out=${OUT_DIR:-$root/target/bench}/deflate
mkdir -p "$out"
dir=$(mktemp -d)
server=
stop() { [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null; server=; }
trap 'stop; rm -rf "$dir"' EXIT

start() { # start MODE(on|off)
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    rm -f "$dir/rc.sock"
    taskset -c 0 "$RINGCAST_BIN" serve --cores 1 --ws-deflate "$1" --listen "127.0.0.1:$port" \
        --publish-socket "$dir/rc.sock" 2>"$dir/server.log" &
    server=$!
    for _ in $(seq 200); do [ -S "$dir/rc.sock" ] && break; sleep 0.05; done
    [ -S "$dir/rc.sock" ] || { cat "$dir/server.log" >&2; exit 1; }
    url="ws://127.0.0.1:$port/ws?topic={topic}"
}

for run in $(seq "$RUNS"); do
    for mode in off on; do
        start "$mode"
        flags=()
        [ "$mode" = on ] && flags=(--ws-deflate)
        taskset -c 1 "$RINGCAST_BIN" bench --url "$url" -c "$SUBS" -m "$MESSAGES" --rate "$RATE" --threads 1 \
            --publish "unix:$dir/rc.sock" --payload-size 1KiB --payload-json --source-ips 4 \
            --server-pid "$server" --json --quiet "${flags[@]}" >"$out/fanout.$mode.$run.json"
        stop
        echo "run $run $mode: $(cat "$out/fanout.$mode.$run.json" | head -c 300)..." >&2
    done
done
for run in $(seq "$RUNS"); do
    for mode in off on; do
        start "$mode"
        flags=()
        [ "$mode" = on ] && flags=(--ws-deflate)
        taskset -c 1 "$RINGCAST_BIN" bench idle --url "$url" -c "$IDLE" --source-ips 4 \
            --server-pid "$server" --json --quiet "${flags[@]}" >"$out/idle.$mode.$run.json"
        stop
    done
done

python3 - "$out" "$RUNS" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def med(xs): return statistics.median(xs)
res = {}
for mode in ("off", "on"):
    rs = [json.load(open("%s/fanout.%s.%d.json" % (out, mode, r))) for r in range(1, runs + 1)]
    res[mode] = {
        "bytes": med([r["rx_bytes"] / r["delivered"] for r in rs]),
        "cpu_ns": med([r["server_cpu_seconds"] / r["delivered"] * 1e9 for r in rs]),
        "rate": med([r["delivered_per_sec"] for r in rs]),
        "p50": med([r["latency_p50_us"] for r in rs]),
        "delivered": med([r["delivered"] for r in rs]),
    }
    idles = [json.load(open("%s/idle.%s.%d.json" % (out, mode, r))) for r in range(1, runs + 1)]
    res[mode]["idle"] = med([i["rss_per_conn_bytes"] for i in idles])
    res[mode]["idle_all"] = [round(i["rss_per_conn_bytes"]) for i in idles]
off, on = res["off"], res["on"]
print("| | plain (--ws-deflate off) | permessage-deflate | ratio |")
print("|---|---|---|---|")
print("| bytes read per delivery | %.0f | %.0f | %.2f |" % (off["bytes"], on["bytes"], on["bytes"] / off["bytes"]))
print("| server CPU per delivery | %.0f ns | %.0f ns | %.2f |" % (off["cpu_ns"], on["cpu_ns"], on["cpu_ns"] / off["cpu_ns"]))
print("| deliveries/s | %.2f M | %.2f M | %.2f |" % (off["rate"] / 1e6, on["rate"] / 1e6, on["rate"] / off["rate"]))
print("| latency p50 | %.0f us | %.0f us | |" % (off["p50"], on["p50"]))
print("| idle RSS per WS connection | %d B %s | %d B %s | %.2f |" % (off["idle"], off["idle_all"], on["idle"], on["idle_all"], on["idle"] / off["idle"]))
print("(medians of %d runs, %d deliveries each)" % (runs, off["delivered"]))
PY
