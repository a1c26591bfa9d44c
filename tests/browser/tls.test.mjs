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
import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import puppeteer from 'puppeteer-core';

const execFileP = promisify(execFile);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT = 15_000;
const { RINGCAST_TEST_TLS_CERT: CERT, RINGCAST_TEST_TLS_KEY: KEY, RINGCAST_TEST_TLS_CA: CA, RINGCAST_TEST_TLS_SPKI: SPKI } = process.env;
const READY = Boolean(CERT && KEY && CA && SPKI);

function serverBinary() {
  if (process.env.RINGCAST_BIN) return process.env.RINGCAST_BIN;
  for (const p of ['target/release/ringcast', 'target/debug/ringcast']) {
    const abs = path.join(ROOT, p);
    if (fs.existsSync(abs)) return abs;
  }
  throw new Error('no ringcast binary: build it (cargo build) or set RINGCAST_BIN');
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function until(what, cond, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** GET over https trusting the test CA: the status, or 0 when it fails. */
function httpsStatus(port, p) {
  return new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port, path: p, ca: fs.readFileSync(CA), timeout: 2000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', () => resolve(0));
    req.on('timeout', () => { req.destroy(); resolve(0); });
  });
}

async function startServer({ port, dir }) {
  port ??= await freePort();
  dir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'rc-browser-tls-'));
  const socket = path.join(dir, 'rc.sock');
  fs.rmSync(socket, { force: true });
  const stderr = [];
  const child = spawn(
    serverBinary(),
    ['serve', '--listen', `127.0.0.1:${port}`, '--publish-socket', socket, '--cores', '2',
      '--tls-cert', CERT, '--tls-key', KEY],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  child.stderr.on('data', (d) => stderr.push(d));
  let exited = null;
  child.on('exit', (code, sig) => { exited = { code, sig }; });
  const server = {
    port, dir, socket, child,
    url: `https://127.0.0.1:${port}/`,
    stderr: () => Buffer.concat(stderr).toString(),
    exited: () => exited,
  };
  try {
    await until('/healthz 200 over https', async () => {
      if (exited) throw new Error(`server exited ${JSON.stringify(exited)}:\n${server.stderr()}`);
      return (await httpsStatus(port, '/healthz')) === 200 && fs.existsSync(socket);
    });
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return server;
}

async function kill(server) {
  if (server.exited()) return;
  const gone = new Promise((r) => server.child.once('exit', r));
  server.child.kill('SIGKILL');
  await gone;
}

async function publish(server, topic, data) {
  const { stdout } = await execFileP(serverBinary(), ['publish', '--socket', server.socket, topic, data]);
  return stdout.trim().replace(/^"|"$/g, '');
}

function logOf(page, panel) {
  return page.$$eval(`#${panel}-log li`, (lis) =>
    lis.map((li) => ({ kind: li.dataset.kind, id: li.dataset.id, text: li.textContent })));
}

async function waitLog(page, panel, kind, needle, timeout = WAIT) {
  try {
    await page.waitForFunction(
      (panel, kind, needle) => [...document.querySelectorAll(`#${panel}-log li`)]
        .some((li) => li.dataset.kind === kind && li.textContent.includes(needle)),
      { timeout, polling: 50 }, panel, kind, needle,
    );
  } catch (e) {
    const lines = (await logOf(page, panel)).map((l) => `  [${l.kind}] ${l.text}`).join('\n');
    throw new Error(`${panel} panel: no ${kind} line containing ${JSON.stringify(needle)} within ${timeout} ms; log:\n${lines}`);
  }
  return (await logOf(page, panel)).find((l) => l.kind === kind && l.text.includes(needle));
}

async function waitState(page, panel, state, timeout = WAIT) {
  await page.waitForFunction(
    (panel, state) => document.getElementById(`${panel}-state`).dataset.state === state,
    { timeout, polling: 50 }, panel, state,
  );
}

/** Publishes warm-up messages until one shows on both panels, then clears them. */
async function warmUp(page, server, topic) {
  const deadline = Date.now() + WAIT;
  for (let k = 0; ; k++) {
    if (Date.now() > deadline) throw new Error(`panels never live on ${topic}`);
    const marker = `warmup-${topic}-${k}`;
    await publish(server, topic, JSON.stringify({ warmup: marker }));
    try {
      await page.waitForFunction((marker) => ['sse', 'ws'].every((p) =>
        [...document.querySelectorAll(`#${p}-log li`)].some((li) => li.textContent.includes(marker))),
      { timeout: 500, polling: 50 }, marker);
      break;
    } catch {
      // Not live on both yet.
    }
  }
  await page.click('#sse-clear');
  await page.click('#ws-clear');
}

let browser;
let profile;
before(async () => {
  if (!READY) return;
  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-chromium-tls-'));
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    defaultViewport: { width: 1280, height: 900 },
    args: [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--ignore-certificate-errors-spki-list=${SPKI}`,
      `--user-data-dir=${profile}`,
    ],
  });
});
after(async () => {
  await browser?.close();
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
});

test('over https: the demo page EventSource and wss WebSocket receive, and the EventSource reconnects by itself', { skip: READY ? false : 'RINGCAST_TEST_TLS_* not set (run through cargo test --test browser)' }, async () => {
  let server = await startServer({});
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  try {
    await page.goto(server.url, { waitUntil: 'load' });
    assert.equal(await page.evaluate(() => location.protocol), 'https:');
    await page.$eval('#sse-topics', (el) => { el.value = 'secure'; });
    await page.$eval('#ws-topics', (el) => { el.value = 'secure'; });
    await page.click('#sse-connect');
    await page.click('#ws-connect');
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
