// Duplex chat: a UI on the hub client duplex.js (docs/protocol.md), as
// transfer.js is a UI on transfer-core.js. All protocol work (the
// connection, recovery with `since` after a reconnect, replies, backoff,
// presence) is the module's; this file shows it.
//
// A room is the channel `chat:<room>`; a message is a publication whose data
// is {"text": "..."} (plain strings and other JSON, e.g. pushed with
// POST /api/publish, are shown too). Messages are keyed by offset in the
// DOM, so nothing is ever shown twice.
//
// User data only ever reaches the page through textContent and validated
// attributes: never innerHTML.

import {
  CHANNEL_PUNCTUATION, CLIENT_ERROR_CODES, Client, ERROR_CODES, HubError, NAME_MAX_CHARS,
  SESSION_MAX_LENGTH, SESSION_MIN_LENGTH, isValidChannel, newSession,
} from './duplex.js';

const HISTORY_PAGE = 50;
const TYPING_SEND_EVERY_MS = 2000;
const TYPING_SHOW_MS = 4000;
// A remembered name may be held by our own previous connection (not yet
// noticed as gone by the server): retried this many times before asking
// for another. (duplex.js retries more on reconnects.)
const NAME_RETRIES_AUTOJOIN = 3;
const STORAGE_NAME = 'duplex.chat.name';
const STORAGE_SESSION = 'duplex.chat.session';

/** A secret kept across reconnects and reloads: the server then knows a
 *  reconnect is the same person and does not refuse them their own name. */
function sessionKey() {
  let key = localStorage.getItem(STORAGE_SESSION);
  const valid = new RegExp(`^[A-Za-z0-9_-]{${SESSION_MIN_LENGTH},${SESSION_MAX_LENGTH}}$`);
  if (!key || !valid.test(key)) {
    key = newSession();
    localStorage.setItem(STORAGE_SESSION, key);
  }
  return key;
}
// Room names are shorter than channel names allow, for the UI's sake.
const ROOM_MAX = 100;
const validRoom = (room) => !!room && room.length <= ROOM_MAX && isValidChannel(`chat:${room}`);
const NAME_MAX = NAME_MAX_CHARS;

const $ = (id) => document.getElementById(id);
const el = {
  status: $('status'),
  statusText: $('status-text'),
  retryNow: $('retry-now'),
  me: $('me'),
  meName: $('me-name'),
  change: $('change'),
  roomTitle: $('room-title'),
  roomName: $('room-name'),
  join: $('join'),
  joinForm: $('join-form'),
  joinName: $('join-name'),
  joinRoom: $('join-room'),
  joinError: $('join-error'),
  joinSubmit: $('join-submit'),
  chat: $('chat'),
  sidebar: $('sidebar'),
  messages: $('messages'),
  list: $('message-list'),
  loadOlder: $('load-older'),
  historyStart: $('history-start'),
  jump: $('jump'),
  typing: $('typing'),
  notices: $('notices'),
  composer: $('composer'),
  input: $('composer-input'),
  send: $('send'),
  online: $('online'),
  onlineCount: $('online-count'),
  helpWs: $('help-ws'),
  helpEcho: $('help-echo'),
  helpCurl: $('help-curl'),
};

