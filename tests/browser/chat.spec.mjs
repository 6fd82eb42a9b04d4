// End-to-end tests of the chat page (crates/server/ui) in a real browser:
// Debian's chromium driven by playwright-core, against the real server.
//
//   NODE_PATH=target/xtask/node/node_modules node tests/browser/chat.spec.mjs
//
// Environment:
//   DUPLEX_SERVER_BIN   server to run as `BIN serve --bind ADDR --data DIR`
//                       (default: target/debug/duplex, else the
//                       duplex-server `serve` example)
//   DUPLEX_CHROMIUM     browser executable (default /usr/bin/chromium)
//   DUPLEX_BROWSER_OUT  where screenshots go (default target/browser)
//
// Every wait is on a DOM condition with a timeout; nothing sleeps to
// synchronise. Pages are served by the server under test (same origin).

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { ROOT, apiPublish, range, serverBinary, startServer, stopAll, tmp } from './server.mjs';

// ESM `import` ignores NODE_PATH; require() honours it.
const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

const OUT = path.resolve(process.env.DUPLEX_BROWSER_OUT || path.join(ROOT, 'target', 'browser'));
const CHROMIUM = process.env.DUPLEX_CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const WAIT = 10_000; // default wait for a DOM condition
const TEST_TIMEOUT = 90_000;

let server;
let browser;
const pageErrors = [];

before(async () => {
  fs.mkdirSync(OUT, { recursive: true });
  server = await startServer();
  console.log(`# server: ${serverBinary()} at ${server.base}`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    headless: true,
    timeout: 60_000,
  });
  console.log(`# browser: ${CHROMIUM} ${browser.version()}`);
}, { timeout: 120_000 });

after(async () => {
  if (browser) await browser.close();
  await stopAll();
});

// ------------------------------------------------------------------ helpers

/** A user: a fresh browser context (own storage) with one page. */
async function openUser({ base = server.base, viewport = { width: 1100, height: 720 }, options = {} } = {}) {
  const context = await browser.newContext({ viewport, ...options });
  // Record the commands the page sends, to check how often it sends typing.
  await context.addInitScript(() => {
    window.__sent = [];
    const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function (data) {
      try {
        window.__sent.push(JSON.parse(data).cmd);
      } catch {
        // not JSON
      }
      return send.call(this, data);
    };
  });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => pageErrors.push(`${page.url()}: ${e.message}`));
  return { context, page, base };
}

/** Opens the page and joins with the form. */
async function joinAs(user, name, room) {
  const { page, base } = user;
  await page.goto(room === undefined ? `${base}/` : `${base}/?room=${encodeURIComponent(room)}`);
  await page.getByLabel('Nickname', { exact: true }).fill(name);
  await page.getByRole('button', { name: 'Join' }).click();
  await waitConnected(page);
}

function waitConnected(page, timeout = WAIT) {
  return page.waitForSelector('#status[data-state="connected"]', { timeout });
}

/** The messages shown, in DOM order. */
function shown(page) {
  return page.$$eval('#message-list > li.msg:not(.pending)', (lis) =>
    lis.map((li) => ({
      offset: Number(li.dataset.offset),
      id: li.id,
      from: li.querySelector('.msg-from').textContent,
      text: li.querySelector('.msg-text').textContent,
      time: li.querySelector('time')?.getAttribute('datetime') ?? null,
      own: li.classList.contains('own'),
    })),
  );
}

function waitForCount(page, n, timeout = WAIT) {
  return page.waitForFunction(
    (n) => document.querySelectorAll('#message-list > li.msg:not(.pending)').length >= n,
    n,
    { timeout },
  );
}

function waitForText(page, text, timeout = WAIT) {
  return page.waitForFunction(
    (text) => [...document.querySelectorAll('#message-list > li.msg:not(.pending) .msg-text')].some((p) => p.textContent === text),
    text,
    { timeout },
  );
}

async function send(page, text) {
  const box = page.getByLabel('Message', { exact: true });
  await box.fill(text);
  await box.press('Enter');
  await waitForText(page, text);
}

function online(page) {
  return page.$$eval('#online li', (lis) => lis.map((li) => li.dataset.name));
}

