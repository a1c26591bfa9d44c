#!/usr/bin/env bash
# Start and stop one peer server for the benchmarks, leaving no process behind.
#
#   scripts/peers/peer.sh run   NAME [PORT]   foreground; Ctrl-C (or exit) stops it
#   scripts/peers/peer.sh start NAME [PORT]   background; prints "PID PORT"
#   scripts/peers/peer.sh stop  NAME [PORT]   stops what `start` started
#
# NAME: bun (1 Bun process), bun2 (2 Bun processes, SO_REUSEPORT; pub/sub does not span
# them, see README.md), node (Node http + ws hub), nchan (nginx + nchan, 2 workers).
# PORT defaults to 8090 (bun), 8091 (nchan), 8092 (node), 8093 (bun2).
# State (pids, logs, nginx prefix) lives in ${PEER_STATE:-/tmp/ringcast-peers}/NAME-PORT.
set -euo pipefail
source "$(dirname "$0")/../lib/common.sh"

cmd=${1:-}
name=${2:-}
case $name in
bun) def=8090 ;; nchan) def=8091 ;; node) def=8092 ;; bun2) def=8093 ;;
*) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
port=${3:-$def}
RUN_DIR="${PEER_STATE:-/tmp/ringcast-peers}/$name-$port"

case $cmd in
start)
    mkdir -p "$RUN_DIR"
    [[ -s "$RUN_DIR/pgids" ]] && die "$name already started here ($RUN_DIR); stop it first"
    pid=$(start_peer "$name" "$port" "$RUN_DIR/server.log")
    echo "$pid $port"
    ;;
stop)
    stop_all
    ;;
run)
    mkdir -p "$RUN_DIR"
    trap stop_all EXIT
    trap 'exit 0' INT TERM
    pid=$(start_peer "$name" "$port" "$RUN_DIR/server.log")
    log "$name: pid $pid on 127.0.0.1:$port (log $RUN_DIR/server.log); Ctrl-C stops it"
    tail -f "$RUN_DIR/server.log" &
    echo "$!" >>"$RUN_DIR/pgids.tail"
    wait "$pid" 2>/dev/null || true
    kill "$(cat "$RUN_DIR/pgids.tail")" 2>/dev/null || true
    rm -f "$RUN_DIR/pgids.tail"
    ;;
*) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
