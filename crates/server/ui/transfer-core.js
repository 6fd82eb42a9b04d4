// The file-transfer protocol of docs/transfer.md in the browser, exactly as
// `duplex send` / `duplex receive` speak it (protocol 2): SPAKE2 (Ed25519,
// symmetric, as the Rust `spake2` 0.4 crate does it) keyed by the whole
// code, then HKDF-SHA256 to an AES-256-GCM key; every message sealed under
// a nonce of (direction, space, sequence number); each file verified by the
// SHA-256 of its chunks' SHA-256s. No DOM here: the pages (transfer.js) and
// the tests (tests/browser/transfer.spec.mjs) use it.
//
// The bulk cryptography (AES-GCM, SHA-256, HKDF) is the browser's own Web
// Crypto, in native code; SPAKE2 runs once per receiver on the audited
// @noble libraries (vendor/noble.js).

import { ed25519, hkdf, sha256 } from './vendor/noble.js';
// The relay protocol's facts, generated from the Rust definitions
// (crates/transfer) that the relay and the CLI use.
import {
  CHUNK, CHUNK_HEADER, CHUNK_OVERHEAD, CLOSE, CLOSE_MEANING, FILE_LABEL, FINAL_CLOSE_CODES,
  FRAME_SLACK, IDENTITY as IDENTITY_TEXT, KEY_INFO, MAX_CHUNK, MIN_CHUNK, PAKE, PEER_HEADER, PROTOCOL,
  SEALED, SPACE_CONTROL, SPACE_DATA, TAG,
} from './transfer-protocol.js';

export { CHUNK, CHUNK_OVERHEAD, PAKE, SEALED };
/** Nonce directions. */
export const TO_RECEIVER = 0;
export const TO_SENDER = 1;
/** Files and folders in one transfer (the receiver's `have` must fit 64 KiB). */
export const MAX_ENTRIES = 2000;
/** Failures of one chunk before the receiver gives up. */
const MAX_CHUNK_FAILURES = 5;
/** Reconnect attempts in a row without progress. */
const MAX_FAILURES = 8;
/** How long the relay has to answer the first message. */
const REPLY_TIMEOUT_MS = 30_000;

const enc = new TextEncoder();
const dec = new TextDecoder();
const IDENTITY = enc.encode(IDENTITY_TEXT);
const Point = ed25519.Point;
const L = Point.Fn.ORDER;
// The spake2 crate's symmetric-mode blinding point S (Ed25519Group::const_s).
const S = Point.fromHex('6f00dae87c1be1a73b5922ef431cd8f57879569c222d22b1cd71e8546ab8e6f1');
const SIDE_SYMMETRIC = 0x53; // 'S'
const subtle = globalThis.crypto.subtle;

/** The chunk size a sender uses with a relay whose largest frame is
 *  `maxFrame` (crates/transfer limits::chunk_size). */
export function chunkSize(maxFrame) {
  return Math.max(MIN_CHUNK, Math.min(MAX_CHUNK, maxFrame - CHUNK_OVERHEAD - FRAME_SLACK));
}

// ------------------------------------------------------------------ bytes

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

export function fromHex(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function numberLE(bytes) {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]);
  return n;
}

