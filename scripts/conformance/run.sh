#!/usr/bin/env bash
# WebSocket conformance of `ringcast serve --echo`, diffed against expected.json.
#
#   scripts/conformance/run.sh [auto|autobahn|builtin] [conformance.py options...]
#
# Builds the release binary, starts it with --echo --max-message-bytes 16MiB on a free
# port, runs the suite, stops the server; exits non-zero on any regression.
#
# Suites: `autobahn` is the real Autobahn|Testsuite fuzzing client (cases 1-7, 9, 10,
# and 12-13 with permessage-deflate; about 5-10 minutes, 12-13 being most of it).
# It needs Python 2.7: set AUTOBAHN_WSTEST to a `wstest`, or PYTHON2
# to a python2.7 (else one is looked for on PATH and in pyenv), and a virtualenv with
# `autobahntestsuite` from PyPI is made once in target/autobahn/venv. `builtin` is our
# own Python 3 (std lib) re-implementation of a subset of the cases (about 15 s).
# `auto` (the default) runs Autobahn when Python 2.7 is found, else builtin.
#
# Examples: run.sh; run.sh builtin --cases '6.4.*'; run.sh autobahn --write-expected
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/scripts/conformance
suite=auto
case "${1:-}" in
auto | autobahn | builtin) suite=$1; shift ;;
esac

find_python2() {
    local c
    for c in "${PYTHON2:-}" python2.7 python2 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2.7; do
        [ -n "$c" ] || continue
        if "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' >/dev/null 2>&1; then
            command -v "$c"
            return 0
        fi
    done
    return 1
}

find_wstest() {
    local venv=$root/target/autobahn/venv py2
    if [ -n "${AUTOBAHN_WSTEST:-}" ]; then echo "$AUTOBAHN_WSTEST"; return 0; fi
    if command -v wstest >/dev/null 2>&1; then command -v wstest; return 0; fi
    if [ -x "$venv/bin/wstest" ]; then echo "$venv/bin/wstest"; return 0; fi
    py2=$(find_python2) || return 1
    echo "setting up Autobahn|Testsuite in $venv (once)" >&2
    "$py2" -m virtualenv --version >/dev/null 2>&1 ||
        "$py2" -m pip install -q --user 'virtualenv<20.22' >&2 || return 1
    "$py2" -m virtualenv -q "$venv" >&2 &&
        "$venv/bin/pip" install -q autobahntestsuite >&2 || return 1
    echo "$venv/bin/wstest"
}

wstest=
if [ "$suite" != builtin ]; then
    if wstest=$(find_wstest); then
        suite=autobahn
    elif [ "$suite" = autobahn ]; then
        echo "Autobahn|Testsuite needs Python 2.7 (set PYTHON2 or AUTOBAHN_WSTEST)" >&2
        exit 2
    else
        echo "no Python 2.7 here: running the builtin suite" >&2
        suite=builtin
    fi
fi

cd "$root"
cargo build --release --quiet
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RINGCAST_CORES=${RINGCAST_CORES:-1} "${CARGO_TARGET_DIR:-$root/target}/release/ringcast" serve --echo \
    --max-message-bytes 16MiB --listen "127.0.0.1:$port" \
    --publish-socket "$work/ringcast.sock" >"$work/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$port" <<'PY'
import socket, sys, time
end = time.monotonic() + 10
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > end:
            sys.exit("server did not start listening within 10 s")
        time.sleep(0.05)
PY

args=(--suite "$suite" --url "ws://127.0.0.1:$port/echo")
if [ "$suite" = autobahn ]; then
    args+=(--wstest "$wstest" --report "$root/target/autobahn/report")
fi
status=0
python3 "$here/conformance.py" "${args[@]}" "$@" || status=$?
if ! kill -0 "$server" 2>/dev/null; then
    echo "the server died during the run:" >&2
    tail -20 "$work/server.log" >&2
    status=1
fi
exit "$status"
