// The demo page (`GET /`) in a real headless Chromium, against the real binary.
//
// Run: `node --test tests/browser/` from the repository root, with the server binary
// in RINGCAST_BIN (default target/release/ringcast, else target/debug/ringcast).
// Needs Debian's `chromium` and `npm install --prefix tests/browser` (puppeteer-core).
//
// Every wait is bounded (waitForFunction with a timeout, polling with a deadline). The
// server, publishing and the panel waits are in harness.mjs, shared with tls.test.mjs.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  ROOT, WAIT, fill, kill, launchChromium, publish, startServer, subscribeBoth, waitLog, waitState,
  warmUp,
} from './harness.mjs';

const SHOTS = path.join(ROOT, 'target', 'browser');
const SECRET = 'browser-test-secret-0123456789-abcdef'; // 37 bytes: HS256 needs >= 32

// ---- helpers ----------------------------------------------------------------------

const b64url = (buf) => Buffer.from(buf).toString('base64url');
/** An HS256 JWT over `claims`, as an issuer would make it. */
function sign(claims, secret = SECRET) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const mac = createHmac('sha256', secret).update(`${head}.${body}`).digest();
  return `${head}.${body}.${b64url(mac)}`;
}
const inMinutes = (m) => Math.floor(Date.now() / 1000) + m * 60;

async function screenshot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

// ---- the browser --------------------------------------------------------------------

let browser;
let closeBrowser;
before(async () => {
  ({ browser, close: closeBrowser } = await launchChromium());
});
after(async () => {
  await closeBrowser?.();
});

async function openPage(server) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(server.url, { waitUntil: 'load' });
  page.errors = errors;
  return page;
}

// ---- tests ----------------------------------------------------------------------------

