//! The hub's wire format (docs/protocol.md): commands in, replies and pushes out.
//!
//! Commands are parsed with serde into [`Command`] by the server, and
//! encoded from the same type by clients (the CLI, the bench): one
//! definition of the format. Anything that does not parse becomes a
//! `bad_request` error reply that names the problem, never a closed
//! connection. Replies and pushes are serialised once and shared as
//! bytes: a publication fanned out to ten thousand subscribers is encoded
//! one time.
//!
//! One file per part: [`command`] (what clients send), [`reply`](mod@reply) (what
//! answers them), [`push`](mod@push) (what the server sends unasked), [`error`] (the
//! error codes), [`close`] (the close codes), [`member`] (who a connection is).
//! [`javascript`] writes the browser's copy of these facts
//! (`crates/server/ui/hub-protocol.js`).

pub mod close;
pub mod command;
pub mod error;
pub mod javascript;
pub mod member;
pub mod push;
pub mod reply;

use bytes::Bytes;
use serde::Serialize;

pub use close::HubClose;
pub use command::{
    CHANNEL_MAX_LEN, CHANNEL_PUNCTUATION, Command, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT,
    NAME_MAX_CHARS, Request, SESSION_MAX_LEN, SESSION_MIN_LEN, Since, check_channel, encode_data,
    parse_request,
};
pub use error::{ErrorCode, HubError};
pub use member::Member;
pub use push::{PushKind, kicked_push, member_push};
pub use reply::{PageView, PublishResult, error_reply, reply};

/// Serialises a value that cannot fail to serialise (no maps with
/// non-string keys, no failing `Serialize` impls).
pub fn to_bytes(value: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("hub messages always serialise"))
}
