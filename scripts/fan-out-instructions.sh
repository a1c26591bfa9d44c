#!/usr/bin/env bash
# Instructions per subscriber of the fan-out path (publish, queue to each outbox, flush),
# counted by cachegrind: steady on a loaded machine, where wall-clock micro-benchmarks
# move by ±10 %. Compare revisions by running it on each.
#
#   scripts/fan-out-instructions.sh [MESSAGES]     # default 200; needs valgrind
#
# Prints, for WebSocket and SSE subscribers, (instructions with MESSAGES messages −
# instructions with none) / (MESSAGES × 10,000 subscribers).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
messages=${1:-200}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
bin=$(bench_executable fan_out_instructions)
count() { # transport messages [json1k] -> instructions
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$bin" "$@" 2>&1 |
    awk '/I *refs/ { gsub(",", "", $4); print $4 }'
}
for transport in ws sse; do
  base=$(count "$transport" 0)
  total=$(count "$transport" "$messages")
  awk -v t="$transport" -v a="$base" -v b="$total" -v m="$messages" \
    'BEGIN { printf "%-3s %.1f instructions per subscriber per message\n", t, (b - a) / (m * 10000) }'
done
# 1 KiB of typical JSON per message, WebSocket plain against permessage-deflate
# (compressed once per message for the 10,000).
if [ "${DEFLATE:-1}" = 1 ]; then
  for transport in ws ws-deflate; do
    base=$(count "$transport" 0)
    total=$(count "$transport" "$messages" json1k)
    awk -v t="$transport" -v a="$base" -v b="$total" -v m="$messages" \
      'BEGIN { printf "%-10s 1 KiB JSON: %.1f instructions per subscriber per message\n", t, (b - a) / (m * 10000) }'
  done
fi
