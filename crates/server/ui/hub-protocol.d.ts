// GENERATED from crates/hub (duplex-hub) by `DUPLEX_REGENERATE=1
// cargo test -p duplex-server --lib hub_protocol_js`: do not edit. The types of
// hub-protocol.js.

/** A command's `cmd`. */
export type CommandName = "connect" | "subscribe" | "unsubscribe" | "publish" | "history" | "presence" | "typing" | "kick" | "ping";
export declare const COMMANDS: Readonly<{
  CONNECT: "connect";
  SUBSCRIBE: "subscribe";
  UNSUBSCRIBE: "unsubscribe";
  PUBLISH: "publish";
  HISTORY: "history";
  PRESENCE: "presence";
  TYPING: "typing";
  KICK: "kick";
  PING: "ping";
}>;
/** A push's `push`. */
export type PushKind = "publication" | "join" | "leave" | "typing" | "kicked";
export declare const PUSHES: Readonly<{
  PUBLICATION: "publication";
  JOIN: "join";
  LEAVE: "leave";
  TYPING: "typing";
  KICKED: "kicked";
}>;
/** An error reply's `code`. */
export type ServerErrorCode = "bad_request" | "unauthorized" | "forbidden" | "not_subscribed" | "name_taken" | "too_large" | "rate_limited" | "limit_exceeded" | "banned" | "unavailable" | "internal";
export declare const ERROR_CODES: Readonly<{
  BAD_REQUEST: "bad_request";
  UNAUTHORIZED: "unauthorized";
  FORBIDDEN: "forbidden";
  NOT_SUBSCRIBED: "not_subscribed";
  NAME_TAKEN: "name_taken";
  TOO_LARGE: "too_large";
  RATE_LIMITED: "rate_limited";
  LIMIT_EXCEEDED: "limit_exceeded";
  BANNED: "banned";
  UNAVAILABLE: "unavailable";
  INTERNAL: "internal";
}>;
export declare const TRANSIENT_ERROR_CODES: readonly ServerErrorCode[];
export declare const CLOSE: Readonly<{
  NORMAL: 1000;
  SHUTTING_DOWN: 1001;
  POLICY: 1008;
  TOO_LARGE: 1009;
  PUBLICATIONS_LOST: 1012;
  TRY_AGAIN_LATER: 1013;
}>;
export declare const FINAL_CLOSE_CODES: readonly number[];
export declare const CLOSE_MEANING: Readonly<Record<number, string>>;
export declare const HISTORY_DEFAULT_LIMIT: number;
export declare const HISTORY_MAX_LIMIT: number;
export declare const CHANNEL_MAX_LENGTH: number;
export declare const NAME_MAX_CHARS: number;
export declare const SESSION_MIN_LENGTH: number;
export declare const SESSION_MAX_LENGTH: number;
export declare const CHANNEL_PUNCTUATION: string;
