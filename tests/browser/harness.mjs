// What the browser tests share: the ringcast binary, a server started on a free
// port (plain or https) and stopped, headless Chromium, publishing through its socket,
// and waits on the demo page's panels. Not a test file itself (`node --test` runs `*.test.mjs`).
//
// Every wait is bounded (waitForFunction with a timeout, polling with a deadline).

import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import assert from 'node:assert/strict';
import puppeteer from 'puppeteer-core';

const execFileP = promisify(execFile);
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const WAIT = 15_000;

/** RINGCAST_BIN, else target/release/ringcast, else target/debug/ringcast. */
export function serverBinary() {
  if (process.env.RINGCAST_BIN) return process.env.RINGCAST_BIN;
  for (const p of ['target/release/ringcast', 'target/debug/ringcast']) {
    const abs = path.join(ROOT, p);
    if (fs.existsSync(abs)) return abs;
  }
  throw new Error('no ringcast binary: build it (cargo build) or set RINGCAST_BIN');
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export async function until(what, cond, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function httpStatus(port, p) {
  try {
    const r = await fetch(`http://127.0.0.1:${port}${p}`);
    await r.arrayBuffer();
    return r.status;
  } catch {
    return 0;
  }
}

/** GET over https trusting the test CA: the status, or 0 when it fails. */
function httpsStatus(port, p, ca) {
  return new Promise((resolve) => {
    const req = https.get({ host: '127.0.0.1', port, path: p, ca: fs.readFileSync(ca), timeout: 2000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', () => resolve(0));
    req.on('timeout', () => { req.destroy(); resolve(0); });
  });
}

/**
 * `ringcast serve` on 127.0.0.1:port with its own publish socket and `args`; ready
 * when /healthz is 200. With `tlsCa` (the CA file of the pair passed in `args`), it
 * serves https and is probed over https trusting that CA.
 */
export async function startServer({ port, dir, args = [], tlsCa }) {
  port ??= await freePort();
  dir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'rc-browser-'));
  const socket = path.join(dir, 'rc.sock');
  fs.rmSync(socket, { force: true });
  const stderr = [];
  const child = spawn(
    serverBinary(),
    ['serve', '--listen', `127.0.0.1:${port}`, '--publish-socket', socket, '--cores', '2', ...args],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  child.stderr.on('data', (d) => stderr.push(d));
  let exited = null;
  child.on('exit', (code, sig) => { exited = { code, sig }; });
  const server = {
    port, dir, socket, child,
    url: `${tlsCa ? 'https' : 'http'}://127.0.0.1:${port}/`,
    stderr: () => Buffer.concat(stderr).toString(),
    exited: () => exited,
  };
  try {
    await until(tlsCa ? '/healthz 200 over https' : '/healthz 200', async () => {
      if (exited) throw new Error(`server exited ${JSON.stringify(exited)}:\n${server.stderr()}`);
      const status = tlsCa ? await httpsStatus(port, '/healthz', tlsCa) : await httpStatus(port, '/healthz');
      return status === 200 && fs.existsSync(socket);
    });
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return server;
}

/** Sets the value of the page's input `selector`. */
export async function fill(page, selector, value) {
  await page.$eval(selector, (el, v) => { el.value = v; }, value);
}

/** Subscribes the demo page's SSE and WebSocket panels to `topics`. */
export async function subscribeBoth(page, topics) {
  await fill(page, '#sse-topics', topics);
  await fill(page, '#ws-topics', topics);
  await page.click('#sse-connect');
  await page.click('#ws-connect');
}

/**
 * Headless Chromium with a profile of its own; `extraArgs` go after the common flags.
 * Returns the browser and `close`, which shuts it and removes the profile.
 */
export async function launchChromium(extraArgs = []) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'rc-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    defaultViewport: { width: 1280, height: 900 },
    args: [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ...extraArgs,
      `--user-data-dir=${profile}`,
    ],
  });
  const close = async () => {
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  return { browser, close };
}

export async function kill(server) {
  if (server.exited()) return;
  const gone = new Promise((r) => server.child.once('exit', r));
  server.child.kill('SIGKILL');
  await gone;
}

/** `ringcast publish --socket S topic data`: the id it printed. */
export async function publish(server, topic, data) {
  const { stdout } = await execFileP(serverBinary(), ['publish', '--socket', server.socket, topic, data]);
  const id = stdout.trim().replace(/^"|"$/g, '');
  assert.ok(id.length > 0, 'ringcast publish printed no id');
  return id;
}

/** The log lines of a panel ('sse' | 'ws'): {kind, id, topic, text}. */
export function logOf(page, panel) {
  return page.$$eval(`#${panel}-log li`, (lis) =>
    lis.map((li) => ({ kind: li.dataset.kind, id: li.dataset.id, topic: li.dataset.topic, text: li.textContent })));
}

/** Waits until a panel's log has a line of `kind` whose text contains `needle`. */
export async function waitLog(page, panel, kind, needle, timeout = WAIT) {
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
  const lines = await logOf(page, panel);
  return lines.find((l) => l.kind === kind && l.text.includes(needle));
}

export async function waitState(page, panel, state, timeout = WAIT) {
  try {
    await page.waitForFunction(
      (panel, state) => document.getElementById(`${panel}-state`).dataset.state === state,
      { timeout, polling: 50 }, panel, state,
    );
  } catch (e) {
    const now = await page.$eval(`#${panel}-state`, (el) => el.textContent);
    const lines = (await logOf(page, panel)).map((l) => `  [${l.kind}] ${l.text}`).join('\n');
    throw new Error(`${panel} panel never reached state ${state} (is: ${now}); log:\n${lines}`);
  }
}

/**
 * Waits until both panels are live on `topic`: publishes warm-up messages until one
 * shows on both. (An EventSource's `open` and a WebSocket's 101 come before the
 * topic's home core has recorded the subscription; a message published in between
 * is lost, see tests/subscribe_race.rs.) Then clears both logs.
 */
export async function warmUp(page, server, topic) {
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
      // Not live on both yet: publish the next one.
    }
  }
  await page.click('#sse-clear');
  await page.click('#ws-clear');
}
