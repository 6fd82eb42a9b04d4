//! # duplex-proto: the WebSocket protocol without I/O
//!
//! This crate implements RFC 6455 (the WebSocket protocol) and RFC 7692
//! (permessage-deflate) as pure functions of bytes: it never touches a
//! socket, a timer or a runtime. An I/O layer (the `duplex` crate for tokio,
//! or your own) moves bytes between the network and a [`Connection`].
//!
//! Why sans-I/O? The protocol's hard parts — framing, fragmentation,
//! masking, UTF-8, close handshake, compression, limits — are then testable
//! exhaustively and deterministically: property tests feed any split of any
//! frame sequence, fuzzers feed anything at all, and none of it needs a
//! network. It is the design of python-websockets and h11.
//!
//! ## Map
//! - [`handshake`]: the HTTP/1.1 Upgrade, both sides ([`handshake::server`],
//!   [`handshake::client`]), with bounded header parsing.
//! - [`Connection`]: the state machine after the handshake.
//! - [`close`]: close codes and frames.
//! - `frame`, `mask`, `utf8`, `outgoing`, `handshake::head`: the wire
//!   format's pieces, public only with the **`unstable`** feature (for
//!   drivers, benchmarks and tests; they may change in any release).
//! - [`deflate`], [`extension`]: permessage-deflate and its negotiation.
//! - [`Limits`]: what a peer may make us buffer.
//! - [`Teardown`]: closing the transport after the protocol closed: who
//!   closes TCP first, what is discarded, when to stop waiting.
//!
//! ## Example: a server and a client talking through memory
//! ```
//! use bytes::Buf;
//! use duplex_proto::{Config, Connection, Message, Role, State};
//!
//! let mut server = Connection::new(Role::Server, Config::default(), None);
//! let mut client = Connection::new(Role::Client, Config::default(), None);
//! let mut pipe = |from: &mut Connection, to: &mut Connection| {
//!     let n = from.outgoing().remaining();
//!     let bytes = from.outgoing().copy_to_bytes(n);
//!     to.read_buf().extend_from_slice(&bytes);
//! };
//!
//! client.send(Message::text("ping?")).unwrap();
//! pipe(&mut client, &mut server);
//! let msg = server.next_message().unwrap().unwrap();
//! server.send(msg).unwrap(); // echo
//! pipe(&mut server, &mut client);
//! assert_eq!(client.next_message().unwrap(), Some(Message::text("ping?")));
//!
//! client.close(None).unwrap();
//! assert_eq!(client.state(), State::Closing);
//! pipe(&mut client, &mut server);
//! assert!(matches!(server.next_message().unwrap(), Some(Message::Close(None))));
//! assert_eq!(server.state(), State::Closed); // and the reply is queued
//! pipe(&mut server, &mut client);
//! client.next_message().unwrap();
//! assert_eq!(client.state(), State::Closed);
//! ```
#![warn(missing_docs)]

/// Declares a module that is public only with the `unstable` feature:
/// the wire format's pieces a driver, a benchmark or a test may need, with
/// no promise that they stay as they are.
macro_rules! unstable_mod {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[cfg(feature = "unstable")]
        pub mod $name;
        $(#[$meta])*
        #[cfg(not(feature = "unstable"))]
        #[allow(dead_code)]
        pub(crate) mod $name;
    };
}
pub(crate) use unstable_mod;

pub mod close;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod extension;
pub mod handshake;
pub mod limits;
pub mod message;
pub mod teardown;

unstable_mod!(
    /// Frame headers (RFC 6455 §5.2). Public with the `unstable` feature.
    frame
);
unstable_mod!(
    /// Masking (RFC 6455 §5.3). Public with the `unstable` feature.
    mask
);
unstable_mod!(
    /// The outgoing byte queue's internals. Public with the `unstable` feature.
    outgoing
);
unstable_mod!(
    /// Incremental UTF-8 validation. Public with the `unstable` feature.
    utf8
);

pub use close::{CloseCode, CloseFrame};
pub use connection::{Config, Connection, Echoed, Incoming, SendError};
pub use deflate::{DeflateConfig, DeflateParams};
pub use error::ProtocolError;
pub use limits::Limits;
pub use message::{Message, MessageRef, Text};
pub use outgoing::OutBuf;
pub use teardown::Teardown;

/// Which end of the connection this is: it decides who masks.
///
/// ```
/// use bytes::Buf;
/// use duplex_proto::{Connection, Message, Role};
/// let mut client = Connection::new(Role::Client, Default::default(), None);
/// client.send(Message::text("hi")).unwrap();
/// let header = client.outgoing().copy_to_bytes(2);
/// assert_eq!(header[1], 0x80 | 2); // the mask bit, then the length
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepted the connection; receives masked frames, sends unmasked ones.
    Server,
    /// Opened the connection; masks every frame it sends.
    Client,
}

/// Where an open connection is in its life (RFC 6455 §7). Before the
/// opening handshake completes there is no [`Connection`] yet: the
/// handshake has its own types ([`handshake`]).
///
/// ```
/// use duplex_proto::{Connection, Role, State};
/// let mut server = Connection::new(Role::Server, Default::default(), None);
/// assert_eq!(server.state(), State::Open);
/// server.read_buf().extend_from_slice(b"\x88\x80\0\0\0\0"); // the client's close
/// server.next_message().unwrap();
/// assert_eq!(server.state(), State::Closed); // the reply is queued
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// This side sent a close frame and waits for the peer's.
    Closing,
    /// Both close frames were exchanged, or the connection failed: only
    /// closing the transport remains.
    Closed,
}

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
