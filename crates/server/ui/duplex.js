// duplex.js: a JavaScript client for the Duplex hub (docs/protocol.md),
// served by `duplex serve` at /duplex.js, with types at /duplex.d.ts. It
// does what the CLI's hub client does (crates/cli/hub/link.rs): connect,
// subscribe with exact recovery after a reconnect (each channel resumes
// from the last offset it delivered, with `since`: nothing lost, nothing
// twice), publish (resolved when the server acknowledges), presence and
// typing, history paging, reconnects with exponential backoff and jitter,
// and the hub's error codes as typed errors. No DOM here: the chat page
// (app.js) is a UI on it, and it runs under Node given a WebSocket class.
//
//   import { Client } from '/duplex.js';
//
//   const client = new Client('ws://127.0.0.1:8080/ws', { name: 'alice' });
//   const lobby = client.subscribe('chat:lobby');
//   lobby.on('publication', (p) => console.log(`#${p.offset} ${p.from.name}: ${p.data.text}`));
//   lobby.on('gap', () => console.log('some messages could not be recovered'));
//   client.connect();
//   await lobby.ready;
//   const ack = await lobby.publish({ text: 'hello' }); // {channel, offset, epoch, ts}
//   const older = await lobby.loadOlder();              // {publications, complete}
//
// Under Node: `new Client(url, { WebSocket: (await import('ws')).default })`.

// The hub protocol's facts, generated from the Rust definitions
// (crates/hub) that the server and the CLI use.
import {
  CHANNEL_MAX_LENGTH, CHANNEL_PUNCTUATION, CLOSE, CLOSE_MEANING, COMMANDS, ERROR_CODES,
  FINAL_CLOSE_CODES, HISTORY_DEFAULT_LIMIT, PUSHES, SESSION_MAX_LENGTH, SESSION_MIN_LENGTH,
  TRANSIENT_ERROR_CODES,
} from './hub-protocol.js';

export * from './hub-protocol.js';

/** Defaults of the Client options. */
export const DEFAULTS = Object.freeze({
  /** A command unanswered this long drops the connection (it is dead). */
  commandTimeout: 15_000,
  /** An application-level ping this often keeps a quiet connection checked. */
  pingInterval: 20_000,
  /** The first reconnect waits up to this long; each failure doubles it... */
  backoffBase: 500,
  /** ...up to this. */
  backoffMax: 30_000,
  /** `name_taken` on re-subscribing is most likely our own previous
   *  connection, not yet seen as gone by the server: retried this often. */
  nameTakenRetries: 8,
});

// Close codes this client uses for connections it gives up on itself
// (4000-4999 are for applications).
const CLOSE_UNRESPONSIVE = 4000;
const CLOSE_RETRY = 4002;
const CLOSE_DROPPED = 4004;
const WS_OPEN = 1; // WebSocket.OPEN, the same for every implementation

// ----------------------------------------------------------------- errors

/** Error codes of this client's own (not sent by the server). */
export const CLIENT_ERROR_CODES = Object.freeze({
  /** Not connected, or the connection dropped before the reply. */
  DISCONNECTED: 'disconnected',
  /** No reply in time (the connection is then dropped and re-made). */
  TIMEOUT: 'timeout',
});

/**
 * A failed command: an error reply of the hub (`code` is one of
 * {@link ERROR_CODES}) or a failure of the connection (`code` is one of
 * {@link CLIENT_ERROR_CODES}).
 *
 * @example
 * try { await client.publish('bad name!', 1); }
 * catch (e) { if (e instanceof HubError && e.code === ERROR_CODES.BAD_REQUEST) ... }
 */
export class HubError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {string} [command] the `cmd` that failed
   */
  constructor(code, message, command) {
    super(message || code);
    this.name = 'HubError';
    this.code = code;
    this.command = command;
  }

  /** Whether the same command may succeed later, unchanged. */
  get transient() {
    return TRANSIENT_ERROR_CODES.includes(this.code)
      || this.code === CLIENT_ERROR_CODES.DISCONNECTED
      || this.code === CLIENT_ERROR_CODES.TIMEOUT;
  }
}

