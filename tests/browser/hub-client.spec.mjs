// Tests of duplex.js, the JavaScript hub client, under Node against the
// real server: the module is imported as the server serves it (/duplex.js
// and /hub-protocol.js, fetched to a temporary directory), with npm `ws`
// as its WebSocket.
//
//   NODE_PATH=target/xtask/node/node_modules node --test tests/browser/hub-client.spec.mjs
//
// Environment: DUPLEX_SERVER_BIN (see server.mjs); DUPLEX_TEST_SEED
// replays the random message counts and contents of a failed run (the
// seed is printed with every failure).
//
// Nothing sleeps to synchronise: every wait polls a condition against a
// deadline.

import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { pathToFileURL } from 'node:url';

import { range, serverBinary, startServer, stopAll, tmp, waitUntil } from './server.mjs';

// ESM `import` ignores NODE_PATH; require() honours it.
const require = createRequire(import.meta.url);
const WebSocket = require('ws');

const TEST_TIMEOUT = 90_000;
const SEED = process.env.DUPLEX_TEST_SEED ? Number(process.env.DUPLEX_TEST_SEED) : Math.floor(Math.random() * 2 ** 32);

/** mulberry32: a small seeded generator, so a failure replays. */
function generator(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    /** An integer in [lo, hi]. */
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    /** A message text: ASCII, accents, emoji, quotes and markup. */
    text(i) {
      const pieces = ['hello', 'é', '👋', '"quoted"', '<b>', 'tab\there', 'ünï', '\\', 'line\nbreak', '∑'];
      const n = this.int(1, 6);
      return `${i}: ${Array.from({ length: n }, () => pieces[this.int(0, pieces.length - 1)]).join(' ')}`;
    },
  };
}

/** A test whose random choices come from the seed, printed if it fails. */
function seededTest(name, body) {
  test(name, { timeout: TEST_TIMEOUT }, async () => {
    const random = generator(SEED ^ hash(name));
    try {
      await body(random);
    } catch (e) {
      console.log(`# failed with DUPLEX_TEST_SEED=${SEED}`);
      throw e;
    }
  });
}

function hash(text) {
  let h = 2166136261;
  for (const c of text) h = Math.imul(h ^ c.codePointAt(0), 16777619) >>> 0;
  return h;
}

let server;
let hub; // the module, as served
const clients = new Set();

/** Fetches `/duplex.js` and what it imports, as served, and imports it. */
async function importServedModule(base) {
  const dir = fs.mkdtempSync(path.join(tmp, 'module-'));
  for (const file of ['duplex.js', 'hub-protocol.js', 'duplex.d.ts', 'hub-protocol.d.ts']) {
    const res = await fetch(`${base}/${file}`);
    assert.equal(res.status, 200, `GET /${file}`);
    const type = res.headers.get('content-type');
    if (file.endsWith('.js')) assert.match(type, /^text\/javascript/, `${file} is served as JavaScript`);
    fs.writeFileSync(path.join(dir, file), await res.text());
  }
  return import(pathToFileURL(path.join(dir, 'duplex.js')).href);
}

/** A client of `base` (default: the shared server), closed after the tests. */
function newClient(options = {}, base = server.base) {
  const client = new hub.Client(`${base.replace(/^http/, 'ws')}/ws`, { WebSocket, ...options });
  clients.add(client);
  return client;
}

/** Collects a subscription's publications. */
function record(sub) {
  const got = [];
  sub.on('publication', (p) => got.push(p));
  return got;
}

function waitState(client, state, timeout = 10_000) {
  return waitUntil(() => client.state === state, { timeout, what: `state ${state}`, detail: () => `state is ${client.state}` });
}

function waitCount(list, n, what, timeout = 10_000) {
  return waitUntil(() => list.length >= n, { timeout, what: `${n} ${what}`, detail: () => `have ${list.length}` });
}

before(async () => {
  server = await startServer();
  console.log(`# server: ${serverBinary()} at ${server.base}; DUPLEX_TEST_SEED=${SEED}`);
  hub = await importServedModule(server.base);
}, { timeout: 60_000 });

