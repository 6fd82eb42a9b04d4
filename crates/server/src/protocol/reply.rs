//! What answers a command: `{"id", "result"}` or `{"id", "error"}`, and
//! the results of more than one command.

use bytes::Bytes;
use serde::Serialize;

use super::{HubError, to_bytes};
use crate::broker::Receipt;
use crate::publication::{Publication, PublicationView, rfc3339_millis};

/// `{"id": .., "result": ..}`
pub fn reply(id: Option<u64>, result: &impl Serialize) -> Bytes {
    #[derive(Serialize)]
    struct Reply<'a, T> {
        id: Option<u64>,
        result: &'a T,
    }
    to_bytes(&Reply { id, result })
}

/// `{"id": .., "error": {"code", "message"}}`
pub fn error_reply(id: Option<u64>, error: &HubError) -> Bytes {
    #[derive(Serialize)]
    struct ErrorReply<'a> {
        id: Option<u64>,
        error: &'a HubError,
    }
    to_bytes(&ErrorReply { id, error })
}

/// The reply to `publish` (and to `POST /api/publish`).
#[derive(Serialize)]
pub struct PublishResult<'a> {
    channel: &'a str,
    offset: u64,
    epoch: &'a str,
    ts: String,
}

impl<'a> PublishResult<'a> {
    /// The result for a stored publication.
    pub fn of(p: &'a Receipt) -> Self {
        Self {
            channel: &p.channel,
            offset: p.offset,
            epoch: &p.epoch,
            ts: rfc3339_millis(p.ts_ms),
        }
    }
}

/// A subscribe or history reply.
#[derive(Serialize)]
pub struct PageView<'a> {
    channel: &'a str,
    epoch: &'a str,
    offset: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovered: Option<bool>,
    publications: Vec<PublicationView<'a>>,
}

impl<'a> PageView<'a> {
    /// A page of publications and the channel's position.
    pub fn new(
        channel: &'a str,
        epoch: &'a str,
        offset: u64,
        recovered: Option<bool>,
        publications: &'a [Publication],
    ) -> Self {
        Self {
            channel,
            epoch,
            offset,
            recovered,
            publications: publications.iter().map(Publication::view).collect(),
        }
    }
}