const wsBase = (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host;

const state = {
  name: '',
  room: '',
  channel: '',
  client: null, // duplex.js Client of this join
  sub: null, // its Subscription to the room's channel
  wantConnected: false,
  connected: false, // subscribed and caught up
  caughtUp: false, // the messages are up to date on this connection
  generation: 0, // connections so far: a catch-up of an earlier one is stale
  autoJoin: false, // joined without the user pressing Join (remembered name)
  joinedOnce: false, // has held the name in this room since Join
  countdownTimer: 0,
  reconnectAt: 0,
  stopped: '', // why reconnecting stopped, if it did
  // Where a gap after a reconnect goes (sort key of its divider).
  gapAt: null,
  // What is shown: `epoch` is null until the first history load is done;
  // a channel without publications yet has the epoch "", so the epoch of
  // the newest publication shown wins (a rejoin resumes from there).
  epoch: null,
  pubEpoch: '',
  highest: 0,
  oldest: null,
  noOlder: false,
  rendered: new Map(), // offset -> <li>
  pendingByOffset: new Map(), // offset -> pending <li> of our own message
  members: new Map(), // client -> member
  typing: new Map(), // name -> time its indicator expires
  typingTimer: 0,
  lastTypingSent: 0,
  loadingOlder: false,
  unread: 0,
  // Messages whose publish was cut off by a dropped connection: they may
  // or may not have been published. Matched against what arrives next.
  unconfirmed: [],
  lastCatchUp: null,
};

// ---------------------------------------------------------------- status

function setStatus(kind, text) {
  el.status.dataset.state = kind;
  el.statusText.textContent = text;
  const canRetry = kind === 'reconnecting' || kind === 'offline' || kind === 'stopped';
  el.retryNow.hidden = !(canRetry && state.wantConnected) && kind !== 'stopped';
  el.composer.classList.toggle('disconnected', kind !== 'connected');
  el.sidebar.classList.toggle('stale', kind !== 'connected');
}

function showCountdown() {
  clearInterval(state.countdownTimer);
  const tick = () => {
    if (!navigator.onLine) {
      setStatus('offline', 'offline: waiting for the network');
      return;
    }
    const secs = Math.max(0, Math.ceil((state.reconnectAt - Date.now()) / 1000));
    setStatus('reconnecting', `reconnecting in ${secs} s`);
  };
  tick();
  state.countdownTimer = setInterval(tick, 250);
}

// --------------------------------------------------------------- notices

function notice(text, kind = 'info', ms = 8000) {
  // The same notice again (a burst of rate_limited): one, shown longer.
  for (const old of el.notices.children) {
    if (old.dataset.text === text && old.dataset.kind === kind) {
      clearTimeout(Number(old.dataset.timer));
      if (ms > 0) old.dataset.timer = String(setTimeout(() => old.remove(), ms));
      return old;
    }
  }
  const div = document.createElement('div');
  div.dataset.text = text;
  div.dataset.kind = kind;
  div.className = `notice ${kind}`;
  div.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  const span = document.createElement('span');
  span.textContent = text;
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'notice-close';
  close.setAttribute('aria-label', 'Dismiss');
  close.textContent = '×';
  close.addEventListener('click', () => div.remove());
  div.append(span, close);
  el.notices.append(div);
  while (el.notices.children.length > 3) el.notices.firstElementChild.remove();
  if (ms > 0) div.dataset.timer = String(setTimeout(() => div.remove(), ms));
  return div;
}

/** @param {HubError} e */
function describeError(e) {
  switch (e.code) {
    case 'rate_limited':
      return 'You are sending too fast: wait a moment and try again.';
    case 'too_large':
      return 'That message is too long for this server.';
    case 'forbidden':
      return `Not allowed: ${e.message}`;
    case 'banned':
      return `You are banned from #${state.room}.`;
    case CLIENT_ERROR_CODES.DISCONNECTED:
      return 'Not connected: your message is still in the box; send it once reconnected.';
    case CLIENT_ERROR_CODES.TIMEOUT:
      return 'The server did not answer in time.';
    default:
      return e.message || String(e.code);
  }
}

// ------------------------------------------------------------- messages

function nearBottom() {
  const m = el.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollToBottom() {
  el.messages.scrollTop = el.messages.scrollHeight;
  el.jump.hidden = true;
}

function formatTime(date) {
  const now = new Date();
  const sameDay = date.toDateString() === now.toDateString();
  const time = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  if (sameDay) return time;
  return `${date.toLocaleDateString([], { year: 'numeric', month: 'short', day: 'numeric' })} ${time}`;
}

/** The text of a publication's data. */
function messageText(data) {
  if (typeof data === 'string') return { text: data, json: false };
  if (data && typeof data === 'object' && !Array.isArray(data) && typeof data.text === 'string') {
    return { text: data.text, json: false };
  }
  return { text: JSON.stringify(data), json: true };
}

const URL_RE = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/g;

/** Appends `text` to `parent` as text nodes, with http(s) links as <a>. */
function appendText(parent, text) {
  let last = 0;
  for (const match of text.matchAll(URL_RE)) {
    let href = null;
    try {
      const url = new URL(match[0]);
      if (url.protocol === 'http:' || url.protocol === 'https:') href = url.href;
    } catch {
      href = null;
    }
    if (!href) continue;
    parent.append(document.createTextNode(text.slice(last, match.index)));
    const a = document.createElement('a');
    a.href = href;
    a.rel = 'noopener noreferrer nofollow';
    a.target = '_blank';
    a.textContent = match[0];
    parent.append(a);
    last = match.index + match[0].length;
  }
  parent.append(document.createTextNode(text.slice(last)));
}

function messageElement(p) {
  const li = document.createElement('li');
  const from = p.from && typeof p.from === 'object' ? p.from : {};
  const api = from.client === 'api';
  const own = !api && from.name === state.name;
  li.className = 'msg' + (own ? ' own' : '') + (api ? ' api' : '');
  li.id = `m-${p.offset}`;
  li.dataset.offset = String(p.offset);
  li.dataset.sort = String(p.offset);

  const head = document.createElement('div');
  head.className = 'msg-head';
  const who = document.createElement('span');
  who.className = 'msg-from';
  who.textContent = api ? 'notification' : String(from.name ?? from.user ?? 'unknown');
  if (api) who.title = 'pushed with POST /api/publish';
  const time = document.createElement('time');
  time.className = 'msg-time';
  const date = new Date(p.ts);
  if (!Number.isNaN(date.getTime())) {
    time.dateTime = date.toISOString();
    time.textContent = formatTime(date);
    time.title = date.toLocaleString();
  }
  const id = document.createElement('a');
  id.className = 'msg-id';
  id.href = `#m-${p.offset}`;
  id.title = 'message id (offset in the room)';
  id.textContent = `#${p.offset}`;
  head.append(who, time, id);

  const body = document.createElement('p');
  const { text, json } = messageText(p.data);
  body.className = json ? 'msg-text json' : 'msg-text';
  appendText(body, text);
  li.append(head, body);
  return li;
}

/** Inserts `li` in offset order (sort key), scanning from the end. */
function insertSorted(li) {
  const key = Number(li.dataset.sort);
  let after = el.list.lastElementChild;
  while (after && Number(after.dataset.sort) > key) after = after.previousElementSibling;
  if (after) after.after(li);
  else el.list.prepend(li);
}

/** Shows a publication unless it is already shown. Returns whether it was new. */
function renderPublication(p) {
  if (!p || p.channel !== state.channel || !Number.isSafeInteger(p.offset)) return false;
  if (state.rendered.has(p.offset)) return false;
  const li = messageElement(p);
  state.rendered.set(p.offset, li);
  insertSorted(li);
  const pending = state.pendingByOffset.get(p.offset);
  if (pending) {
    pending.remove();
    state.pendingByOffset.delete(p.offset);
  }
  if (p.offset > state.highest) {
    state.highest = p.offset;
    if (typeof p.epoch === 'string' && p.epoch) state.pubEpoch = p.epoch;
  }
  if (state.oldest === null || p.offset < state.oldest) state.oldest = p.offset;
  if (p.from && p.from.name && state.typing.delete(p.from.name)) renderTyping();
  return true;
}

/** Shows live or recovered publications at the bottom. */
function renderNew(publications) {
  const stick = nearBottom();
  let added = 0;
  let mine = false;
  for (const p of publications) {
    if (renderPublication(p)) {
      added += 1;
      if (p.from && p.from.client !== 'api' && p.from.name === state.name) {
        mine = true;
        confirmDelivered(p);
      }
    }
  }
  if (!added) return;
  if (stick || mine) scrollToBottom();
  else el.jump.hidden = false;
  if (document.hidden) {
    state.unread += added;
    updateTitle();
  }
  updateHistoryControls();
}

function addDivider(text, sortKey) {
  const li = document.createElement('li');
  li.className = 'divider';
  li.setAttribute('role', 'separator');
  li.dataset.sort = String(sortKey);
  const span = document.createElement('span');
  span.textContent = text;
  li.append(span);
  insertSorted(li);
}

function clearMessages() {
  el.list.replaceChildren();
  state.rendered.clear();
  state.pendingByOffset.clear();
  state.highest = 0;
  state.oldest = null;
  state.noOlder = false;
  state.epoch = null;
  state.pubEpoch = '';
}

function updateHistoryControls() {
  const empty = state.rendered.size === 0;
  const more = !empty && state.oldest > 1 && !state.noOlder;
  el.loadOlder.hidden = !more;
  el.historyStart.hidden = more || state.epoch === null;
  el.historyStart.textContent = empty
    ? `No messages in #${state.room} yet. Say hello!`
    : `This is the beginning of #${state.room}.`;
}

async function loadOlder() {
  const sub = state.sub;
  if (!sub || !state.connected || state.loadingOlder || state.oldest === null) return;
  state.loadingOlder = true;
  el.loadOlder.disabled = true;
  el.loadOlder.textContent = 'Loading…';
  try {
    const { publications, complete } = await sub.loadOlder(HISTORY_PAGE);
    if (sub !== state.sub) return;
    const fromBottom = el.messages.scrollHeight - el.messages.scrollTop;
    for (const p of publications) renderPublication(p);
    if (complete) state.noOlder = true;
    el.messages.scrollTop = el.messages.scrollHeight - fromBottom;
  } catch (e) {
    notice(`Could not load older messages: ${describeError(e)}`, 'error');
  } finally {
    state.loadingOlder = false;
    el.loadOlder.disabled = false;
    el.loadOlder.textContent = 'Load older messages';
    updateHistoryControls();
  }
}

/** One of our messages arrived: if it was unconfirmed, it was sent after all. */
function confirmDelivered(p) {
  const { text } = messageText(p.data);
  const now = Date.now();
  state.unconfirmed = state.unconfirmed.filter((u) => !u.until || u.until > now);
  const i = state.unconfirmed.findIndex((u) => u.text === text);
  if (i < 0) return;
  const [u] = state.unconfirmed.splice(i, 1);
  u.notice.remove();
  if (el.input.value.trim() === text) {
    el.input.value = '';
    autoGrow();
  }
  notice(`Your message “${text.length > 60 ? `${text.slice(0, 60)}…` : text}” was delivered after all.`, 'info');
}

/**
 * After catching up, unconfirmed messages that did not arrive were most
 * likely not sent. (The old connection may still deliver them for a
 * moment, so they keep being matched for a while.)
 */
function afterCatchUp() {
  const open = state.unconfirmed.filter((u) => !u.until);
  if (!open.length) return;
  for (const u of open) {
    u.notice.remove();
    u.notice = notice('Your message did not reach the server before the connection dropped. It is still in the box: press Enter to send it.', 'error', 12000);
    u.until = Date.now() + 30000;
  }
}

// ---------------------------------------------------------------- typing

function renderTyping() {
  const now = Date.now();
  for (const [name, until] of state.typing) if (until <= now) state.typing.delete(name);
  const names = [...state.typing.keys()].sort((a, b) => a.localeCompare(b));
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = 'Several people are typing…';
  if (el.typing.textContent !== text) el.typing.textContent = text;
  clearTimeout(state.typingTimer);
  if (names.length) {
    const next = Math.min(...state.typing.values()) - now;
    state.typingTimer = setTimeout(renderTyping, Math.max(50, next + 20));
  }
}

function onInputTyping() {
  autoGrow();
  if (!state.connected || !el.input.value.trim()) return;
  const now = Date.now();
  if (now - state.lastTypingSent < TYPING_SEND_EVERY_MS) return;
  state.lastTypingSent = now;
  state.sub.typing().catch(() => {});
}

// -------------------------------------------------------------- presence

function renderMembers() {
  const names = new Map();
  const me = state.client?.me;
  for (const m of state.members.values()) {
    const own = !!me && m.client === me.client;
    const name = String(m.name);
    names.set(name, (names.get(name) || false) || own);
  }
  const sorted = [...names.keys()].sort((a, b) => a.localeCompare(b));
  const items = sorted.map((name) => {
    const li = document.createElement('li');
    li.dataset.name = name;
    const dot = document.createElement('span');
    dot.className = 'online-dot';
    dot.setAttribute('aria-hidden', 'true');
    const label = document.createElement('span');
    label.className = 'online-name';
    label.textContent = name;
    li.append(dot, label);
    if (names.get(name)) {
      li.classList.add('own');
      const you = document.createElement('span');
      you.className = 'you';
      you.textContent = '(you)';
      li.append(you);
    }
    return li;
  });
  el.online.replaceChildren(...items);
  el.onlineCount.textContent = String(sorted.length);
}

// ------------------------------------------------------------ connection

/** Starts the client of this join: one subscription, to the room. */
function startClient() {
  // Rejoining the room shown resumes from the newest message shown.
  const since = state.epoch !== null ? { epoch: state.pubEpoch || state.epoch || '', offset: state.highest } : undefined;
  const client = new Client(`${wsBase}/ws`, { name: state.name, session: sessionKey() });
  const sub = client.subscribe(state.channel, {
    since,
    nameTakenRetries: state.autoJoin ? NAME_RETRIES_AUTOJOIN : 0,
  });
  state.client = client;
  state.sub = sub;
  const current = () => client === state.client;

  client.on('state', (kind, details) => {
    if (!current()) return;
    clearInterval(state.countdownTimer);
    if (kind === 'connecting') {
      state.caughtUp = false;
      state.generation += 1;
      setStatus('connecting', state.joinedOnce ? 'reconnecting…' : 'connecting…');
    } else if (kind === 'reconnecting') {
      state.reconnectAt = details.at;
      showCountdown();
    } else if (kind === 'stopped' && details.error) {
      onJoinError(details.error);
    } else if (kind === 'stopped') {
      const reason = details.reason ? `: ${details.reason}` : '';
      stop(`disconnected by the server${reason}`);
      notice(`The server closed the connection${reason}.`, 'error', 0);
    }
  });
  client.on('connected', () => {
    if (current()) showConnected();
  });
  client.on('disconnected', () => {
    if (!current()) return;
    state.connected = false;
    state.caughtUp = false;
    state.typing.clear();
    renderTyping();
  });
  client.on('error', (e) => {
    if (current()) notice(describeError(e), 'error');
  });

  sub.on('publication', (p) => {
    // Before the first catch-up, history will bring the older ones in order.
    if (current()) renderNew([p]);
  });
  sub.on('gap', (gap) => {
    if (!current()) return;
    if (gap.epochChanged) {
      clearMessages();
    } else if (gap.offset < gap.since.offset) {
      // The server no longer has what we showed last: drop it, or its
      // offsets would hide the new messages that will reuse them.
      for (const [offset, li] of state.rendered) {
        if (offset > gap.offset) {
          li.remove();
          state.rendered.delete(offset);
        }
      }
      state.highest = gap.offset;
    }
    state.gapAt = gap.epochChanged ? -1 : state.highest + 0.5;
  });
  sub.on('subscribed', (info) => {
    if (current()) onSubscribed(client, sub, info);
  });
  sub.on('members', (members) => {
    if (!current()) return;
    state.members = new Map(members.map((m) => [m.client, m]));
    renderMembers();
  });
  sub.on('leave', (member) => {
    if (current() && state.typing.delete(member.name)) renderTyping();
  });
  sub.on('typing', (member) => {
    if (!current() || (client.me && member.client === client.me.client)) return;
    state.typing.set(String(member.name), Date.now() + TYPING_SHOW_MS);
    renderTyping();
  });
  sub.on('kicked', (reason) => {
    if (!current()) return;
    stop();
    showJoin(`You were removed from #${state.room}: ${reason || 'by an admin'}.`);
  });
  sub.on('error', (e) => {
    if (current()) onJoinError(e);
  });
  client.connect();
}

/** Subscribed (again): bring the messages up to date, then show it. */
async function onSubscribed(client, sub, info) {
  const generation = state.generation;
  // Until caught up, presence and typing pushes may already arrive.
  el.list.setAttribute('aria-busy', 'true');
  try {
    await catchUp(sub, info);
  } catch (e) {
    // A dropped connection is re-made, and subscribed again, by duplex.js.
    if (client === state.client && e.code !== CLIENT_ERROR_CODES.DISCONNECTED) client.dropConnection();
    return;
  } finally {
    el.list.setAttribute('aria-busy', 'false');
  }
  if (client !== state.client || generation !== state.generation) return;
  state.caughtUp = true;
  showConnected();
}

/** Shows "connected" once both duplex.js (every subscription confirmed)
 *  and the page (caught up) are. */
function showConnected() {
  const client = state.client;
  if (!state.caughtUp || client.state !== 'connected' || state.connected) return;
  state.connected = true;
  state.joinedOnce = true;
  setStatus('connected', 'connected');
  el.meName.textContent = client.me.name;
  el.me.hidden = false;
}

/** Brings the message list up to date after a (re)subscribe. */
async function catchUp(sub, info) {
  const initial = state.epoch === null; // nothing of this epoch loaded yet
  if (info.recovered && !initial) {
    state.epoch = info.epoch;
    state.lastCatchUp = { recovered: true, count: info.missed, since: info.since };
    afterCatchUp();
    updateHistoryControls();
    return;
  }
  const page = await sub.history({ limit: HISTORY_PAGE });
  if (sub !== state.sub) return;
  const pubs = Array.isArray(page.publications) ? page.publications : [];
  if (info.gap) {
    addDivider('Some messages may be missing here: they could not be recovered after the reconnect.', state.gapAt ?? state.highest + 0.5);
    state.gapAt = null;
  }
  if (initial) {
    for (const p of pubs) renderPublication(p);
    if (pubs.length < HISTORY_PAGE) state.noOlder = true;
    scrollToBottom();
  } else {
    renderNew(pubs);
  }
  state.epoch = page.epoch || info.epoch;
  state.lastCatchUp = { recovered: info.recovered, count: info.recovered ? info.missed : pubs.length, since: info.since };
  afterCatchUp();
  updateHistoryControls();
}

/** The server refused us: the name, the room, or the token. */
function onJoinError(e) {
  stop();
  let message = e.message;
  if (e.code === ERROR_CODES.NAME_TAKEN) message = `The name “${state.name}” is taken in #${state.room}. Please pick another.`;
  if (e.code === ERROR_CODES.BANNED) message = `You are banned from #${state.room}.`;
  if (e.code === ERROR_CODES.UNAUTHORIZED) message = `This server requires a token to chat (${e.message}).`;
  showJoin(message);
}

/** Stops (re)connecting; `why` is shown as the status. */
function stop(why = '') {
  state.wantConnected = false;
  state.stopped = why;
  state.connected = false;
  clearInterval(state.countdownTimer);
  state.client?.close();
  setStatus(why ? 'stopped' : 'idle', why || 'not connected');
}

// ------------------------------------------------------------ join/leave

function showJoin(error = '') {
  el.join.hidden = false;
  el.chat.hidden = true;
  el.sidebar.hidden = true;
  el.change.hidden = true;
  el.me.hidden = true;
  el.roomTitle.hidden = true;
  el.joinName.value = el.joinName.value || state.name;
  el.joinRoom.value = el.joinRoom.value || state.room || initialRoom();
  el.joinError.textContent = error;
  el.joinError.hidden = !error;
  el.joinName.setAttribute('aria-invalid', error ? 'true' : 'false');
  document.title = 'Duplex chat';
  el.joinName.focus();
  if (error) el.joinName.select();
}

function initialRoom() {
  const room = new URLSearchParams(location.search).get('room');
  return validRoom(room) ? room : 'lobby';
}

function join(name, room, auto) {
  stop();
  const sameRoom = room === state.room;
  state.name = name;
  state.room = room;
  state.channel = `chat:${room}`;
  state.autoJoin = auto;
  state.joinedOnce = false;
  state.stopped = '';
  if (!sameRoom) clearMessages();
  state.members.clear();
  renderMembers();
  try {
    localStorage.setItem(STORAGE_NAME, name);
  } catch {
    // storage may be disabled; the name is just not remembered
  }
  const url = new URL(location.href);
  url.searchParams.set('room', room);
  history.replaceState(null, '', url);

  el.join.hidden = true;
  el.chat.hidden = false;
  el.sidebar.hidden = false;
  el.change.hidden = false;
  el.roomTitle.hidden = false;
  el.roomName.textContent = room;
  el.meName.textContent = name;
  updateTitle();
  updateHelp();
  updateHistoryControls();
  el.input.focus();
  state.wantConnected = true;
  startClient();
}

function updateTitle() {
  const unread = state.unread ? `(${state.unread}) ` : '';
  document.title = state.room ? `${unread}#${state.room} · Duplex chat` : 'Duplex chat';
}

function updateHelp() {
  const channel = state.channel || `chat:${initialRoom()}`;
  el.helpWs.textContent = `${wsBase}/ws`;
  el.helpEcho.textContent = `${wsBase}/echo`;
  const body = JSON.stringify({ channel, data: { text: 'Hello from curl' } });
  el.helpCurl.textContent = `curl -d '${body}' ${location.origin}/api/publish`;
}

// -------------------------------------------------------------- composer

function autoGrow() {
  el.input.style.height = 'auto';
  el.input.style.height = `${Math.min(el.input.scrollHeight, 160)}px`;
}

async function sendMessage() {
  const text = el.input.value.trim();
  if (!text) return;
  const sub = state.sub;
  if (!sub || !state.connected) {
    notice(describeError(new HubError(CLIENT_ERROR_CODES.DISCONNECTED, '')), 'error');
    return;
  }
  el.input.value = '';
  autoGrow();
  state.lastTypingSent = 0;
  const pending = document.createElement('li');
  pending.className = 'msg own pending';
  pending.dataset.sort = String(Number.MAX_SAFE_INTEGER);
  const head = document.createElement('div');
  head.className = 'msg-head';
  const who = document.createElement('span');
  who.className = 'msg-from';
  who.textContent = state.name;
  const status = document.createElement('span');
  status.className = 'msg-time';
  status.textContent = 'sending…';
  head.append(who, status);
  const body = document.createElement('p');
  body.className = 'msg-text';
  body.textContent = text;
  pending.append(head, body);
  el.list.append(pending);
  scrollToBottom();
  try {
    const result = await sub.publish({ text });
    if (state.rendered.has(result.offset)) pending.remove();
    else state.pendingByOffset.set(result.offset, pending);
  } catch (e) {
    pending.remove();
    if (!el.input.value) {
      el.input.value = text;
      autoGrow();
    }
    if (e.code === CLIENT_ERROR_CODES.DISCONNECTED || e.code === CLIENT_ERROR_CODES.TIMEOUT) {
      state.unconfirmed.push({ text, notice: notice('The connection dropped while your message was being sent. It is back in the box; once reconnected, this page checks whether it arrived.', 'error', 0) });
    } else {
      notice(describeError(e), 'error');
    }
  }
}

// ---------------------------------------------------------------- wiring

el.joinForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = el.joinName.value.trim();
  const room = el.joinRoom.value.trim() || 'lobby';
  let error = '';
  if (!name) error = 'Please enter a nickname.';
  else if ([...name].length > NAME_MAX) error = `A nickname has at most ${NAME_MAX} characters.`;
  else if (!validRoom(room)) error = `A room name is 1–${ROOM_MAX} letters, digits or ${CHANNEL_PUNCTUATION}`;
  if (error) {
    el.joinError.textContent = error;
    el.joinError.hidden = false;
    (error.startsWith('A room') ? el.joinRoom : el.joinName).focus();
    return;
  }
  el.joinError.hidden = true;
  join(name, room, false);
});