/** Whether `name` is a valid channel name (the server checks it too). */
export function isValidChannel(name) {
  if (typeof name !== 'string' || name.length < 1 || name.length > CHANNEL_MAX_LENGTH) return false;
  return [...name].every((c) => /^[A-Za-z0-9]$/.test(c) || CHANNEL_PUNCTUATION.includes(c));
}

/** A random `session` secret (hex), for a client that keeps none. */
export function newSession() {
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

// ----------------------------------------------------------------- events

/** Listeners by event name; `on` returns a function that removes one. */
class Emitter {
  #listeners = new Map();

  /**
   * Calls `listener` on each `event`.
   * @returns {() => void} removes the listener
   */
  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  /** Removes a listener added with `on`. */
  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  emit(event, ...args) {
    for (const listener of [...(this.#listeners.get(event) ?? [])]) {
      try {
        listener(...args);
      } catch (e) {
        // A failing listener must not break the client's state: report it
        // the way an uncaught error is reported, later.
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}

// ------------------------------------------------------------- connection

/**
 * One WebSocket: commands with ids and promises for their replies. The
 * server answers in order, so an error without an id belongs to the
 * oldest command still waiting. (Internal: the Client makes these.)
 */
class Connection {
  constructor(url, WebSocketClass, timeout, handlers) {
    this.handlers = handlers;
    this.timeout = timeout;
    this.nextId = 0;
    this.pending = new Map();
    this.closed = false;
    this.identified = false; // its `connect` was answered
    this.ws = new WebSocketClass(url);
    this.ws.onopen = () => handlers.onOpen(this);
    this.ws.onmessage = (ev) => this.#onMessage(ev);
    this.ws.onclose = (ev) => this.#finish(ev.code, ev.reason);
    this.ws.onerror = () => {}; // onclose follows and says what matters
  }

  get open() {
    return !this.closed && this.ws.readyState === WS_OPEN;
  }

  call(cmd, fields = {}) {
    if (!this.open) {
      return Promise.reject(new HubError(CLIENT_ERROR_CODES.DISCONNECTED, 'not connected', cmd));
    }
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new HubError(CLIENT_ERROR_CODES.TIMEOUT, `no answer to ${cmd} in time`, cmd));
        this.abandon(CLOSE_UNRESPONSIVE, 'the server stopped answering');
      }, this.timeout);
      this.pending.set(id, { resolve, reject, timer, cmd });
      this.ws.send(JSON.stringify({ id, cmd, ...fields }));
    });
  }

  #onMessage(ev) {
    if (this.closed || typeof ev.data !== 'string') return;
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
        if (msg.error) this.handlers.onStrayError(this, toError(msg.error));
        return;
      }
      id = oldest.value;
    }
    const waiting = this.pending.get(id);
    if (!waiting) return;
    this.pending.delete(id);
    clearTimeout(waiting.timer);
    if (msg.error) waiting.reject(toError(msg.error, waiting.cmd));
    else waiting.resolve(msg.result ?? {});
  }

  /** Closes now, without waiting for the closing handshake. */
  abandon(code, reason) {
    if (this.closed) return;
    try {
      this.ws.close(code >= 4000 ? code : 1000, reason.slice(0, 100));
    } catch {
      // already closing
    }
    this.#finish(code, reason);
  }

  #finish(code, reason) {
    if (this.closed) return;
    this.closed = true;
    this.ws.onopen = this.ws.onmessage = this.ws.onclose = null;
    for (const waiting of this.pending.values()) {
      clearTimeout(waiting.timer);
      waiting.reject(new HubError(CLIENT_ERROR_CODES.DISCONNECTED, 'the connection closed', waiting.cmd));
    }
    this.pending.clear();
    this.handlers.onClose(this, code, reason || '');
  }
}

function toError(error, cmd) {
  return new HubError(String(error?.code ?? ERROR_CODES.INTERNAL), String(error?.message ?? ''), cmd);
}

// ----------------------------------------------------------- subscription

/**
 * One channel of a {@link Client}: made by `client.subscribe(channel)`.
 * It stays subscribed across reconnects, resuming from {@link position}.
 *
 * Events:
 * - `publication` (p): each publication once, in offset order (recovered
 *   ones first after a reconnect, then live ones);
 * - `subscribed` (info): each time the server confirmed the subscription:
 *   `{first, recovered, gap, since, epoch, offset, missed}`;
 * - `gap` (info): after a (re)subscribe from a position the server could
 *   not fully recover (`info.epochChanged`: its history was lost); refetch
 *   with {@link history};
 * - `join`, `leave`, `typing` (member); `members` (array): the online list
 *   changed (with the `members` option);
 * - `kicked` (reason): removed by an admin, and ended;
 * - `error` (HubError): the subscription failed for good, and ended.
 */
