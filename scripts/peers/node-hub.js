// The kind of server ringcast replaces: a Node `http` + `ws` hub with a Map of
// topic -> Set of clients. Written the way such hubs usually are (plus the cleanup
// on close that they often forget, so that it stays correct for the benchmark).
//
//   GET  /sse?topic=X      text/event-stream, one `data:` event per message
//   GET  /ws?topic=X       WebSocket subscribed to X (no topic: a publisher connection)
//   POST /publish?topic=X  broadcasts the raw body to X, answers 202
//   WS message {"topic":"X","data":...} broadcasts data (a string as is, else its JSON text)
//   GET  /healthz          200 ok
//
// Messages reach subscribers as the raw published text (bench: --payload raw).
// Environment: PORT [8092], HOST [127.0.0.1].

"use strict";

const http = require("http");
const { WebSocketServer } = require("ws");

const port = Number(process.env.PORT || 8092);
const host = process.env.HOST || "127.0.0.1";

/** topic -> Set of subscribers; a subscriber is { ws } or { res }. */
const topics = new Map();

function subscribe(topic, sub) {
  let set = topics.get(topic);
  if (!set) topics.set(topic, (set = new Set()));
  set.add(sub);
}

function unsubscribe(topic, sub) {
  const set = topics.get(topic);
  if (!set) return;
  set.delete(sub);
  if (set.size === 0) topics.delete(topic);
}

function broadcast(topic, text) {
  const set = topics.get(topic);
  if (!set) return 0;
  // Encode once per transport, as a careful hub would.
  const sse = `data: ${text.replace(/\n/g, "\ndata: ")}\n\n`;
  for (const sub of set) {
    if (sub.ws) {
      if (sub.ws.readyState === 1) sub.ws.send(text);
    } else {
      sub.res.write(sse);
    }
  }
  return set.size;
}

function publishMessage(text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    return;
  }
  if (!msg || typeof msg.topic !== "string" || msg.data === undefined) return;
  broadcast(msg.topic, typeof msg.data === "string" ? msg.data : JSON.stringify(msg.data));
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  const topic = url.searchParams.get("topic");
  if (url.pathname === "/sse" && req.method === "GET") {
    if (!topic) {
      res.writeHead(400).end("topic required\n");
      return;
    }
    res.writeHead(200, {
      "content-type": "text/event-stream",
      "cache-control": "no-cache",
      connection: "keep-alive",
    });
    res.write(":ok\n\n");
    req.socket.setNoDelay(true);
    const sub = { res };
    subscribe(topic, sub);
    res.on("close", () => unsubscribe(topic, sub));
    return;
  }
  if (url.pathname === "/publish" && req.method === "POST") {
    if (!topic) {
      res.writeHead(400).end("topic required\n");
      return;
    }
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      broadcast(topic, Buffer.concat(chunks).toString());
      // An explicit length: without it Node answers chunked, for a 3-byte body.
      res.writeHead(202, { "content-type": "application/json", "content-length": 3 }).end("{}\n");
    });
    return;
  }
  if (url.pathname === "/healthz") {
    res.writeHead(200).end("ok\n");
    return;
  }
  res.writeHead(404).end("not found\n");
});

// SSE streams and keep-alive publishers must not be cut by Node's HTTP timeouts.
server.requestTimeout = 0;
server.headersTimeout = 10_000;
server.keepAliveTimeout = 60_000;
server.maxHeadersCount = 100;

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

server.on("upgrade", (req, socket, head) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname !== "/ws") {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    const topic = url.searchParams.get("topic");
    const sub = { ws };
    if (topic) subscribe(topic, sub);
    ws.on("message", (data) => publishMessage(data.toString()));
    ws.on("close", () => topic && unsubscribe(topic, sub));
    ws.on("error", () => ws.terminate());
  });
});

server.listen(port, host, () => {
  console.error(`node-hub: pid ${process.pid} on ${host}:${port}`);
});

for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => process.exit(0));
}
