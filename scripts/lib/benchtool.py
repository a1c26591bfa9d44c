#!/usr/bin/env python3
"""Measurement and report helper for scripts/bench.sh and scripts/compare.sh.

  benchtool.py measure --out REC.json --scenario S --server NAME --run N
                       [--group PGID ...] [--deliveries-key auto] -- CMD ...
      Reads the CPU time (utime+stime of /proc/PID/stat, all threads) and RSS of every
      process in the server's process groups, runs CMD (its stdout is kept, stderr passes
      through), takes the bench's own CPU time from wait4's rusage (children included),
      reads the server again and writes one JSON record with the figures that CMD's
      output gives (ringcast bench --json, a WRK_JSON line, or a k6 summary export).
      --window START,LENGTH reads the server's CPU over that part of the run only
      (seconds after CMD starts), and --counter URL#NAME makes the increase of that
      Prometheus counter over the window the run's deliveries (e.g. heartbeats).

  benchtool.py publish --target unix:PATH|http://H:P --topic T --rate R --duration S
      A steady publisher (NDJSON over the Unix socket, or keep-alive POST /publish).

  benchtool.py report --dir DIR --out FILE.md [--title T] [--baseline ringcast-c1,...]
      Medians over runs per (scenario, server), CPU per delivered message, and the
      ratio of each baseline to each other server.
"""

import argparse
import glob
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- /proc readings

def group_pids(pgid):
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        # fields[0] is field 3 (state); field 5 (pgrp) is fields[2].
        if int(fields[2]) == pgid:
            pids.append(int(d))
    return pids