after(async () => {
  for (const c of clients) c.close();
  await stopAll();
});

seededTest('publish resolves with the server\'s acknowledgement; a subscriber receives each publication once, in order', async (random) => {
  const channel = 'round-trip';
  const alice = newClient({ name: 'alice' });
  const bob = newClient({ name: 'bob' });
  const aliceSub = alice.subscribe(channel);
  const bobSub = bob.subscribe(channel);
  const aliceGot = record(aliceSub);
  const bobGot = record(bobSub);
  alice.connect();
  bob.connect();
  await Promise.all([aliceSub.ready, bobSub.ready]);
  assert.equal(alice.state, 'connected');
  assert.equal(alice.me.name, 'alice');

  const n = random.int(3, 30);
  const texts = range(1, n).map((i) => random.text(i));
  // All in flight at once: each ack resolves with its own offset.
  const acks = await Promise.all(texts.map((text) => aliceSub.publish({ text })));
  assert.deepEqual(acks.map((a) => a.offset), range(1, n));
  for (const ack of acks) {
    assert.equal(ack.channel, channel);
    assert.equal(typeof ack.epoch, 'string');
    assert.ok(ack.epoch.length > 0);
    assert.ok(!Number.isNaN(Date.parse(ack.ts)), ack.ts);
  }
  await waitCount(bobGot, n, 'publications at bob');
  await waitCount(aliceGot, n, 'publications at alice');
  for (const got of [bobGot, aliceGot]) {
    assert.deepEqual(got.map((p) => p.offset), range(1, n));
    assert.deepEqual(got.map((p) => p.data.text), texts);
    assert.ok(got.every((p) => p.from.name === 'alice' && p.epoch === acks[0].epoch));
  }
  assert.deepEqual(bobSub.position, { epoch: acks[0].epoch, offset: n });
  alice.close();
  bob.close();
});

seededTest('after a server restart (same port, same data) a client that was away receives exactly the missed publications', async (random) => {
  let own = await startServer();
  const { port, data } = own;
  const channel = 'restart';
  // ann's network can be cut: while `cut`, her sockets go to a closed port.
  let cut = false;
  class GatedWebSocket extends WebSocket {
    constructor(url) {
      super(cut ? 'ws://127.0.0.1:9/ws' : url);
    }
  }
  const ann = newClient({ name: 'ann', WebSocket: GatedWebSocket, backoffMax: 1000 }, own.base);
  const ben = newClient({ name: 'ben', backoffMax: 1000 }, own.base);
  const annSub = ann.subscribe(channel);
  const benSub = ben.subscribe(channel);
  const annGot = record(annSub);
  const annSubscribed = [];
  annSub.on('subscribed', (info) => annSubscribed.push(info));
  const gaps = [];
  annSub.on('gap', (g) => gaps.push(g));
  ann.connect();
  ben.connect();
  await Promise.all([annSub.ready, benSub.ready]);

  const before = random.int(1, 5);
  for (let i = 1; i <= before; i++) await benSub.publish({ text: `before ${i}` });
  await waitCount(annGot, before, 'publications before the restart');

  cut = true;
  await own.stop();
  await waitUntil(() => ann.state === 'reconnecting' && ben.state !== 'connected', { what: 'both to notice' });
  own = await startServer({ bind: `127.0.0.1:${port}`, data });
  await waitState(ben, 'connected', 20_000);

  // ben publishes while ann is away.
  const n = random.int(5, 40);
  const missed = range(1, n).map((i) => random.text(i));
  const acks = [];
  for (const text of missed) acks.push(await benSub.publish({ text }));
  assert.deepEqual(acks.map((a) => a.offset), range(before + 1, before + n), 'offsets go on after the restart');
  assert.equal(annGot.length, before, 'nothing reaches ann while she is away');

  cut = false;
  ann.reconnectNow();
  await waitState(ann, 'connected', 20_000);
  await waitCount(annGot, before + n, 'publications after the reconnect');
  assert.deepEqual(annGot.map((p) => p.offset), range(1, before + n), 'every offset once, in order');
  assert.deepEqual(annGot.slice(before).map((p) => p.data.text), missed);
  const last = annSubscribed.at(-1);
  assert.equal(last.recovered, true);
  assert.equal(last.missed, n);
  assert.deepEqual(last.since, { epoch: acks[0].epoch, offset: before });
  assert.deepEqual(gaps, []);

  // Live again: the next publication arrives once.
  await benSub.publish({ text: 'after' });
  await waitCount(annGot, before + n + 1, 'the live publication');
  assert.equal(annGot.at(-1).data.text, 'after');
  ann.close();
  ben.close();
  await own.stop();
});