test('the demo page is served from the binary and needs nothing from outside', async () => {
  const server = await startServer({});
  try {
    const r = await fetch(server.url);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /text\/html/);
    const html = await r.text();
    // Works offline: no external scripts, styles or fonts.
    assert.doesNotMatch(html, /(src|href)\s*=\s*["']?(https?:)?\/\//i);
    for (const id of ['sse-topics', 'sse-connect', 'sse-state', 'sse-reconnects', 'sse-log',
      'ws-topics', 'ws-connect', 'ws-state', 'ws-reconnects', 'ws-log', 'token',
      'pub-topic', 'pub-data', 'pub-send', 'pub-result', 'm-sse', 'm-ws', 'm-published', 'm-delivered']) {
      assert.match(html, new RegExp(`id="${id}"`), `element #${id}`);
    }
  } finally {
    await kill(server);
  }
});

test('both panels receive published messages, and the EventSource resumes across a server restart with a gap', async () => {
  let server = await startServer({});
  const page = await openPage(server);
  // The headers Chromium really sent (Last-Event-ID is added below the page's view).
  const sseRequests = [];
  const cdp = await page.createCDPSession();
  await cdp.send('Network.enable');
  const sseIds = new Set();
  cdp.on('Network.requestWillBeSent', (e) => {
    if (e.request.url.includes('/sse?')) sseIds.add(e.requestId);
  });
  cdp.on('Network.requestWillBeSentExtraInfo', (e) => {
    const lower = Object.fromEntries(Object.entries(e.headers).map(([k, v]) => [k.toLowerCase(), v]));
    if (sseIds.has(e.requestId) || (lower[':path'] || '').startsWith('/sse?') || lower.accept === 'text/event-stream') {
      sseRequests.push(lower);
    }
  });
  try {
    await subscribeBoth(page, 'news, sport');
    await waitState(page, 'sse', 'open');
    await waitState(page, 'ws', 'open');
    await warmUp(page, server, 'news');
    await warmUp(page, server, 'sport');

    // Published through the Unix socket: both panels show it with its id.
    const id1 = await publish(server, 'news', '{"n":1,"text":"first"}');
    const sse1 = await waitLog(page, 'sse', 'message', '"first"');
    const ws1 = await waitLog(page, 'ws', 'message', '"first"');
    assert.equal(sse1.id, id1);
    assert.equal(ws1.id, id1);
    assert.equal(sse1.topic, 'news');
    const id2 = await publish(server, 'sport', 'plain text');
    assert.equal((await waitLog(page, 'sse', 'message', 'plain text')).id, id2);
    assert.equal((await waitLog(page, 'ws', 'message', 'plain text')).id, id2);

    // Published from the page's form over the WebSocket publish op: ack shown, both get it.
    await fill(page, '#pub-topic', 'news');
    await fill(page, '#pub-data', '{"from":"form"}');
    await page.click('#pub-send');
    await page.waitForFunction(() => document.getElementById('pub-result').dataset.op === 'ack', { timeout: WAIT });
    assert.match(await page.$eval('#pub-result', (e) => e.textContent), /ack ref \d+ id \w+-\d+/);
    await waitLog(page, 'sse', 'message', '"form"');
    await waitLog(page, 'ws', 'message', '"form"');

    // The live counters come from /metrics.
    await page.waitForFunction(() => Number(document.getElementById('m-sse').textContent) >= 1
      && Number(document.getElementById('m-ws').textContent) >= 1
      && Number(document.getElementById('m-published').textContent) >= 3
      && Number(document.getElementById('m-delivered').textContent) >= 6, { timeout: WAIT });
    const shot = await screenshot(page, 'demo.png');
    console.log(`screenshot: ${shot}`);

    // SIGKILL, then a new run (new epoch) on the same port.
    await kill(server);
    await waitState(page, 'sse', 'connecting');
    const before = sseRequests.length;
    server = await startServer({ port: server.port, dir: server.dir });

    // The EventSource reconnects by itself with Last-Event-ID and is told of the gap.
    // The gap is the home core's answer to the resumed subscription: once it is
    // shown for news, news is live.
    const gap = await waitLog(page, 'sse', 'ringcast.gap', '"topic":"news"', 20_000);
    assert.match(gap.text, /another server run/);
    await waitState(page, 'sse', 'open');
    const resumed = sseRequests.slice(before).find((h) => h['last-event-id']);
    assert.ok(resumed, `no reconnect carried Last-Event-ID: ${JSON.stringify(sseRequests.slice(before))}`);
    assert.match(resumed['last-event-id'], /^[0-9a-f]{12}-\d+\.\d+$/, 'a two-topic cursor of the previous run');
    assert.ok(Number(await page.$eval('#sse-reconnects', (e) => e.textContent)) >= 1);
    // The WebSocket panel reconnects too (its own backoff) and is told of its gap.
    await waitLog(page, 'ws', 'ringcast.gap', '"topic":"news"', 20_000);
    await waitState(page, 'ws', 'open');

    const id3 = await publish(server, 'news', '{"n":3,"text":"after restart"}');
    assert.notEqual(id3.split('-')[0], id1.split('-')[0], 'a new run has a new epoch');
    assert.equal((await waitLog(page, 'sse', 'message', 'after restart')).id, id3);
    assert.equal((await waitLog(page, 'ws', 'message', 'after restart')).id, id3);
    await screenshot(page, 'demo-after-restart.png');
    assert.deepEqual(page.errors, []);
  } finally {
    await page.close();
    await kill(server);
  }
});

test('with --auth-secret: no token is refused, a valid token receives, a topic it lacks is refused', async () => {
  const server = await startServer({ args: ['--auth-secret', SECRET] });
  const page = await openPage(server);
  try {
    // The page itself and /metrics stay public.
    await page.waitForFunction(() => document.getElementById('m-status').textContent === 'HTTP 200', { timeout: WAIT });

    // No token: both refused with 401, shown in the panels.
    await subscribeBoth(page, 'news');
    await waitState(page, 'sse', 'failed');
    await waitLog(page, 'sse', 'error', 'HTTP 401');
    await waitState(page, 'ws', 'failed');
    await waitLog(page, 'ws', 'error', 'HTTP 401');

    // A valid token for news: messages arrive on both.
    await fill(page, '#token', sign({ exp: inMinutes(10), topics: ['news'], pub: ['news'] }));
    await subscribeBoth(page, 'news');
    await waitState(page, 'sse', 'open');
    await waitState(page, 'ws', 'open');
    await warmUp(page, server, 'news');
    const id = await publish(server, 'news', '{"secure":true}');
    assert.equal((await waitLog(page, 'sse', 'message', '"secure"')).id, id);
    assert.equal((await waitLog(page, 'ws', 'message', '"secure"')).id, id);

    // Publishing from the page: granted topic acked, another one refused.
    await fill(page, '#pub-topic', 'news');
    await fill(page, '#pub-data', 'granted');
    await page.click('#pub-send');
    await page.waitForFunction(() => document.getElementById('pub-result').dataset.op === 'ack', { timeout: WAIT });
    await fill(page, '#pub-topic', 'secret');
    await page.click('#pub-send');
    await page.waitForFunction(() => document.getElementById('pub-result').dataset.op === 'error', { timeout: WAIT });
    assert.match(await page.$eval('#pub-result', (e) => e.textContent), /publishing not granted: secret/);

    // A topic the token does not grant: 403 naming it, on both.
    await subscribeBoth(page, 'secret');
    await waitState(page, 'sse', 'failed');
    await waitLog(page, 'sse', 'error', 'HTTP 403: topic not granted: secret');
    await waitState(page, 'ws', 'failed');
    await waitLog(page, 'ws', 'error', 'HTTP 403: topic not granted: secret');
    await screenshot(page, 'demo-auth.png');
    assert.deepEqual(page.errors, []);
  } finally {
    await page.close();
    await kill(server);
  }
});

test('the demo page WebSocket negotiates permessage-deflate: compressed messages both ways, and none with --ws-deflate off', async () => {
  for (const [args, want] of [[[], /permessage-deflate; server_no_context_takeover; client_no_context_takeover/], [['--ws-deflate', 'off'], null]]) {
    const server = await startServer({ args });
    const page = await openPage(server);
    const cdp = await page.createCDPSession();
    await cdp.send('Network.enable');
    const handshakes = [];
    cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
      const lower = Object.fromEntries(Object.entries(e.response.headers).map(([k, v]) => [k.toLowerCase(), v]));
      handshakes.push(lower);
    });
    const wsErrors = [];
    cdp.on('Network.webSocketFrameError', (e) => wsErrors.push(e.errorMessage));
    cdp.on('Network.webSocketClosed', () => wsErrors.push('closed'));
    try {
      await subscribeBoth(page, 'zipped');
      await waitState(page, 'sse', 'open');
      await waitState(page, 'ws', 'open');
      await warmUp(page, server, 'zipped');
      assert.ok(handshakes.length >= 1, 'no WebSocket handshake seen');
      const ext = handshakes.at(-1)['sec-websocket-extensions'];
      if (want) assert.match(ext ?? '', want);
      else assert.equal(ext, undefined);
      // Well over --ws-deflate-min-bytes (128), and compressible: a compressed frame.
      const rows = Array.from({ length: 40 }, (_, i) => ({ sym: `S${i % 7}`, bid: 100 + i, ok: true }));
      await publish(server, 'zipped', JSON.stringify({ big: 'marker-big', rows }));
      await waitLog(page, 'ws', 'message', 'marker-big');
      // And from the page to the server: Chromium compresses what it sends once agreed.
      await fill(page, '#pub-topic', 'zipped');
      await fill(page, '#pub-data', JSON.stringify({ from: 'form-zipped', pad: 'x'.repeat(600) }));
      await page.click('#pub-send');
      await page.waitForFunction(() => document.getElementById('pub-result').dataset.op === 'ack', { timeout: WAIT })
        .catch(async (e) => { throw new Error(`${e.message}; pub-result ${await page.$eval('#pub-result', (el) => el.textContent)}; ws errors ${JSON.stringify(wsErrors)}`); });
      assert.deepEqual(wsErrors, [], 'the WebSocket saw no frame error and was not closed');
      await waitLog(page, 'ws', 'message', 'form-zipped');
      await waitLog(page, 'sse', 'message', 'form-zipped');
      assert.deepEqual(page.errors, []);
    } finally {
      await page.close();
      await kill(server);
    }
  }
});
