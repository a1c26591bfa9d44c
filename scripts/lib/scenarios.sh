# The standard scenarios, shared by scripts/bench.sh and scripts/compare.sh.
# Source after common.sh. Each sc_* runs one measured run against a server that is up:
#   sc_NAME SERVER_LABEL HOSTPORT PGID PUBLISH PAYLOAD RUN
# (PUBLISH: the bench's --publish target; PAYLOAD: envelope for ringcast, raw for peers.)
# Records land in $REC_DIR/<scenario>.<server>.<run>.json.
#
# Scale (environment; defaults are the numbers, SUBS scales the fan-outs at once):
: "${SUBS:=10000}"
: "${FANOUT_SUBS:=$SUBS}"                 # WS fan-out: subscribers on 1 topic
: "${FANOUT_MESSAGES:=2000}"              #   messages, published as fast as possible
: "${FANOUT_RATE:=0}"                     #   0 = as fast as the publish window allows
: "${TOPICS_SUBS:=$(( SUBS / 10 ))}"      # WS over topics: subscribers (1,000)
: "${TOPICS_TOPICS:=100}"                 #   topics
: "${TOPICS_MESSAGES:=200000}"            #   messages, round-robin over the topics
: "${SSE_SUBS:=$SUBS}"                    # SSE fan-out: subscribers on 1 topic
: "${SSE_MESSAGES:=$FANOUT_MESSAGES}"
: "${PUB_MESSAGES:=200000}"               # publish throughput through the bench (1 subscriber)
: "${WRK_THREADS:=1}" "${WRK_CONNS:=32}" "${WRK_DURATION:=10}"
: "${IDLE_CONNS:=50000}"                  # idle connections in all
: "${IDLE_PER_SERVER:=18000}"             # one server process holds at most this many (fd limit)
: "${IDLE_PER_BENCH:=9000}"               # connections per bench process
: "${IDLE_HOLD:=10s}"
: "${IDLE_TRANSPORT:=sse}"                # sse or ws
: "${SOURCE_IPS:=4}"
: "${BENCH_DRAIN:=5s}"
: "${K6_VUS:=200}" "${K6_HOLD:=10}" "${K6_RATE:=100}"
: "${CONNECT_CONNS:=10000}"               # connect-*: subscribers, each on its own topic
: "${CONNECT_HOLD:=1s}"                   #   held once all are open, then closed
: "${HEARTBEAT_CONNS:=15000}"             # heartbeat-sse: idle SSE streams (ringcast only)
: "${HEARTBEAT_SECONDS:=10}"              #   held this long at --heartbeat 1s
: "${SEQ_SUBS:=1000}"                     # one publish in flight: subscribers on 1 topic
: "${SEQ_MESSAGES:=3000}"                 #   messages, each sent once the last is answered
: "${PACED_SUBS:=1000}"                   # paced publishers (--rate): subscribers on 1 topic
: "${PACED_SECONDS:=10}"                  #   publishing time (messages = rate x seconds)
# BENCH_CPUS: a taskset list for the load generator (with SERVER_CPUS, see common.sh),
# which then runs one subscriber thread.

BENCH_TOOL=(python3 "$ROOT/scripts/lib/benchtool.py")

