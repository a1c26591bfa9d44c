#!/usr/bin/env bash
# ringcast against its peers on the same scenarios: ringcast --cores 1 and --cores 2,
# Bun (server.publish), nginx + nchan (2 workers) and a Node ws hub. Each server is
# started fresh for every run and stopped after it (an EXIT trap stops whatever is left);
# RUNS (3) runs each, interleaved over the servers; medians, CPU per delivered message
# (server and load generator) and ratios of ringcast to each peer in
# target/bench/compare.md (raw records in target/bench/compare/).
#
#   scripts/compare.sh
#   SUBS=1000 FANOUT_MESSAGES=200 IDLE_CONNS=2000 WRK_DURATION=3 RUNS=1 scripts/compare.sh
#   SERVERS="ringcast-c2 nchan" SCENARIOS="ws-fanout" scripts/compare.sh
#   PINNED=1 scripts/compare.sh        # --cores 1 on CPU 0, the load generator on CPU 1
#
# Publisher scenarios (the way most applications publish; 1,000 subscribers on one
# topic): ws-seq / sse-seq, one request in flight as fast as it goes (HTTP; ws-seq-unix
# is ringcast's socket, n/a for peers); ws-rate100 / ws-rate500 / sse-rate100 /
# sse-rate500, paced at 100 or 500 messages/s for PACED_SECONDS, with p50/p99.
# Connection cost: connect-ws / connect-sse open CONNECT_CONNS (10,000) subscribers, each
# on its own topic, hold them CONNECT_HOLD and close them; the server's CPU per
# connection. heartbeat-sse: HEARTBEAT_CONNS (15,000) idle SSE streams at --heartbeat 1s,
# the server's CPU per heartbeat (ringcast only).
# PINNED=1 pins every server to CPU 0 (SERVER_CPUS) and the load generator to CPU 1
# (BENCH_CPUS, one subscriber thread); its default SERVERS are ringcast-c1 bun nchan.
#
# Fairness (see scripts/peers/README.md): every server publishes over HTTP POST /publish
# (COMPARE_PUBLISH=unix gives ringcast its Unix socket instead); ringcast delivers its
# JSON envelope, the peers the raw body (the bench reads either). Bun's pub/sub lives in
# one process, so Bun runs 1 process in both comparisons (SERVERS may add bun2: two
# processes on one port, where a publish reaches only half of the subscribers). Bun has
# no SSE pub/sub: sse-fanout is n/a for it. Idle: IDLE_CONNS (15,000) in one server
# process each (the open-file limit is 20,000 per process).
#
# Environment: as scripts/bench.sh (RINGCAST_BIN, RINGCAST_BENCH_BIN, OUT_DIR, scales
# in scripts/lib/scenarios.sh), plus SERVERS, SCENARIOS, RUNS, COMPARE_PUBLISH,
# IDLE_TRANSPORTS [sse ws], RUN_TIMEOUT [300 s per measured run].
set -euo pipefail
: "${IDLE_CONNS:=15000}"
source "$(dirname "$0")/lib/common.sh"
source "$ROOT/scripts/lib/scenarios.sh"

: "${RUNS:=3}" "${OUT_DIR:=$ROOT/target/bench}" "${COMPARE_PUBLISH:=http}"
if [[ -n "${PINNED:-}" ]]; then
    : "${SERVERS:=ringcast-c1 bun nchan}"
    export SERVER_CPUS=${SERVER_CPUS:-0} BENCH_CPUS=${BENCH_CPUS:-1}
fi
: "${SERVERS:=ringcast-c1 ringcast-c2 bun nchan node}"
: "${IDLE_TRANSPORTS:=sse ws}"
PUBLISHER_SCENARIOS="ws-seq ws-seq-unix ws-rate100 ws-rate500 sse-seq sse-rate100 sse-rate500"
: "${SCENARIOS:=ws-fanout ws-topics sse-fanout publish-wrk idle connect-ws connect-sse heartbeat-sse $PUBLISHER_SCENARIOS}"
IDLE_PER_SERVER=$IDLE_CONNS

