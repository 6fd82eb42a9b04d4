//! # duplex: WebSockets for tokio
//!
//! A strictly conformant, fast WebSocket client and server (RFC 6455 and
//! RFC 7692 permessage-deflate), built on the sans-I/O protocol core
//! [`duplex_proto`].
//!
//! - [`connect`] / [`ClientBuilder`]: `ws://` and `wss://` (rustls), HTTP
//!   proxies (`CONNECT`, from the environment or explicit), headers,
//!   subprotocols, compression, timeouts;
//!   [`ClientBuilder::connect_http2`]: many WebSockets on one HTTP/2
//!   connection (RFC 8441).
//! - [`accept`] / [`ServerBuilder`]: on any stream, in one step or two
//!   ([`ServerBuilder::read_request`], then accept, refuse, or hand the
//!   stream to an HTTP server as an [`Incoming`] decides); [`upgrade`]
//!   inside hyper or axum.
//! - [`WebSocket`]: `recv`/`send`/`feed`/`close`, `Stream` + `Sink`,
//!   [`recv_ref`](WebSocket::recv_ref) to receive without taking the
//!   message out of the read buffer (an echo or router of small messages
//!   skips a reference count per message),
//!   [`echo_buffered`](WebSocket::echo_buffered) to echo every message
//!   already buffered in one pass,
//!   [`split`](WebSocket::split) into halves for two tasks; cancel-safe
//!   receiving; bounded outgoing buffer (backpressure); keepalive pings and
//!   idle timeout; limits on everything a peer can make us buffer.
//!
//! ```no_run
//! # async fn run() -> duplex::Result<()> {
//! let mut ws = duplex::connect("ws://127.0.0.1:8080/echo").await?;
//! ws.send("hello").await?;
//! if let Some(reply) = ws.recv().await {
//!     assert_eq!(reply?.as_text(), Some("hello"));
//! }
//! ws.close(duplex::CloseCode::NORMAL, "bye").await?;
//! # Ok(()) }
//! ```
//!
//! ## Memory per connection
//!
//! An idle connection costs its task, and its task is mostly the
//! [`WebSocket`] (about 220 bytes on a `TcpStream`; buffers are lent to a
//! per-thread pool while it waits) and whatever the loop around it keeps
//! across `.await`s. tokio rounds a task up to a multiple of 128 bytes, so
//! a few bytes can cost 128. [`WebSocket::recv`] and [`WebSocket::feed`]
//! return one-pointer futures; three habits keep the rest small:
//!
//! - Take messages with `let Some(Ok(msg)) = ws.recv().await else { .. }`,
//!   not `while let`, whose scrutinee lives through the loop body.
//! - Hand the message to `feed`/`send` inside a block that ends before the
//!   `.await`, so no slot for it outlives the call.
//! - Await the handshake and the loop one after the other, with the loop
//!   in a plain `fn` returning `async move { .. }` (an `async fn` copies its
//!   arguments into a second slot).
//!
//! `bench/src/duplex_echo.rs` does all three: its task is 384 bytes, and
//! 10,000 idle connections cost under 1 KiB each in one measured run
//! (`docs/performance.md`).
//!
//! ## Cargo features
//!
//! All on by default:
//! - `hyper`: [`upgrade`], WebSockets inside a hyper or axum server.
//! - `proxy`: HTTP `CONNECT` and SOCKS5 proxies for clients (`proxy`),
//!   explicit or from the environment.
//! - `webpki-roots`, `native-roots`: which CA certificates
//!   [`tls::client_config`] trusts (Mozilla's, compiled in; the system's).
//!
//! Off by default: `unstable`, the protocol core's internals under
//! [`proto`] (frame headers, masking...), for benchmarks and tests.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod budget;
mod client;
mod config;
mod error;
mod h2_stream;
mod handshake_io;
pub mod http2;
mod incoming;
mod pool;
#[cfg(feature = "proxy")]
pub mod proxy;
mod received;
mod rewind;
mod server;
mod socket;
mod split;
mod stream;
pub mod tls;
#[cfg(feature = "hyper")]
pub mod upgrade;
pub mod url;

pub use budget::{BudgetShare, Charged, MemoryBudget, Weight};
pub use client::{ClientBuilder, HandshakeInfo, connect};
pub use config::Config;
pub use duplex_proto::handshake::client::ResponseError;
pub use duplex_proto::{
    CloseCode, CloseFrame, DeflateConfig, Echoed, Limits, Message, MessageRef, Role, State, Text,
};

/// The protocol core, [`duplex_proto`]: the sans-I/O connection, the
/// handshake, close codes, limits. Its internals (`frame`, `mask`, `utf8`,
/// `outgoing`, `handshake::head`) are here only with this crate's
/// **`unstable`** feature, and may change in any release.
///
/// ```
/// use duplex::proto::{Connection, Message, Role, State};
/// let mut conn = Connection::new(Role::Client, Default::default(), None);
/// conn.send(Message::text("hi")).unwrap(); // framed and masked, ready to write
/// assert_eq!(conn.outgoing().len(), 2 + 4 + 2);
/// assert_eq!(conn.state(), State::Open);
/// ```
pub mod proto {
    pub use duplex_proto::{
        CloseCode, CloseFrame, Config, Connection, DeflateConfig, DeflateParams, Echoed, Incoming,
        Limits, Message, MessageRef, OutBuf, ProtocolError, Role, SendError, State, Teardown, Text,
        close, connection, deflate, error, extension, limits, message, teardown,
    };
    #[cfg(feature = "unstable")]
    pub use duplex_proto::{frame, mask, outgoing, utf8};

    /// The opening handshake (RFC 6455 §4; RFC 8441 over HTTP/2).
    ///
    /// ```
    /// use duplex::proto::handshake::accept_key;
    /// // The example of RFC 6455 §1.3.
    /// assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    /// ```
    pub mod handshake {
        #[cfg(feature = "unstable")]
        pub use duplex_proto::handshake::head;
        pub use duplex_proto::handshake::{HeadLimits, accept_key, client, server};
    }
}
pub use error::{
    Error, HandshakeError, ProxyError, ProxyErrorKind, Result, TlsError, TlsErrorKind, UrlError,
    status_hint,
};
pub use h2_stream::H2Stream;
pub use http2::Http2Connection;
pub use incoming::{Incoming, NoRequest, NoRequestKind};
pub use received::{Received, RecvRef};
pub use rewind::Rewind;
pub use server::{RequestFilter, ServerBuilder, accept};
pub use socket::{Feed, Recv, SendMessage, WebSocket};
pub use split::{WebSocketReader, WebSocketWriter};
pub use stream::MaybeTlsStream;

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