seededTest('connections dropped in the middle of a stream of publications: still exactly once, in order', async (random) => {
  const channel = 'stream';
  const reader = newClient({ name: 'reader', backoffBase: 50, backoffMax: 200 });
  const writer = newClient({ name: 'writer' });
  const readerSub = reader.subscribe(channel);
  const writerSub = writer.subscribe(channel, { members: false });
  const got = record(readerSub);
  const subscribed = [];
  readerSub.on('subscribed', (info) => subscribed.push(info));
  reader.connect();
  writer.connect();
  await Promise.all([readerSub.ready, writerSub.ready]);

  const n = random.int(60, 150);
  const stream = (async () => {
    const acks = [];
    for (let i = 1; i <= n; i++) acks.push(await writerSub.publish({ i }));
    return acks;
  })();
  const drops = random.int(2, 5);
  for (let k = 1; k <= drops; k++) {
    const at = Math.floor((k * n) / (drops + 1));
    await waitUntil(() => reader.state === 'connected' && got.length >= at, { timeout: 20_000, what: `${at} received and connected` });
    reader.dropConnection();
  }
  const acks = await stream;
  assert.deepEqual(acks.map((a) => a.offset), range(1, n));
  await waitCount(got, n, 'publications', 20_000);
  await waitState(reader, 'connected', 20_000);
  assert.deepEqual(got.map((p) => p.offset), range(1, n), 'no loss, no duplicate');
  assert.deepEqual(got.map((p) => p.data.i), range(1, n));
  // Every reconnect resumed from where the reader was, none with a gap.
  assert.equal(subscribed.length, drops + 1);
  assert.ok(subscribed.slice(1).every((info) => info.since && info.recovered && !info.gap), JSON.stringify(subscribed));
  console.log(`# stream: ${n} publications, ${drops} drops, recovered ${subscribed.slice(1).map((i) => i.missed)} on reconnecting`);
  reader.close();
  writer.close();
});

seededTest('history pages back to the first publication, each page in order', async (random) => {
  const channel = 'paging';
  const writer = newClient({ name: 'archivist' });
  writer.connect();
  await waitState(writer, 'connected');
  const n = random.int(55, 140);
  const texts = range(1, n).map((i) => random.text(i));
  for (const text of texts) await writer.publish(channel, { text });

  const reader = newClient();
  const sub = reader.subscribe(channel, { presence: false });
  reader.connect();
  const info = await sub.ready;
  assert.equal(info.offset, n);
  const limit = random.int(7, 30);
  const pages = [];
  for (let i = 0; i <= n / limit + 1; i++) {
    const page = await sub.loadOlder(limit);
    pages.push(page);
    if (page.complete) break;
  }
  assert.equal(pages.at(-1).complete, true, 'paging ends');
  for (const page of pages) {
    const offsets = page.publications.map((p) => p.offset);
    assert.deepEqual(offsets, [...offsets].sort((a, b) => a - b), 'a page is in order');
    assert.ok(page.publications.length <= limit);
  }
  const all = pages.reverse().flatMap((p) => p.publications);
  assert.deepEqual(all.map((p) => p.offset), range(1, n));
  assert.deepEqual(all.map((p) => p.data.text), texts);
  assert.equal(sub.oldest, 1);

  const after = await sub.history({ after: n - 3 });
  assert.deepEqual(after.publications.map((p) => p.offset), [n - 2, n - 1, n]);
  writer.close();
  reader.close();
});