function waitOnline(page, names, timeout = WAIT) {
  return page.waitForFunction(
    (want) => JSON.stringify([...document.querySelectorAll('#online li')].map((li) => li.dataset.name)) === JSON.stringify(want),
    names,
    { timeout },
  );
}

async function screenshot(page, name) {
  await page.screenshot({ path: path.join(OUT, `${name}.png`) });
}

function assertNoPageErrors() {
  assert.deepEqual(pageErrors.splice(0), [], 'JavaScript errors on the page');
}

// -------------------------------------------------------------------- tests

test('two users chat both ways; sender, server time and id; XSS-safe; typing indicator; online list', { timeout: TEST_TIMEOUT }, async () => {
  const alice = await openUser();
  const bob = await openUser();
  try {
    // No ?room=: the default room is "lobby", and the URL says so.
    await joinAs(alice, 'alice');
    assert.match(alice.page.url(), /\?room=lobby$/);
    await joinAs(bob, 'bob', 'lobby');
    await waitOnline(alice.page, ['alice', 'bob']);
    await waitOnline(bob.page, ['alice', 'bob']);

    const before = Date.now();
    await send(alice.page, 'Hi bob 👋');
    await waitForText(bob.page, 'Hi bob 👋');
    await send(bob.page, 'Hi alice, how are you?');
    await waitForText(alice.page, 'Hi alice, how are you?');

    for (const [who, user] of [['alice', alice], ['bob', bob]]) {
      const msgs = await shown(user.page);
      assert.deepEqual(msgs.map((m) => [m.offset, m.from, m.text]), [
        [1, 'alice', 'Hi bob 👋'],
        [2, 'bob', 'Hi alice, how are you?'],
      ], `messages as ${who} sees them`);
      assert.deepEqual(msgs.map((m) => m.id), ['m-1', 'm-2']);
      assert.deepEqual(msgs.map((m) => m.own), [who === 'alice', who === 'bob']);
      for (const m of msgs) {
        const t = Date.parse(m.time);
        assert.ok(Math.abs(t - before) < 60_000, `server timestamp ${m.time} is about now`);
      }
    }
    // The id is shown as "#offset" and the time as local time.
    const head = await alice.page.textContent('#m-1 .msg-head');
    assert.match(head, /#1/);
    assert.match(head, /\d{1,2}:\d{2}/);

    // User data is text, never markup.
    const evil = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>';
    await send(bob.page, evil);
    await waitForText(alice.page, evil);
    assert.equal(await alice.page.evaluate(() => document.querySelectorAll('#message-list img, #message-list script').length), 0);
    assert.equal(await alice.page.evaluate(() => window.__xss), undefined);

    // Typing: bob types for about 3 s; alice sees it; at most one typing
    // command per 2 s was sent; it disappears about 4 s after the last.
    await bob.page.evaluate(() => {
      window.__sent.length = 0;
    });
    const box = bob.page.getByLabel('Message', { exact: true });
    await box.focus();
    const typingSince = Date.now();
    const typing = box.pressSequentially('I am typing a long reply', { delay: 125 });
    await alice.page.waitForFunction(() => document.querySelector('#typing').textContent === 'bob is typing…');
    await screenshot(alice.page, 'chat-alice-typing');
    await typing;
    const typedFor = Date.now() - typingSince;
    const typings = await bob.page.evaluate(() => window.__sent.filter((c) => c === 'typing').length);
    assert.ok(typings >= 1 && typings <= 1 + Math.floor(typedFor / 2000), `typing sent ${typings} times in ${typedFor} ms`);
    const shownAt = Date.now();
    await alice.page.waitForFunction(() => document.querySelector('#typing').textContent === '', null, { timeout: 8000 });
    assert.ok(Date.now() - shownAt < 6000, 'the indicator goes away after about 4 s');
    assert.equal(await bob.page.textContent('#typing'), '', 'no indicator for oneself');
    await send(bob.page, 'I am typing a long reply');
    await screenshot(bob.page, 'chat-bob');

    // Leaving updates the online list.
    await bob.context.close();
    await waitOnline(alice.page, ['alice']);
    await screenshot(alice.page, 'chat-alice');
    assertNoPageErrors();
  } finally {
    await alice.context.close();
    await bob.context.close().catch(() => {});
  }
});

test('a reload shows the history; "load older" pages back; the nickname is remembered', { timeout: TEST_TIMEOUT }, async () => {
  const room = 'history';
  const alice = await openUser();
  try {
    await joinAs(alice, 'alice', room);
    for (const text of ['one', 'two', 'three']) await send(alice.page, text);
    await alice.page.reload();
    // The remembered name joins at once: no form.
    await waitConnected(alice.page);
    assert.equal(await alice.page.isVisible('#join'), false);
    await waitForCount(alice.page, 3);
    assert.deepEqual((await shown(alice.page)).map((m) => [m.offset, m.text]), [[1, 'one'], [2, 'two'], [3, 'three']]);
    assert.equal(await alice.page.textContent('#history-start'), `This is the beginning of #${room}.`);

    // 60 messages pushed over HTTP: the page shows the last 50, then pages back.
    const archive = 'archive';
    for (let i = 1; i <= 60; i++) await apiPublish(server.base, `chat:${archive}`, { text: `note ${i}` });
    await alice.page.goto(`${server.base}/?room=${archive}`);
    await waitConnected(alice.page);
    await waitForCount(alice.page, 50);
    assert.deepEqual((await shown(alice.page)).map((m) => m.offset), range(11, 60));
    const last = (await shown(alice.page)).at(-1);
    assert.deepEqual([last.from, last.text], ['notification', 'note 60']);
    const older = alice.page.getByRole('button', { name: 'Load older messages' });
    await older.click();
    await waitForCount(alice.page, 60);
    assert.deepEqual((await shown(alice.page)).map((m) => m.offset), range(1, 60));
    await alice.page.waitForSelector('#load-older', { state: 'hidden' });
    assert.equal(await alice.page.isVisible('#history-start'), true);
    await screenshot(alice.page, 'history');

    // A fresh page in the same context: the form is skipped, the name kept.
    assert.equal(await alice.page.evaluate(() => localStorage.getItem('duplex.chat.name')), 'alice');
    assertNoPageErrors();
  } finally {
    await alice.context.close();
  }
});

test('a lost connection recovers exactly the missed messages, in order, without duplicates', { timeout: TEST_TIMEOUT }, async () => {
  const room = 'recovery';
  const channel = `chat:${room}`;
  const alice = await openUser();
  const bob = await openUser();
  try {
    await joinAs(alice, 'alice', room);
    await joinAs(bob, 'bob', room);
    await send(alice.page, 'before 1');
    await send(alice.page, 'before 2');
    await waitForCount(bob.page, 2);

    // alice loses the network.
    await alice.context.setOffline(true);
    await alice.page.evaluate(() => window.duplexChat.dropConnection());
    await alice.page.waitForSelector('#status[data-state="offline"]');
    assert.match(await alice.page.textContent('#status'), /offline/);
    await waitOnline(bob.page, ['bob']);

    // Meanwhile bob chats and the server pushes notifications.
    const missed = [];
    for (let i = 1; i <= 3; i++) {
      await send(bob.page, `while away ${i}`);
      missed.push(['bob', `while away ${i}`]);
      const r = await apiPublish(server.base, channel, { text: `pushed ${i}` });
      assert.equal(r.offset, 2 + 2 * i);
      missed.push(['notification', `pushed ${i}`]);
    }
    await waitForCount(bob.page, 8);
    assert.deepEqual((await shown(alice.page)).map((m) => m.offset), [1, 2], 'nothing arrives while offline');
    await screenshot(alice.page, 'recovery-offline');

    // Back online: the page reconnects by itself and recovers with `since`.
    await alice.context.setOffline(false);
    await waitConnected(alice.page, 20_000);
    await waitForCount(alice.page, 8);
    const msgs = await shown(alice.page);
    assert.deepEqual(msgs.map((m) => m.offset), range(1, 8));
    assert.deepEqual(msgs.slice(2).map((m) => [m.from, m.text]), missed);
    const snap = await alice.page.evaluate(() => window.duplexChat.snapshot());
    assert.equal(snap.lastCatchUp.recovered, true, 'recovered with since');
    assert.deepEqual(snap.lastCatchUp.since.offset, 2);
    assert.equal(snap.lastCatchUp.count, 6);
    assert.equal(await alice.page.locator('#message-list .divider').count(), 0, 'no gap marker');
    await waitOnline(bob.page, ['alice', 'bob']);
    await waitOnline(alice.page, ['alice', 'bob']);
    await send(alice.page, 'back again');
    await waitForText(bob.page, 'back again');
    await screenshot(alice.page, 'recovery-recovered');

    // Drops in the middle of a stream of publications: still exact.
    const stream = (async () => {
      for (let i = 1; i <= 40; i++) await apiPublish(server.base, channel, { text: `stream ${i}` });
    })();
    for (let k = 0; k < 3; k++) {
      await alice.page.waitForFunction((n) => window.duplexChat.snapshot().highest >= n && window.duplexChat.snapshot().connected, 12 + 10 * k, { timeout: 20_000 });
      await alice.page.evaluate(() => window.duplexChat.dropConnection());
    }
    await stream;
    await waitForCount(bob.page, 49, 20_000);
    await waitForCount(alice.page, 49, 20_000);
    await waitConnected(alice.page, 20_000);
    const all = await shown(alice.page);
    assert.deepEqual(all.map((m) => m.offset), range(1, 49));
    assert.deepEqual(all.slice(9).map((m) => m.text), range(1, 40).map((i) => `stream ${i}`));
    const ids = await alice.page.$$eval('#message-list [id]', (els) => els.map((e) => e.id));
    assert.equal(new Set(ids).size, ids.length, 'no duplicate message ids in the DOM');
    assert.deepEqual((await shown(bob.page)).map((m) => m.offset), range(1, 49));
    assertNoPageErrors();
  } finally {
    await alice.context.close();
    await bob.context.close();
  }
});

test('a taken nickname asks for another one', { timeout: TEST_TIMEOUT }, async () => {
  const room = 'names';
  const alice = await openUser();
  const other = await openUser();
  try {
    await joinAs(alice, 'alice', room);
    await other.page.goto(`${server.base}/?room=${room}`);
    await other.page.getByLabel('Nickname', { exact: true }).fill('alice');
    await other.page.getByRole('button', { name: 'Join' }).click();
    const error = other.page.locator('#join-error');
    await error.waitFor({ state: 'visible' });
    assert.match(await error.textContent(), /“alice” is taken in #names/);
    assert.equal(await other.page.evaluate(() => document.activeElement.id), 'join-name', 'focus is on the nickname');
    assert.equal(await other.page.getAttribute('#join-name', 'aria-invalid'), 'true');
    await screenshot(other.page, 'name-taken');
    await other.page.getByLabel('Nickname', { exact: true }).fill('carol');
    await other.page.getByRole('button', { name: 'Join' }).click();
    await waitConnected(other.page);
    await waitOnline(alice.page, ['alice', 'carol']);
    await waitOnline(other.page, ['alice', 'carol']);
    // Moving to another room is a leave here.
    await other.page.getByRole('button', { name: 'Change name or room' }).click();
    assert.equal(await other.page.inputValue('#join-name'), 'carol');
    await other.page.getByLabel('Room', { exact: true }).fill('elsewhere');
    await other.page.getByRole('button', { name: 'Join' }).click();
    await waitConnected(other.page);
    assert.match(other.page.url(), /\?room=elsewhere$/);
    await waitOnline(alice.page, ['alice']);
    await waitOnline(other.page, ['carol']);
    assertNoPageErrors();
  } finally {
    await alice.context.close();
    await other.context.close().catch(() => {});
  }
});

test('sending too fast shows a rate-limit notice and loses nothing silently', { timeout: TEST_TIMEOUT }, async () => {
  // A server of its own whose bucket refills slowly (10 per second, not
  // 50): on a busy machine the page's flood may take a second or more to
  // go out, and at 50 per second the refill alone could let all of it in.
  const own = await startServer({ extra: ['--rate-limit', '10'] });
  const dave = await openUser({ base: own.base });
  try {
    await joinAs(dave, 'dave', 'flood');
    // 260 sends at once: more than the server's burst (200).
    await dave.page.evaluate(() => {
      const box = document.getElementById('composer-input');
      const form = document.getElementById('composer');
      for (let i = 1; i <= 260; i++) {
        box.value = `flood ${i}`;
        form.requestSubmit();
      }
    });
    await dave.page.waitForFunction(() => [...document.querySelectorAll('.notice')].some((n) => n.textContent.includes('sending too fast')));
    await dave.page.waitForFunction(() => document.querySelectorAll('#message-list .pending').length === 0, null, { timeout: 20_000 });
    const msgs = await shown(dave.page);
    const n = msgs.length;
    assert.ok(n >= 190 && n < 260, `${n} of 260 accepted`);
    assert.deepEqual(msgs.map((m) => m.offset), range(1, n));
    const sent = msgs.map((m) => Number(m.text.replace('flood ', '')));
    // The burst (200, less the commands that joined) is accepted in order.
    assert.deepEqual(sent.slice(0, 190), range(1, 190), 'the burst is accepted in order');
    assert.ok(sent.every((v, i) => i === 0 || v > sent[i - 1]), 'what was accepted is in order');
    // The text of a refused message goes back into the box.
    assert.match(await dave.page.inputValue('#composer-input'), /^flood \d+$/);
    await dave.page.getByLabel('Message', { exact: true }).fill('');
    await screenshot(dave.page, 'rate-limited');
    // The bucket refills: sending works again.
    await send(dave.page, 'calm again');
    assertNoPageErrors();
  } finally {
    await dave.context.close();
    await own.stop();
  }
});

test('server restarts: same data recovers; wiped data shows the gap marker', { timeout: TEST_TIMEOUT }, async () => {
  let own = await startServer();
  const { port, data } = own;
  const room = 'restart';
  const alice = await openUser({ base: own.base });
  try {
    await joinAs(alice, 'alice', room);
    for (const text of ['a', 'b', 'c']) await send(alice.page, text);

    // A graceful restart with the same data: history and position survive.
    await own.stop();
    await alice.page.waitForSelector('#status[data-state="reconnecting"]');
    await screenshot(alice.page, 'restart-reconnecting');
    own = await startServer({ bind: `127.0.0.1:${port}`, data });
    await waitConnected(alice.page, 40_000);
    let snap = await alice.page.evaluate(() => window.duplexChat.snapshot());
    assert.equal(snap.lastCatchUp.recovered, true);
    await apiPublish(own.base, `chat:${room}`, { text: 'after restart' });
    await waitForCount(alice.page, 4);
    assert.deepEqual((await shown(alice.page)).map((m) => [m.offset, m.text]), [[1, 'a'], [2, 'b'], [3, 'c'], [4, 'after restart']]);

    // The data directory is lost: a new epoch. The page refetches and marks the gap.
    await own.stop();
    await alice.page.waitForSelector('#status[data-state="reconnecting"]');
    own = await startServer({ bind: `127.0.0.1:${port}` });
    await apiPublish(own.base, `chat:${room}`, { text: 'new history' });
    await waitConnected(alice.page, 40_000);
    await waitForText(alice.page, 'new history');
    snap = await alice.page.evaluate(() => window.duplexChat.snapshot());
    assert.equal(snap.lastCatchUp.recovered, false);
    const divider = alice.page.locator('#message-list .divider');
    assert.equal(await divider.count(), 1);
    assert.match(await divider.textContent(), /Some messages may be missing/);
    assert.deepEqual((await shown(alice.page)).map((m) => [m.offset, m.text]), [[1, 'new history']]);
    await screenshot(alice.page, 'restart-gap');
    assertNoPageErrors();
  } finally {
    await alice.context.close();
    await own.stop();
  }
});

test('duplex.js in a page of another app and in the chat page: after a server restart both recover exactly the missed messages', { timeout: TEST_TIMEOUT }, async () => {
  let own = await startServer();
  const { port, data } = own;
  const room = 'shared';
  const channel = `chat:${room}`;
  const alice = await openUser({ base: own.base });
  // Another app: a page of the server (same origin) with nothing but a
  // tiny inline module that imports /duplex.js.
  const widget = await openUser({ base: own.base });
  try {
    const loaded = [];
    alice.page.on('request', (r) => loaded.push(new URL(r.url()).pathname));
    await joinAs(alice, 'alice', room);
    assert.ok(loaded.includes('/duplex.js') && loaded.includes('/hub-protocol.js'), `the chat page loads duplex.js: ${loaded}`);

    await widget.page.goto(`${own.base}/healthz`);
    await widget.page.addScriptTag({
      type: 'module',
      content: `
        import { Client } from '/duplex.js';
        const client = new Client(location.origin.replace(/^http/, 'ws') + '/ws', { name: 'widget', backoffMax: 1000 });
        const sub = client.subscribe(${JSON.stringify(channel)});
        const app = { got: [], subscribed: [], state: () => client.state, publish: (text) => sub.publish({ text }) };
        sub.on('publication', (p) => app.got.push({ offset: p.offset, text: p.data.text, from: p.from.name }));
        sub.on('subscribed', (info) => app.subscribed.push(info));
        window.app = app;
        client.connect();
      `,
    });
    await widget.page.waitForFunction(() => window.app?.state() === 'connected');
    await waitOnline(alice.page, ['alice', 'widget']);
    const ack = await widget.page.evaluate(() => window.app.publish('hello from the widget'));
    assert.equal(ack.offset, 1);
    await waitForText(alice.page, 'hello from the widget');
    await send(alice.page, 'hello widget');
    await widget.page.waitForFunction(() => window.app.got.length === 2);

    // The server goes down; both pages lose the network while it is
    // restarted (same port, same data) and others publish.
    await own.stop();
    await alice.page.waitForSelector('#status[data-state="reconnecting"]');
    await widget.page.waitForFunction(() => window.app.state() !== 'connected');
    await alice.context.setOffline(true);
    await widget.context.setOffline(true);
    own = await startServer({ bind: `127.0.0.1:${port}`, data });
    const missed = range(1, 7).map((i) => `while both were away ${i}`);
    for (const text of missed) await apiPublish(own.base, channel, { text });

    await alice.context.setOffline(false);
    await widget.context.setOffline(false);
    await waitConnected(alice.page, 40_000);
    await waitForCount(alice.page, 9, 20_000);
    await widget.page.waitForFunction(() => window.app.state() === 'connected' && window.app.got.length >= 9, null, { timeout: 40_000 });

    const msgs = await shown(alice.page);
    assert.deepEqual(msgs.map((m) => m.offset), range(1, 9));
    assert.deepEqual(msgs.slice(2).map((m) => m.text), missed);
    const snap = await alice.page.evaluate(() => window.duplexChat.snapshot());
    assert.equal(snap.lastCatchUp.recovered, true);
    assert.equal(snap.lastCatchUp.count, 7);
    assert.equal(await alice.page.locator('#message-list .divider').count(), 0, 'no gap marker');

    const app = await widget.page.evaluate(() => ({ got: window.app.got, last: window.app.subscribed.at(-1) }));
    assert.deepEqual(app.got.map((p) => p.offset), range(1, 9), 'the widget saw every offset once, in order');
    assert.deepEqual(app.got.slice(2).map((p) => p.text), missed);
    assert.equal(app.last.recovered, true);
    assert.equal(app.last.missed, 7);
    assert.deepEqual(app.last.since.offset, 2);
    await waitOnline(alice.page, ['alice', 'widget']);
    assertNoPageErrors();
  } finally {
    await alice.context.close();
    await widget.context.close();
    await own.stop();
  }
});

test('a phone-sized screen in dark mode: nothing overflows, the chat works, the help hint works', { timeout: TEST_TIMEOUT }, async () => {
  const eve = await openUser({ viewport: { width: 390, height: 760 }, options: { isMobile: true, hasTouch: true, colorScheme: 'dark' } });
  try {
    await joinAs(eve, 'eve', 'lobby');
    await send(eve.page, 'Hello from a small screen, with a rather long line that has to wrap nicely without overflowing');
    const overflow = await eve.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `horizontal overflow of ${overflow}px`);
    for (const sel of ['#composer-input', '#send', '#online']) {
      const box = await eve.page.locator(sel).boundingBox();
      assert.ok(box && box.x >= 0 && box.x + box.width <= 390, `${sel} fits the screen`);
    }
    await eve.page.locator('.footer summary').click();
    const curl = await eve.page.textContent('#help-curl');
    assert.match(curl, /^curl -d '\{"channel":"chat:lobby","data":\{"text":"Hello from curl"\}\}' http:\/\/127\.0\.0\.1:\d+\/api\/publish$/);
    assert.match(await eve.page.textContent('#help-echo'), /^ws:\/\/127\.0\.0\.1:\d+\/echo$/);
    // The hint works as written: the body and URL it shows push a message.
    const [, body, url] = curl.match(/-d '(.*)' (\S+)$/);
    const res = await fetch(url, { method: 'POST', body });
    assert.equal(res.status, 200, await res.text());
    await waitForText(eve.page, 'Hello from curl');
    await screenshot(eve.page, 'mobile');
    assertNoPageErrors();
  } finally {
    await eve.context.close();
  }
});

const openssl = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;

/** A self-signed certificate for 127.0.0.1 and localhost, made by openssl. */
function selfSigned() {
  const dir = fs.mkdtempSync(path.join(tmp, 'tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  const gen = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-keyout', key, '-out', cert], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(gen.status, 0, gen.stderr);
  return ['--tls-cert', cert, '--tls-key', key];
}

/**
 * Records, through the DevTools protocol, each WebSocket handshake's
 * status and headers and each HTTP response's protocol (h2, http/1.1).
 */
async function recordNetwork(page) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  const handshakes = [];
  const protocols = [];
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
    const headers = Object.fromEntries(Object.entries(e.response.headers).map(([k, v]) => [k.toLowerCase(), v]));
    handshakes.push({ status: e.response.status, headers });
  });
  cdp.on('Network.responseReceived', (e) => protocols.push(e.response.protocol));
  return { handshakes, protocols };
}

