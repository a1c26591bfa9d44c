#!/usr/bin/env python3
"""Load driver and judge of scripts/soak.sh (see its header for the load and the rules).

  soak_driver.py --addr 127.0.0.1:PORT --socket PATH --pid PID --minutes M --csv FILE
                 [--clients N] [--users-pct P] ...

One thread, non-blocking sockets and `selectors`, stdlib only. Clients speak SSE (plain
HTTP/1.1) and WebSocket (RFC 6455 handshake and framing, written here) to ringcast on
127.0.0.1; the publisher writes NDJSON to the Unix socket. Every message carries a
per-topic `seq`, so each client also counts what a resume lost or repeated.
"""

import argparse
import base64
import csv
import http.client
import json
import os
import random
import select
import selectors
import socket
import statistics
import sys
import time

GAP = "ringcast.gap"
# A stalled reader asks for a tiny receive buffer so that the server's outbox, not
# the kernel's buffers, holds what it does not read.
STALLED_RCVBUF = 4096


class Client:
    """One subscriber: SSE or WS, one topic, resumes with its last id."""

    def __init__(self, transport, topic, stalled=False):
        self.transport = transport  # "sse" or "ws"
        self.topic = topic
        self.stalled = stalled
        self.sock = None
        self.state = "closed"  # closed -> handshake -> open
        self.buf = b""
        self.last_id = None  # SSE: last dispatched id; WS: last envelope id
        self.id_buffer = None  # SSE: id of the block being read
        self.event = None  # SSE: event of the block being read
        self.last_seq = None
        self.gap_pending = False
        self.cut_reason = None  # SSE: "slow" once ringcast.slow arrived
        self.reconnect_at = None
        self.opened_at = None


class Stats:
    def __init__(self):
        self.received = self.dup = self.lost = self.gaps = 0
        self.resumes = self.fresh = self.connect_errors = 0
        self.stalled_cut = self.stalled_opened = 0
        self.published = self.publish_errors = 0
        # Regular clients the server closed, by what the stream said: "slow"
        # (ringcast.slow / close 1008), "idle" (close 1001 idle timeout), "other".
        self.closed_by_server = {}


