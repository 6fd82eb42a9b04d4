//! Splitting a [`WebSocket`] into a reading half and a writing half that two
//! tasks can use at once.
//!
//! Both halves share the socket behind a mutex held only for the length of
//! one non-blocking poll. Both may need to *write* (the reader queues pongs
//! and close replies), and a tokio stream remembers only the last task that
//! waited to write; so every write is polled with a proxy waker that wakes
//! whichever halves are waiting, and neither half can be left asleep.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use duplex_proto::{CloseCode, CloseFrame, Message, State};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};
use crate::socket::WebSocket;

struct Shared<S> {
    ws: Mutex<WebSocket<S>>,
    wakers: Arc<WriteWakers>,
    write_waker: Waker,
}

#[derive(Default)]
struct WriteWakers {
    reader: Mutex<Option<Waker>>,
    writer: Mutex<Option<Waker>>,
}

impl WriteWakers {
    fn register(slot: &Mutex<Option<Waker>>, waker: &Waker) {
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }
}

impl Wake for WriteWakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        for slot in [&self.reader, &self.writer] {
            if let Some(w) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                w.wake();
            }
        }
    }
}

impl<S> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, WebSocket<S>> {
        self.ws.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The receiving half of a split [`WebSocket`].
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
/// let (mut rx, mut tx) = duplex::connect(&url).await?.split();
/// let reader = tokio::spawn(async move { rx.recv().await });
/// tx.send("hello").await?;
/// let echoed = reader.await.unwrap().expect("open")?;
/// assert_eq!(echoed.as_text(), Some("hello"));
/// # Ok(()) }
/// ```
pub struct WebSocketReader<S> {
    shared: Arc<Shared<S>>,
}

/// The sending half of a split [`WebSocket`].
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
/// let (mut rx, mut tx) = duplex::connect(&url).await?.split();
/// let writer = tokio::spawn(async move {
///     tx.send("from another task").await?;
///     Ok::<_, duplex::Error>(tx)
/// });
/// assert_eq!(rx.recv().await.unwrap()?.as_text(), Some("from another task"));
/// # drop(writer.await.unwrap()?);
/// # Ok(()) }
/// ```
pub struct WebSocketWriter<S> {
    shared: Arc<Shared<S>>,
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Splits the socket so one task can receive while another sends.
    ///
    /// ```no_run
    /// # async fn run() -> duplex::Result<()> {
    /// let ws = duplex::connect("ws://127.0.0.1:8080/echo").await?;
    /// let (mut rx, mut tx) = ws.split();
    /// let reader = tokio::spawn(async move {
    ///     while let Some(msg) = rx.recv().await {
    ///         println!("{:?}", msg?);
    ///     }
    ///     Ok::<(), duplex::Error>(())
    /// });
    /// tx.send("hello").await?;
    /// tx.close(duplex::CloseCode::NORMAL, "bye").await?;
    /// reader.await.unwrap()?;
    /// # Ok(()) }
    /// ```
    pub fn split(self) -> (WebSocketReader<S>, WebSocketWriter<S>) {
        let wakers = Arc::new(WriteWakers::default());
        let write_waker = Waker::from(wakers.clone());
        let shared = Arc::new(Shared {
            ws: Mutex::new(self),
            wakers,
            write_waker,
        });
        (
            WebSocketReader {
                shared: shared.clone(),
            },
            WebSocketWriter { shared },
        )
    }
}

impl<S> WebSocketReader<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Receives the next message; see [`WebSocket::recv`]. Cancel-safe.
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
    /// let (mut rx, mut tx) = duplex::connect(&url).await?.split();
    /// tx.send("hi").await?;
    /// assert_eq!(rx.recv().await.unwrap()?.as_text(), Some("hi"));
    /// # Ok(()) }
    /// ```
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message.
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
    /// let (mut rx, mut tx) = duplex::connect(&url).await?.split();
    /// tx.send("hi").await?;
    /// let next = std::future::poll_fn(|cx| rx.poll_recv(cx)).await;
    /// assert_eq!(next.unwrap()?.as_text(), Some("hi"));
    /// # Ok(()) }
    /// ```
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        WriteWakers::register(&self.shared.wakers.reader, cx.waker());
        let mut wcx = Context::from_waker(&self.shared.write_waker);
        self.shared.lock().poll_recv_with(cx, &mut wcx)
    }

    /// Whether `other` is the writing half of the same socket.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> duplex::Result<()> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # let url = format!("ws://{addr}/");
    /// # tokio::spawn(async move {
    /// #     for _ in 0..2 {
    /// #         tokio::spawn(duplex::accept(listener.accept().await?.0));
    /// #     }
    /// #     Ok::<_, std::io::Error>(())
    /// # });
    /// let (rx, tx) = duplex::connect(&url).await?.split();
    /// let (_other_rx, other_tx) = duplex::connect(&url).await?.split();
    /// assert!(rx.is_pair_of(&tx));
    /// assert!(!rx.is_pair_of(&other_tx));
    /// # Ok(()) }
    /// ```
    pub fn is_pair_of(&self, other: &WebSocketWriter<S>) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Puts the halves back together.
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
    /// let (rx, tx) = duplex::connect(&url).await?.split();
    /// let mut ws = rx.reunite(tx).ok().expect("the two halves of one socket");
    /// ws.send("whole again").await?;
    /// assert_eq!(ws.recv().await.unwrap()?.as_text(), Some("whole again"));
    /// # Ok(()) }
    /// ```
    pub fn reunite(
        self,
        writer: WebSocketWriter<S>,
    ) -> std::result::Result<WebSocket<S>, (Self, WebSocketWriter<S>)> {
        if !self.is_pair_of(&writer) {
            return Err((self, writer));
        }
        drop(writer);
        let shared =
            Arc::try_unwrap(self.shared).unwrap_or_else(|_| unreachable!("both halves were given"));
        Ok(shared.ws.into_inner().unwrap_or_else(|e| e.into_inner()))
    }
}

