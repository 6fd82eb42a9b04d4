// GENERATED from crates/transfer (duplex-transfer) by `DUPLEX_REGENERATE=1 cargo test
// -p duplex-transfer`: do not edit. The relay protocol's facts, shared with the
// relay and the CLI; the protocol is in docs/transfer.md.

/** Peer message kinds (the byte after the relay's 4-byte peer number). */
export const PAKE = 1;
export const SEALED = 2;
export const CHUNK = 3;
/** Bytes of the peer number in front of every binary frame. */
export const PEER_HEADER = 4;
/** Bytes a data frame adds to the chunk: peer, kind, seq, file, index, tag. */
export const CHUNK_OVERHEAD = 41;
/** The end-to-end layer (crates/transfer/src/seal.rs, chunk.rs, digest.rs). */
export const PROTOCOL = 2;
export const IDENTITY = "duplex transfer v2";
export const KEY_INFO = "duplex transfer v2 aes-256-gcm key";
export const FILE_LABEL = "duplex transfer v2 file\u0000";
export const TAG = 16;
export const CHUNK_HEADER = 20;
export const DATA_PREFIX = 25;
export const SPACE_CONTROL = 0;
export const SPACE_DATA = 1;
export const MAX_CHUNK = 1048576;
export const MIN_CHUNK = 1024;
export const FRAME_SLACK = 64;
/** Largest frame a receiver may send. */
export const MAX_RECEIVER_FRAME = 65536;
/** Largest binary frame the relay allows. */
export const MAX_FRAME = 2097152;
/** The relay's close codes. */
export const CLOSE = Object.freeze({
  FINISHED: 1000,
  GOING_AWAY: 1001,
  SENDER_AWAY: 4001,
  OVERDRAWN: 4008,
  MALFORMED: 4400,
  DROPPED: 4403,
  NOT_FOUND: 4404,
  SENDER_NOT_CONNECTED: 4409,
  EXPIRED: 4410,
  TOO_LARGE: 4413,
  TOO_MANY_FAILURES: 4429,
  UNREACHABLE: 4502,
  BUSY: 4503,
});
/** Close codes after which a client gives up instead of reconnecting. */
export const FINAL_CLOSE_CODES = Object.freeze([CLOSE.FINISHED, CLOSE.OVERDRAWN, CLOSE.MALFORMED, CLOSE.DROPPED, CLOSE.NOT_FOUND, CLOSE.EXPIRED, CLOSE.TOO_LARGE, CLOSE.TOO_MANY_FAILURES]);
/** What each close code means, for a user. */
export const CLOSE_MEANING = Object.freeze({
  1000: "the sender finished",
  1001: "the server is shutting down",
  4001: "the sender lost its connection",
  4008: "flow control was violated (a bug in the sending program)",
  4400: "the relay could not understand the client (a bug in the program)",
  4403: "the sender refused this receiver (wrong code)",
  4404: "there is no transfer with this number on this server: check the code",
  4409: "the sender is not connected right now",
  4410: "this code has expired: ask the sender for a new one",
  4413: "the files are larger than this server accepts",
  4429: "too many wrong codes from this address in the last minute: wait a minute, then check the code",
  4502: "the server holding this transfer cannot be reached right now: trying again",
  4503: "the server is busy (too many transfers or receivers): try again later",
});
/** The relay's control messages (the `type` of each JSON text frame). */
export const RELAY_MESSAGES = Object.freeze(["create", "reattach", "join", "created", "joined", "peer_joined", "peer_left", "credit", "accept", "drop", "error"]);
