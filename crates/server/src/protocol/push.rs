//! What the server sends unasked (besides publications, which
//! [`crate::publication`] encodes): presence, typing, kicks.

use bytes::Bytes;
use serde::Serialize;

use super::{Member, to_bytes};

/// The kinds of push: the `push` field of everything the server sends
/// unasked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    /// A publication in a subscribed channel.
    Publication,
    /// Someone subscribed with presence.
    Join,
    /// Someone left.
    Leave,
    /// Someone is typing.
    Typing,
    /// This connection was removed from the channel.
    Kicked,
}

impl PushKind {
    /// Every kind.
    pub const ALL: [PushKind; 5] = [
        PushKind::Publication,
        PushKind::Join,
        PushKind::Leave,
        PushKind::Typing,
        PushKind::Kicked,
    ];

    /// The `push` field on the wire.
    pub fn name(self) -> &'static str {
        match self {
            PushKind::Publication => "publication",
            PushKind::Join => "join",
            PushKind::Leave => "leave",
            PushKind::Typing => "typing",
            PushKind::Kicked => "kicked",
        }
    }
}

/// A presence or typing push: `{"push": kind, "channel", "member"}`.
pub fn member_push(kind: &str, channel: &str, member: &Member) -> Bytes {
    #[derive(Serialize)]
    struct Push<'a> {
        push: &'a str,
        channel: &'a str,
        member: &'a Member,
    }
    to_bytes(&Push {
        push: kind,
        channel,
        member,
    })
}

/// `{"push": "kicked", "channel", "reason"}`
pub fn kicked_push(channel: &str, reason: &str) -> Bytes {
    to_bytes(
        &serde_json::json!({"push": PushKind::Kicked.name(), "channel": channel, "reason": reason}),
    )
}