impl<S> WebSocketWriter<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Sends and flushes a message; waits while the peer is slow (backpressure).
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
    /// let (mut rx, mut tx) = duplex::connect(&url).await?.split();
    /// tx.send(vec![0u8; 3]).await?;
    /// assert_eq!(rx.recv().await.unwrap()?.len(), 3);
    /// # Ok(()) }
    /// ```
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<()> {
        self.feed(message).await?;
        self.flush().await
    }

    /// Queues a message without flushing unless over the buffer limit.
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
    /// let (mut rx, mut tx) = duplex::connect(&url).await?.split();
    /// tx.feed("a").await?;
    /// tx.feed("b").await?;
    /// tx.flush().await?; // both in one write
    /// assert_eq!(rx.recv().await.unwrap()?.as_text(), Some("a"));
    /// assert_eq!(rx.recv().await.unwrap()?.as_text(), Some("b"));
    /// # Ok(()) }
    /// ```
    pub async fn feed(&mut self, message: impl Into<Message>) -> Result<()> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await?;
        self.start_send(message.into())
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
    /// let (mut rx, mut tx) = duplex::connect(&url).await?.split();
    /// tx.feed("queued").await?;
    /// tx.flush().await?;
    /// assert_eq!(rx.recv().await.unwrap()?.as_text(), Some("queued"));
    /// # Ok(()) }
    /// ```
    pub async fn flush(&mut self) -> Result<()> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Sends a close frame and flushes it. The reading half then receives
    /// the peer's close frame and finishes the handshake.
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
    /// use duplex::{CloseCode, Message, State};
    /// let (mut rx, mut tx) = duplex::connect(&url).await?.split();
    /// tx.close(CloseCode::NORMAL, "bye").await?;
    /// assert_eq!(tx.state(), State::Closing);
    /// assert!(matches!(rx.recv().await.unwrap()?, Message::Close(Some(_)))); // the reply
    /// assert!(rx.recv().await.is_none()); // the handshake is complete
    /// # Ok(()) }
    /// ```
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.start_close(CloseFrame::new(code, reason))?;
        self.flush().await
    }

    /// Queues a close frame if the connection is still open (checked and
    /// queued under one lock).
    fn start_close(&self, frame: CloseFrame) -> Result<()> {
        let mut ws = self.shared.lock();
        if ws.state() == State::Open {
            ws.start_send(Message::Close(Some(frame)))?;
            drop(ws);
            self.shared.wakers.wake_by_ref();
        }
        Ok(())
    }

    /// Queues a message. A close frame also wakes the reading half: it
    /// may be parked in `recv` and must start the close timeout, or a peer
    /// that never answers would hold it until it sends something.
    fn start_send(&self, message: Message) -> Result<()> {
        let closing = matches!(message, Message::Close(_));
        self.shared.lock().start_send(message)?;
        if closing {
            self.shared.wakers.wake_by_ref();
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
    /// let (mut rx, mut tx) = duplex::connect(&url).await?.split();
    /// assert_eq!(tx.state(), State::Open);
    /// tx.close(CloseCode::NORMAL, "").await?;
    /// while rx.recv().await.is_some() {}
    /// assert_eq!(tx.state(), State::Closed);
    /// # Ok(()) }
    /// ```
    pub fn state(&self) -> State {
        self.shared.lock().state()
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        WriteWakers::register(&self.shared.wakers.writer, cx.waker());
        let mut wcx = Context::from_waker(&self.shared.write_waker);
        self.shared.lock().poll_ready_send(&mut wcx)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        WriteWakers::register(&self.shared.wakers.writer, cx.waker());
        let mut wcx = Context::from_waker(&self.shared.write_waker);
        self.shared.lock().poll_flush_out(&mut wcx)
    }
}

impl<S> Stream for WebSocketReader<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<S, M> Sink<M> for WebSocketWriter<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
    M: Into<Message>,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: M) -> Result<()> {
        WebSocketWriter::start_send(self.get_mut(), item.into())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        this.start_close(CloseFrame::new(CloseCode::NORMAL, ""))?;
        this.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use duplex_proto::{Connection, Role};

    use super::*;
    use crate::config::Config;

    /// A peer that never answers our close frame: the reading half, parked
    /// in `recv` when the writing half closes, must still give up after the
    /// close timeout.
    #[tokio::test(start_paused = true)]
    async fn close_timeout_holds_for_a_reader_parked_before_the_close() {
        let (ours, _silent_peer) = tokio::io::duplex(1 << 16);
        let config = Config {
            close_timeout: Duration::from_secs(5),
            ..Config::default()
        };
        let conn = Connection::new(Role::Server, config.proto(), None);
        let (mut rx, mut tx) = WebSocket::from_parts(ours, conn, config, None).split();
        let reader = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        tokio::task::yield_now().await; // the reader parks with no deadline yet
        tx.close(CloseCode::NORMAL, "bye").await.unwrap();
        tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("the reader gave up at the close timeout")
            .unwrap();
    }
}
