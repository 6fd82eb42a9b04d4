//! What the server sends unasked (besides publications, which
//! [`crate::publication`] encodes): presence, typing, kicks.

use bytes::Bytes;
use serde::Serialize;

use super::{Member, to_bytes};

super::wire_names! {
    /// The kinds of push: the `push` field of everything the server sends
    /// unasked.
    pub enum PushKind {
        /// A publication in a subscribed channel.
        Publication = "publication",
        /// Someone subscribed with presence.
        Join = "join",
        /// Someone left.
        Leave = "leave",
        /// Someone is typing.
        Typing = "typing",
        /// This connection was removed from the channel.
        Kicked = "kicked",
    }
}

impl PushKind {
    /// The kind of a message the server sent, if it is a push.
    pub fn of(message: &serde_json::Value) -> Option<PushKind> {
        message.get("push")?.as_str().and_then(Self::from_name)
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
