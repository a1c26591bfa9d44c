#!/usr/bin/env bash
# Soak: a release ringcast under churning, resuming subscribers for MINUTES, sampled every
# 10 s; fails when memory drifts or the connection gauge disagrees with the clients held.
#
#   scripts/soak.sh MINUTES
#
# Load (scripts/lib/soak_driver.py, Python 3 stdlib, raw sockets, all on 127.0.0.1):
#   - CLIENTS subscribers (default 400), half SSE, half WebSocket, one topic each: 70 % on a
#     per-user topic `user:<n>` (each user gets at most 5 messages, one per ~20 s), the rest
#     on 4 shared topics (`shared-<k>`, 5 messages/s each);
#   - churn: 20 % of the clients per minute drop and come back 0.2–3 s later with their last
#     id (SSE `Last-Event-ID`, WS `lastEventId`); a quarter of the user clients come back as
#     a new user (a topic never seen before), so user topics keep arriving;
#   - a stalled reader every 30 s: subscribes to `firehose` (100 × 2 KB messages/s) with a
#     4 KiB receive buffer and reads nothing for 45 s; then it reads everything, and its
#     stream must end there (the server cut it as a slow consumer). A client cannot see the
#     cut earlier: the server's FIN waits behind the unread bytes in a zero window;
#   - every message carries a per-topic sequence, so resumes are checked too: a duplicate,
#     or a hole not announced by `ringcast.gap`, fails the run.
#
# Samples (every 10 s; a line on stdout and a row of target/soak/soak-<time>.csv): server
# RSS (VmRSS) and fds (/proc/PID/fd), the sum of `ringcast_connections` against the clients
# the driver holds, `ringcast_history_bytes`, `ringcast_home_topics`, the load counters.
#
# Rules (exit 1 when one fails):
#   - RSS drift: the warm-up is the first 20 % of the run, at least 1 minute. The baseline is
#     the median RSS of the second half of the warm-up (the first half is the ramp: clients
#     connecting, histories filling), the figure the median of the last 20 % of the samples
#     (at least 3); the run fails when the figure exceeds the baseline by more than 5 %.
#     Medians ignore a single sample that lands on a transient (a stalled reader's outbox
#     holds up to --max-outbox-bytes before its cut, 1 MiB: ~7 % of a 14 MiB server); a leak
#     raises every late sample, the median with them. The server runs with `--history 200`
#     (SERVER_FLAGS) so that every shared history reaches its bound within the warm-up; what
#     grows after that is state the server should not keep. User topics arrive all the time
#     and are forgotten --history-ttl after their last message (default 1 h): for a run of an
#     hour or less pass a shorter TTL, e.g. SERVER_FLAGS="--history 200 --history-ttl 5m",
#     or memory legitimately grows for the whole run.
#   - Gauge: before each sample the driver quiesces (no connection starts, every handshake in
#     flight finishes, 0.3 s for the server to see the closes); the gauge must then equal the
#     clients held, exactly: the open regular clients plus the stalled readers not yet
#     drained, less those the server has cut (its ringcast_slow_consumers_total less the slow
#     cuts the driver has seen: only reading tells a stalled reader it was cut, and each cut
#     is confirmed when the reader drains). Up to 4 readings 0.3 s apart absorb a close still
#     on its way; a difference after that fails.
#   - Resumes: no duplicate, no unannounced loss; every stalled reader cut within 45 s, and
#     at least one of them.
#
# Regular clients that the server closes (by reason: slow, idle, other) are counted and
# printed, and come back with their last id; they fail no rule.
#
# Environment: CLIENTS, PORT (default: a free one), BUILD=0 (skip `cargo build --release`),
# CORES (server cores, default 2), SERVER_FLAGS (default `--history 200`), DRIVER_FLAGS
# (extra flags of soak_driver.py, see its --help).
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"
cd "$ROOT"

minutes=${1:?usage: scripts/soak.sh MINUTES}
[[ $minutes =~ ^[0-9]+([.][0-9]+)?$ ]] || die "MINUTES must be a number, got '$minutes'"
[[ "${BUILD:-1}" == 1 ]] && cargo build --release --quiet
bin=${CARGO_TARGET_DIR:-$ROOT/target}/release/ringcast
[[ -x $bin ]] || die "no release binary at $bin"

RUN_DIR=$(mktemp -d)
trap 'stop_all; rm -rf "$RUN_DIR"' EXIT
out_dir=$ROOT/target/soak
mkdir -p "$out_dir"
csv=$out_dir/soak-$(date +%Y%m%d-%H%M%S).csv
port=${PORT:-$(free_port)}
sock=$RUN_DIR/ringcast.sock
# shellcheck disable=SC2086 # SERVER_FLAGS is a list of flags
pid=$(start_ringcast "$bin" "${CORES:-2}" "$port" "$sock" "$RUN_DIR/server.log" \
    ${SERVER_FLAGS:---history 200})
log "soak: ringcast pid $pid on 127.0.0.1:$port for $minutes min, ${CLIENTS:-400} clients; CSV $csv"

status=0
# shellcheck disable=SC2086 # DRIVER_FLAGS is a list of flags
python3 "$ROOT/scripts/lib/soak_driver.py" --addr "127.0.0.1:$port" --socket "$sock" \
    --pid "$pid" --minutes "$minutes" --csv "$csv" --clients "${CLIENTS:-400}" \
    ${DRIVER_FLAGS:-} || status=$?
kill -0 "$pid" 2>/dev/null || { tail -20 "$RUN_DIR/server.log" >&2; die "the server died"; }
if [[ $status == 0 ]]; then log "soak: PASS ($csv)"; else log "soak: FAIL ($csv)"; fi
exit "$status"