el.change.addEventListener('click', () => {
  stop();
  el.joinName.value = state.name;
  el.joinRoom.value = state.room;
  showJoin();
});

el.retryNow.addEventListener('click', () => {
  if (!state.name || !state.room) return;
  if (!state.sub || state.sub.ended) {
    join(state.name, state.room, false);
    return;
  }
  state.wantConnected = true;
  state.stopped = '';
  if (state.client.state === 'reconnecting') state.client.reconnectNow();
  else state.client.connect();
});

el.composer.addEventListener('submit', (ev) => {
  ev.preventDefault();
  sendMessage();
});

el.input.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    sendMessage();
  }
});
el.input.addEventListener('input', onInputTyping);

el.loadOlder.addEventListener('click', loadOlder);
el.jump.addEventListener('click', scrollToBottom);
// Whether the view follows new messages: while the reader is at the bottom.
let stick = true;
el.messages.addEventListener('scroll', () => {
  stick = nearBottom();
  if (stick) el.jump.hidden = true;
});
// Keep the newest message in view when the pane shrinks (help opened,
// window resized, on-screen keyboard).
if (typeof ResizeObserver === 'function') {
  new ResizeObserver(() => {
    if (stick) el.messages.scrollTop = el.messages.scrollHeight;
  }).observe(el.messages);
}

