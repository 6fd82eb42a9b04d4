// Shared by the hub tests (chat.spec.mjs, hub-client.spec.mjs): starting
// and stopping the server under test, and polling against a deadline.
//
//   DUPLEX_SERVER_BIN   server to run as `BIN serve --bind ADDR --data DIR`
//                       (default: target/debug/duplex, else the
//                       duplex-server `serve` example)

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export function serverBinary() {
  if (process.env.DUPLEX_SERVER_BIN) return path.resolve(process.env.DUPLEX_SERVER_BIN);
  const candidates = [
    path.join(ROOT, 'target', 'debug', 'duplex'),
    path.join(ROOT, 'target', 'debug', 'examples', 'serve'),
  ];
  const found = candidates.find((c) => fs.existsSync(c));
  if (!found) {
    throw new Error(`no server binary: build one (cargo build -p duplex-server --example serve) or set DUPLEX_SERVER_BIN; looked for ${candidates.join(', ')}`);
  }
  return found;
}

/** A directory for this test process, removed by stopAll(). */
export const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'duplex-browser-'));
const servers = new Set();
const children = new Set();
// Whatever happens (a crash, an interrupt), no server is left running.
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(130));

/**
 * Starts `BIN serve` on a loopback address and waits for its address line.
 * The same `bind` and `data` again is a restart of the same server.
 */
export async function startServer({ bind = '127.0.0.1:0', data, extra = [] } = {}) {
  const bin = serverBinary();
  const dir = data || fs.mkdtempSync(path.join(tmp, 'data-'));
  const child = spawn(bin, ['serve', '--bind', bind, '--data', dir, ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  let log = '';
  child.stderr.on('data', (d) => {
    log += d;
  });
  const base = await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${bin} printed no address in 30 s; output: ${out}${log}`)), 30_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${bin} exited (${code}) before listening: ${out}${log}`));
    });
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/duplex: listening on (https?:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1].replace(/\/$/, ''));
      }
    });
  });
  child.stdout.resume();
  const server = {
    base,
    data: dir,
    port: Number(new URL(base).port),
    log: () => log,
    async stop() {
      servers.delete(server);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await once(child, 'exit');
      clearTimeout(timer);
    },
  };
  servers.add(server);
  return server;
}

/** Stops every server still running and removes the temporary directory. */
export async function stopAll() {
  for (const s of [...servers]) await s.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
}

/** POST /api/publish; returns the server's answer. */
export async function apiPublish(base, channel, data) {
  const res = await fetch(`${base}/api/publish`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  return body;
}

/**
 * Polls `condition` until it returns a truthy value (returned) or the
 * deadline passes (an error naming `what`, with `detail()` if given).
 */
export async function waitUntil(condition, { timeout = 10_000, what = 'the condition', detail } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${detail ? `: ${detail()}` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

export function range(from, to) {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
