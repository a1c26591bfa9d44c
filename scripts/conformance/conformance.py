#!/usr/bin/env python3
"""WebSocket conformance of `ringcast serve --echo`, diffed against expected.json.

Two suites give results under the same Autobahn|Testsuite case ids:

  autobahn  the real Autobahn|Testsuite fuzzing client (`wstest -m fuzzingclient`,
            Python 2.7), cases 1-7, 9, 10, and 12-13 (permessage-deflate); its
            report's index.json is read back.
  builtin   our own raw-socket re-implementation (Python 3, std lib only) of a subset
            of those cases with Autobahn's expectations, for machines without
            Python 2 (CI). Fast: about 15 s. Its 12.x and 13.1-13.7 cases follow
            Autobahn's (compressed echoes; offers and the answer); 13.8.x (offers
            that must be declined without failing the handshake) and 13.9.x (RSV1
            misplaced, corrupt data, a deflate bomb, a final block) are ringcast's own.

Each case ends OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED or FAILED (Autobahn's
words; a case's result is the worse of its message behaviour and its close
behaviour). The results are diffed against expected.json (STYLE rule 15): a case
that does worse than expected, or an expected case missing from a full Autobahn run,
is a regression and the exit status is 1. Better than expected is reported so the
file can be updated with --write-expected.

Usage:
  conformance.py --url ws://127.0.0.1:9001/echo [--suite builtin|autobahn]
                 [--wstest PATH] [--cases 1.*,6.4.*] [--expected FILE]
                 [--write-expected] [--report DIR]
"""

import argparse
import base64
import fnmatch
import hashlib
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
FAMILIES = ["1", "2", "3", "4", "5", "6", "7", "9", "10", "12", "13"]
RANK = {"OK": 4, "NON-STRICT": 3, "INFORMATIONAL": 2, "UNIMPLEMENTED": 1, "FAILED": 0}


def worse(a, b):
    return a if RANK.get(a, 0) <= RANK.get(b, 0) else b


# ---- the real Autobahn|Testsuite -------------------------------------------------


def run_autobahn(url, wstest, patterns, report_dir):
    spec = {
        "outdir": os.path.join(report_dir, "servers"),
        "servers": [{"agent": "ringcast", "url": url}],
        "cases": patterns,
        "exclude-cases": [],
        "exclude-agent-cases": {},
    }
    spec_path = os.path.join(report_dir, "fuzzingclient.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f, indent=2)
    log_path = os.path.join(report_dir, "wstest.log")
    with open(log_path, "w") as log:
        rc = subprocess.call(
            [wstest, "-m", "fuzzingclient", "-s", spec_path], cwd=report_dir,
            stdout=log, stderr=subprocess.STDOUT,
        )
    index_path = os.path.join(report_dir, "servers", "index.json")
    if rc != 0 or not os.path.exists(index_path):
        sys.exit("wstest failed (exit %d); see %s" % (rc, log_path))
    with open(index_path) as f:
        index = json.load(f)
    results = {}
    for case_id, r in index["ringcast"].items():
        results[case_id] = worse(r["behavior"], r["behaviorClose"])
    return results


# ---- our own client: raw frames, chops and timing ---------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class Closed(Exception):
    pass


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None):
    """A client frame; `length` overrides the announced length (header only)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + xor(payload, key)


def xor(data, key):
    if not data:
        return b""
    reps = (len(data) + 3) // 4
    k = int.from_bytes((key * reps)[: len(data)], "big")
    return (int.from_bytes(data, "big") ^ k).to_bytes(len(data), "big")


def deflate(payload, bits=15, finish=False):
    """Raw DEFLATE as a permessage-deflate client sends it (RFC 7692 §7.2.1)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -bits)
    if finish:
        return c.compress(payload) + c.flush(zlib.Z_FINISH)
    out = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