export class Subscription extends Emitter {
  /** @internal use client.subscribe */
  constructor(client, channel, options) {
    super();
    this.client = client;
    this.channel = channel;
    this.options = { presence: true, members: true, nameTakenRetries: 0, ...options };
    /** The last publication delivered: `{epoch, offset}`, or null before the first subscribe. */
    this.position = this.options.since ? { epoch: String(this.options.since.epoch ?? ''), offset: Number(this.options.since.offset) || 0 } : null;
    /** The lowest offset delivered or returned by history (for loadOlder). */
    this.oldest = null;
    /** Who is online, by connection id (with the `members` option). */
    this.members = new Map();
    /** Whether it has been confirmed at least once. */
    this.subscribed = false;
    this.ended = false;
    // The Client's bookkeeping: the connection it is subscribed on, the
    // one it is being subscribed on, and pushes held until then.
    this._on = null;
    this._subscribing = null;
    this._held = [];
    this.ready = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.ready.catch(() => {}); // awaiting it is optional
  }

  #resolveReady;
  #rejectReady;

  /** Publishes `data` (any JSON) to this channel; resolves with the server's `{channel, offset, epoch, ts}`. */
  publish(data) {
    return this.client.publish(this.channel, data);
  }

  /** A page of history: `{limit, before, after}` as in the protocol. */
  async history(options = {}) {
    const page = await this.client.history(this.channel, options);
    this._noteOldest(page.publications);
    return page;
  }

  /**
   * The page of history before the oldest publication seen so far (or the
   * latest page): `{publications, complete}`; `complete` is true when
   * there is nothing older.
   */
  async loadOlder(limit = HISTORY_DEFAULT_LIMIT) {
    const before = this.oldest ?? undefined;
    const page = await this.history({ limit, ...(before !== undefined ? { before } : {}) });
    const publications = Array.isArray(page.publications) ? page.publications : [];
    const complete = publications.length < limit || (this.oldest !== null && this.oldest <= 1);
    return { publications, complete };
  }

  /** Who is in the channel now (asks the server). */
  async presence() {
    const result = await this.client.call(COMMANDS.PRESENCE, { channel: this.channel });
    return Array.isArray(result.members) ? result.members : [];
  }

  /** Tells the others this client is typing (the UI decides how often). */
  typing() {
    return this.client.call(COMMANDS.TYPING, { channel: this.channel });
  }

  /** Stops receiving the channel. */
  async unsubscribe() {
    if (this.ended) return;
    const wasOn = this.client._remove(this);
    this._end();
    if (wasOn) await this.client.call(COMMANDS.UNSUBSCRIBE, { channel: this.channel }).catch(() => {});
  }

  _end(error) {
    if (this.ended) return;
    this.ended = true;
    if (error) {
      this.#rejectReady(error);
      this.emit('error', error);
    }
  }

  /** A publication, live or recovered: delivered unless already delivered. */
  _deliver(p) {
    if (this.ended || !p || p.channel !== this.channel || !Number.isSafeInteger(p.offset)) return;
    if (this.position && p.offset <= this.position.offset) return;
    this.position = { epoch: typeof p.epoch === 'string' && p.epoch ? p.epoch : this.position?.epoch ?? '', offset: p.offset };
    this._noteOldest([p]);
    this.emit('publication', p);
  }

  _noteOldest(publications) {
    for (const p of Array.isArray(publications) ? publications : []) {
      if (Number.isSafeInteger(p?.offset) && (this.oldest === null || p.offset < this.oldest)) this.oldest = p.offset;
    }
  }