/** A metric of the server, fetched by the page (on its own connection). */
async function pageMetric(page, name) {
  const text = await page.evaluate(() => fetch('/metrics').then((r) => r.text()));
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `no ${name} in /metrics`);
  return Number(line.split(' ')[1]);
}

/** Opens `n` WebSockets to /echo from the page, each echoing one message. */
function echoFromPage(page, n) {
  return page.evaluate(async (n) => {
    const url = `${location.origin.replace(/^http/, 'ws')}/echo`;
    const one = (i) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(url);
        const text = `socket ${i}: ${'compressible '.repeat(200)}`;
        ws.onerror = () => reject(new Error(`socket ${i} failed`));
        ws.onopen = () => ws.send(text);
        ws.onmessage = (e) => {
          resolve({ same: e.data === text, extensions: ws.extensions });
          ws.close(1000);
        };
      });
    return Promise.all(Array.from({ length: n }, (_, i) => one(i)));
  }, n);
}

/**
 * Opens WebSockets to /echo from the page, wave after wave (`waves`: how
 * many in each), and holds them all open; then each echoes one message,
 * and all close.
 */
function holdFromPage(page, waves) {
  return page.evaluate(async (waves) => {
    const url = `${location.origin.replace(/^http/, 'ws')}/echo`;
    const sockets = [];
    for (const n of waves) {
      const wave = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          new Promise((resolve, reject) => {
            const ws = new WebSocket(url);
            ws.onerror = () => reject(new Error(`socket ${sockets.length + i} failed`));
            ws.onopen = () => resolve(ws);
          }),
        ),
      );
      sockets.push(...wave);
    }
    const echoes = await Promise.all(
      sockets.map(
        (ws, i) =>
          new Promise((resolve) => {
            ws.onmessage = (e) => resolve(e.data === `held ${i}`);
            ws.send(`held ${i}`);
          }),
      ),
    );
    for (const ws of sockets) ws.close(1000);
    return echoes;
  }, waves);
}

