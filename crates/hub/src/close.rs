//! The close codes a hub connection ends with, and what a client should do
//! after each.

use duplex::CloseCode;

super::wire_names! {
    /// Why the server closed a hub connection (the table in
    /// docs/protocol.md); each name is the one generated code uses.
    pub enum HubClose {
        /// A normal close.
        Normal = "NORMAL",
        /// The server is shutting down: reconnect with `since`.
        ShuttingDown = "SHUTTING_DOWN",
        /// Kicked, or too many bad commands in a row: do not come back as is.
        Policy = "POLICY",
        /// A frame larger than the server's message limit.
        TooLarge = "TOO_LARGE",
        /// Several nodes: publications of a subscribed channel were lost on
        /// their way here; reconnect with `since` to learn what was missed.
        PublicationsLost = "PUBLICATIONS_LOST",
        /// A slow consumer, or the server is short of memory: try again later.
        TryAgainLater = "TRY_AGAIN_LATER",
    }
}

impl HubClose {
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
