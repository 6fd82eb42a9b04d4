//! What the server sends unasked (besides publications, which
//! [`crate::publication`] encodes): presence, typing, kicks.

use bytes::Bytes;
use serde::Serialize;

use super::{Member, to_bytes};

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
    to_bytes(&serde_json::json!({"push": "kicked", "channel": channel, "reason": reason}))
}
