//! The close codes a hub connection ends with, and what a client should do
//! after each.

use duplex::CloseCode;

/// Why the server closed a hub connection (the table in docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubClose {
    /// A normal close.
    Normal,
    /// The server is shutting down: reconnect with `since`.
    ShuttingDown,
    /// Kicked, or too many bad commands in a row: do not come back as is.
    Policy,
    /// A frame larger than the server's message limit.
    TooLarge,
    /// Several nodes: publications of a subscribed channel were lost on
    /// their way here; reconnect with `since` to learn what was missed.
    PublicationsLost,
    /// A slow consumer, or the server is short of memory: try again later.
    TryAgainLater,
}

impl HubClose {
    /// Every close, in the order of docs/protocol.md.
    pub const ALL: [HubClose; 6] = [
        HubClose::Normal,
        HubClose::ShuttingDown,
        HubClose::Policy,
        HubClose::TooLarge,
        HubClose::PublicationsLost,
        HubClose::TryAgainLater,
    ];

    /// The WebSocket close code.
    pub fn code(self) -> CloseCode {
        match self {
            HubClose::Normal => CloseCode::NORMAL,
            HubClose::ShuttingDown => CloseCode::GOING_AWAY,
            HubClose::Policy => CloseCode::POLICY_VIOLATION,
            HubClose::TooLarge => CloseCode::TOO_BIG,
            HubClose::PublicationsLost => CloseCode::SERVICE_RESTART,
            HubClose::TryAgainLater => CloseCode::TRY_AGAIN_LATER,
        }
    }

    /// A name for generated code (`SHUTTING_DOWN`).
    pub fn name(self) -> &'static str {
        match self {
            HubClose::Normal => "NORMAL",
            HubClose::ShuttingDown => "SHUTTING_DOWN",
            HubClose::Policy => "POLICY",
            HubClose::TooLarge => "TOO_LARGE",
            HubClose::PublicationsLost => "PUBLICATIONS_LOST",
            HubClose::TryAgainLater => "TRY_AGAIN_LATER",
        }
    }

    /// What the close means, for a person.
    pub fn meaning(self) -> &'static str {
        match self {
            HubClose::Normal => "the connection was closed normally",
            HubClose::ShuttingDown => "the server is shutting down",
            HubClose::Policy => "closed by the server's policy (kicked, or too many bad commands)",
            HubClose::TooLarge => "a message was larger than the server allows",
            HubClose::PublicationsLost => "publications were lost on their way to this server",
            HubClose::TryAgainLater => "the server is overloaded or this client read too slowly",
        }
    }

    /// Whether a client should stop instead of reconnecting: coming back
    /// unchanged would be closed the same way.
    pub fn is_final(self) -> bool {
        matches!(self, HubClose::Policy)
    }
}
