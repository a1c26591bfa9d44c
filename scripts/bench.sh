#!/usr/bin/env bash
# ringcast's standard benchmarks: builds the release binary, starts `ringcast serve`
# (free port, temporary publish socket), runs the scenarios and writes
# target/bench/results.md (raw records in target/bench/results/).
#
#   scripts/bench.sh                                  # the issue's numbers
#   SUBS=1000 IDLE_CONNS=2000 WRK_DURATION=3 FANOUT_MESSAGES=200 scripts/bench.sh   # smoke
#   SCENARIOS="ws-fanout idle" scripts/bench.sh       # a subset
#
# Scenarios: ws-fanout (1 topic x FANOUT_SUBS WS subscribers, as fast as possible),
# ws-topics (TOPICS_SUBS over TOPICS_TOPICS topics), sse-fanout (SSE_SUBS), publish-wrk
# (wrk POST /publish), healthz-wrk (wrk GET /healthz, the HTTP baseline), publish-unix
# (the bench publishing over the Unix socket), k6-ws (k6 subscribers, steady publisher),
# idle (IDLE_CONNS idle connections; see below). Scales: scripts/lib/scenarios.sh.
#
# Idle: one ringcast process holds at most ~19,000 connections here (the open-file hard
# limit is 20,000 and ringcast raises its soft limit to it), so IDLE_CONNS above
# IDLE_PER_SERVER (18,000) starts several ringcast processes, each with its share, and
# reports their summed RSS: 50,000 idle is 3 processes of 16,667.
#
# Environment: RINGCAST_BIN (skip the build, use this binary), RINGCAST_BENCH_BIN (the
# binary that has `ringcast bench`; default RINGCAST_BIN), CORES [2], RUNS [1],
# OUT_DIR [target/bench], K6 [k6 on PATH].
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
source "$ROOT/scripts/lib/scenarios.sh"

: "${CORES:=2}" "${RUNS:=1}" "${OUT_DIR:=$ROOT/target/bench}"
: "${SCENARIOS:=ws-fanout ws-topics sse-fanout publish-wrk healthz-wrk publish-unix k6-ws idle}"
K6=${K6:-$(command -v k6 || true)}

RUN_DIR=$(mktemp -d /tmp/ringcast-bench.XXXXXX)
trap 'stop_all; rm -rf "$RUN_DIR"' EXIT
trap 'exit 130' INT TERM

if [[ -z "${RINGCAST_BIN:-}" ]]; then
    log "building release"
    (cd "$ROOT" && cargo build --release --bin ringcast) >&2
    RINGCAST_BIN="$ROOT/target/release/ringcast"
fi
BENCH_BIN=${RINGCAST_BENCH_BIN:-$RINGCAST_BIN}

REC_DIR="$OUT_DIR/results"
mkdir -p "$REC_DIR"
rm -f "$REC_DIR"/*.json "$REC_DIR"/*.stdout

have_bench && HAVE_BENCH=1 || HAVE_BENCH=0
((HAVE_BENCH)) || log "warning: '$BENCH_BIN bench' is not available: bench scenarios are skipped"
command -v wrk >/dev/null || log "warning: wrk missing (scripts/peers/install.sh): wrk scenarios are skipped"
[[ -n "$K6" ]] || log "warning: k6 missing (scripts/peers/install.sh): k6 scenario is skipped"

# serve NAME: starts a fresh ringcast (own port and socket); sets PORT SOCK PID.
serve() {
    PORT=$(free_port)
    SOCK="$RUN_DIR/rc-$PORT.sock"
    PID=$(start_ringcast "$RINGCAST_BIN" "$CORES" "$PORT" "$SOCK" "$RUN_DIR/rc-$PORT.log")
}

SV="ringcast-c$CORES"
skipped=()
for sc in $SCENARIOS; do
    for ((run = 1; run <= RUNS; run++)); do
        case $sc in
        ws-fanout | ws-topics | sse-fanout | publish-unix)
            ((HAVE_BENCH)) || { skipped+=("$sc (no ringcast bench)"); break; }
            serve
            case $sc in
            ws-fanout) sc_ws_fanout "$SV" "127.0.0.1:$PORT" "$PID" "unix:$SOCK" envelope "$run" ;;
            ws-topics) sc_ws_topics "$SV" "127.0.0.1:$PORT" "$PID" "unix:$SOCK" envelope "$run" ;;
            sse-fanout) sc_sse_fanout "$SV" "127.0.0.1:$PORT" "$PID" "unix:$SOCK" envelope "$run" ;;
            publish-unix) sc_publish_bench "$SV" "127.0.0.1:$PORT" "$PID" "unix:$SOCK" envelope "$run" publish-unix ;;
            esac
            ;;
        publish-wrk | healthz-wrk)
            command -v wrk >/dev/null || { skipped+=("$sc (no wrk)"); break; }
            serve
            "sc_${sc//-/_}" "$SV" "127.0.0.1:$PORT" "$PID" "" "" "$run"
            ;;
        k6-ws)
            [[ -n "$K6" ]] || { skipped+=("$sc (no k6)"); break; }
            serve
            sc_k6_ws "$SV" "127.0.0.1:$PORT" "$PID" "unix:$SOCK" "" "$run"
            ;;
        idle)
            ((HAVE_BENCH)) || { skipped+=("$sc (no ringcast bench)"); break; }
            nsrv=$(( (IDLE_CONNS + IDLE_PER_SERVER - 1) / IDLE_PER_SERVER ))
            hps="" pgs=""
            for ((i = 0; i < nsrv; i++)); do
                serve
                hps+="127.0.0.1:$PORT " pgs+="$PID "
            done
            label=$SV
            ((nsrv > 1)) && label="$SV x$nsrv-procs"
            idle_run "idle-$IDLE_TRANSPORT" "$label" "$run" "$IDLE_CONNS" "$hps" "$pgs"
            ;;
        *) die "unknown scenario $sc" ;;
        esac
        stop_all
    done
done

pre="$RUN_DIR/preamble.md"
{
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ringcast --cores $CORES, $RUNS run(s) each;"
    echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), binary $RINGCAST_BIN."
    echo
    echo "Scale: ws-fanout $FANOUT_SUBS subs x $FANOUT_MESSAGES msgs; ws-topics $TOPICS_SUBS subs /"
    echo "$TOPICS_TOPICS topics x $TOPICS_MESSAGES msgs; sse-fanout $SSE_SUBS subs x $SSE_MESSAGES msgs;"
    echo "publish-unix $PUB_MESSAGES msgs; wrk -t$WRK_THREADS -c$WRK_CONNS ${WRK_DURATION}s; k6 $K6_VUS VUs at"
    echo "$K6_RATE msg/s; idle $IDLE_CONNS $IDLE_TRANSPORT connections (at most $IDLE_PER_SERVER per"
    echo "server process: the open-file limit is $(ulimit -Hn))."
    echo
    echo "Rates: fan-out rows are deliveries per second (subscribers x messages), wrk rows"
    echo "requests per second, k6 messages received per second. CPU per message is the server's"
    echo "(or the load generator's) utime+stime over the run divided by messages delivered,"
    echo "connection set-up included."
    if ((${#skipped[@]})); then printf '\nSkipped: %s.\n' "$(IFS=,; echo "${skipped[*]}")"; fi
} >"$pre"
"${BENCH_TOOL[@]}" report --dir "$REC_DIR" --out "$OUT_DIR/results.md" \
    --title "ringcast benchmarks" --preamble "$pre"
log "wrote $OUT_DIR/results.md"
