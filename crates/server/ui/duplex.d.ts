// Types of duplex.js, the JavaScript client of the Duplex hub
// (docs/protocol.md). Served by `duplex serve` at /duplex.d.ts.

// The protocol's facts and their types, generated from the Rust
// definitions (crates/hub): see hub-protocol.d.ts.
export * from './hub-protocol.js';
import type { ServerErrorCode } from './hub-protocol.js';

/** Errors of the client itself. */
export type ClientErrorCode = 'disconnected' | 'timeout';
export type ErrorCode = ServerErrorCode | ClientErrorCode;
export declare const CLIENT_ERROR_CODES: Readonly<{ DISCONNECTED: 'disconnected'; TIMEOUT: 'timeout' }>;

export declare const DEFAULTS: Readonly<{
  commandTimeout: number;
  pingInterval: number;
  backoffBase: number;
  backoffMax: number;
  nameTakenRetries: number;
}>;

/** A failed command: an error reply of the hub, or a failure of the connection. */
export declare class HubError extends Error {
  constructor(code: ErrorCode, message: string, command?: string);
  readonly name: 'HubError';
  readonly code: ErrorCode | string;
  /** The `cmd` that failed. */
  readonly command?: string;
  /** Whether the same command may succeed later, unchanged. */
  readonly transient: boolean;
}

export declare function isValidChannel(name: string): boolean;
export declare function newSession(): string;

/** Who a connection is. */
export interface Member {
  client: string;
  user: string;
  name: string;
}

/** A recovery position: the last publication seen. */
export interface Position {
  epoch: string;
  offset: number;
}

export interface Publication<Data = unknown> {
  channel: string;
  offset: number;
  epoch: string;
  /** RFC 3339, UTC, milliseconds: when the server accepted it. */
  ts: string;
  from: Member;
  data: Data;
}

/** The server's acknowledgement of a publish. */
export interface PublishAck {
  channel: string;
  offset: number;
  epoch: string;
  ts: string;
}

export interface HistoryPage<Data = unknown> {
  channel: string;
  epoch: string;
  offset: number;
  publications: Publication<Data>[];
}

export interface HistoryOptions {
  limit?: number;
  before?: number;
  after?: number;
}

export interface SubscribedInfo {
  /** The first confirmation of this subscription. */
  first: boolean;
  /** Subscribed from `since` and every missed publication was delivered. */
  recovered: boolean;
  /** Subscribed from `since` but not everything could be recovered. */
  gap: boolean;
  since: Position | null;
  epoch: string;
  offset: number;
  /** Publications recovered. */
  missed: number;
}

export interface GapInfo {
  since: Position;
  epoch: string;
  offset: number;
  /** The server lost the channel's history: offsets start over. */
  epochChanged: boolean;
}

export interface SubscribeOptions {
  /** Start after this position instead of live. */
  since?: Position;
  /** Announce me in the channel's presence (default true). */
  presence?: boolean;
  /** Keep `members` up to date (default true). */
  members?: boolean;
  /** For the first subscribe: how often `name_taken` is retried (default 0). */
  nameTakenRetries?: number;
}

type Unsubscribe = () => void;

interface SubscriptionEvents<Data> {
  publication: (p: Publication<Data>) => void;
  subscribed: (info: SubscribedInfo) => void;
  gap: (info: GapInfo) => void;
  join: (member: Member) => void;
  leave: (member: Member) => void;
  typing: (member: Member) => void;
  members: (members: Member[]) => void;
  kicked: (reason: string) => void;
  error: (error: HubError) => void;
}

export declare class Subscription<Data = unknown> {
  readonly client: Client;
  readonly channel: string;
  /** The last publication delivered (null before the first subscribe). */
  readonly position: Position | null;
  /** The lowest offset delivered or returned by history. */
  readonly oldest: number | null;
  /** Who is online, by connection id. */
  readonly members: Map<string, Member>;
  readonly subscribed: boolean;
  readonly ended: boolean;
  /** Resolves on the first confirmation; rejects if the subscription is refused. */
  readonly ready: Promise<SubscribedInfo>;
  on<E extends keyof SubscriptionEvents<Data>>(event: E, listener: SubscriptionEvents<Data>[E]): Unsubscribe;
  off<E extends keyof SubscriptionEvents<Data>>(event: E, listener: SubscriptionEvents<Data>[E]): void;
  publish(data: Data): Promise<PublishAck>;
  history(options?: HistoryOptions): Promise<HistoryPage<Data>>;
  loadOlder(limit?: number): Promise<{ publications: Publication<Data>[]; complete: boolean }>;
  presence(): Promise<Member[]>;
  typing(): Promise<{}>;
  unsubscribe(): Promise<void>;
}

export type ClientState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'stopped';

export interface ClientOptions extends Partial<typeof DEFAULTS> {
  /** The nickname. */
  name?: string;
  /** A JWT. */
  token?: string;
  /** A secret kept across reconnects (16-128 of A-Za-z0-9-_); made up when absent. */
  session?: string;
  /** The WebSocket class (default globalThis.WebSocket; under Node, e.g. `ws`). */
  WebSocket?: new (url: string) => WebSocket;
}

interface ClientEvents {
  state: (state: ClientState, details: {
    reconnect?: boolean; delay?: number; at?: number; attempt?: number;
    code?: number | null; reason?: string; error?: HubError;
  }) => void;
  connected: (info: { me: Member; reconnect: boolean }) => void;
  disconnected: (info: { code: number; reason: string }) => void;
  error: (error: HubError) => void;
}

export declare class Client {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  readonly session: string;
  readonly state: ClientState;
  /** Who the server says we are, once connected. */
  readonly me: Member | null;
  readonly subscriptions: Map<string, Subscription>;
  on<E extends keyof ClientEvents>(event: E, listener: ClientEvents[E]): Unsubscribe;
  off<E extends keyof ClientEvents>(event: E, listener: ClientEvents[E]): void;
  connect(): void;
  reconnectNow(): void;
  dropConnection(): void;
  close(): void;
  subscribe<Data = unknown>(channel: string, options?: SubscribeOptions): Subscription<Data>;
  publish(channel: string, data: unknown): Promise<PublishAck>;
  history<Data = unknown>(channel: string, options?: HistoryOptions): Promise<HistoryPage<Data>>;
  call(cmd: string, fields?: Record<string, unknown>): Promise<any>;
}