seededTest('presence: both nicknames online, typing reaches the other, leaving is seen', async () => {
  const channel = 'chat:presence';
  const carol = newClient({ name: 'carol' });
  const dan = newClient({ name: 'dan' });
  const carolSub = carol.subscribe(channel);
  const danSub = dan.subscribe(channel);
  const typing = [];
  carolSub.on('typing', (m) => typing.push(m.name));
  const left = [];
  carolSub.on('leave', (m) => left.push(m.name));
  carol.connect();
  await carolSub.ready;
  dan.connect();
  await danSub.ready;
  const names = (sub) => [...sub.members.values()].map((m) => m.name).sort();
  await waitUntil(() => names(carolSub).join() === 'carol,dan', { what: 'carol to see dan', detail: () => names(carolSub).join() });
  assert.deepEqual(names(danSub), ['carol', 'dan']);
  assert.deepEqual((await danSub.presence()).map((m) => m.name).sort(), ['carol', 'dan']);

  await danSub.typing();
  await waitCount(typing, 1, 'typing notices');
  assert.deepEqual(typing, ['dan']);

  dan.close();
  await waitUntil(() => names(carolSub).join() === 'carol', { what: 'dan to leave', detail: () => names(carolSub).join() });
  assert.deepEqual(left, ['dan']);
  carol.close();
});

seededTest('error replies are typed errors: a bad channel name, a taken nickname, not subscribed, not connected', async () => {
  const eve = newClient({ name: 'eve' });
  const idle = newClient();
  await assert.rejects(idle.publish('anywhere', 1), (e) => e instanceof hub.HubError && e.code === hub.CLIENT_ERROR_CODES.DISCONNECTED && e.transient);

  const eveSub = eve.subscribe('chat:errors');
  eve.connect();
  await eveSub.ready;
  await assert.rejects(eve.publish('not a channel!', { text: 'x' }), (e) => {
    assert.ok(e instanceof hub.HubError);
    assert.equal(e.code, hub.ERROR_CODES.BAD_REQUEST);
    assert.equal(e.command, 'publish');
    assert.match(e.message, /invalid channel name/);
    assert.equal(e.transient, false);
    return true;
  });
  assert.equal(hub.isValidChannel('not a channel!'), false);
  assert.equal(hub.isValidChannel('chat:ok'), true);
  await assert.rejects(eve.call('typing', { channel: 'chat:elsewhere' }), (e) => e.code === hub.ERROR_CODES.NOT_SUBSCRIBED);

  // Another user (another session) named eve: refused in that channel.
  const other = newClient({ name: 'eve' });
  const otherSub = other.subscribe('chat:errors');
  const errors = [];
  otherSub.on('error', (e) => errors.push(e));
  const fine = other.subscribe('chat:elsewhere');
  other.connect();
  await assert.rejects(otherSub.ready, (e) => e instanceof hub.HubError && e.code === hub.ERROR_CODES.NAME_TAKEN && e.command === 'subscribe');
  assert.equal(errors.length, 1);
  assert.equal(otherSub.ended, true);
  // The other subscription and the connection go on.
  await fine.ready;
  await waitState(other, 'connected');
  assert.equal(other.subscriptions.has('chat:errors'), false);
  assert.equal((await fine.publish({ text: 'still here' })).offset, 1);
  eve.close();
  other.close();
});

test('the served module is the committed one, and its protocol facts match the server', async () => {
  for (const file of ['duplex.js', 'hub-protocol.js', 'duplex.d.ts', 'hub-protocol.d.ts']) {
    const served = await (await fetch(`${server.base}/${file}`)).text();
    const committed = fs.readFileSync(new URL(`../../crates/server/ui/${file}`, import.meta.url), 'utf8');
    assert.equal(served, committed, `rebuild the binary: the served ${file} differs from the file`);
  }
  assert.equal(hub.COMMANDS.PUBLISH, 'publish');
  assert.equal(hub.ERROR_CODES.NAME_TAKEN, 'name_taken');
  assert.equal(hub.CLOSE.SHUTTING_DOWN, 1001);
  assert.deepEqual([...hub.FINAL_CLOSE_CODES], [1008]);
  const types = await (await fetch(`${server.base}/hub-protocol.d.ts`)).text();
  assert.match(types, /export type ServerErrorCode = "bad_request" \|/);
});
