#!/usr/bin/env bash
# permessage-deflate against plain WebSocket: 1 KiB JSON messages to SUBS subscribers,
# ringcast and Bun (server.publish with perMessageDeflate), each with and without.
#
#   scripts/deflate-bench.sh            # SUBS=10000 MESSAGES=300 RATE=10 RUNS=3
#   MODES="rc-off rc-on" scripts/deflate-bench.sh      # ringcast only
#
# Modes, started fresh for every run and interleaved within each run:
#   rc-off   ringcast --ws-deflate off, subscribers that offer nothing
#   rc-on    ringcast --ws-deflate on, subscribers that offer permessage-deflate
#   bun-off  scripts/peers/bun-pubsub.js as in scripts/compare.sh (no compression)
#   bun-on   the same with DEFLATE=1: `perMessageDeflate: true` and every
#            `server.publish(topic, data, true)`, subscribers that offer it
# Every server runs pinned to CPU 0 (ringcast --cores 1; Bun runs its JavaScript and
# its pub/sub on one thread), the bench on CPU 1 with one subscriber thread. ringcast
# gets its messages over the publish socket and delivers its JSON envelope (about
# 1.1 KB); Bun gets them over HTTP POST /publish and delivers the raw body (1 KiB), so
# compare bytes within a server (on/off) and CPU across servers per delivery.
# Reports per mode (medians of RUNS): bytes the subscribers read per delivery (frame
# headers included), server CPU per delivery (utime + stime of the server process over
# the phase, connection set-up included), deliveries/s, p50 latency, deliveries/expected;
# then the server's RSS per idle WebSocket connection (IDLE connections, `ringcast bench
# idle`, the same offer as the mode). Payloads: `--payload-size 1KiB --payload-json`
# (quotes with varying symbols, prices, volumes and times).
#
# Environment: SUBS, MESSAGES, RUNS, IDLE [10000], MODES, PHASES ["fanout idle"; one of
# them alone runs only that part], DRAIN [60s: a server that
# lags is waited for, so its CPU covers all its work], RINGCAST_BIN (skip the build),
# OUT_DIR. RATE [10] (messages/s) keeps the bench, which inflates every message on one
# core, from falling behind (check that the p50 latency stays in milliseconds). Bun:
# scripts/peers/install.sh.
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
: "${SUBS:=10000}" "${MESSAGES:=300}" "${RATE:=10}" "${RUNS:=3}" "${IDLE:=10000}"
: "${MODES:=rc-off rc-on bun-off bun-on}" "${DRAIN:=60s}" "${PHASES:=fanout idle}"
export PHASES IDLE
if [ -z "${RINGCAST_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release --quiet)
    RINGCAST_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/ringcast
fi
[[ " $MODES " != *" bun-"* || -x "$BUN" ]] || die "bun missing: run scripts/peers/install.sh"
out=${OUT_DIR:-$ROOT/target/bench}/deflate
mkdir -p "$out"
rm -f "$out"/*.json
RUN_DIR=$(mktemp -d)
trap 'stop_all; rm -rf "$RUN_DIR"' EXIT
trap 'exit 130' INT TERM
export SERVER_CPUS=0

# up MODE: starts the server fresh; sets PID URL PUB, OPTS (the offer) and PAYLOAD.
up() {
    local port
    port=$(free_port)
    URL="ws://127.0.0.1:$port/ws?topic={topic}"
    OPTS=() PAYLOAD=()
    [[ $1 == *-on ]] && OPTS=(--ws-deflate)
    case $1 in
    rc-*)
        local sock="$RUN_DIR/rc-$port.sock"
        PID=$(start_ringcast "$RINGCAST_BIN" 1 "$port" "$sock" "$RUN_DIR/$1-$port.log" \
            --ws-deflate "${1#rc-}")
        PUB="unix:$sock"
        ;;
    bun-*)
        local deflate=0
        [[ $1 == bun-on ]] && deflate=1
        PID=$(DEFLATE=$deflate start_peer bun "$port" "$RUN_DIR/$1-$port.log")
        PUB="http://127.0.0.1:$port/publish?topic={topic}"
        PAYLOAD=(--payload raw)
        ;;
    *) die "unknown mode $1 (rc-off rc-on bun-off bun-on)" ;;
    esac
}

for run in $(seq "$RUNS"); do
    [[ " $PHASES " == *" fanout "* ]] || break
    for mode in $MODES; do
        up "$mode"
        taskset -c 1 "$RINGCAST_BIN" bench --url "$URL" -c "$SUBS" -m "$MESSAGES" --rate "$RATE" \
            --threads 1 --publish "$PUB" --payload-size 1KiB --payload-json --source-ips 4 \
            --drain "$DRAIN" --server-pid "$PID" --json --quiet "${OPTS[@]}" "${PAYLOAD[@]}" >"$out/fanout.$mode.$run.json"
        stop_all
        log "run $run $mode: $(head -c 300 "$out/fanout.$mode.$run.json")..."
    done
done
for run in $(seq "$RUNS"); do
    [[ " $PHASES " == *" idle "* ]] || break
    for mode in $MODES; do
        up "$mode"
        taskset -c 1 "$RINGCAST_BIN" bench idle --url "$URL" -c "$IDLE" --source-ips 4 \
            --server-pid "$PID" --json --quiet "${OPTS[@]}" >"$out/idle.$mode.$run.json"
        stop_all
    done
done

python3 - "$out" "$RUNS" $MODES <<'PY'
import json, os, statistics, sys
out, runs, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
phases = os.environ["PHASES"].split()
med = statistics.median
res = {}
def load(kind, mode):
    if kind not in phases:
        return None
    return [json.load(open("%s/%s.%s.%d.json" % (out, kind, mode, r))) for r in range(1, runs + 1)]
for mode in modes:
    res[mode] = {}
    rs = load("fanout", mode)
    if rs:
        res[mode].update({
            "bytes": med([r["rx_bytes"] / r["delivered"] for r in rs]),
            "cpu_ns": med([r["server_cpu_seconds"] / r["delivered"] * 1e9 for r in rs]),
            "cpu_all": [round(r["server_cpu_seconds"] / r["delivered"] * 1e9) for r in rs],
            "rate": med([r["delivered_per_sec"] for r in rs]),
            "p50": med([r["latency_p50_us"] for r in rs]),
            "delivered": med([r["delivered"] / r["expected"] for r in rs]),
            "n": med([r["expected"] for r in rs]),
        })
    idles = load("idle", mode)
    if idles:
        res[mode].update({
            "idle": med([i["rss_per_conn_bytes"] for i in idles]),
            "idle_all": [round(i["rss_per_conn_bytes"]) for i in idles],
        })
names = {"rc-off": "ringcast off", "rc-on": "ringcast on", "bun-off": "Bun off", "bun-on": "Bun on"}
cols = []
for m in modes:
    cols.append((names[m], m, None))
    base = m.replace("-on", "-off")
    if m.endswith("-on") and base in res:
        cols.append((m.split("-")[0].replace("rc", "ringcast").replace("bun", "Bun") + " on ÷ off", m, base))
rows = [
    ("bytes read per delivery", "bytes", lambda v: "%.0f B" % v),
    ("server CPU per delivery", "cpu_ns", lambda v: "%.0f ns" % v),
    ("deliveries/s", "rate", lambda v: "%.0f k" % (v / 1e3)),
    ("latency p50", "p50", lambda v: "%.1f ms" % (v / 1e3)),
    ("delivered / expected", "delivered", lambda v: "%.3f" % v),
    ("idle RSS per WS connection", "idle", lambda v: "%.0f B" % v),
]
print("| | " + " | ".join(c[0] for c in cols) + " |")
print("|---|" + "---|" * len(cols))
for label, key, fmt in rows:
    if key not in res[modes[0]]:
        continue
    cells = []
    for _, m, base in cols:
        if base is None:
            cells.append(fmt(res[m][key]))
        elif key in ("bytes", "cpu_ns", "rate", "idle"):
            cells.append(("%.3f" if key == "bytes" else "%.2f") % (res[m][key] / res[base][key]))
        else:
            cells.append("")
    print("| %s | %s |" % (label, " | ".join(cells)))
print()
for m in modes:
    print("%s: CPU per delivery per run %s ns; idle RSS per run %s B" % (names[m], res[m].get("cpu_all"), res[m].get("idle_all")))
if "rc-on" in res and "bun-on" in res and "cpu_ns" in res["rc-on"]:
    print("server CPU per delivery, ringcast on ÷ Bun on: %.2f" % (res["rc-on"]["cpu_ns"] / res["bun-on"]["cpu_ns"]))
print("(medians of %d runs, %s deliveries each, %s idle connections; server on CPU 0, bench on CPU 1)"
      % (runs, res[modes[0]].get("n", "no"), os.environ.get("IDLE", "?") if "idle" in phases else "no"))
PY
