//! [`WebSocket`]: a [`Connection`] driven over any tokio byte stream.
//!
//! Every operation is a `poll_*` function that keeps all of its progress in
//! the connection's buffers, so the async methods built on them are
//! cancel-safe: dropping a `recv()` future inside `tokio::select!` loses no
//! bytes and no message.
//!
//! The driver is split by concern: `receive` (the receive loop), `echo`
//! (an echo's fast path), `send`
//! (queueing, backpressure, writing), `keepalive`, `memory` (the memory
//! budget), `teardown` (closing the transport, in the order
//! [`duplex_proto::Teardown`] decides) and `futures` (the named futures,
//! `Stream` and `Sink`). What to do when is decided by `duplex-proto`;
//! these files only move bytes and keep time.
//!
//! Writes are batched: `recv` flushes what earlier `feed`/`send` calls queued
//! only when it is about to wait for the network, so an echo loop that feeds
//! every message of one read answers them all with one `write` syscall.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;

use duplex_proto::{CloseCode, CloseFrame, Connection, Message, State, Teardown};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use crate::budget::Account;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::received::RecvRef;

mod echo;
mod futures;
mod keepalive;
mod memory;
mod receive;
mod send;
mod teardown;

pub use futures::{Feed, Recv, SendMessage};
use keepalive::Timers;

/// An open WebSocket over the stream `S` (a `TcpStream`, a TLS stream, an
/// upgraded hyper connection...).
///
/// ```no_run
/// # async fn run() -> duplex::Result<()> {
/// let mut ws = duplex::connect("ws://127.0.0.1:8080/echo").await?;
/// ws.send("hello").await?;
/// while let Some(msg) = ws.recv().await {
///     let msg = msg?;
///     println!("{msg:?}");
///     ws.close(duplex::CloseCode::NORMAL, "done").await?;
/// }
/// # Ok(()) }
/// ```
///
/// An idle connection costs little more than this struct (its buffers are
/// lent to a per-thread pool while it waits), so it is kept small: the
/// settings are shared between connections, and what only a closing,
/// failing or keepalive-enabled connection needs is boxed.
pub struct WebSocket<S> {
    io: S,
    conn: Connection,
    config: Arc<Config>,
    timers: Option<Box<Timers>>,
    /// The subprotocol and the closing state; `None` for an open
    /// connection without a subprotocol.
    extra: Option<Box<Extra>>,
}

/// What few connections need, or only at their end.
#[derive(Default)]
struct Extra {
    protocol: Option<Box<str>>,
    close_deadline: Option<Pin<Box<Sleep>>>,
    pending_error: Option<Error>,
    /// A received close frame, held until its reply is flushed.
    stashed: Option<Message>,
    /// A message given to `feed`/`send` while the write buffer was full: it
    /// waits here (not in the caller's future) until there is room.
    parked: Option<Message>,
    /// Why the last message given to `feed`/`send` could not be queued,
    /// until its future reports it.
    send_error: Option<Error>,
    /// How far closing the transport has got, once it started.
    teardown: Option<Teardown>,
    /// Its part of the config's memory budget, once it held enough to be
    /// charged (few connections do).
    account: Option<Account>,
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps a stream whose handshake is done. `conn` carries the
    /// negotiated state; most users get a `WebSocket` from
    /// [`connect`](crate::connect) or [`accept`](crate::accept) instead.
    /// `config` may be an `Arc<Config>` shared by many connections.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// use duplex::proto::{Connection, Role};
    /// use duplex::{Config, WebSocket};
    ///
    /// let (a, b) = tokio::io::duplex(4096); // any byte stream whose handshake is done
    /// let conn = |role| Connection::new(role, Default::default(), None);
    /// let mut server = WebSocket::from_parts(a, conn(Role::Server), Config::default(), None);
    /// let mut client = WebSocket::from_parts(b, conn(Role::Client), Config::default(), None);
    /// client.send("hello").await?;
    /// assert_eq!(server.recv().await.unwrap()?.as_text(), Some("hello"));
    /// # Ok(()) }
    /// ```
    pub fn from_parts(
        io: S,
        conn: Connection,
        config: impl Into<Arc<Config>>,
        protocol: Option<String>,
    ) -> Self {
        let config: Arc<Config> = config.into();
        Self {
            io,
            conn,
            timers: Timers::new(&config),
            config,
            extra: protocol.map(|p| {
                Box::new(Extra {
                    protocol: Some(p.into_boxed_str()),
                    ..Extra::default()
                })
            }),
        }
    }

