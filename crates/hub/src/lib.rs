//! The wire protocol of Duplex's hub (`/ws`, docs/protocol.md): commands
//! in, replies and pushes out.
//!
//! Each message has one type that both encodes and parses it, used by both
//! ends: the server parses a [`Request`] that the CLI, the bench and the
//! tests encoded from the same type; the server encodes a
//! [`ServerMessage`] (a reply, an error reply or a [`Push`]) that clients
//! parse back with [`ServerMessage::parse`]. Anything a client sends that
//! does not parse becomes a `bad_request` error reply that names the
//! problem, never a closed connection. Replies and pushes are serialised
//! once and shared as bytes: a publication fanned out to ten thousand
//! subscribers is encoded one time.
//!
//! ```
//! use duplex_hub::{Push, ServerMessage};
//!
//! let text = r#"{"push":"publication","channel":"news","offset":3,"epoch":"e1",
//!     "ts":"2026-11-21T20:31:07.123Z","from":{"client":"c1","user":"ann","name":"ann"},
//!     "data":{"text":"hi"}}"#;
//! let Ok(ServerMessage::Push(Push::Publication(p))) = ServerMessage::parse(text) else {
//!     panic!("a publication");
//! };
//! assert_eq!((&*p.channel, p.offset, p.data.get()), ("news", 3, r#"{"text":"hi"}"#));
//! ```
//!
//! One file per part: [`command`] (what clients send), [`message`] (what
//! the server sends: [`reply`](mod@reply) holds the results of each
//! command, [`push`](mod@push) what is sent unasked, [`publication`] the
//! shape of a publication in both), [`error`] (the error codes), [`close`]
//! (the close codes), [`member`] (who a connection is). [`javascript`]
//! writes the browser's copy of these facts
//! (`crates/server/ui/hub-protocol.js`).

#![warn(missing_docs)]

/// Declares an enum of wire names once: its variants, each with its name;
/// generates `ALL` (every variant, in order), `name` and `from_name`, so a
/// new variant cannot be left out of any of them.
macro_rules! wire_names {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $wire:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every variant, in the order of docs/protocol.md.
            pub const ALL: [$name; [$($wire),*].len()] = [$($name::$variant),*];

            /// The name on the wire (or in generated code).
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)*
                }
            }

            /// The variant a name stands for.
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($wire => Some($name::$variant),)*
                    _ => None,
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::from_name(&name).ok_or_else(|| {
                    serde::de::Error::unknown_variant(&name, &[$($wire),*])
                })
            }
        }
    };
}
pub(crate) use wire_names;

pub mod close;
pub mod command;
pub mod error;
pub mod javascript;
pub mod member;
pub mod message;
pub mod publication;
pub mod push;
pub mod reply;

use bytes::Bytes;
use serde::Serialize;

pub use close::HubClose;
pub use command::{
    CHANNEL_MAX_LEN, CHANNEL_PUNCTUATION, Command, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT,
    NAME_MAX_CHARS, PUBLISHES_IN_FLIGHT, Request, SESSION_MAX_LEN, SESSION_MIN_LEN, Since,
    check_channel, encode_data, parse_request,
};
pub use error::{ErrorCode, HubError};
pub use member::Member;
pub use message::{ParseError, ServerMessage};
pub use publication::{Publication, rfc3339_millis};
pub use push::{KickedPush, MemberEvent, MemberPush, Push, PushKind};
pub use reply::{Done, Kicked, Members, Page, Published};

/// Serialises a value that cannot fail to serialise (no maps with
/// non-string keys, no failing `Serialize` impls).
pub(crate) fn to_bytes(value: &impl Serialize) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("hub messages always serialise"))
}
