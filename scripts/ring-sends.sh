#!/usr/bin/env bash
# One flush to N loopback TCP clients: one sendmsg/writev system call per socket (the
# server today) against the same writes as one batch of io_uring SQEs on registered
# files (issue #14, item 3). Builds benches/ring_sends.rs and runs it pinned to one CPU.
#
#   scripts/ring-sends.sh [ARGS...]      # e.g. --clients 1000 --rounds 20 --runs 5
#                                        #      --cases 1x64,16x64,1x1024 --sq 1024
#
# Prints, per case (messages x bytes per write) and variant: ns per send (median and
# min over all flushes, and the spread of the per-run medians), the median of the
# per-round ratio to the syscall sendmsg, and CPU ns per send (getrusage user+sys).
# Wall times move with the load of a shared machine; the ratios and CPU figures are
# the ones to compare. Needs `ulimit -n` above 2 x clients.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
bin=$(bench_executable ring_sends)
[ -n "$bin" ] || { echo "cargo bench --bench ring_sends --no-run failed" >&2; exit 1; }
pin=()
if command -v taskset >/dev/null && [ "$(nproc)" -gt 1 ]; then
  pin=(taskset -c "$(($(nproc) - 1))")
fi
exec "${pin[@]}" "$bin" "$@"
