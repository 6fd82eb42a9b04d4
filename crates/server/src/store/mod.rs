//! Channel history: the small interface the hub needs, with two engines.
//!
//! What the hub asks of a store: append publications and learn their
//! offsets (in order, durably, before anyone is told), read a channel's
//! position and history, and forget what retention says to forget.
//! [`SqliteStore`] is the embedded engine of a single node; several nodes
//! share history in Redis ([`crate::redis::Redis`]).

mod sqlite;

use std::sync::Arc;

pub use sqlite::SqliteStore;

/// Where history is kept.
#[derive(Clone)]
pub enum Store {
    /// In this node's data directory.
    Sqlite(SqliteStore),
    /// In Redis, shared by every node.
    Redis(Arc<crate::redis::Redis>),
}

impl Store {
    /// A channel's position and a page of its history, from one snapshot.
    pub async fn history(&self, channel: &str, range: Range) -> Result<HistoryPage, StoreError> {
        match self {
            Self::Sqlite(store) => store
                .history(channel, range)
                .await
                .map_err(|e| StoreError::Failed(format!("{e:#}"))),
            Self::Redis(redis) => redis.history(channel, range).await,
        }
    }

    /// The value kept under `key`, keeping `value` there first if there is
    /// none (so nodes starting together agree on one).
    pub async fn meta_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        match self {
            Self::Sqlite(store) => {
                let kept = store
                    .meta(key)
                    .await
                    .map_err(|e| StoreError::Failed(format!("{e:#}")))?;
                match kept {
                    Some(kept) => Ok(kept),
                    None => store.set_meta(key, value).await.map(|()| value.to_owned()),
                }
            }
            Self::Redis(redis) => redis.meta_or_insert(key, value).await,
        }
    }
}

/// A new epoch: 8 random characters.
pub(crate) fn new_epoch() -> String {
    crate::random::name(8)
}

use crate::publication::Publication;
use duplex_hub::{ErrorCode, HubError, Member};

/// A publication before it has an offset.
#[derive(Debug, Clone)]
pub struct NewPublication {
    /// The channel.
    pub channel: String,
    /// The publisher.
    pub from: Member,
    /// The JSON payload.
    pub data: Box<serde_json::value::RawValue>,
    /// Acceptance time (ms since the Unix epoch).
    pub ts_ms: i64,
}

/// Where a channel stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The epoch: empty while the channel has never had a publication.
    pub epoch: String,
    /// The last offset assigned (0: none).
    pub offset: u64,
}

/// A page of history and the channel's position when it was read.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The channel's position.
    pub position: Position,
    /// Publications in ascending offset order.
    pub publications: Vec<Publication>,
}

/// The most publication data one page carries, in bytes: a page stops
/// short of its `limit` rather than pass it, so a recovery of a long
/// history of large publications costs a bounded amount of memory (the
/// subscriber then gets `recovered: false` and pages through the history).
/// A full history page at the default limits (1,000 of 32 KiB) fits.
pub const MAX_PAGE_BYTES: usize = 32 << 20;

/// Which part of the history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// The newest `limit` (within [`MAX_PAGE_BYTES`]), optionally below an
    /// offset.
    Before {
        /// Only offsets below this.
        before: Option<u64>,
        /// How many at most.
        limit: usize,
    },
    /// The oldest `limit` (within [`MAX_PAGE_BYTES`]) above an offset.
    After {
        /// Only offsets above this.
        after: u64,
        /// How many at most.
        limit: usize,
    },
}

impl Range {
    /// What a `history` command or `GET .../history` asks for: `limit`
    /// (default 50, at most 1000) after `after` if given, else before
    /// `before`.
    pub fn requested(limit: Option<usize>, before: Option<u64>, after: Option<u64>) -> Self {
        let limit = limit
            .unwrap_or(duplex_hub::HISTORY_DEFAULT_LIMIT)
            .min(duplex_hub::HISTORY_MAX_LIMIT);
        match after {
            Some(after) => Range::After { after, limit },
            None => Range::Before { before, limit },
        }
    }
}

/// How long and how much history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Publications kept per channel.
    pub max_count: u64,
    /// Oldest publication kept, in seconds.
    pub max_age_secs: u64,
}

/// Why the store could not do what was asked.
///
/// The first four are conditions of the machine, not of the request: the
/// same publication succeeds once space returns, the directory can be
/// written again or Redis is back, with no restart (the SQLite store
/// reopens its database after a failed write). Clients are told
/// `unavailable` (HTTP 503) for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The disk holding the data directory is full.
    #[error("the server's disk is full")]
    DiskFull,
    /// The data directory cannot be written: read-only, or the disk failed.
    #[error("the server cannot write its data directory ({0})")]
    NotWritable(String),
    /// Redis cannot be reached, or cannot take writes for now: the call
    /// was not carried out.
    #[error("the message broker is unreachable ({0})")]
    Unreachable(String),
    /// Redis did not answer in time, or the connection broke during the
    /// call: it may or may not have been carried out.
    #[error("the message broker did not answer ({0})")]
    NoAnswer(String),
    /// Anything else the engine reported.
    #[error("storage failed ({0})")]
    Failed(String),
    /// The store's thread is gone (the server is stopping).
    #[error("the store has stopped")]
    Stopped,
}

impl From<StoreError> for HubError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DiskFull | StoreError::NotWritable(_) | StoreError::Unreachable(_) => {
                HubError::new(
                    ErrorCode::Unavailable,
                    format!("{e}: nothing was stored; try again later"),
                )
            }
            StoreError::NoAnswer(_) => HubError::new(
                ErrorCode::Unavailable,
                format!(
                    "{e}: try again later (a publish that timed out may have been stored; \
                     retry it with the same Idempotency-Key)"
                ),
            ),
            StoreError::Failed(_) => HubError::new(ErrorCode::Internal, format!("{e}; try again")),
            StoreError::Stopped => {
                HubError::new(ErrorCode::Internal, "the server is shutting down")
            }
        }
    }
}