class Driver:
    def __init__(self, a):
        self.a = a
        host, port = a.addr.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.sel = selectors.DefaultSelector()
        self.stats = Stats()
        self.rng = random.Random(a.seed)
        self.next_user = 0
        self.clients = []
        self.stalled = []
        self.seq = {}  # topic -> next seq to publish
        self.user_quota = {}  # user topic -> messages it may still get
        self.pub = None
        self.pub_buf = b""

    # ------------------------------------------------------------ setup and churn

    def new_user_topic(self):
        t = f"user:{self.next_user}"
        self.next_user += 1
        self.user_quota[t] = self.a.user_messages
        return t

    def start(self):
        self.pub = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.pub.connect(self.a.socket)
        self.pub.setblocking(False)
        self.sel.register(self.pub, selectors.EVENT_READ, None)
        for i in range(self.a.clients):
            transport = "sse" if i % 2 == 0 else "ws"
            if self.rng.random() * 100 < self.a.users_pct:
                topic = self.new_user_topic()
            else:
                topic = f"shared-{i % self.a.shared_topics}"
            c = Client(transport, topic)
            self.clients.append(c)
            self.open(c)

    def open(self, c):
        """Connects and sends the request; resumes from c.last_id when it has one."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if c.stalled:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
        s.settimeout(2)
        try:
            s.connect((self.host, self.port))
        except OSError:
            self.stats.connect_errors += 1
            s.close()
            c.reconnect_at = time.monotonic() + 1
            return
        s.setblocking(False)
        path = ("/sse" if c.transport == "sse" else "/ws") + f"?topic={c.topic}"
        head = [f"GET {{}} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if c.transport == "sse":
            head.append("Accept: text/event-stream")
            if c.last_id:
                head.append(f"Last-Event-ID: {c.last_id}")
        else:
            if c.last_id:
                path += f"&lastEventId={c.last_id}"
            key = base64.b64encode(os.urandom(16)).decode()
            head += ["Upgrade: websocket", "Connection: Upgrade",
                     f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        head[0] = head[0].format(path)
        if c.last_id:
            self.stats.resumes += 1
        else:
            self.stats.fresh += 1
            c.last_seq = None
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        c.sock, c.state, c.buf = s, "handshake", b""
        c.id_buffer, c.event, c.gap_pending = c.last_id, None, False
        c.opened_at = time.monotonic()
        c.reconnect_at = None
        if not c.stalled:
            self.sel.register(s, selectors.EVENT_READ, c)

    def close(self, c, reconnect_in=None):
        if c.sock is not None:
            if not c.stalled:
                self.sel.unregister(c.sock)
            c.sock.close()
        c.sock, c.state, c.buf = None, "closed", b""
        if reconnect_in is not None:
            c.reconnect_at = time.monotonic() + reconnect_in

    def churn(self, dt):
        """Drops each open client with probability churn%/min over dt; most come back
        with their last id, some are replaced by a new user (a fresh topic)."""
        p = self.a.churn_pct / 100 * dt / 60
        for c in self.clients:
            if c.state == "open" and self.rng.random() < p:
                self.close(c, reconnect_in=self.rng.uniform(0.2, 3.0))
                if c.topic.startswith("user:") and self.rng.random() * 100 < self.a.new_user_pct:
                    c.topic, c.last_id, c.last_seq = self.new_user_topic(), None, None

    def reconnect_due(self, now):
        for c in self.clients:
            if c.state == "closed" and c.reconnect_at is not None and now >= c.reconnect_at:
                self.open(c)

    def stalled_tick(self, now):
        """Opens a stalled reader now and then. A client cannot see that the server
        cut it without reading (the FIN waits behind the unread bytes in a zero
        window), so after --stall-hold seconds it reads everything: the stream must
        end there (the server cut it) or the run fails."""
        if now >= self.next_stall:
            self.next_stall = now + self.a.stall_every
            c = Client("sse" if self.stats.stalled_opened % 2 == 0 else "ws", "firehose", True)
            self.open(c)
            if c.sock is not None:
                self.stalled.append(c)
                self.stats.stalled_opened += 1
        for c in list(self.stalled):
            if now - c.opened_at >= self.a.stall_hold:
                self.stalled.remove(c)
                if drain_to_eof(c.sock, 5.0):
                    self.stats.stalled_cut += 1
                else:
                    self.fail(f"a stalled reader was not cut within {self.a.stall_hold:.0f}s")
                self.close(c)

    # ------------------------------------------------------------ publishing

    def publish_tick(self, dt):
        lines = []

        def add(topic, data):
            n = self.seq.get(topic, 0)
            self.seq[topic] = n + 1
            data["seq"] = n
            lines.append(json.dumps({"topic": topic, "data": data}, separators=(",", ":")))

        for k in range(self.a.shared_topics):
            for _ in range(poisson(self.rng, self.a.shared_rate * dt)):
                add(f"shared-{k}", {})
        for _ in range(poisson(self.rng, self.a.firehose_rate * dt)):
            add("firehose", {"pad": "x" * self.a.firehose_bytes})
        live_users = [c.topic for c in self.clients if c.topic.startswith("user:")]
        for t in live_users:
            if self.user_quota.get(t, 0) > 0 and self.rng.random() < dt / self.a.user_every:
                self.user_quota[t] -= 1
                add(t, {"note": "hello"})
        if lines:
            self.pub.setblocking(True)
            self.pub.sendall(("\n".join(lines) + "\n").encode())
            self.pub.setblocking(False)
            self.stats.published += len(lines)

    def on_publish_answers(self):
        try:
            data = self.pub.recv(65536)
        except BlockingIOError:
            return
        if not data:
            self.fail("the publish socket closed")
            return
        self.pub_buf += data
        *lines, self.pub_buf = self.pub_buf.split(b"\n")
        for line in lines:
            if not line.startswith(b'{"ok":true'):
                self.stats.publish_errors += 1

    # ------------------------------------------------------------ reading

    def on_readable(self, c):
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.closed_by_server(c, "other")
            return
        c.buf += data
        if c.state == "handshake":
            end = c.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(c.buf) > 16384:
                    self.close(c, reconnect_in=1.0)
                return
            status = c.buf[:end].split(b" ", 2)
            want = b"200" if c.transport == "sse" else b"101"
            if len(status) < 2 or status[1] != want:
                self.stats.connect_errors += 1
                self.close(c, reconnect_in=1.0)
                return
            c.buf, c.state = c.buf[end + 4:], "open"
        if c.transport == "sse":
            self.feed_sse(c)
        else:
            self.feed_ws(c)

    def feed_sse(self, c):
        *lines, c.buf = c.buf.split(b"\n")
        for raw in lines:
            line = raw.rstrip(b"\r")
            if not line:
                c.last_id = c.id_buffer  # dispatch: the block's id becomes the last id
                c.event = None
            elif line.startswith(b"id:"):
                c.id_buffer = line[3:].strip().decode("ascii", "replace") or None
            elif line.startswith(b"event:"):
                c.event = line[6:].strip().decode("ascii", "replace")
                if c.event == GAP:
                    self.on_gap(c)
                elif c.event == "ringcast.slow":
                    c.cut_reason = "slow"
            elif line.startswith(b"data:") and c.event is None:
                self.on_envelope(c, line[5:].strip(), take_id=False)

    def feed_ws(self, c):
        while True:
            frame = parse_ws_frame(c.buf)
            if frame is None:
                return
            opcode, payload, used = frame
            c.buf = c.buf[used:]
            if opcode == 0x1:
                self.on_envelope(c, payload, take_id=True)
            elif opcode == 0x9:
                c.sock.sendall(ws_client_frame(0xA, payload))
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 0
                reason = {1008: "slow", 1001: "idle"}.get(code, f"close {code}")
                if code == 1001 and b"idle" not in payload:
                    reason = "close 1001"
                self.closed_by_server(c, reason)
                return

    def on_envelope(self, c, raw, take_id):
        try:
            env = json.loads(raw)
        except ValueError:
            return
        if not isinstance(env, dict):
            return
        if env.get("event") == GAP:
            self.on_gap(c)
            return
        data = env.get("data")
        seq = data.get("seq") if isinstance(data, dict) else None
        if take_id and isinstance(env.get("id"), str):
            c.last_id = env["id"]
        if not isinstance(seq, int):
            return
        self.stats.received += 1
        if c.last_seq is not None:
            if seq <= c.last_seq:
                self.stats.dup += 1
                return
            if seq > c.last_seq + 1 and not c.gap_pending:
                self.stats.lost += seq - c.last_seq - 1
        c.last_seq, c.gap_pending = seq, False

    def closed_by_server(self, c, reason):
        """A regular client's stream ended without the driver asking: count why
        (SSE says so only for a slow cut), and come back with the last id."""
        reason = c.cut_reason or reason
        c.cut_reason = None
        self.stats.closed_by_server[reason] = self.stats.closed_by_server.get(reason, 0) + 1
        self.close(c, reconnect_in=1.0)

    def on_gap(self, c):
        self.stats.gaps += 1
        c.gap_pending = True

    # ------------------------------------------------------------ sampling

    def held(self, slow_total):
        """Subscribers the server should count: the open regular clients, plus the
        stalled readers not yet drained less those the server has already cut.
        Which stalled reader was cut only reading tells, so that part comes from
        the server's ringcast_slow_consumers_total less the slow cuts already seen
        (stalled readers drained, regular clients told `slow`); each stalled
        reader's cut is then confirmed when it is drained."""
        seen = self.stats.stalled_cut + self.stats.closed_by_server.get("slow", 0)
        stalled_live = len(self.stalled) - max(0, int(slow_total) - seen)
        return sum(1 for c in self.clients if c.state == "open") + stalled_live

    def quiesce(self):
        """Lets every handshake finish and the server see every close: no new
        connection starts; reads go on. Bounded."""
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            self.poll(0.05)
            if not any(c.state == "handshake" for c in self.clients):
                break
        self.poll_for(0.3)

    def sample(self, t0, warm_s, rows):
        self.quiesce()
        gauge = held = None
        for _ in range(4):
            m = metrics(self.host, self.port)
            gauge = int(m.get("ringcast_connections", -1))
            held = self.held(m.get("ringcast_slow_consumers_total", 0))
            if gauge == held:
                break
            self.poll_for(0.3)
        rss, fds = proc_rss_kib(self.a.pid), proc_fds(self.a.pid)
        row = {
            "t_s": round(time.monotonic() - t0, 1),
            "phase": "warmup" if time.monotonic() - t0 < warm_s else "measure",
            "rss_kib": rss,
            "fds": fds,
            "gauge": gauge,
            "held": held,
            "history_bytes": int(m.get("ringcast_history_bytes", -1)),
            "home_topics": int(m.get("ringcast_home_topics", -1)),
            "user_topics": self.next_user,
            "published": self.stats.published,
            "received": self.stats.received,
            "resumes": self.stats.resumes,
            "lost": self.stats.lost,
            "dup": self.stats.dup,
            "gaps": self.stats.gaps,
            "stalled_cut": self.stats.stalled_cut,
            "closed_by_server": sum(self.stats.closed_by_server.values()),
        }
        rows.append(row)
        print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        if gauge != row["held"]:
            self.fail(f"at {row['t_s']}s the connection gauge says {gauge}, "
                      f"the driver holds {row['held']}")

    # ------------------------------------------------------------ loop

    def poll(self, timeout):
        for key, _ in self.sel.select(timeout):
            if key.data is None:
                self.on_publish_answers()
            elif key.data.sock is not None:
                self.on_readable(key.data)

    def poll_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll(max(0.0, min(0.05, end - time.monotonic())))

    def fail(self, why):
        self.failures.append(why)
        print(f"FAIL: {why}", flush=True)

    def run(self):
        self.failures = []
        a = self.a
        duration = a.minutes * 60
        warm_s = max(60.0, 0.2 * duration)
        self.start()
        t0 = last = time.monotonic()
        self.next_stall = t0 + 5
        next_sample = t0 + a.sample_every
        rows = []
        while True:
            now = time.monotonic()
            if now - t0 >= duration:
                break
            dt, last = now - last, now
            self.publish_tick(dt)
            self.churn(dt)
            self.reconnect_due(now)
            self.stalled_tick(now)
            self.poll(0.05)
            if now >= next_sample:
                self.sample(t0, warm_s, rows)
                next_sample = time.monotonic() + a.sample_every
        self.sample(t0, warm_s, rows)
        self.verdict(rows, warm_s)
        write_csv(a.csv, rows)
        return 1 if self.failures else 0

    def verdict(self, rows, warm_s):
        """RSS drift: the median of the last 20 % of the samples (at least 3) against
        the median of the second half of the warm-up (the first half is the ramp)."""
        warm = [r for r in rows if r["phase"] == "warmup"]
        settled = [r["rss_kib"] for r in warm[len(warm) // 2:]]
        later = [r["rss_kib"] for r in rows if r["phase"] == "measure"]
        tail = later[-max(3, len(rows) // 5):]
        s = self.stats
        print(f"clients {self.a.clients}, user topics {self.next_user}, published {s.published} "
              f"({s.publish_errors} refused), received {s.received}, resumes {s.resumes}, "
              f"fresh {s.fresh}, lost {s.lost}, dup {s.dup}, gaps {s.gaps}, "
              f"closed by server {s.closed_by_server or 0}, stalled readers {s.stalled_opened} "
              f"opened / {s.stalled_cut} cut, connect errors {s.connect_errors}")
        if s.closed_by_server:
            print("note: the server closed regular clients (they came back with their last "
                  "id); not a failure of this run's rules", flush=True)
        if not settled or len(later) < 3:
            self.fail(f"too few samples to judge drift ({len(warm)} in warm-up, {len(later)} after)")
            return
        base, figure = statistics.median(settled), statistics.median(tail)
        drift = (figure - base) / base * 100
        print(f"rss: baseline {base:.0f} KiB (median of {len(settled)} samples, end of the "
              f"{warm_s:.0f}s warm-up), end {figure:.0f} KiB (median of the last {len(tail)}), "
              f"drift {drift:+.2f}% (limit +{self.a.max_drift_pct}%); max {max(later)} KiB "
              f"after warm-up; history bytes {rows[-1]['history_bytes']}, fds {rows[-1]['fds']}")
        if drift > self.a.max_drift_pct:
            self.fail(f"RSS drifted {drift:+.2f}% after warm-up")
        if s.dup:
            self.fail(f"{s.dup} duplicate messages after resumes")
        if s.lost:
            self.fail(f"{s.lost} messages lost after resumes without a ringcast.gap")
        if s.stalled_opened and not s.stalled_cut:
            self.fail("no stalled reader was cut as a slow consumer")


# ---------------------------------------------------------------- helpers

def poisson(rng, lam):
    """Events in an interval with mean lam (small lam: Bernoulli steps)."""
    n, whole = 0, int(lam)
    n += whole
    if rng.random() < lam - whole:
        n += 1
    return n


def parse_ws_frame(buf):
    """(opcode, payload, bytes used) of the first complete server frame, else None.
    Server frames are unmasked (RFC 6455 §5.1); fragments are not expected from
    ringcast, which sends each message as one frame."""
    if len(buf) < 2:
        return None
    opcode, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, at = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, at = int.from_bytes(buf[2:10], "big"), 10
    if len(buf) < at + n:
        return None
    return opcode, buf[at:at + n], at + n


def ws_client_frame(opcode, payload):
    """A masked frame with FIN set (RFC 6455 §5.3: a client MUST mask)."""
    key = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def drain_to_eof(sock, seconds):
    """Reads and discards until the peer ends the stream (True) or `seconds` pass."""
    sock.setblocking(False)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ready, _, _ = select.select([sock], [], [], max(0.0, end - time.monotonic()))
        if not ready:
            continue
        try:
            if not sock.recv(1 << 20):
                return True
        except BlockingIOError:
            continue
        except OSError:
            return True
    return False


def metrics(host, port):
    """Sums of each metric over its labels, from /metrics."""
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    sums = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        try:
            sums[name] = sums.get(name, 0) + float(value)
        except ValueError:
            pass
    return sums


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def proc_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def write_csv(path, rows):
    if not rows:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--addr", required=True, help="HOST:PORT of ringcast (127.0.0.1)")
    ap.add_argument("--socket", required=True, help="ringcast's publish socket")
    ap.add_argument("--pid", type=int, required=True, help="the server's pid")
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--clients", type=int, default=400, help="subscribers held (half SSE, half WS)")
    ap.add_argument("--users-pct", type=float, default=70, help="clients on a user:<n> topic")
    ap.add_argument("--user-messages", type=int, default=5, help="messages per user topic, at most")
    ap.add_argument("--user-every", type=float, default=20, help="mean seconds between a user's messages")
    ap.add_argument("--shared-topics", type=int, default=4)
    ap.add_argument("--shared-rate", type=float, default=5, help="messages/s per shared topic")
    ap.add_argument("--firehose-rate", type=float, default=100, help="messages/s to the stalled readers' topic")
    ap.add_argument("--firehose-bytes", type=int, default=2000)
    ap.add_argument("--churn-pct", type=float, default=20, help="clients dropped per minute, %%")
    ap.add_argument("--new-user-pct", type=float, default=25, help="user clients that come back as a new user, %%")
    ap.add_argument("--stall-every", type=float, default=30, help="seconds between stalled readers")
    ap.add_argument("--stall-hold", type=float, default=45,
                    help="seconds a stalled reader waits before it checks that it was cut")
    ap.add_argument("--sample-every", type=float, default=10)
    ap.add_argument("--max-drift-pct", type=float, default=5)
    ap.add_argument("--seed", type=int, default=12)
    sys.exit(Driver(ap.parse_args()).run())


if __name__ == "__main__":
    main()
