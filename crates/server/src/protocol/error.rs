//! The error codes of error replies.

use serde::Serialize;

/// Error codes of docs/protocol.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, unknown command, missing or mistyped field.
    BadRequest,
    /// No valid token where one is required.
    Unauthorized,
    /// The token does not allow this.
    Forbidden,
    /// The command needs a subscription first.
    NotSubscribed,
    /// The nickname is taken in that channel.
    NameTaken,
    /// Data larger than allowed.
    TooLarge,
    /// Too many commands.
    RateLimited,
    /// Too many subscriptions.
    LimitExceeded,
    /// Banned from the channel.
    Banned,
    /// The server cannot do this now (its disk is full or cannot be
    /// written): nothing was done; the same request succeeds later.
    Unavailable,
    /// The server failed.
    Internal,
}

/// An error reply's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct HubError {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
}

impl HubError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}