window.addEventListener('online', () => {
  if (state.wantConnected) state.client?.reconnectNow();
});
window.addEventListener('offline', () => {
  if (state.wantConnected && state.client?.state === 'reconnecting') showCountdown();
});
document.addEventListener('visibilitychange', () => {
  if (!document.hidden && state.unread) {
    state.unread = 0;
    updateTitle();
  }
});
window.addEventListener('pagehide', () => {
  // Frees the nickname at once rather than when the server notices.
  state.connected = false;
  state.client?.close();
});
window.addEventListener('pageshow', (ev) => {
  if (ev.persisted && state.wantConnected) state.client?.connect();
});

// A small hook for tests and the curious: window.duplexChat.
window.duplexChat = Object.freeze({
  /** Drops the connection as a network failure would; it reconnects by itself. */
  dropConnection() {
    state.client?.dropConnection();
  },
  /** The state that matters for recovery. */
  snapshot() {
    return {
      name: state.name,
      room: state.room,
      connected: state.connected,
      lastCatchUp: state.lastCatchUp,
      status: el.status.dataset.state,
      epoch: state.epoch,
      highest: state.highest,
      shown: [...state.rendered.keys()].sort((a, b) => a - b),
    };
  },
});

// ----------------------------------------------------------------- start

updateHelp();
let remembered = '';
try {
  remembered = localStorage.getItem(STORAGE_NAME) || '';
} catch {
  remembered = '';
}
el.joinRoom.value = initialRoom();
el.joinName.value = remembered;
if (remembered && [...remembered].length <= NAME_MAX) {
  join(remembered, initialRoom(), true);
} else {
  showJoin();
}