class Client:
    def __init__(self, url, timeout=5.0, offer=None):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
            "Sec-WebSocket-Version: 13\r\n%s\r\n" % (
                u.path or "/", u.netloc, key,
                "Sec-WebSocket-Extensions: %s\r\n" % offer if offer else "")
        ).encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise Closed("closed during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        if not head.startswith(b"HTTP/1.1 101") or accept.encode() not in head:
            raise Closed("bad handshake answer: %r" % head[:200])
        self.events = []  # ("message", opcode, payload) / ("ping"|"pong", payload) / ("close", code, reason)
        self.closed_tcp = False
        self.close_frame = None
        self.sent_close = False
        self.frag = None
        # permessage-deflate: the answer, and server messages that came compressed.
        self.extensions = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-extensions":
                self.extensions = value.strip().decode()
        self.deflate = bool(self.extensions and self.extensions.startswith("permessage-deflate"))
        self.compressed = 0
        self.frag_rsv1 = False

    def send(self, data, chop=None, pause=0.0):
        try:
            if not chop:
                self.sock.sendall(data)
                return
            for i in range(0, len(data), chop):
                self.sock.sendall(data[i:i + chop])
                if pause:
                    time.sleep(pause)
        except OSError:
            pass  # the server may fail the connection while we send; judged later

    def send_frame(self, *a, chop=None, pause=0.0, **kw):
        self.send(frame(*a, **kw), chop=chop, pause=pause)

    def close(self, code=1000, reason=b""):
        body = b"" if code is None else struct.pack(">H", code) + reason
        self.sent_close = True
        self.send_frame(OP_CLOSE, body)

    def _parse(self):
        """Frames in self.buf into self.events; server frames are unmasked."""
        while True:
            b = self.buf
            if len(b) < 2:
                return
            fin, op, n, at = b[0] & 0x80, b[0] & 0x0F, b[1] & 0x7F, 2
            rsv1 = bool(b[0] & 0x40)
            if b[1] & 0x80 or b[0] & 0x30 or (
                    rsv1 and (not self.deflate or op not in (OP_TEXT, OP_BINARY))):
                self.events.append(("bad-frame", b[:2]))
            if n == 126:
                if len(b) < 4:
                    return
                n, at = struct.unpack(">H", b[2:4])[0], 4
            elif n == 127:
                if len(b) < 10:
                    return
                n, at = struct.unpack(">Q", b[2:10])[0], 10
            if len(b) < at + n:
                return
            payload, self.buf = b[at:at + n], b[at + n:]
            if op == OP_CLOSE:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                self.close_frame = (code, payload[2:])
                self.events.append(("close", code))
            elif op == OP_PING:
                self.events.append(("ping", payload))
            elif op == OP_PONG:
                self.events.append(("pong", payload))
            elif op in (OP_TEXT, OP_BINARY) and self.frag is None:
                self.frag_rsv1 = rsv1
                if fin:
                    self.events.append(("message", op, self._inflate(payload)))
                else:
                    self.frag = (op, payload)
            elif op == OP_CONT and self.frag is not None:
                self.frag = (self.frag[0], self.frag[1] + payload)
                if fin:
                    self.events.append(("message", self.frag[0], self._inflate(self.frag[1])))
                    self.frag = None
            else:
                self.events.append(("bad-frame", b[:2]))

    def _inflate(self, payload):
        """A whole message's payload, inflated when its first frame had RSV1 (§7.2.2)."""
        if not self.frag_rsv1:
            return payload
        self.compressed += 1
        try:
            return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
        except zlib.error as e:
            self.events.append(("bad-frame", str(e).encode()))
            return b""

    def wait(self, seconds, until=None):
        """Reads for up to `seconds`, or until `until(events)` holds or TCP closes."""
        end = time.monotonic() + seconds
        while not self.closed_tcp and not (until and until(self.events)):
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                return False
            except OSError:
                chunk = b""
            if not chunk:
                self.closed_tcp = True
                break
            self.buf += chunk
            self._parse()
        return True

    def count(self, kind):
        return sum(1 for e in self.events if e[0] == kind)

    def finish(self, closed_by_me, codes, timeout=5.0):
        """Autobahn's close phase: when `closed_by_me`, we send Close 1000 and expect
        its echo then the server's TCP close; otherwise we expect the server's Close
        with a code in `codes`, answer it, and expect the TCP close."""
        if closed_by_me and self.close_frame is None and not self.closed_tcp:
            self.close()
        self.wait(timeout, until=lambda ev: any(e[0] == "close" for e in ev))
        if self.close_frame is not None and not self.sent_close and not self.closed_tcp:
            self.close(self.close_frame[0] if self.close_frame[0] else 1000)
        self.wait(timeout)
        self.sock.close()
        if self.close_frame is None:
            return "FAILED", "no Close frame (tcp closed: %s)" % self.closed_tcp
        code = self.close_frame[0]
        if code not in codes:
            return "FAILED", "close code %s, expected one of %s" % (code, codes)
        if not self.closed_tcp:
            return "FAILED", "server did not close TCP"
        return "OK", ""


CASES = {}


def case(case_id):
    def register(fn):
        CASES[case_id] = fn
        return fn
    return register


def messages(client):
    return [(e[1], e[2]) for e in client.events if e[0] == "message"]


def judge(behavior, close):
    return worse(behavior[0], close[0]), "; ".join(x for x in (behavior[1], close[1]) if x)


def echo_case(url, op, payload, chop=None, frag=None):
    """Send one message (optionally in fragments of `frag` bytes, optionally chopped
    into TCP writes of `chop` bytes) and expect it echoed, then a clean close."""
    c = Client(url)
    if frag:
        parts = [payload[i:i + frag] for i in range(0, len(payload), frag)] or [b""]
        wire = b"".join(
            frame(op if i == 0 else OP_CONT, p, fin=(i == len(parts) - 1))
            for i, p in enumerate(parts))
    else:
        wire = frame(op, payload)
    c.send(wire, chop=chop)
    c.wait(10, until=lambda ev: any(e[0] == "message" for e in ev))
    got = messages(c)
    behavior = ("OK", "") if got == [(op, payload)] else (
        "FAILED", "echo mismatch: %d messages" % len(got))
    return judge(behavior, c.finish(True, [1000]))


def fail_case(url, send, codes=(1002,), expect_before=()):
    """Send something the server must fail the connection on; messages echoed before
    the violation must match `expect_before`."""
    c = Client(url)
    send(c)
    c.wait(3, until=lambda ev: any(e[0] == "close" for e in ev))
    got = messages(c)
    behavior = ("OK", "") if got == list(expect_before) else (
        "FAILED", "got %d messages before the close" % len(got))
    return judge(behavior, c.finish(False, list(codes)))


# 1.x: text and binary messages of every size class, one write or chopped.
for _op, _fam in ((OP_TEXT, "1.1"), (OP_BINARY, "1.2")):
    _fill = b"*" if _op == OP_TEXT else b"\xfe"
    for _i, _n in enumerate([0, 125, 126, 127, 128, 65535, 65536], 1):
        case("%s.%d" % (_fam, _i))(
            lambda url, op=_op, n=_n, fill=_fill: echo_case(url, op, fill * n))
    case("%s.8" % _fam)(
        lambda url, op=_op, fill=_fill: echo_case(url, op, fill * 65535, chop=997))


# 2.x: pings and pongs.
def ping_case(url, payloads, chop=None, pause=0.0, unsolicited_pong=None):
    c = Client(url)
    if unsolicited_pong is not None:
        c.send_frame(OP_PONG, unsolicited_pong)
    for p in payloads:
        c.send_frame(OP_PING, p, chop=chop, pause=pause)
    c.wait(3, until=lambda ev: sum(1 for e in ev if e[0] == "pong") >= len(payloads))
    pongs = [e[1] for e in c.events if e[0] == "pong"]
    if pongs == list(payloads):
        behavior = ("OK", "")
    elif pongs and pongs == list(payloads)[-len(pongs):] and len(payloads) > 1:
        behavior = ("NON-STRICT", "answered only the latest of %d pings" % len(payloads))
    else:
        behavior = ("FAILED", "pongs %r" % [p[:8] for p in pongs])
    return judge(behavior, c.finish(True, [1000]))


case("2.1")(lambda url: ping_case(url, [b""]))
case("2.2")(lambda url: ping_case(url, [b"Hello, world!"]))
case("2.3")(lambda url: ping_case(url, [b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff"]))
case("2.4")(lambda url: ping_case(url, [b"\xfe" * 125]))
case("2.5")(lambda url: fail_case(url, lambda c: c.send_frame(OP_PING, b"\xfe" * 126)))
case("2.6")(lambda url: ping_case(url, [b"\xfe" * 125], chop=1, pause=0.001))
case("2.7")(lambda url: ping_case(url, [], unsolicited_pong=b""))
case("2.8")(lambda url: ping_case(url, [], unsolicited_pong=b"unsolicited pong payload"))
case("2.9")(lambda url: ping_case(url, [b"ping payload"], unsolicited_pong=b"unsolicited pong payload"))
case("2.10")(lambda url: ping_case(url, [b"payload-%d" % i for i in range(10)]))
case("2.11")(lambda url: ping_case(url, [b"payload-%d" % i for i in range(10)], chop=1))


# 3.x: reserved bits. The echo of a valid message sent before the bad frame counts.
def rsv_case(url, rsv, before, bad, after):
    def send(c):
        if before:
            c.send_frame(OP_TEXT, b"Hello, world!")
        c.send(bad)
        if after:
            c.send_frame(OP_PING, b"")
    expect = [(OP_TEXT, b"Hello, world!")] if before else []
    return fail_case(url, send, expect_before=expect)


case("3.1")(lambda url: rsv_case(url, 1, False, frame(OP_TEXT, b"Hello, world!", rsv=1), False))
case("3.2")(lambda url: rsv_case(url, 2, True, frame(OP_TEXT, b"Hello, world!", rsv=2), True))
case("3.3")(lambda url: rsv_case(url, 3, True, frame(OP_TEXT, b"Hello, world!", rsv=3), True))
case("3.4")(lambda url: rsv_case(url, 4, True, frame(OP_TEXT, b"Hello, world!", rsv=4), True))
case("3.5")(lambda url: rsv_case(url, 5, False, frame(OP_BINARY, b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff", rsv=5), False))
case("3.6")(lambda url: rsv_case(url, 6, False, frame(OP_PING, b"Hello, world!", rsv=6), False))
case("3.7")(lambda url: rsv_case(url, 7, False, frame(OP_CLOSE, b"", rsv=7), False))


# 4.x: reserved opcodes, with and without a payload, after a valid message.
for _i, _op in enumerate([3, 4, 5, 6, 7], 1):
    case("4.1.%d" % _i)(lambda url, op=_op, i=_i: fail_case(
        url, lambda c: (c.send_frame(OP_TEXT, b"Hello, world!") if i > 2 else None,
                        c.send_frame(op, b"reserved opcode payload" if i % 2 == 0 else b""),
                        c.send_frame(OP_PING, b"") if i > 2 else None),
        expect_before=[(OP_TEXT, b"Hello, world!")] if i > 2 else []))
for _i, _op in enumerate([11, 12, 13, 14, 15], 1):
    case("4.2.%d" % _i)(lambda url, op=_op, i=_i: fail_case(
        url, lambda c: (c.send_frame(OP_TEXT, b"Hello, world!") if i > 2 else None,
                        c.send_frame(op, b"reserved opcode payload" if i % 2 == 0 else b""),
                        c.send_frame(OP_PING, b"") if i > 2 else None),
        expect_before=[(OP_TEXT, b"Hello, world!")] if i > 2 else []))


# 5.x: fragmentation.
case("5.1")(lambda url: fail_case(url, lambda c: (
    c.send_frame(OP_PING, b"fragment1", fin=False), c.send_frame(OP_CONT, b"fragment2"))))
case("5.2")(lambda url: fail_case(url, lambda c: (
    c.send_frame(OP_PONG, b"fragment1", fin=False), c.send_frame(OP_CONT, b"fragment2"))))


def fragments_case(url, op, chop=None, ping=False, pause=0.0):
    c = Client(url)
    c.send_frame(op, b"fragment1", fin=False, chop=chop)
    if ping:
        c.send_frame(OP_PING, b"ping payload", chop=chop)
        if pause:
            c.wait(pause)
    c.send_frame(OP_CONT, b"fragment2", chop=chop)
    c.wait(3, until=lambda ev: any(e[0] == "message" for e in ev))
    want = [(op, b"fragment1fragment2")]
    ok = messages(c) == want and (not ping or [e[1] for e in c.events if e[0] == "pong"] == [b"ping payload"])
    # Autobahn 5.6: the pong must come before the echoed message.
    if ping and ok:
        kinds = [e[0] for e in c.events if e[0] in ("pong", "message")]
        ok = kinds == ["pong", "message"]
    behavior = ("OK", "") if ok else ("FAILED", "events %r" % [e[0] for e in c.events])
    return judge(behavior, c.finish(True, [1000]))


case("5.3")(lambda url: fragments_case(url, OP_TEXT))
case("5.4")(lambda url: fragments_case(url, OP_TEXT, pause=1.0))
case("5.5")(lambda url: fragments_case(url, OP_TEXT, chop=1))
case("5.6")(lambda url: fragments_case(url, OP_TEXT, ping=True))
case("5.7")(lambda url: fragments_case(url, OP_TEXT, ping=True, pause=1.0))
case("5.8")(lambda url: fragments_case(url, OP_TEXT, ping=True, chop=1))
case("5.9")(lambda url: fail_case(url, lambda c: (
    c.send_frame(OP_CONT, b"non-continuation payload"), c.send_frame(OP_TEXT, b"Hello, world!"))))
case("5.10")(lambda url: fail_case(url, lambda c: (
    c.send_frame(OP_CONT, b"non-continuation payload", chop=1),
    c.send_frame(OP_TEXT, b"Hello, world!", chop=1))))
case("5.12")(lambda url: fail_case(url, lambda c: (
    c.send_frame(OP_CONT, b"non-continuation payload", fin=False),
    c.send_frame(OP_TEXT, b"Hello, world!"))))
case("5.15")(lambda url: fail_case(url, lambda c: (
    c.send_frame(OP_TEXT, b"fragment1", fin=False), c.send_frame(OP_CONT, b"fragment2"),
    c.send_frame(OP_CONT, b"fragment3", fin=False), c.send_frame(OP_TEXT, b"fragment4")),
    expect_before=[(OP_TEXT, b"fragment1fragment2")]))
case("5.18")(lambda url: fail_case(url, lambda c: (
    c.send_frame(OP_TEXT, b"fragment1", fin=False), c.send_frame(OP_TEXT, b"fragment2"))))


def five_fragments_with_pings(url, chop=None):
    c = Client(url)
    for i in range(1, 6):
        if i in (2, 4):
            c.send_frame(OP_PING, b"pongme %d!" % (i // 2), chop=chop)
        c.send_frame(OP_TEXT if i == 1 else OP_CONT, b"fragment%d" % i, fin=(i == 5), chop=chop)
        if i in (1, 3):
            c.wait(1.0)
    c.wait(3, until=lambda ev: any(e[0] == "message" for e in ev))
    ok = (messages(c) == [(OP_TEXT, b"".join(b"fragment%d" % i for i in range(1, 6)))]
          and [e[1] for e in c.events if e[0] == "pong"] == [b"pongme 1!", b"pongme 2!"])
    behavior = ("OK", "") if ok else ("FAILED", "events %r" % c.events[:6])
    return judge(behavior, c.finish(True, [1000]))


case("5.19")(lambda url: five_fragments_with_pings(url))
case("5.20")(lambda url: five_fragments_with_pings(url, chop=1))


# 6.x: UTF-8. Valid texts are echoed; invalid ones fail with 1007.
VALID_UTF8 = [b"", b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", b"\x7f", b"\xdf\xbf",
              b"\xef\xbf\xbf", b"\xf4\x8f\xbf\xbf", b"\xef\xbb\xbfBOM", b"\xee\x80\x80"]
INVALID_UTF8 = [b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", b"\x80",
                b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf4\x90\x80\x80", b"\xed\xa0\x80",
                b"\xf8\x88\x80\x80\x80", b"\xfe", b"\xce"]
# Autobahn's 6.x cases send hundreds of such payloads; the builtin suite sends one of
# each kind (boundaries, BOM, private use; overlong, surrogate, out of range, bare
# continuation, truncated) under its own ids, one byte per TCP write.
for _i, _p in enumerate(VALID_UTF8, 1):
    case("6.b.valid.%d" % _i)(lambda url, p=_p: echo_case(url, OP_TEXT, p, frag=1))
for _i, _p in enumerate(INVALID_UTF8, 1):
    case("6.b.invalid.%d" % _i)(lambda url, p=_p: fail_case(
        url, lambda c: c.send_frame(OP_TEXT, p, chop=1), codes=(1007,)))


def fail_fast(url, one_frame, cut1, cut2):
    """Autobahn 6.4.1-6.4.4: the message is sent in three parts, `[:cut1]` (valid),
    wait 1 s ("timeout A"), `[cut1:cut2]` (makes it invalid), wait 1 s ("timeout B"),
    then the rest; as three frames, or as three writes of one frame (`one_frame`).
    OK when the 1007 arrives within the second wait, before the rest is sent;
    NON-STRICT when it arrives only after the rest."""
    p = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64"
    c = Client(url)
    whole = frame(OP_TEXT, p)
    head = len(whole) - len(p)
    parts = [(OP_TEXT, p[:cut1], False), (OP_CONT, p[cut1:cut2], False), (OP_CONT, p[cut2:], True)]
    writes = [whole[:head + cut1], whole[head + cut1:head + cut2], whole[head + cut2:]]

    def send(i):
        if one_frame:
            c.send(writes[i])
        else:
            c.send_frame(parts[i][0], parts[i][1], fin=parts[i][2])

    send(0)
    if c.wait(1.0, until=lambda ev: any(e[0] == "close" for e in ev)):
        return judge(("FAILED", "failed on the valid first part"), c.finish(False, [1007]))
    send(1)
    fast = c.wait(1.0, until=lambda ev: any(e[0] == "close" for e in ev))
    if not fast:
        send(2)
    behavior = ("OK", "") if fast else ("NON-STRICT", "1007 only after the rest")
    return judge(behavior, c.finish(False, [1007]))


case("6.4.1")(lambda url: fail_fast(url, False, 11, 15))
case("6.4.2")(lambda url: fail_fast(url, False, 12, 13))
case("6.4.3")(lambda url: fail_fast(url, True, 11, 15))
case("6.4.4")(lambda url: fail_fast(url, True, 12, 13))


# 7.x: the close handshake.
def after_close_case(url, then):
    c = Client(url)
    c.send_frame(OP_CLOSE, struct.pack(">H", 1000))
    c.sent_close = True
    then(c)
    c.wait(3)
    behavior = ("OK", "") if not messages(c) and not c.count("pong") else (
        "FAILED", "answered frames sent after our Close")
    return judge(behavior, c.finish(True, [1000]))


def close_echo_case(url, body, codes):
    c = Client(url)
    c.send_frame(OP_CLOSE, body)
    c.sent_close = True
    return judge(("OK", ""), c.finish(True, codes))


case("7.1.1")(lambda url: (lambda c: (c.send_frame(OP_TEXT, b"Hello World!"),
                                      c.wait(3, until=lambda ev: ev),
                                      judge(("OK", "") if messages(c) else ("FAILED", "no echo"),
                                            c.finish(True, [1000])))[-1])(Client(url)))
case("7.1.2")(lambda url: after_close_case(url, lambda c: c.send_frame(OP_CLOSE, struct.pack(">H", 1000))))
case("7.1.3")(lambda url: after_close_case(url, lambda c: c.send_frame(OP_PING, b"")))
case("7.1.4")(lambda url: after_close_case(url, lambda c: c.send_frame(OP_TEXT, b"Hello World!")))
case("7.1.5")(lambda url: after_close_case(url, lambda c: (
    c.send_frame(OP_CONT, b"fragment2", fin=False), c.send_frame(OP_CONT, b"fragment3"))))
case("7.1.6")(lambda url: (lambda c: (
    c.send_frame(OP_TEXT, b"BAsd7&jh23" * 26214), c.send_frame(OP_CLOSE, struct.pack(">H", 1000)),
    setattr(c, "sent_close", True), c.send_frame(OP_PING, b"Hello World!"),
    judge(("INFORMATIONAL", ""), c.finish(True, [1000])))[-1])(Client(url)))
case("7.3.1")(lambda url: close_echo_case(url, b"", [1000]))
case("7.3.2")(lambda url: fail_case(url, lambda c: c.send_frame(OP_CLOSE, b"a")))
case("7.3.3")(lambda url: close_echo_case(url, struct.pack(">H", 1000), [1000]))
case("7.3.4")(lambda url: close_echo_case(url, struct.pack(">H", 1000) + b"Hello World!", [1000]))
case("7.3.5")(lambda url: close_echo_case(url, struct.pack(">H", 1000) + b"*" * 123, [1000]))
case("7.3.6")(lambda url: fail_case(url, lambda c: c.send_frame(OP_CLOSE, struct.pack(">H", 1000) + b"*" * 124)))
case("7.5.1")(lambda url: fail_case(
    url, lambda c: c.send_frame(OP_CLOSE, struct.pack(">H", 1000) + b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64"),
    codes=(1007,)))
for _i, _code in enumerate([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999], 1):
    case("7.7.%d" % _i)(lambda url, code=_code: close_echo_case(url, struct.pack(">H", code), [code]))
for _i, _code in enumerate([0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999], 1):
    case("7.9.%d" % _i)(lambda url, code=_code: fail_case(
        url, lambda c: c.send_frame(OP_CLOSE, struct.pack(">H", code))))
for _i, _code in enumerate([5000, 65535], 1):
    case("7.13.%d" % _i)(lambda url, code=_code: fail_case(
        url, lambda c: c.send_frame(OP_CLOSE, struct.pack(">H", code))))


# 9.x (a sample): one big message, and one in 64 KiB fragments.
case("9.1.4")(lambda url: echo_case(url, OP_TEXT, b"*" * (1 << 20)))
case("9.2.6")(lambda url: echo_case(url, OP_BINARY, bytes(range(256)) * (1 << 16)))
case("9.3.5")(lambda url: echo_case(url, OP_TEXT, b"*" * (4 << 20), frag=1 << 16))
case("9.4.9")(lambda url: echo_case(url, OP_BINARY, b"\xfe" * (4 << 20), frag=4 << 20))
case("9.6.1")(lambda url: echo_case(url, OP_TEXT, b"*" * (1 << 20), chop=64))

# 10.1.1: 65536 bytes of text, "auto-fragmented" by the client into 1300-byte frames.
case("10.1.1")(lambda url: echo_case(url, OP_TEXT, b"*" * 65536, frag=1300))


# 12.x: compressed messages echoed (Autobahn 12.1: text, 12.2: binary, by size;
# each message compressed by the client; the echo may come compressed or plain).
DEFLATE_OFFER = "permessage-deflate; client_no_context_takeover; client_max_window_bits"
_SIZES = [16, 64, 256, 1024, 4096, 8192, 16384, 32768, 65536, 131072]


def sample(op, n):
    """Compressible data like Autobahn's test files: JSON-ish text, or bytes."""
    text = b'{"id":%d,"name":"item","tags":["a","b"],"price":12.5,"ok":true},'
    if op == OP_TEXT:
        out = b"".join(text % i for i in range(n // 50 + 1))
    else:
        out = bytes(random.Random(n).getrandbits(8) & 0x3F for _ in range(n))
    return out[:n]


def deflate_echo_case(url, op, payload, offer=DEFLATE_OFFER, want_answer=None, frag=None,
                      chop=None, bits=15, finish=False):
    c = Client(url, offer=offer)
    if not c.deflate:
        c.finish(True, [1000])
        return "FAILED", "not negotiated: %r" % c.extensions
    if want_answer is not None and c.extensions != want_answer:
        c.finish(True, [1000])
        return "FAILED", "answer %r, expected %r" % (c.extensions, want_answer)
    z = deflate(payload, bits, finish)
    if frag:
        parts = [z[i:i + frag] for i in range(0, len(z), frag)] or [b""]
        wire = b"".join(
            frame(op if i == 0 else OP_CONT, p, fin=(i == len(parts) - 1), rsv=4 if i == 0 else 0)
            for i, p in enumerate(parts))
    else:
        wire = frame(op, z, rsv=4)
    c.send(wire, chop=chop)
    c.wait(10, until=lambda ev: any(e[0] in ("message", "bad-frame") for e in ev))
    got = messages(c)
    if c.count("bad-frame"):
        behavior = ("FAILED", "a bad frame from the server")
    elif got != [(op, payload)]:
        behavior = ("FAILED", "echo mismatch: %d messages" % len(got))
    else:
        behavior = ("OK", "echo %s" % ("compressed" if c.compressed else "plain"))
    return judge(behavior, c.finish(True, [1000]))


for _op, _fam in ((OP_TEXT, "12.1"), (OP_BINARY, "12.2")):
    for _i, _n in enumerate(_SIZES, 1):
        case("%s.%d" % (_fam, _i))(
            lambda url, op=_op, n=_n: deflate_echo_case(url, op, sample(op, n)))
# 12.3: fragmented compressed messages (RSV1 on the first frame only), chopped writes.
for _i, _n in enumerate([256, 4096, 65536], 1):
    case("12.3.%d" % _i)(lambda url, n=_n: deflate_echo_case(
        url, OP_TEXT, sample(OP_TEXT, n), frag=97, chop=1000))

# 13.1-13.7: the offers of Autobahn 13.x and the answer each must get.
_BASE = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
_OFFERS = [
    ("permessage-deflate", _BASE),
    ("permessage-deflate; client_no_context_takeover; client_max_window_bits", _BASE),
    ("permessage-deflate; client_max_window_bits; server_max_window_bits=9",
     _BASE + "; server_max_window_bits=9"),
    ("permessage-deflate; client_max_window_bits; server_max_window_bits=15", _BASE),
    ("permessage-deflate; client_no_context_takeover; client_max_window_bits=9; "
     "server_max_window_bits=9",
     _BASE + "; server_max_window_bits=9; client_max_window_bits=9"),
    ("permessage-deflate; server_no_context_takeover; client_max_window_bits=15", _BASE),
    ("permessage-deflate; client_no_context_takeover; server_max_window_bits=9, "
     "permessage-deflate; client_no_context_takeover, permessage-deflate",
     _BASE + "; server_max_window_bits=9"),
]
for _i, (_offer, _answer) in enumerate(_OFFERS, 1):
    for _j, _n in enumerate([64, 1024, 16384], 1):
        case("13.%d.%d" % (_i, _j))(lambda url, o=_offer, a=_answer, n=_n: deflate_echo_case(
            url, OP_TEXT, sample(OP_TEXT, n), offer=o, want_answer=a,
            bits=9 if "client_max_window_bits=9" in o else 15))


# 13.8.x (ringcast's own): offers to decline without failing the handshake (§5);
# the next acceptable offer, if any, is taken.
def decline_case(url, offer, taken):
    c = Client(url, offer=offer)
    ok = c.deflate == taken
    c.send_frame(OP_TEXT, b"Hello, world!")
    c.wait(3, until=lambda ev: any(e[0] == "message" for e in ev))
    behavior = ("OK", "") if ok and messages(c) == [(OP_TEXT, b"Hello, world!")] else (
        "FAILED", "answer %r for %r" % (c.extensions, offer))
    return judge(behavior, c.finish(True, [1000]))


for _i, (_offer, _taken) in enumerate([
        ("permessage-deflate; unknown_param", False),
        ("permessage-deflate; server_max_window_bits=7", False),
        ("permessage-deflate; server_max_window_bits", False),
        ("permessage-deflate; client_max_window_bits=16", False),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", False),
        ("permessage-deflate; server_no_context_takeover=1", False),
        ("x-webkit-deflate-frame", False),
        ("permessage-deflate; foo=bar, permessage-deflate; client_max_window_bits", True),
], 1):
    case("13.8.%d" % _i)(lambda url, o=_offer, t=_taken: decline_case(url, o, t))


# 13.9.x (ringcast's own): violations under permessage-deflate and their close codes.
def deflate_fail_case(url, send, codes):
    c = Client(url, offer=DEFLATE_OFFER)
    send(c)
    c.wait(5, until=lambda ev: any(e[0] == "close" for e in ev))
    return judge(("OK", ""), c.finish(False, list(codes)))


case("13.9.1")(lambda url: deflate_fail_case(  # RSV1 on a ping
    url, lambda c: c.send_frame(OP_PING, b"", rsv=4), [1002]))
case("13.9.2")(lambda url: deflate_fail_case(  # RSV1 on a continuation
    url, lambda c: (c.send_frame(OP_TEXT, deflate(b"Hello")[:2], fin=False, rsv=4),
                    c.send_frame(OP_CONT, deflate(b"Hello")[2:], rsv=4)), [1002]))
case("13.9.3")(lambda url: deflate_fail_case(  # not DEFLATE
    url, lambda c: c.send_frame(OP_TEXT, b"\xff\xff\xff\xff", rsv=4), [1007]))
case("13.9.4")(lambda url: deflate_fail_case(  # invalid UTF-8 inside the compressed text
    url, lambda c: c.send_frame(OP_TEXT, deflate(b"ok \xc3\x28 bad"), rsv=4), [1007]))
case("13.9.5")(lambda url: deflate_fail_case(  # 64 MiB of zeros in ~64 KiB: over 16 MiB
    url, lambda c: c.send_frame(OP_BINARY, deflate(b"\x00" * (64 << 20)), rsv=4), [1009]))
# A final block (BFINAL=1, §7.2.3.4) instead of a sync flush.
case("13.9.6")(lambda url: deflate_echo_case(url, OP_TEXT, sample(OP_TEXT, 3000), finish=True))


def run_builtin(url, patterns):
    results, notes = {}, {}
    for case_id in sorted((c for c in CASES if any(fnmatch.fnmatch(c, p) for p in patterns)),
                          key=lambda c: tuple(int(x) if x.isdigit() else 0 for x in c.split("."))):
        try:
            outcome, note = CASES[case_id](url)
        except (OSError, Closed) as e:
            outcome, note = "FAILED", "%s: %s" % (type(e).__name__, e)
        results[case_id], notes[case_id] = outcome, note
    return results, notes


# ---- diff against the committed file -------------------------------------------------


def family(case_id):
    return case_id.split(".")[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--suite", choices=["builtin", "autobahn"], default="builtin")
    ap.add_argument("--wstest", default="wstest")
    ap.add_argument("--cases", default=",".join(f + ".*" for f in FAMILIES))
    ap.add_argument("--expected", default=os.path.join(HERE, "expected.json"))
    ap.add_argument("--write-expected", action="store_true")
    ap.add_argument("--report", default=None, help="directory for the Autobahn report")
    args = ap.parse_args()
    patterns = [p.strip() for p in args.cases.split(",") if p.strip()]

    started = time.monotonic()
    notes = {}
    if args.suite == "autobahn":
        report = args.report or tempfile.mkdtemp(prefix="ringcast-autobahn-")
        os.makedirs(report, exist_ok=True)
        results = run_autobahn(args.url, args.wstest, patterns, report)
        print("Autobahn report: %s/servers/index.html" % report)
    else:
        results, notes = run_builtin(args.url, patterns)

    try:
        with open(args.expected) as f:
            expected_file = json.load(f)
    except FileNotFoundError:
        expected_file = {}
    expected = expected_file.get(args.suite, {})
    selected = {c: r for c, r in expected.items() if any(fnmatch.fnmatch(c, p) for p in patterns)}

    regressions, improvements = [], []
    for case_id in sorted(results, key=lambda c: [int(x) if x.isdigit() else 0 for x in c.split(".")]):
        got = results[case_id]
        want = selected.get(case_id)
        mark = ""
        if want is None:
            mark = "  (new: not in expected.json)"
        elif RANK.get(got, 0) < RANK.get(want, 0):
            mark = "  REGRESSION (expected %s)" % want
            regressions.append(case_id)
        elif got != want:
            mark = "  better than expected (%s)" % want
            improvements.append(case_id)
        note = (" - " + notes[case_id]) if notes.get(case_id) else ""
        print("%-16s %-13s%s%s" % (case_id, got, note, mark))
    missing = sorted(c for c in selected if c not in results)
    for case_id in missing:
        print("%-16s %-13s  REGRESSION (expected %s)" % (case_id, "MISSING", selected[case_id]))
    regressions += missing

    by_family = {}
    for case_id, r in results.items():
        by_family.setdefault(family(case_id), {}).setdefault(r, 0)
        by_family[family(case_id)][r] += 1
    print()
    for fam in sorted(by_family, key=int):
        counts = by_family[fam]
        print("family %-3s %s" % (fam, "  ".join("%s %d" % (k, counts[k]) for k in RANK if k in counts)))
    totals = {}
    for r in results.values():
        totals[r] = totals.get(r, 0) + 1
    print("summary (%s, %d cases, %.0f s): %s; regressions %d" % (
        args.suite, len(results), time.monotonic() - started,
        ", ".join("%s %d" % (k, totals.get(k, 0)) for k in RANK), len(regressions)))

    if args.write_expected:
        expected_file[args.suite] = {c: results[c] for c in sorted(results, key=case_key_loose)}
        with open(args.expected, "w") as f:
            json.dump(expected_file, f, indent=1, sort_keys=False)
            f.write("\n")
        print("wrote %s" % args.expected)
        return 0
    if improvements:
        print("improved: %s (run with --write-expected to record)" % " ".join(improvements))
    return 1 if regressions else 0


def case_key_loose(c):
    return [int(x) if x.isdigit() else 0 for x in c.split(".")]


if __name__ == "__main__":
    sys.exit(main())
