// Duplex chat: the browser client of the hub protocol (docs/protocol.md).
//
// A room is the channel `chat:<room>`; a message is a publication whose data
// is {"text": "..."} (plain strings and other JSON, e.g. pushed with
// POST /api/publish, are shown too). The client keeps, per room, the epoch
// and the highest offset it has seen, and after a reconnect subscribes with
// `since` so that exactly the missed messages arrive, in order. Messages are
// keyed by offset in the DOM, so nothing is ever shown twice.
//
// User data only ever reaches the page through textContent and validated
// attributes: never innerHTML.
'use strict';

(() => {
  const HISTORY_PAGE = 50;
  const TYPING_SEND_EVERY_MS = 2000;
  const TYPING_SHOW_MS = 4000;
  const COMMAND_TIMEOUT_MS = 15000;
  const PING_EVERY_MS = 20000;
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  // A name held by our own previous connection (not yet noticed as gone by
  // the server) is retried this many times before asking for another.
  const NAME_RETRIES_RECONNECT = 8;
  const NAME_RETRIES_AUTOJOIN = 3;
  const STORAGE_NAME = 'duplex.chat.name';
  const STORAGE_SESSION = 'duplex.chat.session';

  /** A secret kept across reconnects and reloads: the server then knows a
   *  reconnect is the same person and does not refuse them their own name. */
  function sessionKey() {
    let key = localStorage.getItem(STORAGE_SESSION);
    if (!key || !/^[A-Za-z0-9_-]{16,128}$/.test(key)) {
      const bytes = crypto.getRandomValues(new Uint8Array(16));
      key = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
      localStorage.setItem(STORAGE_SESSION, key);
    }
    return key;
  }
  const ROOM_RE = /^[A-Za-z0-9_.:@/-]{1,100}$/;
  const NAME_MAX = 32;

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

  /** An error reply ({code, message}) or a local failure. */
  class ChatError extends Error {
    constructor(code, message) {
      super(message);
      this.code = code;
    }
  }

  /**
   * One WebSocket to /ws: commands with ids and promises for their replies.
   * Every command carries an id, and the server answers commands in order,
   * so an error without an id (rate_limited) belongs to the oldest command
   * still waiting.
   */
  class Connection {
    constructor(url, handlers) {
      this.handlers = handlers;
      this.nextId = 0;
      this.pending = new Map();
      this.closed = false;
      this.ws = new WebSocket(url);
      this.ws.onopen = () => handlers.onOpen(this);
      this.ws.onmessage = (ev) => this.onMessage(ev);
      this.ws.onclose = (ev) => this.finish(ev.code, ev.reason);
      this.ws.onerror = () => {}; // onclose follows and says what matters
    }

    get open() {
      return !this.closed && this.ws.readyState === WebSocket.OPEN;
    }

    call(cmd, fields = {}) {
      if (!this.open) {
        return Promise.reject(new ChatError('disconnected', 'not connected'));
      }
      const id = ++this.nextId;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new ChatError('timeout', `no answer to ${cmd} in time`));
          this.abandon(4000, 'the server stopped answering');
        }, COMMAND_TIMEOUT_MS);
        this.pending.set(id, { resolve, reject, timer });
        this.ws.send(JSON.stringify({ id, cmd, ...fields }));
      });
    }

    onMessage(ev) {
      if (this.closed) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg === null || typeof msg !== 'object') return;
      if (typeof msg.push === 'string') {
        this.handlers.onPush(this, msg);
        return;
      }
      let id = msg.id;
      if (id === null || id === undefined) {
        const oldest = this.pending.keys().next();
        if (!msg.error || oldest.done) {
          if (msg.error) this.handlers.onStrayError(this, msg.error);
          return;
        }
        id = oldest.value;
      }
      const waiting = this.pending.get(id);
      if (!waiting) return;
      this.pending.delete(id);
      clearTimeout(waiting.timer);
      if (msg.error) {
        waiting.reject(new ChatError(String(msg.error.code), String(msg.error.message)));
      } else {
        waiting.resolve(msg.result ?? {});
      }
    }

    /** Closes now, without waiting for the closing handshake. */
    abandon(code, reason) {
      if (this.closed) return;
      try {
        this.ws.close(code >= 4000 ? code : 1000, reason.slice(0, 100));
      } catch {
        // already closing
      }
      this.finish(code, reason);
    }

    finish(code, reason) {
      if (this.closed) return;
      this.closed = true;
      this.ws.onopen = this.ws.onmessage = this.ws.onclose = null;
      for (const [, waiting] of this.pending) {
        clearTimeout(waiting.timer);
        waiting.reject(new ChatError('disconnected', 'the connection closed'));
      }
      this.pending.clear();
      this.handlers.onClose(this, code, reason || '');
    }
  }

  const state = {
    name: '',
    room: '',
    channel: '',
    conn: null,
    me: null, // {client, user, name} from the connect reply
    wantConnected: false,
    connected: false, // subscribed and caught up
    autoJoin: false, // joined without the user pressing Join (remembered name)
    joinedOnce: false, // has held the name in this room since Join
    nameRetries: 0,
    attempt: 0, // reconnect attempts since the last success
    reconnectTimer: 0,
    countdownTimer: 0,
    pingTimer: 0,
    reconnectAt: 0,
    stopped: '', // why reconnecting stopped, if it did
    // The recovery position: valid once the first history load is done.
    // `epoch` is null until then; a channel without publications yet has
    // the epoch "", so the epoch of the newest publication shown wins.
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
      case 'disconnected':
        return 'Not connected: your message is still in the box; send it once reconnected.';
      case 'timeout':
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
    const conn = state.conn;
    if (!conn || !state.connected || state.loadingOlder || state.oldest === null) return;
    state.loadingOlder = true;
    el.loadOlder.disabled = true;
    el.loadOlder.textContent = 'Loading…';
    try {
      const page = await conn.call('history', {
        channel: state.channel,
        before: state.oldest,
        limit: HISTORY_PAGE,
      });
      const fromBottom = el.messages.scrollHeight - el.messages.scrollTop;
      const pubs = Array.isArray(page.publications) ? page.publications : [];
      for (const p of pubs) renderPublication(p);
      if (pubs.length < HISTORY_PAGE) state.noOlder = true;
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
    state.conn.call('typing', { channel: state.channel }).catch(() => {});
  }

  // -------------------------------------------------------------- presence

  function renderMembers() {
    const names = new Map();
    for (const m of state.members.values()) {
      const own = !!state.me && m.client === state.me.client;
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

  function connect() {
    clearTimeout(state.reconnectTimer);
    clearInterval(state.countdownTimer);
    if (!state.wantConnected) return;
    if (state.conn) state.conn.abandon(4001, 'reconnecting');
    setStatus('connecting', state.joinedOnce ? 'reconnecting…' : 'connecting…');
    state.conn = new Connection(`${wsBase}/ws`, {
      onOpen,
      onPush,
      onClose,
      onStrayError: (_conn, error) => notice(describeError(new ChatError(error.code, error.message)), 'error'),
    });
  }

  async function onOpen(conn) {
    if (conn !== state.conn) return;
    try {
      state.me = await conn.call('connect', { name: state.name, session: sessionKey() });
      const resumable = state.epoch !== null;
      const since = { epoch: state.pubEpoch || state.epoch || '', offset: state.highest };
      const sub = await conn.call('subscribe', {
        channel: state.channel,
        ...(resumable ? { since } : {}),
      });
      if (conn !== state.conn) return;
      // Until caught up, presence and typing pushes may already arrive.
      el.list.setAttribute('aria-busy', 'true');
      try {
        await catchUp(conn, sub, resumable ? since : null);
      } finally {
        el.list.setAttribute('aria-busy', 'false');
      }
      const presence = await conn.call('presence', { channel: state.channel });
      if (conn !== state.conn) return;
      state.members.clear();
      for (const m of presence.members || []) state.members.set(m.client, m);
      renderMembers();
      state.connected = true;
      state.joinedOnce = true;
      state.attempt = 0;
      state.nameRetries = 0;
      setStatus('connected', 'connected');
      el.meName.textContent = state.me.name;
      el.me.hidden = false;
      schedulePing(conn);
    } catch (e) {
      if (conn !== state.conn) return;
      onJoinError(conn, e);
    }
  }

  /** Brings the message list up to date after a (re)subscribe from `since`. */
  async function catchUp(conn, sub, since) {
    const resumable = since !== null;
    if (sub.recovered) {
      const pubs = Array.isArray(sub.publications) ? sub.publications : [];
      renderNew(pubs);
      state.epoch = sub.epoch;
      state.lastCatchUp = { recovered: true, count: pubs.length, since };
      afterCatchUp();
      updateHistoryControls();
      return;
    }
    const epochChanged = resumable && since.epoch !== '' && sub.epoch !== since.epoch;
    if (resumable && !epochChanged && Number.isSafeInteger(sub.offset) && sub.offset < since.offset) {
      // The server no longer has what we showed last: drop it, or its
      // offsets would hide the new messages that will reuse them.
      for (const [offset, li] of state.rendered) {
        if (offset > sub.offset) {
          li.remove();
          state.rendered.delete(offset);
        }
      }
      state.highest = sub.offset;
    }
    const gapAfter = state.highest;
    if (epochChanged) clearMessages();
    const page = await conn.call('history', { channel: state.channel, limit: HISTORY_PAGE });
    if (conn !== state.conn) return;
    const pubs = Array.isArray(page.publications) ? page.publications : [];
    if (resumable) {
      addDivider('Some messages may be missing here: they could not be recovered after the reconnect.', epochChanged ? -1 : gapAfter + 0.5);
    }
    if (!resumable || epochChanged) {
      for (const p of pubs) renderPublication(p);
      if (pubs.length < HISTORY_PAGE) state.noOlder = true;
      scrollToBottom();
    } else {
      renderNew(pubs);
    }
    state.epoch = page.epoch || sub.epoch;
    state.lastCatchUp = { recovered: false, count: pubs.length, since };
    afterCatchUp();
    updateHistoryControls();
  }

  function onJoinError(conn, e) {
    const retriesAllowed = state.joinedOnce ? NAME_RETRIES_RECONNECT : state.autoJoin ? NAME_RETRIES_AUTOJOIN : 0;
    if (e.code === 'name_taken' && state.nameRetries < retriesAllowed) {
      // Most likely our own previous connection, not yet seen as gone.
      state.nameRetries += 1;
      conn.abandon(4002, 'name taken; retrying');
      return;
    }
    if (e.code === 'name_taken' || (e.code === 'bad_request' && !state.joinedOnce) || e.code === 'banned' || e.code === 'unauthorized' || e.code === 'forbidden') {
      stop();
      let message = e.message;
      if (e.code === 'name_taken') message = `The name “${state.name}” is taken in #${state.room}. Please pick another.`;
      if (e.code === 'banned') message = `You are banned from #${state.room}.`;
      if (e.code === 'unauthorized') message = `This server requires a token to chat (${e.message}).`;
      showJoin(message);
      return;
    }
    if (e.code !== 'disconnected') conn.abandon(4003, e.message);
  }

  function onPush(conn, msg) {
    if (conn !== state.conn || msg.channel !== state.channel) return;
    switch (msg.push) {
      case 'publication':
        // Before the first catch-up, history will bring these in order.
        renderNew([msg]);
        break;
      case 'join':
        if (msg.member) {
          state.members.set(msg.member.client, msg.member);
          renderMembers();
        }
        break;
      case 'leave':
        if (msg.member) {
          state.members.delete(msg.member.client);
          if (state.typing.delete(msg.member.name)) renderTyping();
          renderMembers();
        }
        break;
      case 'typing':
        if (msg.member && !(state.me && msg.member.client === state.me.client)) {
          state.typing.set(String(msg.member.name), Date.now() + TYPING_SHOW_MS);
          renderTyping();
        }
        break;
      case 'kicked':
        stop();
        showJoin(`You were removed from #${state.room}: ${msg.reason || 'by an admin'}.`);
        break;
      default:
        break;
    }
  }

  function onClose(conn, code, reason) {
    if (conn !== state.conn) return;
    state.conn = null;
    state.connected = false;
    clearTimeout(state.pingTimer);
    state.typing.clear();
    renderTyping();
    if (!state.wantConnected) {
      setStatus(state.stopped ? 'stopped' : 'idle', state.stopped || 'not connected');
      return;
    }
    if (code === 1008) {
      stop(`disconnected by the server${reason ? `: ${reason}` : ''}`);
      notice(`The server closed the connection${reason ? `: ${reason}` : ''}.`, 'error', 0);
      return;
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    clearTimeout(state.reconnectTimer);
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(state.attempt, 16));
    const delay = ceiling / 2 + Math.random() * (ceiling / 2); // "equal jitter"
    state.attempt += 1;
    state.reconnectAt = Date.now() + delay;
    state.reconnectTimer = setTimeout(connect, delay);
    showCountdown();
  }

  function schedulePing(conn) {
    clearTimeout(state.pingTimer);
    state.pingTimer = setTimeout(() => {
      if (conn !== state.conn || !conn.open) return;
      // A reply (or any failure, which abandons the connection) is enough.
      conn.call('ping').then(() => schedulePing(conn), () => {});
    }, PING_EVERY_MS);
  }

  /** Stops (re)connecting; `why` is shown as the status. */
  function stop(why = '') {
    state.wantConnected = false;
    state.stopped = why;
    clearTimeout(state.reconnectTimer);
    clearInterval(state.countdownTimer);
    const conn = state.conn;
    if (conn) conn.abandon(1000, 'bye');
    state.conn = null;
    state.connected = false;
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
    return room && ROOM_RE.test(room) ? room : 'lobby';
  }

  function join(name, room, auto) {
    stop();
    const sameRoom = room === state.room;
    state.name = name;
    state.room = room;
    state.channel = `chat:${room}`;
    state.autoJoin = auto;
    state.joinedOnce = false;
    state.nameRetries = 0;
    state.attempt = 0;
    state.me = null;
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
    connect();
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
    const conn = state.conn;
    if (!conn || !state.connected) {
      notice(describeError(new ChatError('disconnected', '')), 'error');
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
      const result = await conn.call('publish', { channel: state.channel, data: { text } });
      if (state.rendered.has(result.offset)) pending.remove();
      else state.pendingByOffset.set(result.offset, pending);
    } catch (e) {
      pending.remove();
      if (!el.input.value) {
        el.input.value = text;
        autoGrow();
      }
      if (e.code === 'disconnected' || e.code === 'timeout') {
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
    else if (!ROOM_RE.test(room)) error = 'A room name is 1–100 letters, digits or -_.:@/';
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
    if (!state.wantConnected && state.name && state.room) {
      state.wantConnected = true;
      state.stopped = '';
    }
    connect();
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
    if (state.wantConnected && !state.conn) connect();
  });
  window.addEventListener('offline', () => {
    if (state.wantConnected && !state.conn) showCountdown();
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && state.unread) {
      state.unread = 0;
      updateTitle();
    }
  });
  window.addEventListener('pagehide', () => {
    // Frees the nickname at once rather than when the server notices.
    const conn = state.conn;
    state.conn = null;
    state.connected = false;
    if (conn) conn.abandon(1000, 'page closed');
  });
  window.addEventListener('pageshow', (ev) => {
    if (ev.persisted && state.wantConnected) connect();
  });

  // A small hook for tests and the curious: window.duplexChat.
  window.duplexChat = Object.freeze({
    /** Drops the connection as a network failure would; it reconnects by itself. */
    dropConnection() {
      if (state.conn) state.conn.abandon(4004, 'dropped by dropConnection()');
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
})();
