"""Python `websockets` with compression against ringcast (run by tests/ws_deflate.rs).

Two clients negotiate permessage-deflate (websockets offers it by default);
one publishes 20 large JSON messages over the publish op; both receive every
one, intact and in order. Usage: python3 ws_deflate.py ws://127.0.0.1:PORT
"""
import json
import sys

from websockets.sync.client import connect

base = sys.argv[1]
N = 20


def payload(i):
    return {"i": i, "rows": [{"sym": "S%d" % (k % 7), "bid": 100 + k, "venue": "XETR"} for k in range(25)]}


with connect(base + "/ws?topic=py", compression="deflate", open_timeout=10) as a, \
        connect(base + "/ws?topic=py", compression="deflate", open_timeout=10) as b:
    for ws in (a, b):
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert "permessage-deflate" in ext, ext
    for i in range(N):
        a.send(json.dumps({"op": "publish", "topic": "py", "data": payload(i), "ref": i}))
    got = {id(a): [], id(b): []}
    acks = 0
    for ws in (a, b):
        while len(got[id(ws)]) < N:
            m = json.loads(ws.recv(timeout=10))
            if m.get("op") == "ack":
                acks += 1
            elif m.get("op") == "error":
                raise SystemExit("error frame: %r" % m)
            else:
                got[id(ws)].append(m)
    while acks < N:
        m = json.loads(a.recv(timeout=10))
        assert m.get("op") == "ack", m
        acks += 1
    for ms in got.values():
        for i, m in enumerate(ms):
            assert m["topic"] == "py" and m["data"] == payload(i), (i, m)
    print("python websockets %s: %d messages each to 2 clients, extension %r" % (
        __import__("websockets").__version__, N, ext))
