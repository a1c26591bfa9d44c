// The demo page over https (`--tls-cert`, `--tls-key`) in a real headless
// Chromium: its EventSource and WebSocket (wss) receive, and the EventSource
// reconnects by itself after the server restarts.
//
// The certificate pair is made at test time by tests/browser.rs (rcgen) and
// passed in RINGCAST_TEST_TLS_CERT, RINGCAST_TEST_TLS_KEY, RINGCAST_TEST_TLS_CA; Chromium
// trusts the test CA's key through --ignore-certificate-errors-spki-list with
// RINGCAST_TEST_TLS_SPKI (base64 of the SHA-256 of the CA key's SubjectPublicKeyInfo).
// Without them (node --test run by hand) the test is skipped and says so.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  WAIT, kill, launchChromium, publish, startServer as startPlainOrTls, subscribeBoth, waitLog,
  waitState, warmUp,
} from './harness.mjs';

const { RINGCAST_TEST_TLS_CERT: CERT, RINGCAST_TEST_TLS_KEY: KEY, RINGCAST_TEST_TLS_CA: CA, RINGCAST_TEST_TLS_SPKI: SPKI } = process.env;
const READY = Boolean(CERT && KEY && CA && SPKI);

/** `ringcast serve` over https with the test pair; ready when /healthz answers 200 over https. */
function startServer({ port, dir }) {
  return startPlainOrTls({ port, dir, args: ['--tls-cert', CERT, '--tls-key', KEY], tlsCa: CA });
}

let browser;
let closeBrowser;
before(async () => {
  if (!READY) return;
  ({ browser, close: closeBrowser } = await launchChromium([
    `--ignore-certificate-errors-spki-list=${SPKI}`,
  ]));
});
after(async () => {
  await closeBrowser?.();
});

test('over https: the demo page EventSource and wss WebSocket receive, and the EventSource reconnects by itself', { skip: READY ? false : 'RINGCAST_TEST_TLS_* not set (run through cargo test --test browser)' }, async () => {
  let server = await startServer({});
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  try {
    await page.goto(server.url, { waitUntil: 'load' });
    assert.equal(await page.evaluate(() => location.protocol), 'https:');
    await subscribeBoth(page, 'secure');
    await waitState(page, 'sse', 'open');
    await waitState(page, 'ws', 'open');
    await warmUp(page, server, 'secure');

    const id1 = await publish(server, 'secure', '{"text":"over tls"}');
    assert.equal((await waitLog(page, 'sse', 'message', 'over tls')).id, id1);
    assert.equal((await waitLog(page, 'ws', 'message', 'over tls')).id, id1);
    // The page's own fetches (metrics) go over https too.
    await page.waitForFunction(() => document.getElementById('m-status').textContent === 'HTTP 200', { timeout: WAIT });

    // A new run on the same port: the EventSource comes back by itself
    // (with Last-Event-ID: told of the gap), and so does the WebSocket.
    await kill(server);
    await waitState(page, 'sse', 'connecting');
    server = await startServer({ port: server.port, dir: server.dir });
    await waitLog(page, 'sse', 'ringcast.gap', '"topic":"secure"', 20_000);
    await waitState(page, 'sse', 'open');
    await waitLog(page, 'ws', 'ringcast.gap', '"topic":"secure"', 20_000);
    await waitState(page, 'ws', 'open');
    const id2 = await publish(server, 'secure', '{"text":"after restart over tls"}');
    assert.equal((await waitLog(page, 'sse', 'message', 'after restart over tls')).id, id2);
    assert.equal((await waitLog(page, 'ws', 'message', 'after restart over tls')).id, id2);
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
    await kill(server);
  }
});
