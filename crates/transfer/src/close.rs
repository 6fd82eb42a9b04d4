//! How the relay ends a connection: the close codes of `/files`, what each
//! means, and whether a client should try again. Before an error close the
//! relay also sends [`RelayMessage::Error`](crate::RelayMessage::Error)
//! with the same code, so a client that misses the close frame still knows.

use duplex::CloseCode;

/// A close code of the `/files` relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum RelayClose {
    /// The sender finished (sent to its receivers).
    Finished = 1000,
    /// The server is shutting down.
    GoingAway = 1001,
    /// The sender's connection dropped; the transfer waits for it to
    /// reattach.
    SenderAway = 4001,
    /// The sender sent beyond a receiver's credit: a client bug.
    Overdrawn = 4008,
    /// A malformed first message or frame header: a client bug.
    Malformed = 4400,
    /// Dropped by the sender (a wrong code), or too many wrong codes ended
    /// the transfer.
    Dropped = 4403,
    /// No transfer with this nameplate (or a wrong reattach token).
    NotFound = 4404,
    /// The sender is not connected right now (or, to a sender recreating a
    /// transfer, its nameplate is taken).
    SenderNotConnected = 4409,
    /// The code expired.
    Expired = 4410,
    /// The announced size is over the relay's maximum.
    TooLarge = 4413,
    /// Too many failed joins from this address in the last minute.
    TooManyFailures = 4429,
    /// The node holding the transfer (several nodes share transfers
    /// through Redis) or the directory saying which node does, cannot be
    /// reached right now.
    Unreachable = 4502,
    /// Too many transfers, or too many receivers on this one.
    Busy = 4503,
}

impl RelayClose {
    /// Every code, in the order of the table in `docs/transfer.md`.
    pub const ALL: [RelayClose; 13] = [
        Self::Finished,
        Self::GoingAway,
        Self::SenderAway,
        Self::Overdrawn,
        Self::Malformed,
        Self::Dropped,
        Self::NotFound,
        Self::SenderNotConnected,
        Self::Expired,
        Self::TooLarge,
        Self::TooManyFailures,
        Self::Unreachable,
        Self::Busy,
    ];

    /// The numeric close code.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The code as a WebSocket close code.
    pub const fn close_code(self) -> CloseCode {
        CloseCode(self as u16)
    }

    /// The relay code with this number, if it is one.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Whether a client should give up rather than reconnect. A receiver
    /// that had joined before treats [`NotFound`](Self::NotFound) as a relay
    /// restart and waits for the sender instead; a sender that gets it to a
    /// reattach recreates the transfer.
    pub const fn is_final(self) -> bool {
        !matches!(
            self,
            Self::GoingAway
                | Self::SenderAway
                | Self::SenderNotConnected
                | Self::Unreachable
                | Self::Busy
        )
    }

    /// The name the generated JavaScript uses.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Finished => "FINISHED",
            Self::GoingAway => "GOING_AWAY",
            Self::SenderAway => "SENDER_AWAY",
            Self::Overdrawn => "OVERDRAWN",
            Self::Malformed => "MALFORMED",
            Self::Dropped => "DROPPED",
            Self::NotFound => "NOT_FOUND",
            Self::SenderNotConnected => "SENDER_NOT_CONNECTED",
            Self::Expired => "EXPIRED",
            Self::TooLarge => "TOO_LARGE",
            Self::TooManyFailures => "TOO_MANY_FAILURES",
            Self::Unreachable => "UNREACHABLE",
            Self::Busy => "BUSY",
        }
    }

    /// What it means, for a user.
    pub const fn meaning(self) -> &'static str {
        match self {
            Self::Finished => "the sender finished",
            Self::GoingAway => "the server is shutting down",
            Self::SenderAway => "the sender lost its connection",
            Self::Overdrawn => "flow control was violated (a bug in the sending program)",
            Self::Malformed => "the relay could not understand the client (a bug in the program)",
            Self::Dropped => "the sender refused this receiver (wrong code)",
            Self::NotFound => {
                "there is no transfer with this number on this server: check the code"
            }
            Self::SenderNotConnected => "the sender is not connected right now",
            Self::Expired => "this code has expired: ask the sender for a new one",
            Self::TooLarge => "the files are larger than this server accepts",
            Self::TooManyFailures => {
                "too many wrong codes from this address in the last minute: wait a minute, then check the code"
            }
            Self::Unreachable => {
                "the server holding this transfer cannot be reached right now: trying again"
            }
            Self::Busy => "the server is busy (too many transfers or receivers): try again later",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for c in RelayClose::ALL {
            assert!(seen.insert(c.code()), "{c:?} twice");
            assert_eq!(RelayClose::from_code(c.code()), Some(c));
            assert_eq!(c.close_code().0, c.code());
        }
        assert_eq!(RelayClose::from_code(1006), None);
    }

    #[test]
    fn only_passing_conditions_are_retried() {
        let retried: Vec<u16> = RelayClose::ALL
            .into_iter()
            .filter(|c| !c.is_final())
            .map(RelayClose::code)
            .collect();
        assert_eq!(retried, [1001, 4001, 4409, 4502, 4503]);
    }
}
