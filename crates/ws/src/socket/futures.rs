//! The named futures `recv`, `feed` and `send` return (each one pointer,
//! so a connection's task stays small), and `Stream`/`Sink`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use duplex_proto::{CloseCode, CloseFrame, Message, State};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};

use super::WebSocket;
use crate::error::{Error, Result};

/// The future [`WebSocket::recv`] returns: one pointer.
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
/// ws.send("hi").await?;
/// let recv: duplex::Recv<'_, _> = ws.recv();
/// assert_eq!(size_of_val(&recv), size_of::<usize>());
/// assert_eq!(recv.await.unwrap()?.as_text(), Some("hi"));
/// # Ok(()) }
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
#[derive(Debug)]
pub struct Recv<'a, S> {
    pub(super) ws: &'a mut WebSocket<S>,
}

impl<S> Future for Recv<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = Option<Result<Message>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().ws.poll_recv(cx)
    }
}

/// The future [`WebSocket::feed`] returns: one pointer (the message is
/// already queued, or parked in the socket).
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
/// let feed: duplex::Feed<'_, _> = ws.feed("hi"); // queued already
/// assert_eq!(size_of_val(&feed), size_of::<usize>());
/// feed.await?;
/// ws.flush().await?;
/// assert_eq!(ws.recv().await.unwrap()?.as_text(), Some("hi"));
/// # Ok(()) }
/// ```
#[must_use = "the message may wait for room in the buffer: `.await` it"]
pub struct Feed<'a, S> {
    pub(super) ws: &'a mut WebSocket<S>,
}

impl<S> Future for Feed<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = Result<()>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().ws.poll_queued(cx)
    }
}

impl<S> Drop for Feed<'_, S> {
    fn drop(&mut self) {
        self.ws.unpark();
    }
}

impl<S> std::fmt::Debug for Feed<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").finish_non_exhaustive()
    }
}

/// The future [`WebSocket::send`] returns: queues (as [`Feed`] does), then
/// flushes.
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
/// let send: duplex::SendMessage<'_, _> = ws.send("hi");
/// assert!(size_of_val(&send) <= 2 * size_of::<usize>());
/// send.await?; // queued and flushed
/// assert_eq!(ws.buffered_amount(), 0);
/// # Ok(()) }
/// ```
#[must_use = "the message may wait for room in the buffer: `.await` it"]
pub struct SendMessage<'a, S> {
    pub(super) ws: &'a mut WebSocket<S>,
    pub(super) queued: bool,
}

impl<S> Future for SendMessage<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if !this.queued {
            ready!(this.ws.poll_queued(cx))?;
            this.queued = true;
        }
        this.ws.poll_flush_out(cx)
    }
}

impl<S> Drop for SendMessage<'_, S> {
    fn drop(&mut self) {
        if !self.queued {
            self.ws.unpark();
        }
    }
}

impl<S> std::fmt::Debug for SendMessage<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendMessage")
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

impl<S> Stream for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<S, M> Sink<M> for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
    M: Into<Message>,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_ready_send(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: M) -> Result<()> {
        self.get_mut().start_send(item.into())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_flush_out(cx)
    }

    /// Sends a normal close frame (if none was sent) and flushes. The peer's
    /// reply arrives through the `Stream` side.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if !this.tearing_down() && this.conn.state() == State::Open {
            this.start_close(Some(CloseFrame::new(CloseCode::NORMAL, "")))?;
        }
        this.poll_flush_out(cx)
    }
}
