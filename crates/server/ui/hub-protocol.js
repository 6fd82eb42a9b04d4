// GENERATED from crates/hub (duplex-hub) by `DUPLEX_REGENERATE=1
// cargo test -p duplex-server --lib hub_protocol_js`: do not edit. The hub protocol's
// facts (docs/protocol.md), shared with the server and the CLI.

/** The commands: the `cmd` of each. */
export const COMMANDS = Object.freeze({
  CONNECT: "connect",
  SUBSCRIBE: "subscribe",
  UNSUBSCRIBE: "unsubscribe",
  PUBLISH: "publish",
  HISTORY: "history",
  PRESENCE: "presence",
  TYPING: "typing",
  KICK: "kick",
  PING: "ping",
});
/** The pushes: the `push` field of what the server sends unasked. */
export const PUSHES = Object.freeze({
  PUBLICATION: "publication",
  JOIN: "join",
  LEAVE: "leave",
  TYPING: "typing",
  KICKED: "kicked",
});
/** The `code` of error replies. */
export const ERROR_CODES = Object.freeze({
  BAD_REQUEST: "bad_request",
  UNAUTHORIZED: "unauthorized",
  FORBIDDEN: "forbidden",
  NOT_SUBSCRIBED: "not_subscribed",
  NAME_TAKEN: "name_taken",
  TOO_LARGE: "too_large",
  RATE_LIMITED: "rate_limited",
  LIMIT_EXCEEDED: "limit_exceeded",
  BANNED: "banned",
  UNAVAILABLE: "unavailable",
  INTERNAL: "internal",
});
/** Error codes after which the same command may succeed later, unchanged. */
export const TRANSIENT_ERROR_CODES = Object.freeze([ERROR_CODES.RATE_LIMITED, ERROR_CODES.UNAVAILABLE, ERROR_CODES.INTERNAL]);
/** The close codes the server ends a hub connection with. */
export const CLOSE = Object.freeze({
  NORMAL: 1000,
  SHUTTING_DOWN: 1001,
  POLICY: 1008,
  TOO_LARGE: 1009,
  PUBLICATIONS_LOST: 1012,
  TRY_AGAIN_LATER: 1013,
});
/** Close codes after which a client stops instead of reconnecting. */
export const FINAL_CLOSE_CODES = Object.freeze([CLOSE.POLICY]);
/** What each close code means, for a person. */
export const CLOSE_MEANING = Object.freeze({
  1000: "the connection was closed normally",
  1001: "the server is shutting down",
  1008: "closed by the server's policy (kicked, or too many bad commands)",
  1009: "a message was larger than the server allows",
  1012: "publications were lost on their way to this server",
  1013: "the server is overloaded or this client read too slowly",
});
/** `history`: publications returned without a `limit`, and at most. */
export const HISTORY_DEFAULT_LIMIT = 50;
export const HISTORY_MAX_LIMIT = 1000;
/** Channel names: 1 to this many ASCII letters, digits or punctuation. */
export const CHANNEL_MAX_LENGTH = 128;
export const CHANNEL_PUNCTUATION = "-_.:@/";
/** The longest nickname, in characters (code points). */
export const NAME_MAX_CHARS = 32;
/** `connect`'s `session` secret: this many letters, digits, `-` or `_`. */
export const SESSION_MIN_LENGTH = 16;
export const SESSION_MAX_LENGTH = 128;