def proc_cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss(pid):
    """Proportional set size (smaps_rollup Pss): shared pages (nginx's shared memory,
    libraries) are split between the processes that map them, so a group's sum counts
    them once. Falls back to VmRSS."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def server_snapshot(pgids):
    pids = [p for g in pgids for p in group_pids(g)]
    return {
        "pids": pids,
        "cpu_s": sum(proc_cpu_s(p) for p in pids),
        "rss": sum(proc_rss(p) for p in pids),
    }


# ---------------------------------------------------------------- output parsing

def flatten(obj, prefix=""):
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix[:-1]] = obj
    return out


def pick(flat, *patterns):
    """The first value whose dotted key matches one of the regexes (in pattern order)."""
    for pat in patterns:
        rx = re.compile(pat)
        for k, v in flat.items():
            if rx.search(k):
                return v
    return None


def parse_output(text, k6_summary=None):
    """Figures from a run's stdout: ringcast bench --json, wrk (WRK_JSON) or k6."""
    fig = {}
    m = re.search(r"^WRK_JSON (\{.*\})\s*$", text, re.M)
    if m:
        w = json.loads(m.group(1))
        fig.update(tool="wrk", requests=w["requests"], rate=w["rps"],
                   errors=w["non2xx"] + w["errors_connect"] + w["errors_read"]
                   + w["errors_write"] + w["errors_timeout"],
                   p50_ms=w["latency_p50_us"] / 1000, p99_ms=w["latency_p99_us"] / 1000,
                   delivered=w["requests"])
        return fig
    if k6_summary and os.path.exists(k6_summary):
        with open(k6_summary) as f:
            s = json.load(f)
        met = s.get("metrics", {})
        recv = met.get("ws_messages_received", {})
        subs = met.get("ws_subscribed", {})
        fig.update(tool="k6", delivered=recv.get("count", 0), rate=recv.get("rate", 0),
                   connections=subs.get("count", 0))
        return fig
    # ringcast bench --json: one JSON object (take the last one printed).
    objs = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                objs.append(json.loads(line))
            except ValueError:
                pass
    if not objs:
        try:
            objs.append(json.loads(text))
        except ValueError:
            return fig
    if len(objs) > 1:
        # Several bench processes (idle): sum their connections and connect rates.
        flats = [flatten(o) for o in objs]
        conns = [pick(f, r"(^|\.)connected$", r"(^|\.)connections$") for f in flats]
        rates = [pick(f, r"connect\w*_per_s", r"connect_rate") for f in flats]
        fig["connections"] = sum(c for c in conns if c) or None
        fig["connect_rate"] = sum(r for r in rates if r) or None
        fig["tool"] = "ringcast-bench"
        fig["processes"] = len(objs)
        return fig
    flat = flatten(objs[-1])
    # The bench's JSON is still settling: look for its figures under likely names.
    fig["tool"] = "ringcast-bench"
    # Names as `ringcast bench --json` prints them (src/bench/report.rs), then fallbacks.
    fig["delivered"] = pick(flat, r"(^|\.)delivered$", r"(^|\.)distinct$", r"(^|\.)received$")
    fig["received"] = pick(flat, r"(^|\.)received$")
    fig["expected"] = pick(flat, r"(^|\.)expected$")
    fig["dup"] = pick(flat, r"(^|\.)dup$")
    fig["lost"] = pick(flat, r"(^|\.)lost$")
    fig["rate"] = pick(flat, r"^delivered_per_sec$", r"deliver\w*_per_s", r"received_per_s", r"(^|\.)delivery_rate",
                       r"(^|\.)deliveries_per_sec", r"(^|\.)msgs_per_s")
    fig["publish_rate"] = pick(flat, r"publish\w*(per_s|rate)", r"published_per_s")
    msgs, psecs = pick(flat, r"^messages$"), pick(flat, r"^publish_seconds$")
    if fig["publish_rate"] is None and msgs and psecs:
        fig["publish_rate"] = msgs / psecs
    fig["server_cpu_self"] = pick(flat, r"^server_cpu_seconds$")
    fig["p50_ms"] = ms(pick(flat, r"latency\w*\.p50(_ns|_us|_ms)?$", r"p50"), flat, "p50")
    fig["p99_ms"] = ms(pick(flat, r"latency\w*\.p99(_ns|_us|_ms)?$", r"p99$", r"p99_"), flat, "p99")
    fig["p999_ms"] = ms(pick(flat, r"p99(9|_9)"), flat, "p999")
    fig["connections"] = pick(flat, r"(^|\.)connected$", r"(^|\.)connections$")
    fig["connect_rate"] = pick(flat, r"connect\w*_per_s", r"connect_rate")
    fig["rss_per_conn"] = pick(flat, r"rss_per_conn\w*", r"bytes_per_conn\w*")
    fig["bench_cpu_self"] = pick(flat, r"bench_cpu", r"self_cpu")
    fig["duration_s"] = pick(flat, r"^phase_seconds$", r"(^|\.)duration_s$", r"(^|\.)elapsed_s$")
    fig["bench_error"] = next((o.get("error") or o.get("publish_error") for o in objs[-1:]
                               if isinstance(o, dict)), None)
    return fig


def ms(v, flat, which):
    """A latency in ms, whatever unit the key announced (ns/us/ms; bare = ns)."""
    if v is None:
        return None
    key = next((k for k, x in flat.items() if which in k and x == v), "")
    if key.endswith("_ms"):
        return v
    if key.endswith("_us"):
        return v / 1e3
    if key.endswith("_s") and not key.endswith("_ns"):
        return v * 1e3
    return v / 1e6


# ---------------------------------------------------------------- commands

def prom_counter(spec):
    """The value of counter NAME on the Prometheus page URL (spec URL#NAME), summed over
    its label sets."""
    url, name = spec.split("#", 1)
    hostport, path = url.split("//", 1)[1].split("/", 1)
    c = http.client.HTTPConnection(hostport, timeout=5)
    c.request("GET", "/" + path)
    total = 0.0
    for line in c.getresponse().read().decode().splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def windowed(a, window):
    """Fills window with the server's CPU seconds and the counter at the start and the
    end of --window."""
    start, length = (float(x) for x in a.window.split(","))
    time.sleep(start)
    window["cpu0"] = server_snapshot(a.group)["cpu_s"]
    window["n0"] = prom_counter(a.counter) if a.counter else None
    window["t0"] = time.monotonic()
    time.sleep(length)
    window["cpu1"] = server_snapshot(a.group)["cpu_s"]
    window["n1"] = prom_counter(a.counter) if a.counter else None
    window["t1"] = time.monotonic()


