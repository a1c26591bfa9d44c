// Tiny functional check of a pub/sub server: K WebSocket and K SSE subscribers on one
// topic, then one HTTP publish and (optionally) one WebSocket publish; prints what each
// subscriber received as JSON and exits non-zero if any message is missing.
//
//   node smoke-client.js BASE_URL [--sse] [--ws-publish PATH] [--clients K]
//   e.g. node smoke-client.js http://127.0.0.1:8092 --sse --ws-publish /ws
"use strict";
const http = require("http");
const WebSocket = require("ws");

const args = process.argv.slice(2);
const base = args[0];
const sse = args.includes("--sse");
const wsPubIdx = args.indexOf("--ws-publish");
const wsPublishPath = wsPubIdx >= 0 ? args[wsPubIdx + 1] : null;
const kIdx = args.indexOf("--clients");
const K = kIdx >= 0 ? Number(args[kIdx + 1]) : 3;
const topic = "smoke-" + process.pid;
const wsBase = base.replace(/^http/, "ws");

const received = [];
const opens = [];
for (let i = 0; i < K; i++) {
  const got = [];
  received.push({ kind: "ws", got });
  const ws = new WebSocket(`${wsBase}/ws?topic=${topic}`);
  ws.on("message", (d) => got.push(d.toString()));
  ws.on("error", (e) => got.push("ERROR " + e.message));
  opens.push(new Promise((r) => ws.on("open", r)));
}
if (sse) {
  for (let i = 0; i < K; i++) {
    const got = [];
    received.push({ kind: "sse", got });
    opens.push(
      new Promise((r) => {
        // Accept is what a browser EventSource sends; nchan answers 403 without it.
        http.get(`${base}/sse?topic=${topic}`, { headers: { accept: "text/event-stream" } }, (res) => {
          got.status = res.statusCode;
          got.type = res.headers["content-type"];
          res.setEncoding("utf8");
          let buf = "";
          res.on("data", (c) => {
            buf += c;
            let at;
            while ((at = buf.indexOf("\n\n")) >= 0) {
              const ev = buf.slice(0, at);
              buf = buf.slice(at + 2);
              const data = ev.split("\n").filter((l) => l.startsWith("data:"));
              if (data.length) got.push(data.map((l) => l.slice(5).trimStart()).join("\n"));
            }
          });
          r();
        });
      })
    );
  }
}

function post(body) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `${base}/publish?topic=${topic}`,
      { method: "POST", headers: { "content-type": "application/json" } },
      (res) => {
        let b = "";
        res.on("data", (c) => (b += c));
        res.on("end", () => resolve({ status: res.statusCode, body: b.trim() }));
      }
    );
    req.on("error", reject);
    req.end(body);
  });
}

(async () => {
  await Promise.all(opens);
  await new Promise((r) => setTimeout(r, 300)); // let SSE subscriptions register
  const expect = ['{"n":1,"via":"http"}'];
  const pub = await post(expect[0]);
  if (wsPublishPath) {
    const body = JSON.stringify({ topic, data: { n: 2, via: "ws" } });
    const p = new WebSocket(`${wsBase}${wsPublishPath}`);
    await new Promise((r) => p.on("open", r));
    p.send(body);
    expect.push('{"n":2,"via":"ws"}');
    setTimeout(() => p.close(), 300);
  }
  await new Promise((r) => setTimeout(r, 700));
  let ok = true;
  for (const r of received) {
    // Some servers wrap the data (ringcast's envelope); accept it when it contains it.
    const norm = r.got.map((m) => m.replace(/\s/g, ""));
    r.ok = expect.every((e) => norm.some((m) => m.includes(e.replace(/[{}]/g, "").split(",")[0])));
    ok = ok && r.ok;
  }
  console.log(JSON.stringify({ base, topic, publish: pub, subscribers: received.map((r) => ({ kind: r.kind, ok: r.ok, status: r.got.status, type: r.got.type, got: r.got })) }, null, 1));
  process.exit(ok ? 0 : 1);
})();