function numberBE(bytes) {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

function u32(n) {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

function u64(n) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}

// ----------------------------------------------------------------- SPAKE2

/** The password scalar: HKDF-SHA256(salt "", info "SPAKE2 pw", 48 bytes),
 *  read big-endian, mod the group order (spake2's ed25519_hash_to_scalar). */
export function passwordScalar(password) {
  const okm = hkdf(sha256, password, new Uint8Array(0), enc.encode('SPAKE2 pw'), 48);
  return numberBE(okm) % L;
}

/** A scalar from 64 random bytes, read little-endian, mod the group order
 *  (curve25519-dalek's Scalar::random). */
export function scalarFromWide(bytes64) {
  return numberLE(bytes64) % L;
}

/** Symmetric SPAKE2 for one peer: start() gives our message, finish() the
 *  shared secret. `random64` is for known-answer tests only. */
export class Spake2 {
  constructor(code, random64) {
    this.password = enc.encode(code);
    this.pw = passwordScalar(this.password);
    let x = 0n;
    for (let i = 0; x === 0n && i < 8; i++) {
      x = scalarFromWide(random64 || crypto.getRandomValues(new Uint8Array(64)));
    }
    if (x === 0n) throw new Error('no usable random scalar');
    this.x = x;
    const m = Point.BASE.multiply(x).add(S.multiply(this.pw));
    this.element = m.toBytes();
    // The protocol version first, so that peers of different versions say
    // so instead of failing as if the code were wrong.
    this.message = concat([PROTOCOL, SIDE_SYMMETRIC], this.element);
  }

  /** The 32-byte shared secret; throws on a malformed message. */
  finish(peerMessage) {
    if (peerMessage[0] === SIDE_SYMMETRIC || (peerMessage.length > 0 && peerMessage[0] !== PROTOCOL && peerMessage[0] < SIDE_SYMMETRIC)) {
      const theirs = peerMessage[0] === SIDE_SYMMETRIC ? 1 : peerMessage[0];
      throw new Error(`the other side runs a Duplex that speaks transfer protocol ${theirs} (this page speaks ${PROTOCOL}); run the same version on both sides`);
    }
    if (peerMessage.length !== 34) throw new Error('the key exchange message has the wrong length');
    if (peerMessage[1] !== SIDE_SYMMETRIC) throw new Error('the key exchange message is from the wrong side');
    const theirs = peerMessage.subarray(2);
    let y;
    try {
      y = Point.fromBytes(theirs);
    } catch {
      throw new Error('the key exchange message is not a curve point');
    }
    const unblinded = y.add(S.multiply(this.pw).negate());
    const k = unblinded.equals(Point.ZERO) ? Point.ZERO : unblinded.multiply(this.x);
    const [first, second] = compareBytes(this.element, theirs) < 0
      ? [this.element, theirs]
      : [theirs, this.element];
    return sha256(concat(sha256(this.password), sha256(IDENTITY), first, second, k.toBytes()));
  }
}

/** The raw AES-256-GCM key for a SPAKE2 shared secret: HKDF-SHA256 with
 *  an empty salt and KEY_INFO (Web Crypto). */
export async function deriveKey(shared) {
  const ikm = await subtle.importKey('raw', shared, 'HKDF', false, ['deriveBits']);
  const bits = await subtle.deriveBits(
    { name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info: enc.encode(KEY_INFO) }, ikm, 256);
  return new Uint8Array(bits);
}

/** SHA-256 (Web Crypto). */
export async function sha256Native(data) {
  return new Uint8Array(await subtle.digest('SHA-256', data));
}

/** A file's digest from its chunks' digests (crates/transfer digest.rs). */
export async function fileDigest(size, chunk, chunkDigests) {
  return sha256Native(concat(enc.encode(FILE_LABEL), u64(size), u64(chunk), ...chunkDigests));
}

// ------------------------------------------------------------------ sealing

function nonce(dir, space, seq) {
  const n = new Uint8Array(12);
  n[0] = dir;
  n[1] = space;
  n.set(u64(seq), 4);
  return n;
}

/** Seals and opens messages with the agreed key (AES-256-GCM, Web Crypto). */
export class Sealer {
  constructor(key) {
    this.key = key;
  }

  static async fromKey(raw) {
    return new Sealer(await subtle.importKey('raw', raw, 'AES-GCM', false, ['encrypt', 'decrypt']));
  }

  /** `plain` sealed: ciphertext ‖ tag. */
  async seal(dir, space, seq, aad, plain) {
    const params = { name: 'AES-GCM', iv: nonce(dir, space, seq), additionalData: aad, tagLength: TAG * 8 };
    return new Uint8Array(await subtle.encrypt(params, this.key, plain));
  }

  /** The plaintext, or null if altered or sealed with another key. */
  async open(dir, space, seq, aad, sealed) {
    if (sealed.length < TAG) return null;
    try {
      const params = { name: 'AES-GCM', iv: nonce(dir, space, seq), additionalData: aad, tagLength: TAG * 8 };
      return new Uint8Array(await subtle.decrypt(params, this.key, sealed));
    } catch {
      return null;
    }
  }
}

/** A peer frame: peer number, kind, body parts. */
export function frame(peer, kind, ...parts) {
  return concat(u32(peer), [kind], ...parts);
}

/** Sealed control messages one way, opened the other (replays refused);
 *  data frames (chunks and file seals) numbered in a space of their own. */
export class Channel {
  constructor(sealer, out) {
    this.sealer = sealer;
    this.out = out;
    this.inbound = out === TO_RECEIVER ? TO_SENDER : TO_RECEIVER;
    this.nextOut = 0;
    this.nextIn = 0;
    this.nextDataOut = 0;
    this.nextDataIn = 0;
  }

  /** A sealed control frame for `peer`. Numbered when called, so frames
   *  go out in the order they were asked for once awaited in order. */
  async seal(peer, msg) {
    const seq = this.nextOut++;
    const sealed = await this.sealer.seal(this.out, SPACE_CONTROL, seq, new Uint8Array(0), enc.encode(JSON.stringify(msg)));
    return frame(peer, SEALED, u64(seq), sealed);
  }

  /** The control message in a sealed body (after the kind byte), or null. */
  async open(body) {
    if (body.length < 8) return null;
    const seq = Number(new DataView(body.buffer, body.byteOffset, 8).getBigUint64(0));
    if (seq < this.nextIn) return null;
    const plain = await this.sealer.open(this.inbound, SPACE_CONTROL, seq, new Uint8Array(0), body.subarray(8));
    if (!plain) return null;
    this.nextIn = Math.max(this.nextIn, seq + 1);
    try {
      return JSON.parse(dec.decode(plain));
    } catch {
      return null;
    }
  }

  /** A data frame for `peer`: chunk `index` of `file` (or the file's seal,
   *  at index = its chunk count, carrying its digest). */
  async sealData(peer, file, index, plain) {
    const seq = this.nextDataOut++;
    const header = concat(u64(seq), u32(file), u64(index));
    const sealed = await this.sealer.seal(this.out, SPACE_DATA, seq, header, plain);
    return frame(peer, CHUNK, header, sealed);
  }

  /** `{file, index, data}` from a data body, `data` null when it does not
   *  open or is a replay; null when the body is too short. */
  async openData(body) {
    if (body.length < CHUNK_HEADER + TAG) return null;
    const view = new DataView(body.buffer, body.byteOffset, CHUNK_HEADER);
    const seq = Number(view.getBigUint64(0));
    const file = view.getUint32(8);
    const index = Number(view.getBigUint64(12));
    let data = null;
    if (seq >= this.nextDataIn) {
      data = await this.sealer.open(this.inbound, SPACE_DATA, seq, body.subarray(0, CHUNK_HEADER), body.subarray(CHUNK_HEADER));
      if (data) this.nextDataIn = seq + 1;
    }
    return { file, index, data };
  }
}

/** Starts the key exchange for `code`: `{spake, message}`. */
export function startHandshake(code, random64) {
  const spake = new Spake2(code, random64);
  return { spake, message: spake.message };
}

/** Finishes it: a Sealer with the derived key. */
export async function finishHandshake(spake, peerMessage) {
  return Sealer.fromKey(await deriveKey(spake.finish(peerMessage)));
}

/** Chunks in a file of `size` bytes: its seal is chunk number this. */
export function chunkCount(size, chunk) {
  return Math.ceil(size / chunk);
}

// ------------------------------------------------------------------ codes

// The same 256 words as crates/cli/transfer/words.rs.
const WORDS = (
  'acid acorn actor admiral agent alarm album alpine amber anchor angle apple apron arch arena ' +
  'armor arrow aspen atlas attic audio autumn avenue badge bagel balloon bamboo banjo barn basil ' +
  'beacon beaver bell berry bicycle bison blossom blue bonsai bottle breeze brick bridge bronze ' +
  'bubble bucket bugle butter cabin cactus camel canal candle canoe canyon carbon cargo carpet ' +
  'castle cedar cello chalk cherry chess cider cinema circus citrus clover cobalt cocoa comet ' +
  'copper coral cotton coyote crane crystal cube cypress daisy delta denim desert diamond dingo ' +
  'dolphin domino dragon drum eagle echo eclipse elbow ember emerald engine falcon fable feather ' +
  'fennel ferry fiddle fjord flame flute forest fossil fox galaxy garden garlic geyser ginger ' +
  'glacier globe granite grape gravel guitar hammer harbor harp hazel helmet heron hickory honey ' +
  'horizon husky iceberg igloo indigo iris island ivory jacket jade jaguar jasmine jelly jigsaw ' +
  'juniper kayak kettle kiwi koala ladder lagoon lantern laser lemon lilac lime linen lizard ' +
  'lobster locket lotus magnet mango maple marble meadow melon meteor mint mirror mocha monsoon ' +
  'mosaic moss nectar needle nickel noodle nutmeg oasis ocean olive onyx opal orbit orchid otter ' +
  'oyster paddle palace panda papaya parrot pebble pepper piano pillow pine planet plum polar ' +
  'pony prism puffin pumpkin quartz quill rabbit radar raven reef ribbon river robin rocket ruby ' +
  'saddle saffron salmon satin sequoia shadow silver sketch sled spruce squid stone sugar summit ' +
  'sunset tango teapot thistle thunder tiger timber topaz tulip tundra turtle umbrella valley ' +
  'velvet violet violin walnut walrus willow winter wizard yarrow zebra zephyr zinc zigzag zenith yodel'
).split(' ');

/** Two random words joined by `-` (256 words: one random byte each). */
export function pickWords() {
  const [a, b] = crypto.getRandomValues(new Uint8Array(2));
  return `${WORDS[a]}-${WORDS[b]}`;
}

/** The nameplate of a code like `7-violet-anchor`, or null. */
export function parseCode(code) {
  const m = /^(\d{1,10})-(\S+)$/.exec(code);
  if (!m) return null;
  const n = Number(m[1]);
  return n <= 0xffffffff ? n : null;
}

/** The relay URL on the page's own server. */
export function relayUrl(location) {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/files`;
}

/** Whether a manifest path is safe: relative, `/`-separated, no empty, `.`
 *  or `..` components, no backslash or NUL (the CLI's safe_join). */
export function safePath(path) {
  if (typeof path !== 'string' || path === '' || path.includes('\0') || path.includes('\\') || path.startsWith('/')) {
    return false;
  }
  return path.split('/').every((c) => c !== '' && c !== '.' && c !== '..');
}

// --------------------------------------------------------------- transport

function messageData(ev) {
  return typeof ev.data === 'string' ? ev.data : new Uint8Array(ev.data);
}

/** Opens a WebSocket and resolves once open. */
function openSocket(url, WebSocketImpl) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocketImpl(url);
    ws.binaryType = 'arraybuffer';
    const fail = () => reject(new Error(`cannot reach the relay at ${url}`));
    ws.onerror = fail;
    ws.onclose = fail;
    ws.onopen = () => {
      ws.onerror = null;
      ws.onclose = null;
      resolve(ws);
    };
  });
}

function backoffMs(n) {
  return 500 * 2 ** Math.min(Math.max(n - 1, 0), 4);
}

function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** What a relay close code means, in words for a person. */
export function closeMeaning(code, reason) {
  if (code !== CLOSE.FINISHED && CLOSE_MEANING[code]) return CLOSE_MEANING[code];
  return reason || `the connection closed (code ${code})`;
}

/** Whether a sender gives up after this close (a relay that forgot the
 *  transfer is answered by recreating it). */
function finalForSender(code) {
  return FINAL_CLOSE_CODES.includes(code) && code !== CLOSE.NOT_FOUND;
}

// ------------------------------------------------------------------ sending

/**
 * Sends files to every receiver that joins with the code, until stop().
 * `items`: [{path, dir, size, mode, blob}] (folders have no blob).
 * `onEvent(ev)` gets: {type: 'code', code} · {type: 'peer', peer, state,
 * message?} (state: 'verifying' | 'sending' | 'done' | 'wrong_code' | 'left'
 * | 'failed') · {type: 'progress', peer, bytes, total, file, fileBytes} ·
 * {type: 'status', state, message} · {type: 'error', message} (fatal).
 */
export class SendSession {
  constructor({ url, items, onEvent, WebSocketImpl = globalThis.WebSocket }) {
    this.url = url;
    this.items = items;
    this.onEvent = onEvent;
    this.WebSocketImpl = WebSocketImpl;
    this.total = items.reduce((n, i) => n + (i.dir ? 0 : i.size), 0);
    this.peers = new Map();
    this.stopped = false;
    this.failures = 0;
    // Per file, the digests of its chunks from the first on, as far as a
    // seal needed them (a receiver resuming: the seal covers the chunks it
    // had before; the chunks sent now are proven by their tags).
    this.digests = items.map(() => []);
    // ... changed by one pump at a time.
    this.digestLocks = items.map(() => Promise.resolve());
    // Relay messages are handled one at a time, in order, though sealing
    // and opening are asynchronous.
    this.inbox = Promise.resolve();
  }

  entries() {
    return this.items.map((i) => ({ path: i.path, dir: !!i.dir, size: i.dir ? 0 : i.size, mode: i.mode }));
  }

  /** Creates the transfer; resolves with the code. */
  async start() {
    const ws = await openSocket(this.url, this.WebSocketImpl);
    const created = await this.hello(ws, { type: 'create', size: this.total });
    this.nameplate = created.nameplate;
    this.token = created.token;
    this.window = created.window || 1 << 20;
    const maxFrame = created.max_frame || 1 << 20;
    this.chunkSize = chunkSize(maxFrame);
    // The manifest travels in one frame, which must fit the relay's frame
    // and window: say so now rather than fail every receiver later.
    const manifest = { type: 'manifest', entries: this.entries(), chunk_size: this.chunkSize, bye: true };
    const manifestLength = PEER_HEADER + 1 + 8 + enc.encode(JSON.stringify(manifest)).length + TAG;
    const largest = Math.min(maxFrame, this.window);
    if (manifestLength > largest) {
      ws.close(1000, 'the file list is too large for this relay');
      throw new Error(`The list of ${this.items.length} files and folders takes ${manifestLength} bytes, more than this relay carries in one message (${largest} bytes). Send fewer files at a time, or an archive.`);
    }
    this.code = `${created.nameplate}-${pickWords()}`;
    this.attach(ws);
    this.onEvent({ type: 'code', code: this.code });
    return this.code;
  }

  /** Sends the first message; resolves with `created` or rejects with the
   *  relay's refusal (`.code` set). */
  hello(ws, msg) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        ws.close();
        reject(new Error('the relay did not answer within 30 s'));
      }, REPLY_TIMEOUT_MS);
      let refusal = null;
      ws.onmessage = (ev) => {
        const data = messageData(ev);
        if (typeof data !== 'string') return;
        let value;
        try {
          value = JSON.parse(data);
        } catch {
          return;
        }
        if (value.type === 'error') {
          refusal = value;
        } else if (value.type === 'created') {
          clearTimeout(timer);
          resolve(value);
        }
      };
      ws.onclose = (ev) => {
        clearTimeout(timer);
        const code = refusal ? refusal.code : ev.code;
        const err = new Error(`the relay refused: ${refusal ? refusal.message : closeMeaning(ev.code, ev.reason)}`);
        err.code = code;
        reject(err);
      };
      ws.send(JSON.stringify(msg));
    });
  }

  attach(ws) {
    this.ws = ws;
    ws.onmessage = (ev) => {
      const data = messageData(ev);
      this.inbox = this.inbox.then(() => this.onMessage(data)).catch((e) => {
        this.onEvent({ type: 'status', state: 'warning', message: String(e && e.message || e) });
      });
    };
    ws.onclose = (ev) => {
      this.inbox = this.inbox.then(() => this.onClose(ev));
    };
    this.onEvent({ type: 'status', state: 'waiting', message: 'waiting for receivers' });
  }

  /** Stops serving receivers and closes the transfer at the relay. */
  stop() {
    this.stopped = true;
    for (const peer of this.peers.values()) this.endPeer(peer);
    if (this.ws && this.ws.readyState <= 1) this.ws.close(1000, 'transfer stopped');
  }

  send(data) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(data);
  }

  /** Sends `peer` its pending bye once it fits its credit. */
  sendBye(peer) {
    if (peer.bye && peer.credit >= peer.bye.length) {
      this.sendControl(peer, peer.bye);
      peer.bye = null;
    }
  }

  /** Sends a control frame to `peer`. Every binary frame to a receiver
   *  costs its whole length in credit, as the relay counts it; control
   *  frames go before any chunk, so they fit. */
  sendControl(peer, frameBytes) {
    peer.credit -= frameBytes.length;
    this.send(frameBytes);
  }

  endPeer(peer) {
    peer.ended = true;
    if (peer.wake) peer.wake();
  }

  async onMessage(data) {
    if (typeof data === 'string') {
      let value;
      try {
        value = JSON.parse(data);
      } catch {
        return;
      }
      const id = Number(value.peer) || 0;
      switch (value.type) {
        case 'peer_joined': {
          const { spake, message } = startHandshake(this.code);
          const peer = { id, state: 'handshaking', spake, channel: null, credit: this.window, ended: false, wake: null, retry: null, done: false };
          this.peers.set(id, peer);
          this.sendControl(peer, frame(id, PAKE, message));
          this.onEvent({ type: 'peer', peer: id, state: 'verifying' });
          break;
        }
        case 'peer_left': {
          const peer = this.peers.get(id);
          if (!peer) break;
          this.peers.delete(id);
          this.endPeer(peer);
          if (peer.state === 'confirming') this.onEvent({ type: 'peer', peer: id, state: 'wrong_code' });
          else if (!peer.done) this.onEvent({ type: 'peer', peer: id, state: 'left' });
          break;
        }
        case 'credit': {
          const peer = this.peers.get(id);
          if (peer) {
            peer.credit += Number(value.bytes) || 0;
            if (peer.wake) peer.wake();
            this.sendBye(peer);
          }
          break;
        }
        case 'error':
          this.lastError = value.message;
          break;
        default:
      }
      return;
    }
    if (data.length <= PEER_HEADER) return;
    const id = new DataView(data.buffer, data.byteOffset, PEER_HEADER).getUint32(0);
    const peer = this.peers.get(id);
    if (!peer) return;
    const kind = data[PEER_HEADER];
    const body = data.subarray(PEER_HEADER + 1);
    if (peer.state === 'handshaking' && kind === PAKE) {
      let sealer;
      try {
        sealer = await finishHandshake(peer.spake, body);
      } catch (e) {
        this.dropPeer(peer, e.message.startsWith('the other side') ? e.message : `the key exchange failed: ${e.message}`);
        return;
      }
      peer.channel = new Channel(sealer, TO_RECEIVER);
      peer.state = 'confirming';
      this.sendControl(peer, await peer.channel.seal(id, { type: 'confirm' }));
    } else if (peer.state === 'confirming' && kind === SEALED) {
      const msg = await peer.channel.open(body);
      if (msg && msg.type === 'confirm') {
        peer.state = 'ready';
        this.send(JSON.stringify({ type: 'accept', peer: id }));
        this.sendControl(peer, await peer.channel.seal(id, { type: 'manifest', entries: this.entries(), chunk_size: this.chunkSize, bye: true }));
      } else {
        this.dropPeer(peer, 'wrong code: the key exchange failed');
      }
    } else if (peer.state === 'ready' && kind === SEALED) {
      const msg = await peer.channel.open(body);
      if (!msg) return;
      if (msg.type === 'have' && Array.isArray(msg.offsets) && msg.offsets.length === this.items.length && !peer.pumping) {
        peer.pumping = true;
        peer.offsets = msg.offsets.map((n) => Math.max(0, Number(n) || 0));
        // Per file, the chunks it had before (whole ones; a whole file is
        // its chunk count), whose digest the seal carries; and the files it
        // verified already, for which nothing is sent.
        peer.prefix = peer.offsets.map((n) => Math.ceil(n / this.chunkSize));
        peer.skip = new Set(Array.isArray(msg.verified) ? msg.verified.map(Number) : []);
        this.onEvent({ type: 'peer', peer: id, state: 'sending' });
        this.pump(peer).catch((e) => {
          if (peer.ended) return;
          // It would wait for ever for the rest: let it go, with why.
          this.send(JSON.stringify({ type: 'drop', peer: id, reason: `the sender stopped: ${e.message}` }));
          this.endPeer(peer);
          this.onEvent({ type: 'peer', peer: id, state: 'failed', message: e.message });
        });
      } else if (msg.type === 'retry') {
        peer.retry = { file: Number(msg.file), chunk: Number(msg.chunk) };
        // From chunk 0: it dropped what it had before.
        if (peer.prefix && peer.retry.file < peer.prefix.length) {
          peer.prefix[peer.retry.file] = Math.min(peer.prefix[peer.retry.file], peer.retry.chunk);
        }
        if (peer.wake) peer.wake();
      } else if (msg.type === 'done') {
        peer.done = true;
        this.endPeer(peer);
        // It waits (bounded) for this, and says `done` again after a
        // reconnect until it hears it.
        // Its window may still hold chunks it no longer needed: the bye
        // waits for credit like a chunk would.
        peer.bye = await peer.channel.seal(id, { type: 'bye' });
        this.sendBye(peer);
        this.onEvent({ type: 'progress', peer: id, bytes: this.total, total: this.total, file: -1, fileBytes: 0 });
        this.onEvent({ type: 'peer', peer: id, state: 'done' });
      } else if (msg.type === 'fail') {
        this.onEvent({ type: 'peer', peer: id, state: 'failed', message: String(msg.message || 'no reason given') });
      }
    }
  }

  dropPeer(peer, reason) {
    this.peers.delete(peer.id);
    this.endPeer(peer);
    this.send(JSON.stringify({ type: 'drop', peer: peer.id, reason }));
    this.onEvent({ type: 'peer', peer: peer.id, state: 'wrong_code' });
  }

  /** The next chunk to send at or after (file, chunk), or null; a file's
   *  seal is its chunk number chunkCount. */
  next(peer, file, chunk) {
    while (file < this.items.length) {
      const item = this.items[file];
      if (!item.dir && !peer.skip.has(file) && chunk <= chunkCount(item.size, this.chunkSize)) return { file, chunk };
      file += 1;
      chunk = peer.prefix[file] || 0;
    }
    return null;
  }

  /** Chunk `chunk` of file `file`, read from its Blob. */
  async read(file, chunk) {
    const item = this.items[file];
    const offset = chunk * this.chunkSize;
    const len = Math.min(item.size - offset, this.chunkSize);
    const data = new Uint8Array(await item.blob.slice(offset, offset + len).arrayBuffer());
    if (data.length !== len) throw new Error(`${item.path} changed while being sent`);
    return data;
  }

  /** Takes the digests of file `file`'s chunks below `upTo` not taken yet. */
  async fillDigests(file, upTo) {
    const digests = this.digests[file];
    while (digests.length < upTo) digests.push(await sha256Native(await this.read(file, digests.length)));
  }

  /** Runs `fn(digests of file)` when no other pump is changing them. */
  withDigests(file, fn) {
    const run = this.digestLocks[file].then(() => fn(this.digests[file]));
    this.digestLocks[file] = run.catch(() => {});
    return run;
  }

  /** The frame of chunk `chunk` of file `file` for `peer`: the chunk, or
   *  the file's seal. */
  async dataFrame(peer, file, chunk) {
    const item = this.items[file];
    const count = chunkCount(item.size, this.chunkSize);
    if (chunk === count) {
      // The seal: the digest of the chunks the receiver had before.
      const before = peer.prefix[file];
      const digest = await this.withDigests(file, async (digests) => {
        await this.fillDigests(file, before);
        return fileDigest(item.size, this.chunkSize, digests.slice(0, before));
      });
      return peer.channel.sealData(peer.id, file, chunk, digest);
    }
    return peer.channel.sealData(peer.id, file, chunk, await this.read(file, chunk));
  }

  /** Waits until woken (credit, a retry, the end). */
  sleep(peer) {
    return new Promise((resolve) => {
      peer.wake = () => {
        peer.wake = null;
        resolve();
      };
    });
  }

  /** Sends one receiver the chunks it is missing, in order, within its
   *  credit (the relay closes a sender that overdraws). */
  async pump(peer) {
    let pos = this.next(peer, 0, peer.prefix[0] || 0);
    const starts = [];
    let sum = 0;
    for (const item of this.items) {
      starts.push(sum);
      sum += item.dir ? 0 : item.size;
    }
    let ahead = null;
    while (!peer.ended) {
      if (peer.retry) {
        pos = this.next(peer, peer.retry.file, peer.retry.chunk);
        peer.retry = null;
      }
      if (!pos) {
        await this.sleep(peer);
        continue;
      }
      const { file, chunk } = pos;
      const item = this.items[file];
      const offset = Math.min(chunk * this.chunkSize, item.size);
      const len = Math.min(item.size - offset, this.chunkSize);
      // The next frame is read, digested and sealed while this one waits
      // for credit and the socket.
      const msg = await (ahead && ahead.file === file && ahead.chunk === chunk ? ahead.frame : this.dataFrame(peer, file, chunk));
      ahead = null;
      const following = this.next(peer, file, chunk + 1);
      if (following) {
        ahead = { ...following, frame: this.dataFrame(peer, following.file, following.chunk) };
        ahead.frame.catch(() => {});
      }
      while (!peer.ended && peer.credit < msg.length) await this.sleep(peer);
      if (peer.ended) return;
      if (peer.retry) continue; // a retry arrived while we waited: resend from there
      peer.credit -= msg.length;
      this.send(msg);
      this.onEvent({ type: 'progress', peer: peer.id, bytes: starts[file] + offset + len, total: this.total, file, fileBytes: offset + len });
      pos = this.next(peer, file, chunk + 1);
    }
  }

  onClose(ev) {
    for (const peer of this.peers.values()) this.endPeer(peer);
    const lost = [...this.peers.keys()];
    this.peers.clear();
    for (const id of lost) this.onEvent({ type: 'peer', peer: id, state: 'left', message: 'the relay connection dropped; it can rejoin' });
    if (this.stopped) return;
    if (finalForSender(ev.code)) {
      this.onEvent({ type: 'error', message: `the relay ended the transfer: ${this.lastError || closeMeaning(ev.code, ev.reason)}` });
      return;
    }
    this.reconnect(ev);
  }

  async reconnect(ev) {
    while (!this.stopped) {
      this.failures += 1;
      if (this.failures > MAX_FAILURES) {
        this.onEvent({ type: 'error', message: 'the relay connection kept failing; giving up (reload the page to start again)' });
        return;
      }
      const wait = backoffMs(this.failures);
      this.onEvent({ type: 'status', state: 'reconnecting', message: `${closeMeaning(ev.code, ev.reason)}; reconnecting in ${(wait / 1000).toFixed(1)} s` });
      await delay(wait);
      if (this.stopped) return;
      const hello = (type) => ({ type, size: this.total, nameplate: this.nameplate, token: this.token });
      try {
        let ws = await openSocket(this.url, this.WebSocketImpl);
        try {
          await this.hello(ws, hello('reattach'));
        } catch (e) {
          if (e.code !== CLOSE.NOT_FOUND) throw e;
          // The relay restarted and forgot the transfer: recreate it under the same code.
          ws = await openSocket(this.url, this.WebSocketImpl);
          await this.hello(ws, hello('create'));
        }
        this.failures = 0;
        this.attach(ws);
        return;
      } catch (e) {
        // 4409 here: another transfer took the code while the relay had
        // forgotten ours; waiting will not give it back.
        if (FINAL_CLOSE_CODES.includes(e.code) || e.code === CLOSE.SENDER_NOT_CONNECTED) {
          this.onEvent({ type: 'error', message: e.message });
          return;
        }
      }
    }
  }
}

// ---------------------------------------------------------------- receiving

/**
 * Receives a transfer by its code into Blobs (which the browser keeps on
 * disk when they are large).
 * `onEvent(ev)` gets: {type: 'status', state, message} · {type: 'manifest',
 * entries, total} · {type: 'progress', bytes, total, file, fileBytes} ·
 * {type: 'file', index, blob} (verified) · {type: 'done'} · {type: 'error',
 * message} (fatal; nothing unverified is ever offered).
 */
export class ReceiveSession {
  constructor({ url, code, onEvent, WebSocketImpl = globalThis.WebSocket }) {
    this.url = url;
    this.code = code;
    this.nameplate = parseCode(code);
    this.onEvent = onEvent;
    this.WebSocketImpl = WebSocketImpl;
    this.plan = null;
    this.finished = false;
    this.joinedBefore = false;
    // Frames are handled one at a time, in order, though opening them is
    // asynchronous.
    this.inbox = Promise.resolve();
  }

  /** Runs until done or a fatal error (both reported as events). */
  async run() {
    if (this.nameplate === null) {
      this.fatal(`"${this.code}" is not a transfer code; it looks like 7-violet-anchor`);
      return;
    }
    let failures = 0;
    while (!this.finished) {
      const progressedBefore = this.progressed || 0;
      const outcome = await this.attempt();
      if (outcome.done || outcome.fatal) return;
      if ((this.progressed || 0) > progressedBefore) failures = 0;
      failures += 1;
      if (failures > MAX_FAILURES) {
        this.fatal(`${outcome.message}; giving up after repeated failures`);
        return;
      }
      const wait = backoffMs(failures);
      this.onEvent({ type: 'status', state: 'reconnecting', message: `${outcome.message}; reconnecting in ${(wait / 1000).toFixed(1)} s` });
      await delay(wait);
    }
  }

  /** Stops (the page is closing or the person cancelled). */
  cancel() {
    this.finished = true;
    if (this.ws && this.ws.readyState <= 1) this.ws.close(1000, 'cancelled');
  }

  fatal(message) {
    this.finished = true;
    if (this.ws && this.ws.readyState <= 1) this.ws.close(1000, 'failed');
    this.onEvent({ type: 'error', message });
  }

  send(data) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(data);
  }

  /** Seals a control message and sends it. */
  async sendControl(msg) {
    this.send(await this.channel.seal(0, msg));
  }

  /** One connection: resolves with {done} | {fatal} | {message} (retry). */
  async attempt() {
    let ws;
    try {
      ws = await openSocket(this.url, this.WebSocketImpl);
    } catch (e) {
      return { message: e.message };
    }
    this.ws = ws;
    this.spake = null;
    this.channel = null;
    this.confirmed = false;
    this.started = false;
    let relayError = null;
    this.onEvent({ type: 'status', state: 'connecting', message: 'joining the transfer' });
    return new Promise((resolve) => {
      this.settle = (outcome) => {
        this.settle = () => {};
        resolve(outcome);
      };
      ws.onmessage = (ev) => {
        const data = messageData(ev);
        if (typeof data === 'string') {
          let value;
          try {
            value = JSON.parse(data);
          } catch {
            return;
          }
          if (value.type === 'joined') {
            this.joinedBefore = true;
            const { spake, message } = startHandshake(this.code);
            this.spake = spake;
            this.send(frame(0, PAKE, message));
            this.onEvent({ type: 'status', state: 'verifying', message: 'checking the code with the sender' });
          } else if (value.type === 'error') {
            relayError = value.message;
          }
          return;
        }
        this.inbox = this.inbox.then(() => this.onPeer(data)).catch((e) => {
          this.fatal(e.message);
          this.settle({ fatal: true });
        });
      };
      ws.onclose = (ev) => {
        this.inbox = this.inbox.then(() => this.onClosed(ev, relayError));
      };
      ws.send(JSON.stringify({ type: 'join', nameplate: this.nameplate }));
    });
  }

  /** What a close of the relay connection means for this attempt. */
  onClosed(ev, relayError) {
    if (this.finished) {
      this.settle({ done: !!this.complete, fatal: !this.complete });
      return;
    }
    const code = ev.code;
    if (code === CLOSE.NOT_FOUND && this.joinedBefore) {
      this.settle({ message: 'the relay no longer knows this transfer (did it restart?); waiting for the sender' });
    } else if (code === CLOSE.FINISHED) {
      this.fatal(this.started
        ? 'The sender ended the transfer before everything arrived. Files already verified are still offered below.'
        : 'The sender ended the transfer.');
      this.settle({ fatal: true });
    } else if (FINAL_CLOSE_CODES.includes(code)) {
      this.fatal(`The relay refused: ${code === CLOSE.MALFORMED && relayError ? relayError : closeMeaning(code, ev.reason)}.`);
      this.settle({ fatal: true });
    } else {
      this.settle({ message: relayError || closeMeaning(code, ev.reason) });
    }
  }

  async onPeer(data) {
    if (this.finished || data.length <= PEER_HEADER) return;
    const kind = data[PEER_HEADER];
    const body = data.subarray(PEER_HEADER + 1);
    if (kind === PAKE) {
      if (!this.spake) throw new Error('the sender started the key exchange twice');
      const spake = this.spake;
      this.spake = null;
      this.channel = new Channel(await finishHandshake(spake, body), TO_SENDER);
    } else if (kind === SEALED) {
      if (!this.channel) return;
      const msg = await this.channel.open(body);
      if (!msg) {
        if (!this.confirmed) {
          this.fatal('Wrong code: the key exchange with the sender failed. Check the code with the sender; nothing was received.');
          this.settle({ fatal: true });
        }
        return;
      }
      if (msg.type === 'confirm' && !this.confirmed) {
        this.confirmed = true;
        await this.sendControl({ type: 'confirm' });
        this.onEvent({ type: 'status', state: 'connected', message: 'code verified; waiting for the list of files' });
      } else if (msg.type === 'manifest' && this.confirmed && !this.started) {
        await this.onManifest(msg);
      }
    } else if (kind === CHUNK) {
      if (!this.channel || !this.started) return;
      const chunk = await this.channel.openData(body);
      if (chunk) await this.onData(chunk);
    }
  }

  async onManifest(msg) {
    const problem = checkManifest(msg);
    if (problem) {
      await this.sendControl({ type: 'fail', message: problem });
      this.fatal(`The sender's list of files was refused: ${problem}. Nothing was received.`);
      this.settle({ fatal: true });
      return;
    }
    const key = JSON.stringify([msg.entries, msg.chunk_size]);
    if (!this.plan || this.plan.key !== key) {
      // A first manifest, or another one than before a reconnect: start over.
      this.plan = {
        key,
        entries: msg.entries,
        chunk: msg.chunk_size,
        offsets: msg.entries.map(() => 0),
        parts: msg.entries.map(() => []),
        digests: msg.entries.map(() => []),
        installed: msg.entries.map(() => false),
        failures: new Map(),
        total: msg.entries.reduce((n, e) => n + (e.dir ? 0 : e.size), 0),
        received: 0,
      };
      this.onEvent({ type: 'manifest', entries: msg.entries, total: this.plan.total });
    }
    this.started = true;
    const plan = this.plan;
    // What arrived through an earlier connection is checked against the
    // file's seal: the digests of its chunks (one Blob each).
    for (let i = 0; i < plan.entries.length; i++) {
      plan.digests[i] = [];
      if (plan.installed[i]) continue;
      for (const part of plan.parts[i]) plan.digests[i].push(await sha256Native(await part.arrayBuffer()));
    }
    const verified = plan.installed.flatMap((done, i) => (done ? [i] : []));
    await this.sendControl({ type: 'have', offsets: plan.offsets, verified });
    plan.cursor = this.nextFile(0);
    this.onEvent({ type: 'status', state: 'receiving', message: 'receiving' });
    if (plan.cursor === null) await this.finish();
  }

  /** The next file at or after `from` not offered yet: each waits for its
   *  seal, an empty one too. */
  nextFile(from) {
    const plan = this.plan;
    for (let i = from; i < plan.entries.length; i++) {
      if (!plan.entries[i].dir && !plan.installed[i]) return i;
    }
    return null;
  }

  async onData({ file, index, data }) {
    const plan = this.plan;
    if (plan.cursor !== file) return; // stale: sent before a retry or resume
    const entry = plan.entries[file];
    const count = chunkCount(entry.size, plan.chunk);
    if (index !== Math.ceil(plan.offsets[file] / plan.chunk)) return;
    const expected = index === count ? 32 : Math.min(entry.size - plan.offsets[file], plan.chunk);
    if (!data || data.length !== expected) {
      const key = `${file}:${index}`;
      const n = (plan.failures.get(key) || 0) + 1;
      plan.failures.set(key, n);
      if (n > MAX_CHUNK_FAILURES) {
        await this.sendControl({ type: 'fail', message: `chunk ${index} of ${entry.path} failed verification ${MAX_CHUNK_FAILURES} times` });
        this.fatal(`Chunk ${index} of ${entry.path} failed verification ${MAX_CHUNK_FAILURES} times: the connection is corrupting data.`);
        this.settle({ fatal: true });
        return;
      }
      await this.sendControl({ type: 'retry', file, chunk: index });
      return;
    }
    if (index === count) {
      // The file's seal: its digest as sent.
      if (!(await this.install(file, data))) return;
      plan.cursor = this.nextFile(file + 1);
      if (plan.cursor === null) await this.finish();
      return;
    }
    plan.parts[file].push(new Blob([data]));
    plan.offsets[file] += data.length;
    plan.received += data.length;
    this.progressed = (this.progressed || 0) + 1;
    this.onEvent({ type: 'progress', bytes: plan.received, total: plan.total, file, fileBytes: plan.offsets[file] });
  }

  /** Checks the digest of what arrived through earlier connections (none,
   *  mostly) against the one the sender sealed, and offers the file. */
  async install(i, sent) {
    const plan = this.plan;
    const entry = plan.entries[i];
    const ours = await fileDigest(entry.size, plan.chunk, plan.digests[i]);
    if (toHex(ours) !== toHex(sent)) {
      plan.parts[i] = [];
      await this.sendControl({ type: 'fail', message: `${entry.path} does not match the sender's digest` });
      this.fatal(`${entry.path} does not match the sender's digest (did it change while being sent?); it is not offered. Try again.`);
      this.settle({ fatal: true });
      return false;
    }
    const blob = new Blob(plan.parts[i], { type: 'application/octet-stream' });
    plan.parts[i] = [];
    plan.installed[i] = true;
    this.onEvent({ type: 'file', index: i, blob });
    return true;
  }

  async finish() {
    this.complete = true;
    this.finished = true;
    await this.sendControl({ type: 'done' });
    if (this.ws.readyState <= 1) this.ws.close(1000, 'received');
    this.onEvent({ type: 'done' });
    this.settle({ done: true });
  }
}

/** Why a manifest cannot be accepted, or null. */
export function checkManifest(msg) {
  const { entries, chunk_size: chunk } = msg;
  if (!Number.isSafeInteger(chunk) || chunk <= 0 || chunk > 64 << 20) return `the chunk size ${chunk} is not usable`;
  if (!Array.isArray(entries) || entries.length === 0) return 'it is empty';
  if (entries.length > MAX_ENTRIES) return `it has more than ${MAX_ENTRIES} entries`;
  const seen = new Set();
  for (const e of entries) {
    if (!e || !safePath(e.path)) return `the path ${JSON.stringify(e && e.path)} is unsafe`;
    if (seen.has(e.path)) return `${JSON.stringify(e.path)} appears twice`;
    seen.add(e.path);
    if (!Number.isSafeInteger(e.size) || e.size < 0) return `${JSON.stringify(e.path)} has an invalid size`;
  }
  return null;
}