  /** The reply to `subscribe` from `since` (or null): recovered publications or a gap. */
  _applySubscribed(reply, since) {
    const epoch = String(reply.epoch ?? '');
    const offset = Number.isSafeInteger(reply.offset) ? reply.offset : 0;
    const publications = Array.isArray(reply.publications) ? reply.publications : [];
    const recovered = since !== null && reply.recovered === true;
    const gap = since !== null && !recovered;
    if (recovered) {
      for (const p of publications) this._deliver(p);
      this.position = { epoch: epoch || this.position?.epoch || '', offset: Math.max(this.position?.offset ?? 0, offset) };
    } else {
      // Live from the server's current position; what came before is history's.
      this.position = { epoch, offset };
    }
    const info = { first: !this.subscribed, recovered, gap, since, epoch, offset, missed: recovered ? publications.length : 0 };
    if (gap) {
      const epochChanged = since.epoch !== '' && epoch !== since.epoch;
      if (epochChanged) this.oldest = null;
      this.emit('gap', { since, epoch, offset, epochChanged });
    }
    return info;
  }

  _confirmed(info) {
    const first = !this.subscribed;
    this.subscribed = true;
    this.emit('subscribed', info);
    if (first) this.#resolveReady(info);
  }

  _setMembers(members) {
    this.members = new Map(members.map((m) => [m.client, m]));
    this.emit('members', [...this.members.values()]);
  }

  _onPush(msg) {
    switch (msg.push) {
      case PUSHES.PUBLICATION:
        this._deliver(msg);
        break;
      case PUSHES.JOIN:
      case PUSHES.LEAVE:
        if (!msg.member) break;
        if (msg.push === PUSHES.JOIN) this.members.set(msg.member.client, msg.member);
        else this.members.delete(msg.member.client);
        this.emit(msg.push, msg.member);
        this.emit('members', [...this.members.values()]);
        break;
      case PUSHES.TYPING:
        if (msg.member) this.emit('typing', msg.member);
        break;
      case PUSHES.KICKED:
        this.client._remove(this);
        this._end();
        this.emit('kicked', String(msg.reason ?? ''));
        break;
      default:
        break;
    }
  }
}

// ----------------------------------------------------------------- client

/**
 * A hub connection that survives disconnects. Call {@link connect} to
 * start; it then reconnects by itself (exponential backoff with jitter)
 * and re-subscribes every {@link Subscription} from its position.
 *
 * States (event `state`, with details): `idle` (not started, or closed),
 * `connecting` (opening and re-subscribing), `connected`, `reconnecting`
 * (waiting `{delay, at, attempt}` before the next try), `stopped` (gave
 * up: `{code, reason, error}`: a final close code or a refused `connect`).
 *
 * Events: `state` (state, details); `connected` ({me, reconnect}): all
 * subscriptions confirmed; `disconnected` ({code, reason}); `error`
 * (HubError): an error reply that answers no command.
 */
