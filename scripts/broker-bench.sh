#!/usr/bin/env bash
# Single node vs through Redis: publish throughput and fan-out latency.
#
# Starts a private redis-server (no persistence) and two ringcast nodes, one
# with `--broker redis://...` and one without, then for each:
#   - throughput: PUBLISHES publish lines written pipelined on one publish-socket
#     connection (a writer thread), timed until the last answer is read;
#   - fan-out latency: SUBSCRIBERS SSE clients on one topic, MESSAGES messages
#     published at RATE/s carrying their send time; latency = receive - send,
#     p50/p99/max over every (message, subscriber) pair.
# Latency is measured by a small Python (stdlib only) client, the same way for
# both nodes, so the ratio is fair even though Python adds its own overhead.
# (`ringcast bench` was not in this tree when this script was written; the
# table says whether the binary has it, for a later switch.)
#
# Usage: scripts/broker-bench.sh            (builds target/release/ringcast if missing)
# Env:   RINGCAST_BIN, PUBLISHES [20000], SUBSCRIBERS [50], MESSAGES [500],
#        RATE [500], CORES [2]
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${RINGCAST_BIN:-target/release/ringcast}
PUBLISHES=${PUBLISHES:-20000}
SUBSCRIBERS=${SUBSCRIBERS:-50}
MESSAGES=${MESSAGES:-500}
RATE=${RATE:-500}
CORES=${CORES:-2}

command -v redis-server >/dev/null || { echo "redis-server not found (apt-get install redis-server)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 not found" >&2; exit 1; }
if [[ ! -x $BIN ]]; then
    echo "building $BIN ..." >&2
    cargo build --release --quiet
fi

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_for() { # wait_for SECONDS CMD...: polls CMD every 50 ms, bounded
    local until=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        (( SECONDS < until )) || { echo "timed out waiting for: $*" >&2; return 1; }
        sleep 0.05
    done
}

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" \
    >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
wait_for 10 bash -c "[[ \$(redis-cli -p $REDIS_PORT ping) == PONG ]]"

start_node() { # start_node NAME [ARGS...] -> sets PORT_<NAME>
    local name=$1; shift
    local port; port=$(free_port)
    "$BIN" serve --listen "127.0.0.1:$port" --publish-socket "$TMP/$name.sock" \
        --cores "$CORES" --history 1000 "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
    wait_for 10 curl -sf "http://127.0.0.1:$port/healthz"
    printf -v "PORT_$name" %s "$port"
}
start_node single
start_node redis --broker "redis://127.0.0.1:$REDIS_PORT"

have_bench=0
if "$BIN" bench --help >/dev/null 2>&1; then have_bench=1; fi

cat >"$TMP/client.py" <<'PY'
import json, os, selectors, socket, sys, threading, time

def throughput(sock_path, n, topic):
    s = socket.socket(socket.AF_UNIX); s.connect(sock_path)
    payload = b"".join(b'{"topic":"%s","data":{"n":%d}}\n' % (topic.encode(), i) for i in range(n))
    t0 = time.perf_counter()
    w = threading.Thread(target=s.sendall, args=(payload,)); w.start()
    got, buf, errors = 0, b"", 0
    while got < n:
        chunk = s.recv(1 << 20)
        if not chunk: raise SystemExit("publish socket closed after %d answers" % got)
        buf += chunk
        lines = buf.split(b"\n"); buf = lines.pop()
        for l in lines:
            got += 1
            if b'"ok":true' not in l: errors += 1
    dt = time.perf_counter() - t0
    w.join()
    if errors: raise SystemExit("%d publishes failed" % errors)
    return n / dt

