//! [`WebSocket::recv_ref`]: receiving a message without taking it out of the
//! read buffer.
//!
//! [`WebSocket::recv`] hands out each message as an owned [`Message`], a
//! shared slice of the read buffer: a reference count is set up, counted and
//! dropped for every message. On a busy connection of small messages that
//! bookkeeping is a visible share of the work. A [`Received`] instead
//! borrows the socket: a small whole message stays where it was read, and
//! is released when the socket next reads, which it cannot do while the
//! borrow lives.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use duplex_proto::{Incoming, Message, MessageRef};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::Result;
use crate::socket::{Feed, WebSocket};

/// The future [`WebSocket::recv_ref`] returns: one pointer.
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
/// client.send("hi").await?;
/// let recv_ref: duplex::RecvRef<'_, _> = server.recv_ref();
/// assert_eq!(size_of_val(&recv_ref), size_of::<usize>());
/// let received = recv_ref.await.expect("open")?;
/// assert_eq!(received.message().as_text(), Some("hi"));
/// # Ok(()) }
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
#[derive(Debug)]
pub struct RecvRef<'a, S> {
    /// Taken when the future completes: the [`Received`] borrows it then.
    ws: Option<&'a mut WebSocket<S>>,
}

impl<'a, S> RecvRef<'a, S> {
    pub(crate) fn new(ws: &'a mut WebSocket<S>) -> Self {
        Self { ws: Some(ws) }
    }
}

impl<'a, S> Future for RecvRef<'a, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = Option<Result<Received<'a, S>>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let ws = this.ws.as_mut().expect("RecvRef polled after it completed");
        if ws.lend_buffered() {
            let ws = this.ws.take().expect("checked above");
            return Poll::Ready(Some(Ok(Received { ws, owned: None })));
        }
        let incoming = ready!(ws.poll_incoming(cx));
        // Only now is the borrow handed on: the poll above needed it back.
        let ws = this.ws.take().expect("checked above");
        Poll::Ready(incoming.map(|r| {
            r.map(|incoming| {
                let owned = match incoming {
                    Incoming::Lent => None,
                    Incoming::Message(m) => Some(m),
                };
                Received { ws, owned }
            })
        }))
    }
}

/// A message received with [`WebSocket::recv_ref`], borrowing the socket.
///
/// Small whole text and binary messages are lent from the read buffer;
/// anything else (control frames, fragmented or compressed messages) is
/// held here as an owned [`Message`]. Either way [`message`](Self::message)
/// gives a view of it, [`into_message`](Self::into_message) an owned one,
/// and [`echo`](Self::echo) sends it back.
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
/// use duplex::proto::MessageRef;
/// client.send(vec![1u8, 2]).await?;
/// let received: duplex::Received<'_, _> = server.recv_ref().await.expect("open")?;
/// assert_eq!(received.message(), MessageRef::Binary(&[1, 2]));
/// # Ok(()) }
/// ```
pub struct Received<'a, S> {
    ws: &'a mut WebSocket<S>,
    /// `None`: the message is lent by the socket's connection.
    owned: Option<Message>,
}

impl<'a, S> Received<'a, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The message.
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
    /// client.send("route:a").await?;
    /// let received = server.recv_ref().await.expect("open")?;
    /// let route = received.message().as_text().and_then(|t| t.strip_prefix("route:"));
    /// assert_eq!(route, Some("a")); // looked at in place, not copied
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn message(&self) -> MessageRef<'_> {
        match &self.owned {
            Some(m) => MessageRef::from(m),
            None => self
                .ws
                .lent()
                .expect("the socket lends until it reads again"),
        }
    }

    /// The message as an owned [`Message`]: a shared slice of the read
    /// buffer if it was lent, not a copy.
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
    /// client.send("keep me").await?;
    /// let received = server.recv_ref().await.expect("open")?;
    /// let kept: duplex::Message = received.into_message(); // outlives the borrow
    /// assert_eq!(kept.as_text(), Some("keep me"));
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn into_message(self) -> Message {
        match self.owned {
            Some(m) => m,
            None => self.ws.own(Incoming::Lent),
        }
    }

    /// Queues the message back to the peer, as [`WebSocket::feed`] would
    /// (the same backpressure; nothing is written until the next `recv`,
    /// `flush` or `send`). A lent message is copied once, from the read
    /// buffer to the output; control messages are sent back as they came
    /// (a ping as a ping).
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
    /// client.send("echo?").await?;
    /// server.recv_ref().await.expect("open")?.echo().await?; // queued
    /// server.flush().await?;
    /// assert_eq!(client.recv().await.unwrap()?.as_text(), Some("echo?"));
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn echo(self) -> Feed<'a, S> {
        match self.owned {
            Some(m) => self.ws.feed(m),
            None => self.ws.feed_lent(),
        }
    }
}

impl<S> std::fmt::Debug for Received<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Received").field(&self.message()).finish()
    }
}