export class Client extends Emitter {
  /**
   * @param {string} url the hub's WebSocket URL, e.g. `ws://host:8080/ws`
   * @param {object} [options] `name` (nickname), `token` (JWT), `session`
   *   (secret kept across reconnects; made up when absent), `WebSocket`
   *   (the class to use; default globalThis.WebSocket), and the
   *   {@link DEFAULTS}
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== 'function') throw new TypeError('no WebSocket class: pass options.WebSocket');
    const session = options.session ?? newSession();
    const sessionOk = new RegExp(`^[A-Za-z0-9_-]{${SESSION_MIN_LENGTH},${SESSION_MAX_LENGTH}}$`).test(session);
    if (!sessionOk) throw new TypeError(`session must be ${SESSION_MIN_LENGTH}-${SESSION_MAX_LENGTH} letters, digits, - or _`);
    this.session = session;
    this.state = 'idle';
    /** Who the server says we are (`{client, user, name}`), once connected. */
    this.me = null;
    this.subscriptions = new Map();
    this.#attempt = 0;
  }

  #conn = null;
  #wanted = false;
  #attempt;
  #nameRetries = 0;
  #reconnectTimer = 0;
  #pingTimer = 0;
  #everConnected = false;

  /** Starts connecting (again); does nothing while connecting or connected. */
  connect() {
    if (this.#conn) return;
    this.#wanted = true;
    this.#open();
  }

  /** While waiting to reconnect: tries now (e.g. the network came back). */
  reconnectNow() {
    if (this.#wanted && !this.#conn) this.#open();
  }

  /** Drops the connection as a network failure would; it reconnects by itself. */
  dropConnection() {
    this.#conn?.abandon(CLOSE_DROPPED, 'dropped by dropConnection()');
  }

  /** Closes, and stops reconnecting. Subscriptions are kept: connect() resumes them. */
  close() {
    this.#wanted = false;
    clearTimeout(this.#reconnectTimer);
    this.#conn?.abandon(CLOSE.NORMAL, 'bye');
    this.#setState('idle');
  }

  /**
   * Subscribes to `channel` (now, or as soon as connected), and after
   * every reconnect from the last publication delivered.
   * @param {string} channel
   * @param {object} [options] `since` ({epoch, offset}: start after this
   *   position instead of live), `presence` (announce me; default true),
   *   `members` (keep `sub.members`; default true), `nameTakenRetries`
   *   (for the first subscribe: retries of `name_taken`; default 0)
   * @returns {Subscription}
   */
  subscribe(channel, options = {}) {
    if (this.subscriptions.has(channel)) throw new Error(`already subscribed to ${channel}`);
    const sub = new Subscription(this, channel, options);
    this.subscriptions.set(channel, sub);
    const conn = this.#conn;
    if (conn && this.state === 'connected') this.#subscribeOn(conn, sub).catch((e) => this.#onFailure(conn, e));
    return sub;
  }

  /** Publishes `data` (any JSON) to `channel`: resolves with `{channel, offset, epoch, ts}` once stored. */
  publish(channel, data) {
    return this.call(COMMANDS.PUBLISH, { channel, data });
  }

  /** A page of `channel`'s history: `{channel, epoch, offset, publications}`. */
  history(channel, { limit, before, after } = {}) {
    return this.call(COMMANDS.HISTORY, { channel, ...defined({ limit, before, after }) });
  }

  /** Sends any command (see docs/protocol.md) once identified; resolves with its result. */
  call(cmd, fields = {}) {
    const conn = this.#conn;
    if (!conn || !conn.identified) {
      return Promise.reject(new HubError(CLIENT_ERROR_CODES.DISCONNECTED, 'not connected', cmd));
    }
    return conn.call(cmd, fields);
  }

  /** @internal a subscription leaves; returns whether it was subscribed on the current connection */
  _remove(sub) {
    if (this.subscriptions.get(sub.channel) === sub) this.subscriptions.delete(sub.channel);
    return !!this.#conn && sub._on === this.#conn;
  }

  #setState(state, details = {}) {
    this.state = state;
    this.emit('state', state, details);
  }

  #open() {
    clearTimeout(this.#reconnectTimer);
    if (this.#conn) return;
    this.#setState('connecting', { reconnect: this.#everConnected });
    this.#conn = new Connection(this.url, this.WebSocket, this.options.commandTimeout, {
      onOpen: (conn) => this.#establish(conn),
      onPush: (conn, msg) => this.#onPush(conn, msg),
      onClose: (conn, code, reason) => this.#onClose(conn, code, reason),
      onStrayError: (conn, error) => {
        if (conn === this.#conn) this.emit('error', error);
      },
    });
  }

  // Recovery: all of it happens here. A new connection says who we are,
  // then re-subscribes each channel from its position; only then is the
  // client `connected`.
  async #establish(conn) {
    try {
      const identity = defined({ name: this.options.name, token: this.options.token, session: this.session });
      const me = await conn.call(COMMANDS.CONNECT, identity);
      if (conn !== this.#conn) return;
      this.me = me;
      conn.identified = true;
      // Subscriptions added meanwhile are picked up too.
      for (;;) {
        const next = [...this.subscriptions.values()].find((s) => s._on !== conn && s._subscribing !== conn);
        if (!next) break;
        try {
          await this.#subscribeOn(conn, next);
        } catch (e) {
          if (!this.#onFailure(conn, e)) return;
        }
        if (conn !== this.#conn) return;
      }
      this.#attempt = 0;
      this.#nameRetries = 0;
      const reconnect = this.#everConnected;
      this.#everConnected = true;
      this.#setState('connected');
      this.emit('connected', { me, reconnect });
      this.#schedulePing(conn);
    } catch (e) {
      this.#onFailure(conn, e);
    }
  }

  /** Subscribes `sub` on `conn` from its position; pushes that arrive meanwhile wait. */
  async #subscribeOn(conn, sub) {
    sub._subscribing = conn;
    sub._held = [];
    try {
      let since = sub.position;
      if (since && since.epoch === '' && since.offset > 0) {
        // An offset without its epoch: take it in the channel's current one.
        const page = await conn.call(COMMANDS.HISTORY, { channel: sub.channel, limit: 0 });
        since = { epoch: String(page.epoch ?? ''), offset: since.offset };
      }
      const reply = await conn.call(COMMANDS.SUBSCRIBE, {
        channel: sub.channel,
        ...(since ? { since } : {}),
        ...(sub.options.presence === false ? { presence: false } : {}),
      });
      if (conn !== this.#conn || sub.ended) return;
      sub._on = conn;
      const info = sub._applySubscribed(reply, since);
      if (sub.options.members) {
        const presence = await conn.call(COMMANDS.PRESENCE, { channel: sub.channel });
        if (conn !== this.#conn || sub.ended) return;
        sub._setMembers(Array.isArray(presence.members) ? presence.members : []);
      }
      sub._subscribing = null;
      for (const msg of sub._held.splice(0)) sub._onPush(msg);
      sub._confirmed(info);
    } catch (e) {
      if (e instanceof HubError) e.subscription = sub; // for #onFailure
      throw e;
    } finally {
      if (sub._subscribing === conn) sub._subscribing = null;
    }
  }

  /**
   * A command of (re)subscribing or connecting failed: retry on a new
   * connection, give up on that subscription, or stop. Returns whether the
   * connection goes on (only when one subscription was given up).
   */
  #onFailure(conn, e) {
    if (conn !== this.#conn || conn.closed) return false;
    if (!(e instanceof HubError)) throw e;
    const sub = e.subscription;
    if (sub && e.code === ERROR_CODES.NAME_TAKEN) {
      const allowed = sub.subscribed ? this.options.nameTakenRetries : sub.options.nameTakenRetries;
      if (this.#nameRetries < allowed) {
        this.#nameRetries += 1;
        conn.abandon(CLOSE_RETRY, 'name taken; retrying');
        return false;
      }
    }
    if (e.transient) {
      conn.abandon(CLOSE_RETRY, e.message);
      return false;
    }
    if (sub) {
      // This channel is refused (name taken, banned, forbidden...): the others go on.
      this._remove(sub);
      sub._end(e);
      return true;
    }
    this.#stop({ code: null, reason: e.message, error: e });
    return false;
  }

  #onPush(conn, msg) {
    if (conn !== this.#conn) return;
    const sub = this.subscriptions.get(msg.channel);
    if (!sub) return;
    if (sub._subscribing === conn) sub._held.push(msg);
    else if (sub._on === conn) sub._onPush(msg);
  }

  #onClose(conn, code, reason) {
    if (conn !== this.#conn) return;
    this.#conn = null;
    clearTimeout(this.#pingTimer);
    this.emit('disconnected', { code, reason });
    if (!this.#wanted) return;
    if (FINAL_CLOSE_CODES.includes(code)) {
      this.#stop({ code, reason: reason || CLOSE_MEANING[code] });
      return;
    }
    this.#scheduleReconnect();
  }

  #scheduleReconnect() {
    clearTimeout(this.#reconnectTimer);
    const { backoffBase, backoffMax } = this.options;
    const ceiling = Math.min(backoffMax, backoffBase * 2 ** Math.min(this.#attempt, 16));
    // "Equal jitter": never sooner than half, so a restarted server is not
    // hit by every client at the same instant.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.#attempt += 1;
    this.#reconnectTimer = setTimeout(() => this.#open(), delay);
    this.#setState('reconnecting', { delay, at: Date.now() + delay, attempt: this.#attempt });
  }

  #schedulePing(conn) {
    clearTimeout(this.#pingTimer);
    this.#pingTimer = setTimeout(() => {
      if (conn !== this.#conn) return;
      // A reply (or a timeout, which drops the connection) is all it takes.
      conn.call(COMMANDS.PING).then(() => this.#schedulePing(conn), () => {});
    }, this.options.pingInterval);
  }

  #stop(details) {
    this.#wanted = false;
    clearTimeout(this.#reconnectTimer);
    this.#conn?.abandon(CLOSE.NORMAL, 'bye');
    this.#setState('stopped', details);
  }
}

function defined(fields) {
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined && v !== null));
}