    /// Bytes that arrived with the handshake (the first frames, pipelined
    /// behind the request) are fed in before anything is read. For servers
    /// that read the request head themselves and then
    /// [`open`](crate::ServerBuilder::open) the socket.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # use duplex::{Config, WebSocket, proto::{Connection, Role}};
    /// # let (a, b) = tokio::io::duplex(4096);
    /// # let open = |io, role| {
    /// #     let conn = Connection::new(role, Default::default(), None);
    /// #     WebSocket::from_parts(io, conn, Config::default(), None)
    /// # };
    /// # let (mut server, mut client) = (open(a, Role::Server), open(b, Role::Client));
    /// // A masked text frame ("hi") that arrived right behind the request head.
    /// server.preload(b"\x81\x82\0\0\0\0hi");
    /// assert_eq!(server.recv().await.unwrap()?.as_text(), Some("hi"));
    /// # drop(client);
    /// # Ok(()) }
    /// ```
    pub fn preload(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.conn.read_buf().extend_from_slice(bytes);
        }
    }

    /// Receives the next message. `None` once the connection is closed and
    /// the transport shut down; an abnormal end is reported once as an error
    /// first. Pings are answered automatically (and also returned).
    ///
    /// Cancel-safe. Keep calling it after a [`Message::Close`] until it
    /// returns `None`: that completes the closing handshake.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new();
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// let mut ws = duplex::connect(&url).await?;
    /// ws.send("ping?").await?;
    /// let reply = ws.recv().await.expect("still open")?;
    /// assert_eq!(reply.as_text(), Some("ping?"));
    /// # Ok(()) }
    /// ```
    pub fn recv(&mut self) -> Recv<'_, S> {
        Recv { ws: self }
    }

    /// Receives the next message as a borrow of the socket's read buffer:
    /// [`recv`](Self::recv) without the per-message reference count, for
    /// loops that look at a message (or echo it) before they receive the
    /// next one. Same cancel-safety and closing rules as `recv`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// use duplex::proto::{Connection, Role};
    /// use duplex::{Config, WebSocket};
    ///
    /// // Two ends over an in-memory pipe (normally: `accept` and `connect`).
    /// let (a, b) = tokio::io::duplex(4096);
    /// let open = |io, role| {
    ///     WebSocket::from_parts(io, Connection::new(role, Default::default(), None), Config::default(), None)
    /// };
    /// let (mut server, mut client) = (open(a, Role::Server), open(b, Role::Client));
    ///
    /// client.send("hello").await?;
    /// let received = server.recv_ref().await.expect("open")?;
    /// assert_eq!(received.message().as_text(), Some("hello"));
    /// received.echo().await?; // queued straight from the read buffer
    /// server.flush().await?;
    /// assert_eq!(client.recv().await.expect("open")?.as_text(), Some("hello"));
    /// # Ok(()) }
    /// ```
    pub fn recv_ref(&mut self) -> RecvRef<'_, S> {
        RecvRef::new(self)
    }

    /// Sends a message and flushes it. Waits while more than
    /// [`Config::write_buffer_limit`] bytes are unsent (backpressure).
    ///
    /// The message is queued as soon as `send` is called if the buffer has
    /// room (see [`feed`](Self::feed)); the future then flushes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new();
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// use duplex::Message;
    /// let mut ws = duplex::connect(&url).await?;
    /// ws.send("text").await?;
    /// ws.send(vec![1u8, 2, 3]).await?; // binary
    /// assert_eq!(ws.recv().await.unwrap()?, Message::text("text"));
    /// assert_eq!(ws.recv().await.unwrap()?, Message::binary(vec![1, 2, 3]));
    /// # Ok(()) }
    /// ```
    pub fn send(&mut self, message: impl Into<Message>) -> SendMessage<'_, S> {
        self.queue_or_park(message.into());
        SendMessage {
            ws: self,
            queued: false,
        }
    }

    /// Queues a message without flushing. The next `recv`, `flush` or `send`
    /// writes it: an echo loop that feeds every message of one read answers
    /// them all with one write.
    ///
    /// If the write buffer has room, the message is queued at once, when
    /// `feed` is called, and the future only reports whether that worked.
    /// If more than [`Config::write_buffer_limit`] bytes are unsent, the
    /// future writes until there is room and queues the message then;
    /// dropping it before that drops the message (so a caller that gives up
    /// on a slow peer cannot grow the buffer past the limit).
    ///
    /// Why queue at once: the future then holds no message. It is one
    /// pointer, and so is the space it takes in every connection's task.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new();
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// let mut ws = duplex::connect(&url).await?;
    /// for word in ["one", "two", "three"] {
    ///     ws.feed(word).await?; // queued, not written yet
    /// }
    /// assert_eq!(ws.buffered_amount(), 3 * (2 + 4) + 11);
    /// ws.recv().await.unwrap()?; // writes all three at once, then reads
    /// assert_eq!(ws.buffered_amount(), 0);
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn feed(&mut self, message: impl Into<Message>) -> Feed<'_, S> {
        self.queue_or_park(message.into());
        Feed { ws: self }
    }

    /// Writes everything queued.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new();
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// let mut ws = duplex::connect(&url).await?;
    /// ws.feed("hello").await?;
    /// assert!(ws.buffered_amount() > 0);
    /// ws.flush().await?;
    /// assert_eq!(ws.buffered_amount(), 0);
    /// # Ok(()) }
    /// ```
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| self.poll_flush_out(cx)).await
    }

    /// Closes the connection: sends a close frame, waits (up to
    /// [`Config::close_timeout`]) for the peer's, then closes the transport.
    /// Messages that arrive meanwhile are discarded.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new();
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// use duplex::{CloseCode, State};
    /// let mut ws = duplex::connect(&url).await?;
    /// ws.close(CloseCode::NORMAL, "done").await?;
    /// assert_eq!(ws.state(), State::Closed);
    /// assert_eq!(ws.close_frame().unwrap().code, CloseCode::NORMAL); // the server's reply
    /// # Ok(()) }
    /// ```
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.start_close(Some(CloseFrame::new(code, reason)))?;
        while let Some(r) = self.recv().await {
            if let Err(e) = r {
                return match e {
                    Error::Closed => Ok(()),
                    e => Err(e),
                };
            }
        }
        Ok(())
    }

    /// Open, Closing or Closed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new();
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// use duplex::{CloseCode, State};
    /// let mut ws = duplex::connect(&url).await?;
    /// assert_eq!(ws.state(), State::Open);
    /// ws.close(CloseCode::GOING_AWAY, "").await?;
    /// assert_eq!(ws.state(), State::Closed);
    /// # Ok(()) }
    /// ```
    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// The subprotocol negotiated in the handshake.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new().protocols(["chat.v1"]);
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// let client = duplex::ClientBuilder::new().protocols(["chat.v2", "chat.v1"]);
    /// let ws = client.connect(&url).await?;
    /// assert_eq!(ws.protocol(), Some("chat.v1")); // the one the server speaks
    /// # Ok(()) }
    /// ```
    pub fn protocol(&self) -> Option<&str> {
        self.extra.as_ref()?.protocol.as_deref()
    }

    /// This connection's share of its config's memory budget (`None`
    /// without one), for memory the application holds on its peer's
    /// behalf: what is charged or weighed there makes this connection
    /// heavier, and if the budget sheds it, it closes with 1013 (its
    /// `recv` ends) so the application lets go.
    ///
    /// ```
    /// use duplex::{Config, MemoryBudget, Message, Role, WebSocket, proto};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let budget = MemoryBudget::new(1 << 20);
    /// let config = Config::default().with_memory_budget(budget.clone());
    /// let conn = proto::Connection::new(Role::Server, Default::default(), None);
    /// let (io, _peer) = tokio::io::duplex(64);
    /// let mut ws = WebSocket::from_parts(io, conn, config, None);
    /// let share = ws.budget_share().expect("the config has a budget");
    /// let reply = Message::text("a large reply").hold_with(share.charge(13));
    /// assert_eq!(budget.used(), 13);
    /// drop(reply);
    /// assert_eq!(budget.used(), 0);
    /// # });
    /// ```
    pub fn budget_share(&mut self) -> Option<crate::BudgetShare> {
        let budget = self.config.memory_budget.clone()?;
        let account = self
            .extra_mut()
            .account
            .get_or_insert_with(|| Account::new(budget));
        Some(account.charge.share(&account.budget))
    }

    /// Whether permessage-deflate is in use.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new();
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// use duplex::{ClientBuilder, Config};
    /// let plain = duplex::connect(&url).await?; // clients offer no compression by default
    /// assert!(!plain.is_compressed());
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let url = format!("ws://{}/", listener.local_addr()?);
    /// # tokio::spawn(async move { duplex::accept(listener.accept().await?.0).await?.recv().await;
    /// #     Ok::<_, duplex::Error>(()) });
    /// let client = ClientBuilder::new().config(Config::default().with_compression());
    /// assert!(client.connect(&url).await?.is_compressed()); // the server accepted it
    /// # Ok(()) }
    /// ```
    pub fn is_compressed(&self) -> bool {
        self.conn.is_compressed()
    }

    /// The close frame the peer sent, once received.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let mut ws = duplex::accept(listener.accept().await?.0).await?;
    /// #     ws.close(duplex::CloseCode(4000), "session expired").await
    /// # });
    /// use duplex::{CloseCode, CloseFrame};
    /// let mut ws = duplex::connect(&url).await?; // a server that closes with 4000
    /// assert_eq!(ws.close_frame(), None);
    /// while ws.recv().await.is_some() {} // until the closing handshake is done
    /// assert_eq!(ws.close_frame(), Some(&CloseFrame::new(CloseCode(4000), "session expired")));
    /// # Ok(()) }
    /// ```
    pub fn close_frame(&self) -> Option<&CloseFrame> {
        self.conn.close_received().and_then(|f| f.as_ref())
    }

    /// The settings in force.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new();
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// use duplex::{ClientBuilder, Config};
    /// let config = Config::default().with_write_buffer_limit(64 << 10);
    /// let ws = ClientBuilder::new().config(config).connect(&url).await?;
    /// assert_eq!(ws.config().write_buffer_limit, 64 << 10);
    /// # Ok(()) }
    /// ```
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The underlying stream.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new();
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// let ws = duplex::connect(&url).await?; // over a MaybeTlsStream
    /// assert_eq!(ws.get_ref().peer_addr(), Some(addr));
    /// # Ok(()) }
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Bytes queued but not yet written.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     let server = duplex::ServerBuilder::new();
    /// #     let mut ws = server.accept(listener.accept().await?.0).await?;
    /// #     while let Some(msg) = ws.recv().await {
    /// #         let msg = msg?;
    /// #         if msg.is_data() {
    /// #             ws.send(msg).await?;
    /// #         }
    /// #     }
    /// #     Ok::<_, duplex::Error>(())
    /// # });
    /// let mut ws = duplex::connect(&url).await?;
    /// ws.feed("hello").await?;
    /// assert_eq!(ws.buffered_amount(), 2 + 4 + 5); // header, mask key, payload
    /// ws.flush().await?;
    /// assert_eq!(ws.buffered_amount(), 0);
    /// # Ok(()) }
    /// ```
    pub fn buffered_amount(&mut self) -> usize {
        self.conn.outgoing().len()
    }
}

impl<S> WebSocket<S> {
    fn extra_mut(&mut self) -> &mut Extra {
        self.extra.get_or_insert_default()
    }

    fn set_pending_error(&mut self, e: Error) {
        self.extra_mut().pending_error = Some(e);
    }

    fn has_pending_error(&self) -> bool {
        self.extra
            .as_ref()
            .is_some_and(|x| x.pending_error.is_some())
    }
}

impl<S> std::fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("conn", &self.conn)
            .field(
                "protocol",
                &self.extra.as_ref().and_then(|x| x.protocol.as_deref()),
            )
            .finish()
    }
}
