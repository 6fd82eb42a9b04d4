//! The error codes of error replies.

use serde::{Deserialize, Serialize};

super::wire_names! {
    /// Error codes of docs/protocol.md.
    pub enum ErrorCode {
        /// Malformed JSON, unknown command, missing or mistyped field.
        BadRequest = "bad_request",
        /// No valid token where one is required.
        Unauthorized = "unauthorized",
        /// The token does not allow this.
        Forbidden = "forbidden",
        /// The command needs a subscription first.
        NotSubscribed = "not_subscribed",
        /// The nickname is taken in that channel.
        NameTaken = "name_taken",
        /// Data larger than allowed.
        TooLarge = "too_large",
        /// Too many commands.
        RateLimited = "rate_limited",
        /// Too many subscriptions.
        LimitExceeded = "limit_exceeded",
        /// Banned from the channel.
        Banned = "banned",
        /// The server cannot do this now (its disk is full or cannot be
        /// written): nothing was done; the same request succeeds later.
        Unavailable = "unavailable",
        /// The server failed.
        Internal = "internal",
    }
}

impl ErrorCode {
    /// Whether the same command may succeed later, unchanged (the others
    /// need something to change first: the request, the token, the name).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited | ErrorCode::Unavailable | ErrorCode::Internal
        )
    }
}

/// An error reply's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
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

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn names_are_the_wire_names() {
        for code in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.name());
        }
    }
}
