// Bun's built-in pub/sub (uWebSockets topics behind `server.publish`), as a peer for
// ringcast's benchmarks. Minimal and idiomatic: what the Bun docs show for a chat room.
//
//   GET  /ws?topic=X       WebSocket, subscribed to X (no topic: a publisher connection)
//   POST /publish?topic=X  publishes the raw body to X, answers 202 with the subscriber count
//   WS message {"topic":"X","data":...} publishes data (a string as is, else its JSON text)
//   GET  /healthz          200 ok
//
// Messages reach subscribers as the raw published text (bench: --payload raw).
//
// Environment: PORT [8090], HOST [127.0.0.1], REUSE_PORT [0] (1: SO_REUSEPORT, for
// running several processes; each process has its own topics, see README.md),
// DEFLATE [0] (1: `perMessageDeflate: true`, and every publish asks for compression,
// which reaches the subscribers that negotiated permessage-deflate; for
// scripts/deflate-bench.sh).
// TLS_CERT and TLS_KEY (PEM files): PORT serves https/wss only (`tls: {cert, key}`),
// and PUBLISH_PORT (if set) serves plain POST /publish into the same topics, for a
// load generator whose publisher speaks plain HTTP (scripts/tls-bench.sh).
//
// Bun runs JavaScript on one thread, and its pub/sub lives inside one process: a
// publish reaches only the subscribers of the process that received it.

const port = Number(process.env.PORT || 8090);
const hostname = process.env.HOST || "127.0.0.1";
const reusePort = process.env.REUSE_PORT === "1";
const deflate = process.env.DEFLATE === "1";
const tls = process.env.TLS_CERT && process.env.TLS_KEY
  ? { cert: Bun.file(process.env.TLS_CERT), key: Bun.file(process.env.TLS_KEY) }
  : undefined;

function publishMessage(server, text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    return false;
  }
  if (!msg || typeof msg.topic !== "string" || msg.data === undefined) return false;
  const data = typeof msg.data === "string" ? msg.data : JSON.stringify(msg.data);
  server.publish(msg.topic, data, deflate);
  return true;
}

const server = Bun.serve({
  hostname,
  port,
  reusePort,
  tls,
  // No HTTP idle cut-off for the benchmark's keep-alive publishers.
  idleTimeout: 0,
  async fetch(req, server) {
    const url = new URL(req.url);
    const topic = url.searchParams.get("topic");
    if (url.pathname === "/ws") {
      if (server.upgrade(req, { data: { topic } })) return undefined;
      return new Response("websocket upgrade expected\n", { status: 400 });
    }
    if (url.pathname === "/publish" && req.method === "POST") {
      if (!topic) return new Response("topic required\n", { status: 400 });
      const body = await req.text();
      server.publish(topic, body, deflate);
      return new Response("{}\n", {
        status: 202,
        headers: { "content-type": "application/json" },
      });
    }
    if (url.pathname === "/healthz") return new Response("ok\n");
    return new Response("not found\n", { status: 404 });
  },
  websocket: {
    // Defaults otherwise (no compression unless DEFLATE=1, 120 s idle timeout with
    // automatic pings, 16 MiB backpressure limit), as a user of Bun would have them.
    perMessageDeflate: deflate,
    open(ws) {
      if (ws.data.topic) ws.subscribe(ws.data.topic);
    },
    message(ws, message) {
      publishMessage(server, typeof message === "string" ? message : message.toString());
    },
  },
});

if (process.env.PUBLISH_PORT) {
  // Plain HTTP publishing into the TLS server's topics.
  Bun.serve({
    hostname,
    port: Number(process.env.PUBLISH_PORT),
    idleTimeout: 0,
    async fetch(req) {
      const url = new URL(req.url);
      const topic = url.searchParams.get("topic");
      if (url.pathname === "/publish" && req.method === "POST" && topic) {
        server.publish(topic, await req.text(), deflate);
        return new Response("{}\n", { status: 202, headers: { "content-type": "application/json" } });
      }
      if (url.pathname === "/healthz") return new Response("ok\n");
      return new Response("not found\n", { status: 404 });
    },
  });
}

console.error(`bun-pubsub: pid ${process.pid} on ${server.hostname}:${server.port}, perMessageDeflate ${deflate}`);

for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => {
    server.stop(true);
    process.exit(0);
  });
}
