// How fast the /send and /receive pages move a large file to and from the
// CLI, as a person's browser does it: headless Chromium driven over the
// DevTools protocol with the Runtime and DOM domains only. Playwright (the
// tests) turns on network tracking, which copies every WebSocket message
// to the driver and caps a page near 50 MB/s on a 2-core machine; a page
// without DevTools attached is not slowed so.
//
//   node tests/browser/transfer-speed.mjs
//
// Environment:
//   DUPLEX_SERVER_BIN   the `duplex` binary (serve, send, receive); default target/release/duplex
//   DUPLEX_CHROMIUM     browser executable (default /usr/bin/chromium)
//   DUPLEX_BROWSER_BIG_MIB  size of the file (default 256)
//   DUPLEX_BROWSER_SPEED_OUT  where to write {mib, cli_to_browser, browser_to_cli} (MB/s)
//
// Every transfer is checked byte for byte (SHA-256 of the source against
// the page's download, computed in the page, and against the CLI's file).
// Every wait is bounded.

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const WebSocket = require('ws');

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = path.resolve(process.env.DUPLEX_SERVER_BIN || path.join(ROOT, 'target', 'release', 'duplex'));
const CHROMIUM = process.env.DUPLEX_CHROMIUM || '/usr/bin/chromium';
const MIB = Number(process.env.DUPLEX_BROWSER_BIG_MIB || 256);
const LIMIT_MS = 300_000;

const tmp = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'duplex-speed-'));
const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
});

function start(cmd, args) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const done = new Promise((resolve) => child.on('exit', (code) => {
    children.delete(child);
    resolve({ code, out, err });
  }));
  return { child, done, out: () => out, err: () => err };
}

async function until(what, check, ms = LIMIT_MS, every = 50) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** A page expression: whether the element with this id is shown. */
const shown = (id) => `(document.getElementById('${id}') && !document.getElementById('${id}').hidden)`;

function sha256File(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** A page in a fresh headless Chromium, driven over CDP (Runtime, DOM). */
async function openPage(url) {
  const port = 9300 + Math.floor(Math.random() * 600);
  const profile = fs.mkdtempSync(path.join(tmp, 'profile-'));
  const chrome = start(CHROMIUM, ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
    '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
    `--remote-debugging-port=${port}`, `--user-data-dir=${profile}`, url]);
  const target = await until('Chromium\'s DevTools endpoint', async () => {
    try {
      const list = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
      return list.find((t) => t.type === 'page' && t.url.startsWith(url.split('#')[0]));
    } catch {
      return null;
    }
  }, 30_000, 100);
  const ws = new WebSocket(target.webSocketDebuggerUrl, { perMessageDeflate: false, maxPayload: 1 << 28 });
  await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
  let id = 0;
  const pending = new Map();
  ws.on('message', (m) => {
    const v = JSON.parse(m);
    if (v.id && pending.has(v.id)) {
      pending.get(v.id)(v);
      pending.delete(v.id);
    }
  });
  const call = (method, params = {}) => new Promise((resolve, reject) => {
    const i = ++id;
    pending.set(i, (v) => (v.error ? reject(new Error(`${method}: ${v.error.message}`)) : resolve(v.result)));
    ws.send(JSON.stringify({ id: i, method, params }));
  });
  const evaluate = async (expression) => {
    const r = await call('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true });
    if (r.exceptionDetails) throw new Error(`in the page: ${r.exceptionDetails.exception?.description || r.exceptionDetails.text}`);
    return r.result.value;
  };
  const close = () => {
    ws.close();
    chrome.child.kill('SIGKILL');
  };
  return { call, evaluate, close };
}

const size = MIB * 1024 * 1024 + 3;
const source = path.join(tmp, 'large.bin');
fs.writeFileSync(source, crypto.randomBytes(size));
const want = sha256File(source);

const serve = start(BIN, ['serve', '--bind', '127.0.0.1:0', '--data', path.join(tmp, 'data')]);
const base = await until('duplex serve', () => {
  const m = /listening on (http:\/\/[^\s]+)/.exec(serve.err() + serve.out());
  return m && m[1].replace(/\/$/, '');
}, 30_000);
const rates = { mib: MIB };

// duplex send → the /receive page.
{
  const tx = start(BIN, ['send', '--json', '--server', base, source]);
  const code = await until('the code', () => {
    const line = tx.out().split('\n')[0];
    try {
      return JSON.parse(line).code;
    } catch {
      return null;
    }
  }, 30_000);
  const started = performance.now();
  const page = await openPage(`${base}/receive#${code}`);
  await until('the page to finish', () => page.evaluate(`${shown('rx-done')} || ${shown('rx-error')}`));
  const seconds = (performance.now() - started) / 1000;
  const error = await page.evaluate(`${shown('rx-error')} ? document.getElementById('rx-error').textContent : ''`);
  if (error) throw new Error(`the page failed: ${error}`);
  const got = await page.evaluate(`(async () => {
    const a = document.querySelector('#rx-files a.download');
    const data = await (await fetch(a.href)).arrayBuffer();
    return Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', data)), (b) => b.toString(16).padStart(2, '0')).join('');
  })()`);
  if (got !== want) throw new Error('the page received other bytes than were sent');
  page.close();
  const sent = await tx.done;
  if (sent.code !== 0) throw new Error(`duplex send failed: ${sent.err}`);
  rates.cli_to_browser = size / seconds / 1e6;
}

// The /send page → duplex receive.
{
  const page = await openPage(`${base}/send`);
  // Loaded, its module run (module scripts run before the load event).
  await until('the send page', () => page.evaluate(`document.readyState === 'complete' && !!document.getElementById('file-input')`), 30_000);
  const { root } = await page.call('DOM.getDocument');
  const { nodeId } = await page.call('DOM.querySelector', { nodeId: root.nodeId, selector: '#file-input' });
  await page.call('DOM.setFileInputFiles', { nodeId, files: [source] });
  // As a person's choice would: the page acts on the input's events.
  await page.evaluate(`(() => {
    const input = document.getElementById('file-input');
    input.dispatchEvent(new Event('input', { bubbles: true }));
    input.dispatchEvent(new Event('change', { bubbles: true }));
  })()`);
  await until('the page to list the file', () => page.evaluate(`document.querySelectorAll('#selection li').length >= 1`), 30_000);
  await page.evaluate(`document.getElementById('start').click()`);
  const code = await until('the code on the page', () => page.evaluate(`${shown('share')} ? document.getElementById('code').textContent.trim() : ''`), 30_000);
  const out = path.join(tmp, 'out');
  const started = performance.now();
  const rx = await start(BIN, ['receive', code, '--server', base, '--out', out]).done;
  const seconds = (performance.now() - started) / 1000;
  if (rx.code !== 0) throw new Error(`duplex receive failed: ${rx.err}`);
  if (sha256File(path.join(out, 'large.bin')) !== want) throw new Error('duplex receive got other bytes than the page sent');
  page.close();
  rates.browser_to_cli = size / seconds / 1e6;
}

serve.child.kill('SIGTERM');
console.log(`${MIB} MiB: duplex send → /receive page ${rates.cli_to_browser.toFixed(0)} MB/s; /send page → duplex receive ${rates.browser_to_cli.toFixed(0)} MB/s`);
if (process.env.DUPLEX_BROWSER_SPEED_OUT) fs.writeFileSync(process.env.DUPLEX_BROWSER_SPEED_OUT, JSON.stringify(rates));
process.exit(0);