# measure SCENARIO SERVER RUN PGID [extra benchtool flags...] -- CMD...
# (CMD runs on BENCH_CPUS when set.)
measure() {
    local sc=$1 sv=$2 run=$3 pg=$4 args=()
    shift 4
    while (($#)) && [[ $1 != -- ]]; do args+=("$1"); shift; done
    shift
    [[ -n "${BENCH_CPUS:-}" ]] && set -- taskset -c "$BENCH_CPUS" "$@"
    log "  $sc / $sv / run $run"
    "${BENCH_TOOL[@]}" measure --out "$REC_DIR/$sc.$sv.$run.json" --scenario "$sc" \
        --server "$sv" --run "$run" --group "$pg" "${args[@]}" -- "$@" || true
}

have_bench() { "$BENCH_BIN" bench --help >/dev/null 2>&1; }

bench_common() {
    # shellcheck disable=SC2206
    BENCH_FLAGS=(--source-ips "$SOURCE_IPS" --json --quiet)
    [[ -n "${BENCH_CPUS:-}" ]] && BENCH_FLAGS+=(--threads 1)
}

# The way most applications publish: one request in flight (the next is sent once the
# last is answered), as fast as that goes, or paced at a rate (--rate) with the latency
# percentiles. sc_publisher NAME SERVER HP PGID PUBLISH PAYLOAD RUN TRANSPORT SUBS MSGS RATE
sc_publisher() {
    local sc=$1 sv=$2 hp=$3 pg=$4 pub=$5 payload=$6 run=$7 transport=$8 subs=$9
    local msgs=${10} rate=${11} url="ws://$hp/ws?topic={topic}" window=1
    [[ $transport == sse ]] && url="http://$hp/sse?topic={topic}"
    # Paced: the window only bounds what is in flight; the rate sets the pace.
    ((rate > 0)) && window=256
    bench_common
    measure "$sc" "$sv" "$run" "$pg" -- "$BENCH_BIN" bench \
        --url "$url" --connections "$subs" --topics 1 --publish "$pub" --window "$window" \
        --messages "$msgs" --warmup $((msgs / 10)) --rate "$rate" \
        --payload "$payload" --drain "$BENCH_DRAIN" --server-pid "$pg" "${BENCH_FLAGS[@]}"
}

sc_ws_fanout() {
    local sv=$1 hp=$2 pg=$3 pub=$4 payload=$5 run=$6
    bench_common
    measure ws-fanout "$sv" "$run" "$pg" -- "$BENCH_BIN" bench \
        --url "ws://$hp/ws?topic={topic}" --connections "$FANOUT_SUBS" --topics 1 \
        --publish "$pub" --messages "$FANOUT_MESSAGES" --rate "$FANOUT_RATE" \
        --payload "$payload" --drain "$BENCH_DRAIN" --server-pid "$pg" "${BENCH_FLAGS[@]}"
}

sc_ws_topics() {
    local sv=$1 hp=$2 pg=$3 pub=$4 payload=$5 run=$6
    bench_common
    measure ws-topics "$sv" "$run" "$pg" -- "$BENCH_BIN" bench \
        --url "ws://$hp/ws?topic={topic}" --connections "$TOPICS_SUBS" --topics "$TOPICS_TOPICS" \
        --publish "$pub" --messages "$TOPICS_MESSAGES" --rate 0 \
        --payload "$payload" --drain "$BENCH_DRAIN" --server-pid "$pg" "${BENCH_FLAGS[@]}"
}

sc_sse_fanout() {
    local sv=$1 hp=$2 pg=$3 pub=$4 payload=$5 run=$6
    bench_common
    measure sse-fanout "$sv" "$run" "$pg" -- "$BENCH_BIN" bench \
        --url "http://$hp/sse?topic={topic}" --connections "$SSE_SUBS" --topics 1 \
        --publish "$pub" --messages "$SSE_MESSAGES" --rate 0 \
        --payload "$payload" --drain "$BENCH_DRAIN" --server-pid "$pg" "${BENCH_FLAGS[@]}"
}

# What a connection costs the server: CONNECT_CONNS subscribers, each on its own topic
# (the per-user pattern), opened, held CONNECT_HOLD, closed; the server's CPU over all
# of it (the report divides by the connections). A second after the bench exits is
# inside the run, so the server's tear-down counts too.
# sc_connect NAME SERVER HP PGID RUN TRANSPORT(ws|sse)
sc_connect() {
    local sc=$1 sv=$2 hp=$3 pg=$4 run=$5 url="ws://$3/ws?topic={topic}"
    [[ $6 == sse ]] && url="http://$3/sse?topic={topic}"
    bench_common
    measure "$sc" "$sv" "$run" "$pg" --conns "$CONNECT_CONNS" -- bash -c '"$@"; rc=$?; sleep 1; exit $rc' _ \
        "$BENCH_BIN" bench idle --url "$url" --connections "$CONNECT_CONNS" \
        --topics "$CONNECT_CONNS" --hold "$CONNECT_HOLD" --server-pid "$pg" "${BENCH_FLAGS[@]}"
}

# What a heartbeat costs: HEARTBEAT_CONNS idle SSE streams on one topic against a server
# started with --heartbeat 1s (ringcast only). The server's CPU is read over
# HEARTBEAT_SECONDS once they are all open (from the 3rd second on), and divided by the
# heartbeats its /metrics counted over the same window.
# sc_heartbeat SERVER HP PGID RUN
sc_heartbeat() {
    local sv=$1 hp=$2 pg=$3 run=$4
    bench_common
    measure heartbeat-sse "$sv" "$run" "$pg" --window "3,$HEARTBEAT_SECONDS" \
        --counter "http://$hp/metrics#ringcast_heartbeats_total" -- \
        "$BENCH_BIN" bench idle --url "http://$hp/sse?topic=idle" --connections "$HEARTBEAT_CONNS" \
        --hold "$((HEARTBEAT_SECONDS + 5))s" --server-pid "$pg" "${BENCH_FLAGS[@]}"
}

# Publish throughput through the bench's own publisher (1 subscriber checks delivery).
sc_publish_bench() {
    local sv=$1 hp=$2 pg=$3 pub=$4 payload=$5 run=$6 name=${7:-publish-bench}
    bench_common
    measure "$name" "$sv" "$run" "$pg" -- "$BENCH_BIN" bench \
        --url "ws://$hp/ws?topic={topic}" --connections 1 --topics 1 \
        --publish "$pub" --messages "$PUB_MESSAGES" --rate 0 \
        --payload "$payload" --drain "$BENCH_DRAIN" --server-pid "$pg" "${BENCH_FLAGS[@]}"
}

sc_publish_wrk() {
    local sv=$1 hp=$2 pg=$3 run=$6
    measure publish-wrk "$sv" "$run" "$pg" -- wrk -t"$WRK_THREADS" -c"$WRK_CONNS" \
        -d"${WRK_DURATION}s" -s "$ROOT/scripts/wrk/publish.lua" "http://$hp"
}

sc_healthz_wrk() {
    local sv=$1 hp=$2 pg=$3 run=$6
    measure healthz-wrk "$sv" "$run" "$pg" -- wrk -t"$WRK_THREADS" -c"$WRK_CONNS" \
        -d"${WRK_DURATION}s" -s "$ROOT/scripts/wrk/healthz.lua" "http://$hp"
}

# k6 WebSocket subscribers while a steady publisher sends K6_RATE messages/s.
sc_k6_ws() {
    local sv=$1 hp=$2 pg=$3 pub=$4 run=$6
    local target=$pub
    [[ $target == http* ]] && target="http://$hp"
    local summary="$REC_DIR/k6-ws.$sv.$run.k6summary"
    measure k6-ws "$sv" "$run" "$pg" --k6-summary "$summary" -- bash -c '
        "$1" run --quiet --no-usage-report -e URL="ws://$2/ws?topic=bench" -e VUS="$3" \
            -e HOLD="$4" --summary-export "$5" "$6" >"$5.log" 2>&1 &
        k6=$!
        sleep 3
        python3 "$7" publish --target "$8" --topic bench --rate "$9" --duration "$(( $4 - 5 ))" >&2
        wait "$k6"' _ "$K6" "$hp" "$K6_VUS" "$K6_HOLD" "$summary" \
        "$ROOT/scripts/k6/ws_subscribe.js" "$ROOT/scripts/lib/benchtool.py" "$target" "$K6_RATE"
}

# idle_run SCENARIO SERVER RUN CONNS "HP1 HP2 ..." "PG1 PG2 ...": holds CONNS idle
# connections spread over the given servers (one share each), in bench processes of at
# most IDLE_PER_BENCH connections; the server RSS is sampled while they are held.
idle_run() {
    local sc=$1 sv=$2 run=$3 conns=$4 hps=($5) pgs=($6)
    local nsrv=${#hps[@]} i share cmds=() groups=() base
    for pg in "${pgs[@]}"; do groups+=(--group "$pg"); done
    base=$("${BENCH_TOOL[@]}" rss "${groups[@]}")
    share=$(( (conns + nsrv - 1) / nsrv ))
    local path="/sse?topic=idle"
    [[ $IDLE_TRANSPORT == ws ]] && path="/ws?topic=idle"
    local script="" left=$conns
    for ((i = 0; i < nsrv; i++)); do
        local mine=$(( left < share ? left : share )) scheme=http
        left=$(( left - mine ))
        [[ $IDLE_TRANSPORT == ws ]] && scheme=ws
        while (( mine > 0 )); do
            local n=$(( mine < IDLE_PER_BENCH ? mine : IDLE_PER_BENCH ))
            mine=$(( mine - n ))
            script+="\"$BENCH_BIN\" bench idle --url '$scheme://${hps[$i]}$path' --connections $n"
            script+=" --hold $IDLE_HOLD --source-ips $SOURCE_IPS --server-pid ${pgs[$i]} --json --quiet & "
        done
    done
    script+="wait"
    "${BENCH_TOOL[@]}" measure --out "$REC_DIR/$sc.$sv.$run.json" --scenario "$sc" \
        --server "$sv" --run "$run" "${groups[@]}" --conns "$conns" --baseline-rss "$base" \
        -- bash -c "$script" || true
}