test('over https the page uses wss, over HTTP/2: the chat works end to end', { timeout: TEST_TIMEOUT, skip: openssl ? false : 'openssl is not installed' }, async () => {
  const tls = await startServer({ extra: selfSigned() });
  assert.match(tls.base, /^https:/);
  const frank = await openUser({ base: tls.base, options: { ignoreHTTPSErrors: true } });
  try {
    const net = await recordNetwork(frank.page);
    const sockets = [];
    frank.page.on('websocket', (ws) => sockets.push(ws.url()));
    await joinAs(frank, 'frank', 'secure');
    await send(frank.page, 'encrypted hello');
    assert.ok(sockets.length >= 1 && sockets.every((u) => u.startsWith('wss://')), `sockets: ${sockets}`);
    assert.match(await frank.page.textContent('#help-ws'), /^wss:\/\//);
    // The page came over HTTP/2, and so did the chat's socket (RFC 8441:
    // an extended CONNECT answered 200, not an upgrade answered 101).
    assert.ok(net.protocols.includes('h2'), `protocols: ${net.protocols}`);
    assert.ok(net.handshakes.length >= 1, 'a handshake was seen');
    assert.deepEqual(net.handshakes.map((h) => h.status), net.handshakes.map(() => 200));
    assertNoPageErrors();
  } finally {
    await frank.context.close();
    await tls.stop();
  }
});

test('over HTTP/2 one TLS connection carries the page and all its WebSockets, compressed; with --http2 false each is an upgrade', { timeout: TEST_TIMEOUT, skip: openssl ? false : 'openssl is not installed' }, async () => {
  const cert = selfSigned();
  for (const http2 of [true, false]) {
    const tls = await startServer({ extra: [...cert, '--http2', String(http2)] });
    const user = await openUser({ base: tls.base, options: { ignoreHTTPSErrors: true } });
    try {
      const net = await recordNetwork(user.page);
      // A page that opens no socket of its own.
      await user.page.goto(`${tls.base}/healthz`);
      const echoes = await echoFromPage(user.page, 4);
      assert.deepEqual(echoes.map((e) => e.same), [true, true, true, true], 'every echo came back whole');
      for (const e of echoes) assert.match(e.extensions, /permessage-deflate/);
      assert.equal(net.handshakes.length, 4, 'four handshakes seen');
      for (const h of net.handshakes) {
        assert.equal(h.status, http2 ? 200 : 101);
        assert.match(h.headers['sec-websocket-extensions'] ?? '', /permessage-deflate/);
      }
      assert.equal(net.protocols[0], http2 ? 'h2' : 'http/1.1');
      assert.equal(await pageMetric(user.page, 'duplex_http2_websockets_total'), http2 ? 4 : 0);
      // One TLS connection for the page, its fetches and its four sockets.
      assert.equal(await pageMetric(user.page, 'duplex_http2_connections_total'), http2 ? 1 : 0);
      assertNoPageErrors();
    } finally {
      await user.context.close();
      await tls.stop();
    }
  }
});

test('with http2_max_sockets = 0 the page comes over HTTP/2 and Chromium, its sockets reset with HTTP_1_1_REQUIRED, opens them over HTTP/1.1', { timeout: TEST_TIMEOUT, skip: openssl ? false : 'openssl is not installed' }, async () => {
  const config = path.join(fs.mkdtempSync(path.join(tmp, 'config-')), 'duplex.toml');
  fs.writeFileSync(config, 'http2_max_sockets = 0\n');
  const tls = await startServer({ extra: [...selfSigned(), '--config', config] });
  const user = await openUser({ base: tls.base, options: { ignoreHTTPSErrors: true } });
  try {
    const net = await recordNetwork(user.page);
    await user.page.goto(`${tls.base}/healthz`);
    assert.equal(net.protocols[0], 'h2');
    const echoes = await holdFromPage(user.page, [2, 2]);
    assert.deepEqual(echoes, [true, true, true, true], 'every socket echoed');
    assert.deepEqual(net.handshakes.map((h) => h.status), [101, 101, 101, 101]);
    assert.equal(await pageMetric(user.page, 'duplex_http2_websockets_total'), 0);
    assertNoPageErrors();
  } finally {
    await user.context.close();
    await tls.stop();
  }
});