def cmd_measure(a):
    before = server_snapshot(a.group)
    window = {}
    if a.window:
        threading.Thread(target=windowed, args=(a, window), daemon=True).start()
    peak = [before["rss"]]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.25):
            peak[0] = max(peak[0], server_snapshot(a.group)["rss"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    timed_out = False
    with open(a.out + ".stdout", "wb") as out:
        # Own session, so that a run over its time limit is stopped with all its children.
        p = subprocess.Popen(a.command, stdout=out, start_new_session=True)
        deadline = t0 + a.timeout if a.timeout > 0 else None
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if deadline and time.monotonic() > deadline and not timed_out:
                timed_out = True
                print(f"benchtool: {a.scenario}/{a.server} run {a.run}: over {a.timeout:.0f} s, "
                      "stopping it", file=sys.stderr)
                os.killpg(p.pid, signal.SIGTERM)
                deadline = time.monotonic() + 5
                continue
            if timed_out and time.monotonic() > deadline:
                os.killpg(p.pid, signal.SIGKILL)
                deadline = None
            time.sleep(0.05)
        try:
            os.killpg(p.pid, signal.SIGKILL)  # anything the command left behind
        except ProcessLookupError:
            pass
    wall = time.monotonic() - t0
    stop.set()
    sampler.join()
    rc = 124 if timed_out else os.waitstatus_to_exitcode(status)
    after = server_snapshot(a.group)
    with open(a.out + ".stdout", encoding="utf-8", errors="replace") as f:
        text = f.read()
    fig = parse_output(text, a.k6_summary)
    if a.scenario.startswith("publish-") and fig.get("publish_rate"):
        # Publish throughput: the rate publishes were accepted (1 subscriber checks them).
        fig["rate"] = fig["publish_rate"]
    if fig.get("rate") is None and fig.get("delivered") and wall > 0:
        fig["rate"] = fig["delivered"] / wall
        fig["rate_from_wall"] = True
    rec = {
        "scenario": a.scenario, "server": a.server, "run": a.run, "rc": rc,
        "timed_out": timed_out,
        "cmd": a.command, "wall_s": wall,
        "bench_cpu_s": ru.ru_utime + ru.ru_stime,
        "server_cpu_s": after["cpu_s"] - before["cpu_s"],
        "server_rss_before": before["rss"], "server_rss_after": after["rss"],
        "server_rss_peak": peak[0],
        "server_pids": after["pids"] or before["pids"],
        "conns": a.conns,
        **fig,
    }
    if a.window:
        if "cpu1" not in window:
            print(f"benchtool: {a.scenario}/{a.server} run {a.run}: the run ended before "
                  f"its window {a.window}", file=sys.stderr)
            rec["rc"] = rc = rc or 1
        else:
            rec["server_cpu_s"] = window["cpu1"] - window["cpu0"]
            rec["window_s"] = window["t1"] - window["t0"]
            if a.counter:
                rec["delivered"] = window["n1"] - window["n0"]
                rec["rate"] = rec["delivered"] / rec["window_s"]
    if a.conns:
        # Idle runs: the server's RSS growth at the peak (while the connections are
        # held), over the connections asked for; the bench's own figure is kept apart.
        rec["bench_rss_per_conn"] = fig.get("rss_per_conn")
        base = a.baseline_rss or before["rss"]
        held = fig.get("connections")  # as the bench counted them; none if it failed
        rec["rss_per_conn"] = (peak[0] - base) / held if held else None
    with open(a.out, "w") as f:
        json.dump(rec, f, indent=1)
    if rc != 0:
        print(f"benchtool: {a.scenario}/{a.server} run {a.run}: exit {rc}", file=sys.stderr)
    return 0


def cmd_rss(a):
    print(server_snapshot(a.group)["rss"])


def cmd_publish(a):
    interval = 1.0 / a.rate
    end = time.monotonic() + a.duration
    n = 0
    nxt = time.monotonic()
    if a.target.startswith("unix:"):
        s = socket.socket(socket.AF_UNIX)
        s.connect(a.target[5:])
        f = s.makefile("rb")
        while time.monotonic() < end:
            line = json.dumps({"topic": a.topic, "data": {"seq": n, "t": time.monotonic_ns()}})
            s.sendall(line.encode() + b"\n")
            f.readline()
            n += 1
            nxt += interval
            time.sleep(max(0.0, nxt - time.monotonic()))
    else:
        hostport = a.target.split("//", 1)[1].rstrip("/")
        c = http.client.HTTPConnection(hostport)
        while time.monotonic() < end:
            body = json.dumps({"seq": n, "t": time.monotonic_ns()})
            c.request("POST", f"/publish?topic={a.topic}", body,
                      {"Content-Type": "application/json"})
            c.getresponse().read()
            n += 1
            nxt += interval
            time.sleep(max(0.0, nxt - time.monotonic()))
    print(json.dumps({"published": n}))


def fmt(v, kind):
    if v is None:
        return "–"
    if kind == "rate":
        return f"{v / 1e6:.2f} M/s" if v >= 1e6 else f"{v / 1e3:.1f} k/s" if v >= 1e3 else f"{v:.0f}/s"
    if kind == "ms":
        return f"{v:.2f}"
    if kind == "us":
        return f"{v:.3f}"
    if kind == "bytes":
        if abs(v) >= 1024 * 1024:
            return f"{v / 1048576:.1f} MiB"
        return f"{v / 1024:.1f} KiB" if abs(v) >= 1024 else f"{v:.0f} B"
    if kind == "int":
        return f"{v:,.0f}"
    return str(v)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# What "better" is per scenario: the figure a ratio is taken of, and its direction.
PRIMARY = {"idle": ("rss_per_conn", "lower"), "connect": ("server_us_per_conn", "lower"),
           "heartbeat": ("server_us_per_msg", "lower")}


def cmd_report(a):
    recs = []
    for p in sorted(glob.glob(os.path.join(a.dir, "*.json"))):
        with open(p) as f:
            try:
                recs.append(json.load(f))
            except ValueError:
                pass
    scen_order, server_order = [], []
    for r in recs:
        if r["scenario"] not in scen_order:
            scen_order.append(r["scenario"])
        if r["server"] not in server_order:
            server_order.append(r["server"])
    baselines = [b for b in (a.baseline or "").split(",") if b]
    server_order = [b for b in baselines if b in server_order] + sorted(
        s for s in server_order if s not in baselines)
    lines = [f"# {a.title}", ""]
    if a.preamble and os.path.exists(a.preamble):
        with open(a.preamble) as f:
            lines += [f.read().rstrip(), ""]
    for sc in scen_order:
        rows = {}
        for sv in server_order:
            rs = [r for r in recs if r["scenario"] == sc and r["server"] == sv]
            if not rs:
                continue
            ok = [r for r in rs if r["rc"] == 0] or rs
            d = {}
            for k in ("rate", "publish_rate", "p50_ms", "p99_ms", "p999_ms", "delivered",
                      "lost", "errors", "connections", "connect_rate", "rss_per_conn",
                      "server_rss_after", "server_rss_peak", "server_cpu_s", "bench_cpu_s", "wall_s"):
                d[k] = med([r.get(k) for r in ok])
            per = [(r["server_cpu_s"] / r["delivered"] * 1e6) if r.get("delivered") else None for r in ok]
            bper = [(r["bench_cpu_s"] / r["delivered"] * 1e6) if r.get("delivered") else None for r in ok]
            d["server_us_per_msg"] = med(per)
            d["server_us_per_conn"] = med([r["server_cpu_s"] / r["connections"] * 1e6
                                           if r.get("connections") else None for r in ok])
            d["bench_us_per_conn"] = med([r["bench_cpu_s"] / r["connections"] * 1e6
                                          if r.get("connections") else None for r in ok])
            d["bench_us_per_msg"] = med(bper)
            d["runs"] = len(rs)
            d["failed"] = sum(1 for r in rs if r["rc"] != 0)
            rows[sv] = d
        key, better = PRIMARY.get(sc.split("-")[0], ("rate", "higher"))
        lines += [f"## {sc}", ""]
        head = ["server", "runs (failed)"]
        if key == "rss_per_conn":
            head += ["connections", "PSS / conn", "server PSS (peak)", "connect rate"]
        elif key == "server_us_per_conn":
            head += ["connections", "connect rate", "server CPU µs/conn", "bench CPU µs/conn",
                     "PSS / conn"]
        else:
            head += ["rate (median)", "p50 ms", "p99 ms", "delivered", "lost/errors",
                     "server CPU µs/msg", "bench CPU µs/msg"]
        for b in baselines:
            if b in rows:
                head.append(f"{b} ×")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for sv, d in rows.items():
            row = [sv, f"{d['runs']} ({d['failed']})"]
            if key == "rss_per_conn":
                row += [fmt(d["connections"], "int"), fmt(d["rss_per_conn"], "bytes"),
                        fmt(d["server_rss_peak"], "bytes"), fmt(d["connect_rate"], "rate")]
            elif key == "server_us_per_conn":
                row += [fmt(d["connections"], "int"), fmt(d["connect_rate"], "rate"),
                        fmt(d["server_us_per_conn"], "us"), fmt(d["bench_us_per_conn"], "us"),
                        fmt(d["rss_per_conn"], "bytes")]
            else:
                lost = d["lost"] if d["lost"] is not None else d["errors"]
                row += [fmt(d["rate"], "rate"), fmt(d["p50_ms"], "ms"), fmt(d["p99_ms"], "ms"),
                        fmt(d["delivered"], "int"), fmt(lost, "int"),
                        fmt(d["server_us_per_msg"], "us"), fmt(d["bench_us_per_msg"], "us")]
            for b in baselines:
                if b not in rows:
                    continue
                x, y = rows[b].get(key), d.get(key)
                if not x or not y:
                    row.append("–")
                elif better == "higher":
                    row.append(f"{x / y:.2f}")
                else:
                    row.append(f"{y / x:.2f}")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        if baselines:
            if better == "higher":
                lines += ["Ratios: the baseline's rate over the row's; > 1 means the baseline is faster.", ""]
            elif key == "server_us_per_msg":
                lines += ["Ratios: the row's server CPU per message over the baseline's; > 1 means the baseline costs less.", ""]
            elif key == "server_us_per_conn":
                lines += ["Ratios: the row's server CPU per connection over the baseline's; > 1 means the baseline costs less.", ""]
            else:
                lines += ["Ratios: the row's PSS per connection over the baseline's; > 1 means the baseline uses less.", ""]
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--out", required=True)
    m.add_argument("--scenario", required=True)
    m.add_argument("--server", required=True)
    m.add_argument("--run", type=int, default=1)
    m.add_argument("--group", type=int, action="append", default=[])
    m.add_argument("--k6-summary")
    m.add_argument("--timeout", type=float, default=float(os.environ.get("RUN_TIMEOUT", 300)),
                   help="stop the run after this many seconds [RUN_TIMEOUT or 300]")
    m.add_argument("--conns", type=int, default=0, help="connections held (idle runs)")
    m.add_argument("--window", help="START,LENGTH: the server's CPU over this part of the run")
    m.add_argument("--counter", help="URL#NAME: a counter whose increase over the window "
                   "is the run's deliveries")
    m.add_argument("--baseline-rss", type=int, default=0, help="server RSS before connecting")
    m.add_argument("command", nargs=argparse.REMAINDER)
    r = sub.add_parser("rss")
    r.add_argument("--group", type=int, action="append", default=[])
    p = sub.add_parser("publish")
    p.add_argument("--target", required=True)
    p.add_argument("--topic", default="bench")
    p.add_argument("--rate", type=float, default=100)
    p.add_argument("--duration", type=float, default=5)
    rp = sub.add_parser("report")
    rp.add_argument("--dir", required=True)
    rp.add_argument("--out", required=True)
    rp.add_argument("--title", default="ringcast benchmarks")
    rp.add_argument("--baseline")
    rp.add_argument("--preamble")
    a = ap.parse_args()
    if a.cmd == "measure":
        if a.command[:1] == ["--"]:
            a.command = a.command[1:]
        return cmd_measure(a)
    return {"rss": cmd_rss, "publish": cmd_publish, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main() or 0)
