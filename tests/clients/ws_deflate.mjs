// Node `ws` with perMessageDeflate against ringcast (run by tests/ws_deflate.rs):
// two subscribers negotiate permessage-deflate; one publishes 20 large JSON
// messages over the publish op; both receive every one, intact and in order, and
// the bytes read from the socket are a fraction of the payloads (compressed).
// Usage: node ws_deflate.mjs ws://127.0.0.1:PORT
import WebSocket from 'ws';

const base = process.argv[2];
const N = 20;
const deadline = setTimeout(() => { console.error('timed out'); process.exit(1); }, 20_000);

function open(query) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base}/ws?${query}`, { perMessageDeflate: { threshold: 0 } });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

const payload = (i) => ({ i, rows: Array.from({ length: 25 }, (_, k) => ({ sym: `S${k % 7}`, bid: 100 + k, ask: 101 + k, venue: 'XETR' })) });
const a = await open('topic=node');
const b = await open('topic=node');
for (const ws of [a, b]) {
  if (!ws.extensions.includes('permessage-deflate')) throw new Error(`not negotiated: ${ws.extensions}`);
}
const received = [[], []];
let acks = 0;
const done = new Promise((resolve) => {
  const check = () => { if (acks === N && received.every((r) => r.length === N)) resolve(); };
  [a, b].forEach((ws, k) => ws.on('message', (data) => {
    const m = JSON.parse(data.toString());
    if (m.op === 'ack') { acks += 1; } else if (m.op === 'error') { throw new Error(JSON.stringify(m)); } else { received[k].push(m); }
    check();
  }));
});
for (let i = 0; i < N; i++) a.send(JSON.stringify({ op: 'publish', topic: 'node', data: payload(i), ref: i }));
await done;
for (const r of received) {
  r.forEach((m, i) => {
    if (m.topic !== 'node' || JSON.stringify(m.data) !== JSON.stringify(payload(i))) throw new Error(`message ${i}: ${JSON.stringify(m)}`);
  });
}
const payloadBytes = received[1].reduce((n, m) => n + JSON.stringify(m).length, 0);
const wire = b._socket.bytesRead;
console.log(`node ws: ${N} messages each to 2 clients; b read ${wire} bytes for ${payloadBytes} bytes of envelopes (${(wire / payloadBytes).toFixed(2)}x)`);
if (wire > payloadBytes * 0.5) throw new Error('not compressed');
a.close(); b.close();
clearTimeout(deadline);
