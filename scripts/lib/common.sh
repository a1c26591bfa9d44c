# Shared helpers for scripts/bench.sh, scripts/compare.sh and scripts/peers/peer.sh.
# Source it; it defines functions only (and ROOT, PEERS_DIR).
#
# Every server is started in its own session (setsid), so its process group id is its
# pid and stopping it also stops its children (nginx workers). Started groups are
# recorded in $RUN_DIR/pgids; stop_all (run it from an EXIT trap) stops exactly those.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS_DIR="$ROOT/scripts/peers"
BUN="$PEERS_DIR/node_modules/@oven/bun-linux-x64/bin/bun"
NGINX="${NGINX:-/usr/sbin/nginx}"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# A free TCP port on 127.0.0.1 (the kernel picks it; there is a small race until use).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http URL [SECONDS]: until URL answers 200.
wait_http() {
    local url=$1 limit=${2:-15} i
    for ((i = 0; i < limit * 10; i++)); do
        curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# start_bg NAME LOGFILE CMD...: starts CMD in a new session; prints its pid.
# RUN_DIR must be set; the pid is appended to $RUN_DIR/pgids. With SERVER_CPUS set
# (a taskset list, e.g. 0), the server and its children run on those CPUs only.
start_bg() {
    local name=$1 logfile=$2 pin=()
    shift 2
    [[ -n "${SERVER_CPUS:-}" ]] && pin=(taskset -c "$SERVER_CPUS")
    # From a non-interactive shell the background child is no group leader, so setsid
    # does not fork and $! is the server's own pid.
    setsid "${pin[@]}" "$@" >"$logfile" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >>"$RUN_DIR/pgids"
    echo "$pid $name" >>"$RUN_DIR/names"
    echo "$pid"
}

# stop_group PGID: TERM the group, wait up to 5 s, then KILL what is left.
stop_group() {
    local pg=$1 i
    kill -0 -- "-$pg" 2>/dev/null || return 0
    kill -TERM -- "-$pg" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 -- "-$pg" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pg" 2>/dev/null || true
    # Reap it if it is our child.
    wait "$pg" 2>/dev/null || true
}

# stop_all: stops every group started through start_bg in this RUN_DIR.
stop_all() {
    [[ -n "${RUN_DIR:-}" && -f "$RUN_DIR/pgids" ]] || return 0
    local pg
    while read -r pg; do
        [[ -n "$pg" ]] && stop_group "$pg"
    done < <(tac "$RUN_DIR/pgids")
    : >"$RUN_DIR/pgids"
}

# group_pids PGID: the pids in a process group (a server and its workers).
group_pids() {
    pgrep -g "$1" 2>/dev/null | tr '\n' ' '
}

# start_ringcast BIN CORES PORT SOCKET LOG [extra serve flags...]: prints the pid once
# /healthz answers.
start_ringcast() {
    local bin=$1 cores=$2 port=$3 sock=$4 logf=$5
    shift 5
    local pid
    pid=$(start_bg "ringcast-c$cores" "$logf" "$bin" serve --listen "127.0.0.1:$port" \
        --publish-socket "$sock" --cores "$cores" "$@")
    wait_http "http://127.0.0.1:$port/healthz" 15 || { tail -20 "$logf" >&2; die "ringcast did not start"; }
    echo "$pid"
}

# start_peer NAME PORT LOG: starts a peer (bun, bun2, nchan, node); prints the pid of
# the process (group leader) to measure, once /healthz answers.
start_peer() {
    local name=$1 port=$2 logf=$3 pid
    case $name in
    bun)
        [[ -x "$BUN" ]] || die "bun missing: run scripts/peers/install.sh"
        pid=$(PORT=$port start_bg bun "$logf" "$BUN" "$PEERS_DIR/bun-pubsub.js")
        ;;
    bun2)
        # Two Bun processes on one port (SO_REUSEPORT) under one shell, one group.
        [[ -x "$BUN" ]] || die "bun missing: run scripts/peers/install.sh"
        pid=$(PORT=$port REUSE_PORT=1 start_bg bun2 "$logf" bash -c \
            '"$0" "$1" & "$0" "$1" & trap "kill \$(jobs -p) 2>/dev/null" TERM; wait' \
            "$BUN" "$PEERS_DIR/bun-pubsub.js")
        ;;
    node)
        [[ -d "$PEERS_DIR/node_modules/ws" ]] || die "ws missing: run scripts/peers/install.sh"
        pid=$(PORT=$port start_bg node "$logf" node "$PEERS_DIR/node-hub.js")
        ;;
    nchan)
        [[ -x "$NGINX" ]] || die "nginx missing: run scripts/peers/install.sh"
        local dir="$RUN_DIR/nginx-$port"
        mkdir -p "$dir/tmp" "$dir/logs"
        sed "s/127\.0\.0\.1:8091/127.0.0.1:$port/" "$PEERS_DIR/nchan.conf" >"$dir/nchan.conf"
        pid=$(start_bg nchan "$logf" "$NGINX" -e stderr -p "$dir/" -c "$dir/nchan.conf")
        ;;
    *) die "unknown peer $name (bun, bun2, node, nchan)" ;;
    esac
    wait_http "http://127.0.0.1:$port/healthz" 15 || { tail -20 "$logf" >&2; die "$name did not start"; }
    echo "$pid"
}

# bench_executable NAME: builds the `[[bench]]` target NAME (release, no run) and prints
# the path of its executable.
bench_executable() {
    local name=$1
    cargo bench --bench "$name" --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json, sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$name"
}
