//! What happens on a connection, as `connect` and `listen` report it:
//! opened, a message or control frame in either direction, closed, failed,
//! reconnecting. The printers in `output.rs` turn these into lines.

use std::net::SocketAddr;
use std::time::Duration;

use duplex::Message;

use crate::exit::Failure;

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from the peer.
    In,
    /// Sent to the peer.
    Out,
}

impl Direction {
    /// `in` / `out`, for `--json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }

    /// The marker shown before a message: `<` received, `>` sent.
    pub fn marker(self) -> &'static str {
        match self {
            Self::In => "<",
            Self::Out => ">",
        }
    }
}

/// Which end started the closing handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// This process.
    Local,
    /// The peer.
    Remote,
}

/// A connection that just opened.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The URL (`connect`) or request target (`listen`).
    pub url: String,
    /// The peer's address, when known.
    pub peer: Option<SocketAddr>,
    /// The negotiated subprotocol.
    pub protocol: Option<String>,
    /// The negotiated `Sec-WebSocket-Extensions`, as sent by the server.
    pub extensions: Option<String>,
    /// Whether permessage-deflate is in use.
    pub compressed: bool,
}

/// One thing worth reporting.
#[derive(Debug)]
pub enum Event<'a> {
    /// The handshake completed.
    Open(&'a Opened),
    /// A text, binary, ping or pong message.
    Message {
        /// Which way it went.
        dir: Direction,
        /// The message.
        msg: &'a Message,
        /// Typed at the interactive prompt (already on the screen).
        typed: bool,
        /// For a pong answering our ping: the round trip time.
        rtt: Option<Duration>,
    },
    /// The connection closed.
    Close {
        /// The close code (1005: the close frame had none; 1006: no
        /// closing handshake).
        code: u16,
        /// The close reason.
        reason: &'a str,
        /// Who started closing.
        initiator: Side,
        /// Whether both close frames were exchanged.
        clean: bool,
    },
    /// Something failed.
    Error(&'a Failure),
    /// `--reconnect`: waiting before the next attempt.
    Reconnect {
        /// The attempt about to be made, from 1.
        attempt: u32,
        /// How long we wait first.
        delay: Duration,
    },
}