def latency(port, sock_path, subs, messages, rate, topic):
    sel = selectors.DefaultSelector()
    conns = []
    for _ in range(subs):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"GET /sse?topic=%s HTTP/1.1\r\nHost: b\r\n\r\n" % topic.encode())
        conns.append(c)
    # Each subscription is live once its starting cursor (an id-only block) arrives.
    bufs = {}
    for c in conns:
        c.settimeout(10)
        data = b""
        def live(d):
            body = d.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in d else b""
            return (body.startswith(b"id:") or b"\nid:" in body) and body.endswith(b"\n\n")
        while not live(data):
            chunk = c.recv(65536)
            if not chunk: raise SystemExit("SSE closed before its cursor")
            data += chunk
        c.setblocking(False)
        sel.register(c, selectors.EVENT_READ)
        bufs[c] = b""
    lat = []
    want = subs * messages
    done = threading.Event()
    def reader():
        deadline = time.time() + 60 + messages / rate
        while len(lat) < want and time.time() < deadline:
            for key, _ in sel.select(timeout=0.5):
                c = key.fileobj
                try: chunk = c.recv(1 << 20)
                except BlockingIOError: continue
                now = time.time_ns()
                if not chunk: raise SystemExit("SSE closed")
                b = bufs[c] + chunk
                *lines, rest = b.split(b"\n"); bufs[c] = rest
                for l in lines:
                    if l.startswith(b"data: ") and b'"sent"' in l:
                        sent = json.loads(l[6:])["data"]["sent"]
                        lat.append((now - sent) / 1e6)
        done.set()
    r = threading.Thread(target=reader); r.start()
    p = socket.socket(socket.AF_UNIX); p.connect(sock_path)
    pf = p.makefile("rb")
    gap = 1.0 / rate
    t_next = time.perf_counter()
    for i in range(messages):
        p.sendall(b'{"topic":"%s","data":{"sent":%d}}\n' % (topic.encode(), time.time_ns()))
        line = pf.readline()
        if b'"ok":true' not in line: raise SystemExit("publish failed: %r" % line)
        t_next += gap
        d = t_next - time.perf_counter()
        if d > 0: time.sleep(d)
    r.join()
    if len(lat) < want: raise SystemExit("latency: got %d of %d deliveries" % (len(lat), want))
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]
    return q(0.50), q(0.99), lat[-1]

mode = sys.argv[1]
if mode == "tput":
    print("%.0f" % throughput(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
else:
    p50, p99, mx = latency(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7])
    print("%.3f %.3f %.3f" % (p50, p99, mx))
PY

measure() { # measure NAME -> "tput p50 p99 max"
    local name=$1 port_var="PORT_$1"
    local port=${!port_var} sock="$TMP/$1.sock"
    # A warm-up round first (connections, first XADD, JIT-free but caches warm).
    python3 "$TMP/client.py" tput "$sock" 2000 "warm-$name" >/dev/null
    local tput; tput=$(python3 "$TMP/client.py" tput "$sock" "$PUBLISHES" "tput-$name")
    local lat
    lat=$(python3 "$TMP/client.py" lat "$port" "$sock" "$SUBSCRIBERS" "$MESSAGES" "$RATE" "lat-$name")
    echo "$tput $lat"
}

read -r s_tput s_p50 s_p99 s_max < <(measure single)
read -r r_tput r_p50 r_p99 r_max < <(measure redis)
# Check the publishes through Redis really are in its stream.
added=$(redis-cli -p "$REDIS_PORT" XINFO STREAM ringcast:tput-redis | awk 'prev=="entries-added"{print; exit} {prev=$0}')
[[ $added == "$PUBLISHES" ]] || { echo "ringcast:tput-redis has $added entries added, expected $PUBLISHES" >&2; exit 1; }

ratio() { python3 -c "print('%.2fx' % ($1 / $2))"; }
echo
echo "ringcast broker bench: $PUBLISHES pipelined socket publishes; $SUBSCRIBERS SSE subscribers x $MESSAGES messages at $RATE/s; --cores $CORES"
echo "latency client: python stdlib (ringcast bench in this binary: $( ((have_bench)) && echo yes || echo no))"
printf '%-28s %14s %16s %10s\n' "" "single node" "through Redis" "ratio"
printf '%-28s %14s %16s %10s\n' "publish throughput (msg/s)" "$s_tput" "$r_tput" "$(ratio "$s_tput" "$r_tput")"
printf '%-28s %14s %16s %10s\n' "fan-out latency p50 (ms)" "$s_p50" "$r_p50" "$(ratio "$r_p50" "$s_p50")"
printf '%-28s %14s %16s %10s\n' "fan-out latency p99 (ms)" "$s_p99" "$r_p99" "$(ratio "$r_p99" "$s_p99")"
printf '%-28s %14s %16s %10s\n' "fan-out latency max (ms)" "$s_max" "$r_max" "$(ratio "$r_max" "$s_max")"
echo "(throughput ratio = single / Redis; latency ratio = Redis / single)"
