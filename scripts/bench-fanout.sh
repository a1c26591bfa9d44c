#!/usr/bin/env bash
# Fan-out latency/throughput of a release ringcast on this machine.
#
#   scripts/bench-fanout.sh [ws|sse|mixed] [SUBSCRIBERS] [MESSAGES] [extra `ringcast bench` flags...]
#
# Starts `ringcast serve` (release build) on a free port with its own publish socket,
# runs `ringcast bench` against it with --server-pid (so server CPU and RSS per
# connection are reported), prints the table (or JSON with --json) and stops the
# server. Environment: PORT (default 18080), SERVER_CORES (default: all), BUILD=0 to skip
# the build.
set -euo pipefail
cd "$(dirname "$0")/.."

transport=${1:-ws}; subs=${2:-1000}; msgs=${3:-10000}
shift $(( $# < 3 ? $# : 3 ))
port=${PORT:-18080}
# ringcast listens with SO_REUSEPORT, so a second server on a taken port starts fine and
# silently shares the connections with the first: refuse a port someone is listening on.
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "port $port is already in use (set PORT=...)" >&2; exit 1
fi
dir=$(mktemp -d)
sock="$dir/ringcast.sock"

[ "${BUILD:-1}" = 1 ] && cargo build --release --quiet
bin=target/release/ringcast

server_args=(serve --listen "127.0.0.1:$port" --publish-socket "$sock")
[ -n "${SERVER_CORES:-}" ] && server_args+=(--cores "$SERVER_CORES")
"$bin" "${server_args[@]}" 2>"$dir/server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT

for _ in $(seq 200); do
  [ -S "$sock" ] && break
  sleep 0.05
done
[ -S "$sock" ] || { echo "server did not start:" >&2; cat "$dir/server.log" >&2; exit 1; }

case $transport in
  ws)    urls=(--url "ws://127.0.0.1:$port/ws?topic={topic}") ;;
  sse)   urls=(--url "http://127.0.0.1:$port/sse?topic={topic}") ;;
  mixed) urls=(--url "ws://127.0.0.1:$port/ws?topic={topic}" --url "http://127.0.0.1:$port/sse?topic={topic}") ;;
  *) echo "transport must be ws, sse or mixed" >&2; exit 2 ;;
esac

"$bin" bench "${urls[@]}" -c "$subs" -m "$msgs" --publish "unix:$sock" --server-pid "$server" "$@"