RUN_DIR=$(mktemp -d /tmp/ringcast-compare.XXXXXX)
trap 'stop_all; rm -rf "$RUN_DIR"' EXIT
trap 'exit 130' INT TERM

if [[ -z "${RINGCAST_BIN:-}" ]]; then
    log "building release"
    (cd "$ROOT" && cargo build --release --bin ringcast) >&2
    RINGCAST_BIN="$ROOT/target/release/ringcast"
fi
BENCH_BIN=${RINGCAST_BENCH_BIN:-$RINGCAST_BIN}
for sc in $SCENARIOS; do
    [[ $sc == publish-wrk ]] || have_bench || die "'$BENCH_BIN bench' is not available (set RINGCAST_BENCH_BIN)"
done
command -v wrk >/dev/null || die "wrk missing: run scripts/peers/install.sh"

REC_DIR="$OUT_DIR/compare"
mkdir -p "$REC_DIR"
rm -f "$REC_DIR"/*.json "$REC_DIR"/*.stdout

# up SERVER [ringcast flags...]: starts it fresh on a free port; sets HP PID PUB PAYLOAD.
up() {
    local sv=$1 port
    shift
    port=$(free_port)
    HP="127.0.0.1:$port"
    case $sv in
    ringcast-c*)
        local sock="$RUN_DIR/rc-$port.sock"
        SOCK_PUB="unix:$sock"
        PID=$(start_ringcast "$RINGCAST_BIN" "${sv#ringcast-c}" "$port" "$sock" "$RUN_DIR/$sv-$port.log" "$@")
        PAYLOAD=envelope
        if [[ $COMPARE_PUBLISH == unix ]]; then PUB="unix:$sock"; else PUB="http://$HP/publish?topic={topic}"; fi
        ;;
    *)
        PID=$(start_peer "$sv" "$port" "$RUN_DIR/$sv-$port.log")
        PAYLOAD=raw
        PUB="http://$HP/publish?topic={topic}"
        ;;
    esac
}

na=()
for sc in $SCENARIOS; do
    for ((run = 1; run <= RUNS; run++)); do
        for sv in $SERVERS; do
            if [[ ($sc == sse-* || $sc == *-sse) && $sv == bun* ]]; then
                ((run == 1)) && na+=("$sc/$sv (Bun has no SSE pub/sub)")
                continue
            fi
            if [[ $sc == *-unix && $sv != ringcast* ]]; then
                ((run == 1)) && na+=("$sc/$sv (no publish socket)")
                continue
            fi
            if [[ $sc == heartbeat-sse ]]; then
                if [[ $sv != ringcast* ]]; then
                    ((run == 1)) && na+=("$sc/$sv (ringcast's heartbeat counter)")
                    continue
                fi
                up "$sv" --heartbeat 1s
                sc_heartbeat "$sv" "$HP" "$PID" "$run"
                stop_all
                continue
            fi
            if [[ $sc == idle ]]; then
                for IDLE_TRANSPORT in $IDLE_TRANSPORTS; do
                    if [[ $IDLE_TRANSPORT == sse && $sv == bun* ]]; then
                        ((run == 1)) && na+=("idle-sse/$sv (no SSE)")
                        continue
                    fi
                    up "$sv"
                    idle_run "idle-$IDLE_TRANSPORT" "$sv" "$run" "$IDLE_CONNS" "$HP" "$PID"
                    stop_all
                done
                continue
            fi
            up "$sv"
            case $sc in
            ws-fanout) sc_ws_fanout "$sv" "$HP" "$PID" "$PUB" "$PAYLOAD" "$run" ;;
            ws-topics) sc_ws_topics "$sv" "$HP" "$PID" "$PUB" "$PAYLOAD" "$run" ;;
            sse-fanout) sc_sse_fanout "$sv" "$HP" "$PID" "$PUB" "$PAYLOAD" "$run" ;;
            connect-ws | connect-sse) sc_connect "$sc" "$sv" "$HP" "$PID" "$run" "${sc#connect-}" ;;
            publish-wrk) sc_publish_wrk "$sv" "$HP" "$PID" "" "" "$run" ;;
            ws-seq | sse-seq) sc_publisher "$sc" "$sv" "$HP" "$PID" "$PUB" "$PAYLOAD" "$run" \
                "${sc%%-*}" "$SEQ_SUBS" "$SEQ_MESSAGES" 0 ;;
            ws-seq-unix) sc_publisher "$sc" "$sv" "$HP" "$PID" "$SOCK_PUB" "$PAYLOAD" "$run" \
                ws "$SEQ_SUBS" "$SEQ_MESSAGES" 0 ;;
            ws-rate* | sse-rate*)
                rate=${sc##*-rate}
                sc_publisher "$sc" "$sv" "$HP" "$PID" "$PUB" "$PAYLOAD" "$run" \
                    "${sc%%-*}" "$PACED_SUBS" $((rate * PACED_SECONDS)) "$rate" ;;
            *) die "unknown scenario $sc" ;;
            esac
            stop_all
        done
    done
done

pre="$RUN_DIR/preamble.md"
{
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $RUNS run(s) per server and scenario (medians),"
    echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); publish over $COMPARE_PUBLISH for ringcast, HTTP for the peers."
    echo
    echo "Servers: ringcast-c1/-c2 = ringcast serve --cores 1/2; bun = Bun $("$BUN" --version 2>/dev/null)"
    echo "server.publish, 1 process (its pub/sub cannot span processes); nchan = nginx $(/usr/sbin/nginx -v 2>&1 | sed 's/.*nginx\///')"
    echo "+ nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null), 2 workers; node = Node $(node --version) http + ws hub, 1 process."
    echo
    echo "Scale: ws-fanout $FANOUT_SUBS subs x $FANOUT_MESSAGES msgs; ws-topics $TOPICS_SUBS subs /"
    echo "$TOPICS_TOPICS topics x $TOPICS_MESSAGES msgs; sse-fanout $SSE_SUBS subs x $SSE_MESSAGES msgs;"
    echo "wrk -t$WRK_THREADS -c$WRK_CONNS ${WRK_DURATION}s POST /publish (no subscribers); idle $IDLE_CONNS connections ($IDLE_TRANSPORTS);"
    echo "connect-*: $CONNECT_CONNS subscribers on a topic each, opened, held $CONNECT_HOLD, closed;"
    echo "heartbeat-sse: $HEARTBEAT_CONNS idle SSE streams at --heartbeat 1s, ${HEARTBEAT_SECONDS}s measured."
    echo "publishers: *-seq $SEQ_SUBS subs x $SEQ_MESSAGES msgs, one request in flight; *-rateN $PACED_SUBS subs, N msgs/s for ${PACED_SECONDS}s."
    if [[ -n "${SERVER_CPUS:-}" ]]; then
        echo
        echo "Pinned: every server on CPU $SERVER_CPUS, the load generator on CPU ${BENCH_CPUS:-any} (one subscriber thread)."
    fi
    echo
    echo "Rates are deliveries per second (fan-out) or requests per second (wrk). CPU per"
    echo "message: the server's utime+stime (all its processes and threads, /proc/PID/stat)"
    echo "and the load generator's (wait4 rusage) over the run, divided by messages delivered,"
    echo "connection set-up included. The load generator shares the 2 cores with the server."
    if ((${#na[@]})); then printf '\nNot applicable: %s.\n' "$(IFS=,; echo "${na[*]}")"; fi
} >"$pre"
baselines=$(for s in $SERVERS; do if [[ $s == ringcast-* ]]; then printf '%s,' "$s"; fi; done)
"${BENCH_TOOL[@]}" report --dir "$REC_DIR" --out "$OUT_DIR/compare.md" \
    --title "ringcast against its peers" --preamble "$pre" --baseline "${baselines%,}"
log "wrote $OUT_DIR/compare.md"
