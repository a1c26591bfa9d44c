#!/usr/bin/env bash
# Memory per idle connection and connect rate of a release ringcast.
#
#   scripts/bench-idle.sh [ws|sse] [CONNECTIONS] [extra `ringcast bench idle` flags...]
#
# One bench process holds up to its open-file limit (see `ringcast bench --help`);
# source addresses are spread over 127.0.0.1..4 so that ports do not run out.
set -euo pipefail
cd "$(dirname "$0")/.."

transport=${1:-sse}; conns=${2:-10000}
shift $(( $# < 2 ? $# : 2 ))
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
"$bin" serve --listen "127.0.0.1:$port" --publish-socket "$sock" 2>"$dir/server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done

case $transport in
  ws)  url="ws://127.0.0.1:$port/ws?topic=idle" ;;
  sse) url="http://127.0.0.1:$port/sse?topic=idle" ;;
  *) echo "transport must be ws or sse" >&2; exit 2 ;;
esac
"$bin" bench idle --url "$url" -c "$conns" --source-ips 4 --server-pid "$server" --hold "${HOLD:-5s}" "$@"
