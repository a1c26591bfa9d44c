#!/usr/bin/env bash
# TLS figures of a release ringcast against Bun with TLS, pinned: the server on
# CPU 0 (`ringcast serve --cores 1`; Bun is one thread anyway), `ringcast bench`
# on CPU 1. Medians of RUNS runs, each against a fresh server.
#
#   scripts/tls-bench.sh                  # ringcast and bun
#   SERVERS=ringcast scripts/tls-bench.sh
#
# Figures:
#   handshakes   full TLS 1.3 handshakes (ECDSA P-256, no resumption) + WS upgrade:
#                connects/s, and per second of server CPU (the per-core figure)
#   fan-out      wss subscribers on one topic, published as fast as the bench can
#                (messages coalesce: many per record): deliveries/s, server CPU µs
#                per delivery
#   paced        the same at RATE messages/s (one message per write and record):
#                server CPU µs per delivery
#   idle         RSS per idle wss (and, ringcast only, https SSE) connection
#
# Environment: RUNS [3], HS [2000] (handshake connections), IDLE [5000] (idle
# connections), SUBS [500], MSGS [2000], RATE [1000] (paced: 3 s of it),
# SERVER_CPU [0], BENCH_CPU [1], BUILD [1], PLAIN [0] (1: ringcast without TLS too,
# as `ringcast-plain`, for the TLS overhead), PARTS [handshakes idle fanout paced]
# (the figures to take: `PARTS=idle` measures memory only, which CPU noise does
# not move), RINGCAST_BIN [$CARGO_TARGET_DIR/release/ringcast].
# ringcast's bench publishes through the unix socket; Bun's through a plain HTTP
# port of the same process (scripts/peers/bun-pubsub.js, PUBLISH_PORT).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

: "${RUNS:=3}" "${HS:=2000}" "${IDLE:=5000}" "${SUBS:=500}" "${MSGS:=2000}" "${RATE:=1000}"
: "${SERVER_CPU:=0}" "${BENCH_CPU:=1}" "${SERVERS:=ringcast bun}" "${PARTS:=handshakes idle fanout paced}"
part() { [[ " $PARTS " == *" $1 "* ]]; }
bun="$root/scripts/peers/node_modules/@oven/bun-linux-x64/bin/bun"

[ "${BUILD:-1}" = 1 ] && cargo build --release --quiet
bin=${RINGCAST_BIN:-${CARGO_TARGET_DIR:-target}/release/ringcast}
dir=$(mktemp -d /tmp/ringcast-tls-bench.XXXXXX)
server=""
stop() { [ -n "$server" ] && { kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; }; server=""; }
trap 'stop; rm -rf "$dir"' EXIT

# A CA and an ECDSA P-256 leaf for 127.0.0.1 it signs.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj "/CN=tls-bench CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$dir/key.pem" -out "$dir/leaf.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$dir/ext"
openssl x509 -req -in "$dir/leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 30 -extfile "$dir/ext" -out "$dir/leaf.pem" 2>/dev/null
cat "$dir/leaf.pem" "$dir/ca.pem" >"$dir/chain.pem"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# up SERVER: a fresh server; sets PORT, server (pid), PUB.
up() {
  PORT=$(free_port)
  case $1 in
  ringcast*)
    rm -f "$dir/rc.sock"
    local tls=(--tls-cert "$dir/chain.pem" --tls-key "$dir/key.pem")
    [ "$1" = ringcast-plain ] && tls=()
    taskset -c "$SERVER_CPU" "$bin" serve --cores 1 --listen "127.0.0.1:$PORT" \
      --publish-socket "$dir/rc.sock" "${tls[@]}" \
      --max-outbox-bytes 64MiB 2>"$dir/server.log" &
    server=$!
    PUB="unix:$dir/rc.sock"
    for _ in $(seq 200); do [ -S "$dir/rc.sock" ] && return; sleep 0.05; done
    ;;
  bun)
    local pub_port
    pub_port=$(free_port)
    PORT=$PORT PUBLISH_PORT=$pub_port TLS_CERT="$dir/chain.pem" TLS_KEY="$dir/key.pem" \
      taskset -c "$SERVER_CPU" "$bun" "$root/scripts/peers/bun-pubsub.js" 2>"$dir/server.log" &
    server=$!
    PUB="http://127.0.0.1:$pub_port/publish?topic={topic}"
    for _ in $(seq 200); do
      curl -sf "http://127.0.0.1:$pub_port/healthz" >/dev/null 2>&1 && return
      sleep 0.05
    done
    ;;
  esac
  echo "$1 did not start:" >&2; cat "$dir/server.log" >&2; exit 1
}

