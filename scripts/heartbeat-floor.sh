#!/usr/bin/env bash
# The kernel's floor for a heartbeat (issue #19): one 3-byte write a second to each of
# N idle loopback connections, in 10 ms ticks, from CPU 0, with the receivers in another
# process on the last CPU; the sender's CPU per write, as one system call each and as
# one io_uring submission per tick. Builds benches/heartbeat_floor.rs and runs it.
#
#   scripts/heartbeat-floor.sh [--clients 15000] [--seconds 5] [--runs 3]
#
# Compare with ringcast's CPU per heartbeat at the same scale:
#   SERVERS=ringcast-c1 SCENARIOS=heartbeat-sse PINNED=1 scripts/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh
bin=$(bench_executable heartbeat_floor)
[ -n "$bin" ] || { echo "cargo bench --bench heartbeat_floor --no-run failed" >&2; exit 1; }
exec "$bin" "$@"