bench() { taskset -c "$BENCH_CPU" "$bin" bench "$@" --tls-ca "$dir/ca.pem" --threads 1 --server-pid "$server" --json -q; }

[ "${PLAIN:-0}" = 1 ] && SERVERS="$SERVERS ringcast-plain"
results="$dir/results.tsv"
: >"$results"
for sv in $SERVERS; do
  if [ "$sv" = bun ] && [ ! -x "$bun" ]; then
    echo "bun missing: npm ci --prefix scripts/peers (or scripts/peers/install.sh)" >&2; continue
  fi
  ws=wss; http=https
  [ "$sv" = ringcast-plain ] && { ws=ws; http=http; }
  payload=envelope; [ "$sv" = bun ] && payload=raw
  for run in $(seq "$RUNS"); do
    if part handshakes; then
      up "$sv"
      j=$(bench idle --url "$ws://127.0.0.1:$PORT/ws?topic=hs" -c "$HS" --hold 0s --connect-concurrency 64)
      echo -e "$sv\thandshake\t$j" >>"$results"
      stop
    fi

    if part idle; then
      up "$sv"
      j=$(bench idle --url "$ws://127.0.0.1:$PORT/ws?topic=idle" -c "$IDLE" --hold 2s)
      echo -e "$sv\tidle-wss\t$j" >>"$results"
      stop
      if [ "$sv" != bun ]; then
        up "$sv"
        j=$(bench idle --url "$http://127.0.0.1:$PORT/sse?topic=idle" -c "$IDLE" --hold 2s)
        echo -e "$sv\tidle-$http-sse\t$j" >>"$results"
        stop
      fi
    fi

    if part fanout; then
      up "$sv"
      j=$(bench --url "$ws://127.0.0.1:$PORT/ws?topic={topic}" -c "$SUBS" -m "$MSGS" \
        --publish "$PUB" --payload "$payload" --drain 10s)
      echo -e "$sv\tfanout-$ws\t$j" >>"$results"
      stop
    fi

    if part paced; then
      up "$sv"
      j=$(bench --url "$ws://127.0.0.1:$PORT/ws?topic={topic}" -c "$SUBS" -m $((RATE * 3)) \
        --rate "$RATE" --publish "$PUB" --payload "$payload" --drain 10s)
      echo -e "$sv\tpaced-$ws\t$j" >>"$results"
      stop
    fi
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    sv, kind, j = line.rstrip("\n").split("\t", 2)
    rows.setdefault((sv, kind), []).append(json.loads(j))
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")
print("| server | figure | median | runs |")
print("|---|---|---|---|")
for (sv, kind), rs in rows.items():
    if kind == "handshake" and sv == "ringcast-plain":
        rate = med([r["connect_rate"] for r in rs])
        print(f"| {sv} | TCP connects + upgrade / s (no TLS) | {rate:,.0f} | {len(rs)} |")
    elif kind == "handshake":
        rate = med([r["connect_rate"] for r in rs])
        per_cpu = med([r["connected"] / r["server_cpu_seconds"] for r in rs if r.get("server_cpu_seconds")])
        fails = sum(r["connect_failed"] for r in rs)
        print(f"| {sv} | TLS 1.3 handshakes + upgrade / s (bench-bound) | {rate:,.0f} | {len(rs)} |")
        print(f"| {sv} | handshakes per server CPU-second (per core) | {per_cpu:,.0f} | {len(rs)}{f', {fails} failed' if fails else ''} |")
    elif kind.startswith("idle"):
        per = med([r["rss_per_conn_bytes"] for r in rs])
        marg = med([r["rss_marginal_per_conn_bytes"] for r in rs])
        n = med([r["connected"] for r in rs])
        each = ", ".join(f"{r['rss_marginal_per_conn_bytes']/1024:.1f}" for r in rs)
        print(f"| {sv} | {kind}: RSS per connection ({n:.0f} conns), marginal | {per/1024:.1f} KiB, {marg/1024:.1f} KiB | {len(rs)} (marginal: {each}) |")
    else:
        rate = med([r["delivered_per_sec"] for r in rs])
        cpu = med([r["server_cpu_seconds"] * 1e6 / r["delivered"] for r in rs if r["delivered"]])
        lost = sum(r["lost"] for r in rs)
        p50 = med([r["latency_p50_us"] for r in rs])
        print(f"| {sv} | {kind}: deliveries / s | {rate:,.0f} | {len(rs)}{f', {lost} lost' if lost else ''} |")
        print(f"| {sv} | {kind}: server CPU per delivery | {cpu:.2f} µs | {len(rs)} |")
        print(f"| {sv} | {kind}: latency p50 | {p50:,.0f} µs | {len(rs)} |")
PY
