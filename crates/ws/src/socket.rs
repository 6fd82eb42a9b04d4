//! [`WebSocket`]: a [`Connection`] driven over any tokio byte stream.
//!
//! Every operation is a `poll_*` function that keeps all of its progress in
//! the connection's buffers, so the async methods built on them are
//! cancel-safe: dropping a `recv()` future inside `tokio::select!` loses no
//! bytes and no message.
//!
//! Writes are batched: `recv` flushes what earlier `feed`/`send` calls queued
//! only when it is about to wait for the network, so an echo loop that feeds
//! every message of one read answers them all with one `write` syscall.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::Buf;
use duplex_proto::{CloseCode, CloseFrame, Connection, Incoming, Message, MessageRef, Role, State};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::budget::{Account, Admit, CHARGE_STEP, LARGE_MESSAGE, charge_for};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::pool;
use crate::received::RecvRef;

/// How many buffers one vectored write hands the kernel at most.
const MAX_IOVECS: usize = 64;

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
    finish: Finish,
    drain_done: bool,
    /// Its part of the config's memory budget, once it held enough to be
    /// charged (few connections do).
    account: Option<Account>,
}

/// The steps after the protocol is closed: flush, shut down, wait for the
/// peer's TCP close, report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Finish {
    #[default]
    NotStarted,
    Flush,
    Shutdown,
    Drain,
    Done,
}

/// Keepalive and idle-timeout bookkeeping; allocated only when configured.
struct Timers {
    sleep: Pin<Box<Sleep>>,
    last_rx: Instant,
    ping_sent_at: Option<Instant>,
    ping_interval: Option<Duration>,
    pong_timeout: Duration,
    idle_timeout: Option<Duration>,
}

impl Timers {
    fn deadline(&self) -> Instant {
        let mut at = Instant::now() + Duration::from_secs(86_400);
        if let Some(idle) = self.idle_timeout {
            at = at.min(self.last_rx + idle);
        }
        match (self.ping_sent_at, self.ping_interval) {
            (Some(sent), _) => at = at.min(sent + self.pong_timeout),
            (None, Some(every)) => at = at.min(self.last_rx + every),
            (None, None) => {}
        }
        at
    }
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps a stream whose handshake is done. `conn` carries the
    /// negotiated state; most users get a `WebSocket` from
    /// [`connect`](crate::connect) or [`accept`](crate::accept) instead.
    /// `config` may be an `Arc<Config>` shared by many connections.
    pub fn from_parts(
        io: S,
        conn: Connection,
        config: impl Into<Arc<Config>>,
        protocol: Option<String>,
    ) -> Self {
        let config: Arc<Config> = config.into();
        let timers = (config.ping_interval.is_some() || config.idle_timeout.is_some()).then(|| {
            Box::new(Timers {
                sleep: Box::pin(tokio::time::sleep(Duration::from_secs(86_400))),
                last_rx: Instant::now(),
                ping_sent_at: None,
                ping_interval: config.ping_interval,
                pong_timeout: config.pong_timeout,
                idle_timeout: config.idle_timeout,
            })
        });
        Self {
            io,
            conn,
            config,
            timers,
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
    #[inline]
    pub fn feed(&mut self, message: impl Into<Message>) -> Feed<'_, S> {
        self.queue_or_park(message.into());
        Feed { ws: self }
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| self.poll_flush_out(cx)).await
    }

    /// Closes the connection: sends a close frame, waits (up to
    /// [`Config::close_timeout`]) for the peer's, then closes the transport.
    /// Messages that arrive meanwhile are discarded.
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
    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// The subprotocol negotiated in the handshake.
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
    pub fn is_compressed(&self) -> bool {
        self.conn.is_compressed()
    }

    /// The close frame the peer sent, once received.
    pub fn close_frame(&self) -> Option<&CloseFrame> {
        self.conn.close_received().and_then(|f| f.as_ref())
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Bytes queued but not yet written.
    pub fn buffered_amount(&mut self) -> usize {
        self.conn.outgoing().len()
    }

    fn start_close(&mut self, frame: Option<CloseFrame>) -> Result<()> {
        self.conn.close(frame)?;
        self.arm_close_deadline();
        Ok(())
    }

    /// How far the end of the connection has got.
    fn finish(&self) -> Finish {
        self.extra.as_ref().map_or(Finish::NotStarted, |x| x.finish)
    }

    fn set_finish(&mut self, finish: Finish) {
        self.extra_mut().finish = finish;
    }

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

    fn arm_close_deadline(&mut self) {
        let timeout = self.config.close_timeout;
        let extra = self.extra_mut();
        if extra.close_deadline.is_none() {
            extra.close_deadline = Some(Box::pin(tokio::time::sleep(timeout)));
        }
    }

    /// Polls for the next message, with separate contexts for read and
    /// write readiness (the split halves need that; see `split.rs`).
    #[inline]
    pub(crate) fn poll_recv_with(
        &mut self,
        rcx: &mut Context<'_>,
        wcx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message>>> {
        let incoming = ready!(self.poll_incoming_with(rcx, wcx));
        Poll::Ready(incoming.map(|r| r.map(|i| self.own(i))))
    }

    /// The message an [`Incoming`] stands for, taken out of the buffer.
    #[inline]
    pub(crate) fn own(&mut self, incoming: Incoming) -> Message {
        match incoming {
            Incoming::Lent => self.conn.take_lent().expect("a message was just lent"),
            Incoming::Message(m) => m,
        }
    }

    /// The receive loop: the next message, lent in place when it can be.
    pub(crate) fn poll_incoming_with(
        &mut self,
        rcx: &mut Context<'_>,
        wcx: &mut Context<'_>,
    ) -> Poll<Option<Result<Incoming>>> {
        if let Some(msg) = self.extra.as_mut().and_then(|x| x.stashed.take()) {
            // A close frame waits here until its reply is flushed.
            if let Poll::Ready(Err(e)) = self.poll_write_out(wcx) {
                self.extra_mut().pending_error.get_or_insert(e.into());
            } else if !self.conn.outgoing().is_empty() {
                self.extra_mut().stashed = Some(msg);
                return Poll::Pending;
            }
            return Poll::Ready(Some(Ok(Incoming::Message(msg))));
        }
        loop {
            if self.finish() != Finish::NotStarted || self.conn.state() == State::Closed {
                return self.poll_finish(rcx, wcx);
            }
            if self.account().is_some_and(|a| a.charge.is_shed()) {
                self.shed();
                continue;
            }
            // Backpressure: read no more while too much waits to be written.
            if self.conn.outgoing().len() >= self.config.write_buffer_limit {
                match self.poll_write_out(wcx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return self.fail_io(e),
                    Poll::Pending => {
                        // Woken if the budget sheds us meanwhile (what waits
                        // to be written may be a large message kept charged).
                        if let Some(account) = self.account() {
                            account.charge.wake_when_shed(rcx.waker());
                        }
                        return Poll::Pending;
                    }
                }
            }
            match self.conn.next_incoming() {
                Ok(Some(Incoming::Lent)) => return Poll::Ready(Some(Ok(Incoming::Lent))),
                Ok(Some(Incoming::Message(msg))) => {
                    if let Some(t) = &mut self.timers {
                        if matches!(msg, Message::Pong(_)) {
                            t.ping_sent_at = None;
                        }
                    }
                    if matches!(msg, Message::Close(_)) {
                        self.arm_close_deadline();
                        self.extra_mut().stashed = Some(msg);
                        return self.poll_incoming_with(rcx, wcx);
                    }
                    return Poll::Ready(Some(Ok(Incoming::Message(self.keep_charged(msg)))));
                }
                Ok(None) => {}
                Err(e) => {
                    self.set_pending_error(e.into());
                    continue;
                }
            }
            if self.conn.state() == State::Closed {
                continue;
            }
            // Flush what this batch produced before waiting for more input.
            if !self.conn.outgoing().is_empty() {
                if let Poll::Ready(Err(e)) = self.poll_write_out(wcx) {
                    return self.fail_io(e);
                }
            }
            match self.charge_budget(rcx) {
                // A frame already here waits to be inflated further.
                Admit::Granted if self.conn.inflation_pending() => continue,
                Admit::Granted => {}
                Admit::Retry => continue,
                Admit::Wait => {
                    self.park_buffers();
                    return Poll::Pending;
                }
                Admit::Shed => {
                    self.shed();
                    continue;
                }
            }
            match self.poll_read_more(rcx) {
                Poll::Ready(Ok(0)) => {
                    if self.conn.receive_eof() {
                        self.set_pending_error(Error::AbnormalClosure);
                    }
                }
                Poll::Ready(Ok(_)) => {
                    if let Some(t) = &mut self.timers {
                        t.last_rx = Instant::now();
                    }
                }
                Poll::Ready(Err(e)) => return self.fail_io(e),
                Poll::Pending => {
                    if self.poll_timers(rcx) {
                        continue;
                    }
                    if let Some(deadline) =
                        self.extra.as_mut().and_then(|x| x.close_deadline.as_mut())
                    {
                        if deadline.as_mut().poll(rcx).is_ready() {
                            // The peer never answered our close frame.
                            self.set_finish(Finish::Shutdown);
                            continue;
                        }
                    }
                    if let Some(account) = self.account() {
                        account.charge.wake_when_shed(rcx.waker());
                    }
                    self.park_buffers();
                    self.settle_budget();
                    return Poll::Pending;
                }
            }
        }
    }

    /// Charges the memory budget (if any) for what this connection buffers
    /// for its peer before reading more: messages still arriving and the
    /// next read, and what waits to be written.
    fn charge_budget(&mut self, rcx: &mut Context<'_>) -> Admit {
        if self.config.memory_budget.is_none() {
            return Admit::Granted;
        }
        // Only a frame known to be larger than the buffer is granted ahead;
        // a read's own growth is charged on the next turn, so a connection
        // exchanging small messages is never charged at all.
        let want = self.conn.held_bytes_after(self.conn.bytes_wanted());
        // What is granted bounds inflation too (one compressed frame can
        // inflate to the message limit), a step at a time.
        self.conn.allow_memory(charge_for(want).max(CHARGE_STEP));
        let waiting = self.conn.outgoing().len();
        let admit = self.charge(want + waiting, rcx);
        if admit != Admit::Granted {
            // Not yet: inflate nothing past what is held now.
            let held = self.conn.held_bytes();
            self.conn.allow_memory(held.max(CHARGE_STEP));
        }
        admit
    }

    /// Sets this connection's charge for buffering `held` bytes for its
    /// peer, both ways (see [`charge_for`]): the shared budget is touched
    /// only when that crosses a step.
    fn charge(&mut self, held: usize, cx: &mut Context<'_>) -> Admit {
        let Some(budget) = &self.config.memory_budget else {
            return Admit::Granted;
        };
        let want = charge_for(held);
        if want == self.account().map_or(0, |a| a.charge.incoming()) {
            return Admit::Granted;
        }
        // The account is made the first time: most connections never need it.
        let budget = budget.clone();
        let account = self
            .extra_mut()
            .account
            .get_or_insert_with(|| Account::new(budget));
        account.budget.set(&mut account.charge, want, cx.waker())
    }

    /// Gives back what this connection no longer buffers (its buffers
    /// went back to the pool, its output was written): an idle connection
    /// holds no charge.
    fn settle_budget(&mut self) {
        let Some(account) = self.extra.as_mut().and_then(|x| x.account.as_mut()) else {
            return;
        };
        let held = self.conn.held_bytes() + self.conn.outgoing().len();
        let want = charge_for(held);
        if want < account.charge.incoming() {
            // Lower than what is held: only gives back, never waits.
            account.budget.set(&mut account.charge, want, Waker::noop());
        }
    }

    /// Writes out what is queued for a caller waiting on it (`send`,
    /// `flush`). If the memory budget sheds this connection while its peer
    /// does not read, the wait ends with [`Error::MemoryBudget`] instead
    /// of lasting for ever.
    pub(crate) fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let shed = |ws: &Self| {
            ws.finish() == Finish::NotStarted && ws.account().is_some_and(|a| a.charge.is_shed())
        };
        if shed(self) {
            return Poll::Ready(Err(self.shed_while_sending()));
        }
        match self.poll_write_out(cx) {
            Poll::Pending => {
                if let Some(account) = self.account() {
                    account.charge.wake_when_shed(cx.waker());
                }
                // Chosen between the check and the registration?
                if shed(self) {
                    return Poll::Ready(Err(self.shed_while_sending()));
                }
                Poll::Pending
            }
            Poll::Ready(Ok(())) => {
                self.settle_budget();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
        }
    }

    /// A large message that arrived stays charged to this connection for
    /// as long as it is alive (see [`crate::budget`]).
    fn keep_charged(&mut self, msg: Message) -> Message {
        match self.account() {
            Some(account) if msg.len() > LARGE_MESSAGE && account.charge.incoming() > 0 => {
                let kept = account.budget.keep(&account.charge, msg.len());
                msg.hold_with(kept)
            }
            _ => msg,
        }
    }

    /// This connection's account with the memory budget, once it has one.
    fn account(&self) -> Option<&Account> {
        self.extra.as_ref().and_then(|x| x.account.as_ref())
    }

    /// Closes the connection with 1013 because the memory budget is spent
    /// and it holds the most, freeing what it holds at once. A peer that
    /// reads is told why; for one that does not (its output backed up),
    /// the unsent output is dropped, frames cut short and the close frame
    /// included, and the TCP connection shut down.
    fn shed(&mut self) {
        let backed_up = self.conn.outgoing().len() >= self.config.write_buffer_limit;
        let _ = self.conn.close(Some(CloseFrame::new(
            CloseCode::TRY_AGAIN_LATER,
            "the server is short of memory; try again later",
        )));
        self.conn.discard_incoming();
        if let Some(account) = self.account() {
            account.release_all();
        }
        self.set_pending_error(Error::MemoryBudget);
        if backed_up {
            self.conn.outgoing().discard();
            self.set_finish(Finish::Shutdown);
        } else {
            self.set_finish(Finish::Flush);
        }
        self.arm_close_deadline();
    }

    /// Sheds the connection while a send waits for a peer that does not
    /// read (so its output is backed up: see [`shed`](Self::shed)).
    fn shed_while_sending(&mut self) -> Error {
        self.shed();
        // Whoever waits to send has a peer that does not read: what waits
        // is dropped now (its charge was given back), not flushed for ever.
        self.conn.outgoing().discard();
        self.set_finish(Finish::Shutdown);
        Error::MemoryBudget
    }

    /// [`poll_incoming_with`](Self::poll_incoming_with) on one task's context.
    #[inline]
    pub(crate) fn poll_incoming(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Incoming>>> {
        // One task does both directions: the same waker serves both. Both
        // contexts borrow it; cloning it here cost an atomic increment and
        // decrement on every poll.
        let waker = cx.waker();
        let (mut rcx, mut wcx) = (Context::from_waker(waker), Context::from_waker(waker));
        self.poll_incoming_with(&mut rcx, &mut wcx)
    }

    /// The message lent by the last `poll_incoming`.
    #[inline]
    pub(crate) fn lent(&self) -> Option<MessageRef<'_>> {
        self.conn.lent()
    }

    /// `feed` for the lent message: queued from the read buffer if there is
    /// room, else taken out and parked as `feed` parks.
    #[inline]
    pub(crate) fn feed_lent(&mut self) -> Feed<'_, S> {
        if self.conn.outgoing().len() >= self.config.write_buffer_limit {
            let message = self.conn.take_lent();
            self.extra_mut().parked = message;
        } else if let Err(e) = self
            .prepare_send()
            .and_then(|()| self.conn.send_lent().map_err(Error::from))
        {
            self.extra_mut().send_error = Some(e);
        } else if self.config.memory_budget.is_some() {
            self.charge_sent();
        }
        Feed { ws: self }
    }

    /// Receives, as [`recv`](Self::recv) does, for manual `poll` code.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        let incoming = ready!(self.poll_incoming(cx));
        Poll::Ready(incoming.map(|r| r.map(|i| self.own(i))))
    }

    fn fail_io(&mut self, e: io::Error) -> Poll<Option<Result<Incoming>>> {
        self.conn.receive_eof();
        self.set_finish(Finish::Done);
        Poll::Ready(Some(Err(e.into())))
    }

    /// Checks keepalive and idle deadlines. Returns true if it did something
    /// that needs another turn of the loop.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(t) = &mut self.timers else {
            return false;
        };
        if self.conn.state() != State::Open {
            return false;
        }
        let now = Instant::now();
        if let Some(idle) = t.idle_timeout {
            if now >= t.last_rx + idle {
                let _ = self
                    .conn
                    .close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "idle timeout")));
                self.set_pending_error(Error::IdleTimeout(idle));
                self.set_finish(Finish::Flush);
                self.arm_close_deadline();
                return true;
            }
        }
        if let Some(sent) = t.ping_sent_at {
            if now >= sent + t.pong_timeout {
                let timeout = t.pong_timeout;
                let _ = self.conn.close(Some(CloseFrame::new(
                    CloseCode::INTERNAL_ERROR,
                    "keepalive ping timeout",
                )));
                self.set_pending_error(Error::KeepaliveTimeout(timeout));
                self.set_finish(Finish::Flush);
                self.arm_close_deadline();
                return true;
            }
        } else if let Some(every) = t.ping_interval {
            if now >= t.last_rx + every {
                t.ping_sent_at = Some(now);
                let _ = self.conn.send(Message::Ping(bytes::Bytes::from_static(
                    b"duplex-keepalive",
                )));
                return true;
            }
        }
        let t = self.timers.as_mut().expect("checked above");
        let at = t.deadline();
        if t.sleep.deadline() != at {
            t.sleep.as_mut().reset(at);
        }
        t.sleep.as_mut().poll(cx).is_ready()
    }

    fn poll_finish(
        &mut self,
        rcx: &mut Context<'_>,
        wcx: &mut Context<'_>,
    ) -> Poll<Option<Result<Incoming>>> {
        self.arm_close_deadline();
        loop {
            match self.finish() {
                Finish::NotStarted => self.set_finish(Finish::Flush),
                Finish::Flush => {
                    match self.poll_write_out(wcx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(_)) => self.set_finish(Finish::Done),
                        Poll::Pending if self.deadline_passed(rcx) => {
                            self.set_finish(Finish::Shutdown)
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                    if self.finish() == Finish::Flush {
                        // RFC 6455 §7.1.1: the server closes TCP first; a client
                        // that closed cleanly waits for it.
                        let clean =
                            !self.has_pending_error() && self.conn.close_received().is_some();
                        self.set_finish(if self.conn.role() == Role::Client && clean {
                            Finish::Drain
                        } else {
                            Finish::Shutdown
                        });
                    }
                }
                Finish::Shutdown => {
                    match Pin::new(&mut self.io).poll_shutdown(wcx) {
                        Poll::Pending if !self.deadline_passed(rcx) => return Poll::Pending,
                        _ => {}
                    }
                    self.set_finish(if self.conn.role() == Role::Client && self.drained() {
                        Finish::Done
                    } else {
                        Finish::Drain
                    });
                }
                Finish::Drain => {
                    // Read until the peer's FIN, so our close frame is not
                    // destroyed by a reset for unread data.
                    let buf = self.conn.read_buf();
                    buf.clear();
                    match self.poll_read_more(rcx) {
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                            self.set_finish(if self.conn.role() == Role::Client {
                                Finish::Shutdown
                            } else {
                                Finish::Done
                            });
                            self.extra_mut().drain_done = true;
                        }
                        Poll::Ready(Ok(_)) => {}
                        Poll::Pending if self.deadline_passed(rcx) => self.set_finish(Finish::Done),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Finish::Done => {
                    self.conn.read_buf().clear();
                    self.conn.shrink();
                    self.park_buffers();
                    let error = self.extra.as_mut().and_then(|x| x.pending_error.take());
                    return Poll::Ready(error.map(Err));
                }
            }
        }
    }

    fn drained(&self) -> bool {
        self.extra.as_ref().is_some_and(|x| x.drain_done)
    }

    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        self.extra
            .as_mut()
            .and_then(|x| x.close_deadline.as_mut())
            .is_some_and(|d| d.as_mut().poll(cx).is_ready())
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let wanted = self.conn.bytes_wanted();
        let buf = self.conn.read_buf();
        if buf.capacity() == 0 {
            *buf = pool::take();
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(wanted.max(pool::DEFAULT_CAPACITY));
        }
        let spare = buf.spare_capacity_mut();
        let mut rb = ReadBuf::uninit(spare);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        // SAFETY: the reader initialised `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        Poll::Ready(Ok(n))
    }

    /// Lends empty buffers to the thread's pool while we wait.
    fn park_buffers(&mut self) {
        if self.conn.read_buf().is_empty() {
            pool::give(std::mem::take(self.conn.read_buf()));
        }
        if let Some(b) = self.conn.outgoing().recycle() {
            pool::give(b);
        }
    }

    /// Writes queued bytes until none are left, then flushes the stream.
    pub(crate) fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let out = self.conn.outgoing();
            if out.is_empty() {
                break;
            }
            let n = if self.io.is_write_vectored() && out.chunk().len() < out.len() {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let k = out.chunks_vectored(&mut slices);
                ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..k]))?
            } else {
                ready!(Pin::new(&mut self.io).poll_write(cx, out.chunk()))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.conn.outgoing().advance(n);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Waits until another message may be queued.
    pub(crate) fn poll_ready_send(&mut self, wcx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.finish() != Finish::NotStarted {
            return Poll::Ready(Err(Error::Closed));
        }
        while self.conn.outgoing().len() >= self.config.write_buffer_limit {
            if self.account().is_some_and(|a| a.charge.is_shed()) {
                return Poll::Ready(Err(self.shed_while_sending()));
            }
            let before = self.conn.outgoing().len();
            match self.poll_write_out(wcx) {
                Poll::Ready(r) => r?,
                Poll::Pending if self.conn.outgoing().len() < before => continue,
                Poll::Pending => {
                    // A peer that never reads must not keep what it was
                    // sent alive for ever: be woken if the budget sheds us.
                    if let Some(account) = self.account() {
                        account.charge.wake_when_shed(wcx.waker());
                    }
                    return Poll::Pending;
                }
            }
        }
        // What waits to be written is charged like what arrives, so a
        // crowd that never reads is bounded in sum.
        loop {
            if self.config.memory_budget.is_none() {
                return Poll::Ready(Ok(()));
            }
            let waiting = self.conn.outgoing().len();
            match self.charge(self.conn.held_bytes() + waiting, wcx) {
                Admit::Granted => return Poll::Ready(Ok(())),
                Admit::Retry => continue,
                Admit::Shed => return Poll::Ready(Err(self.shed_while_sending())),
                Admit::Wait => {
                    let before = self.conn.outgoing().len();
                    match self.poll_write_out(wcx) {
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                        _ if self.conn.outgoing().len() < before => continue,
                        _ => {
                            if let Some(account) = self.account() {
                                account.charge.wake_when_shed(wcx.waker());
                            }
                            return Poll::Pending;
                        }
                    }
                }
            }
        }
    }

    /// Queues a message; call after `poll_ready_send` returned ready.
    #[inline]
    pub(crate) fn start_send(&mut self, message: Message) -> Result<()> {
        self.prepare_send()?;
        if matches!(message, Message::Close(_)) {
            self.arm_close_deadline();
        }
        self.conn.send(message)?;
        if self.config.memory_budget.is_some() {
            self.charge_sent();
        }
        Ok(())
    }

    /// Charges what was just queued to send. It is queued already, so this
    /// does not wait: past the limit the heaviest connection is shed (this
    /// one, if it is the heaviest), and the next send waits in
    /// `poll_ready_send`.
    fn charge_sent(&mut self) {
        let waiting = self.conn.outgoing().len();
        let held = self.conn.held_bytes() + waiting;
        if self.charge(held, &mut Context::from_waker(Waker::noop())) == Admit::Shed {
            self.shed();
        }
    }

    /// Checks that a message may be queued and gives the output a buffer.
    #[inline]
    fn prepare_send(&mut self) -> Result<()> {
        if self.finish() != Finish::NotStarted {
            return Err(Error::Closed);
        }
        let out = self.conn.outgoing();
        if out.needs_buffer() {
            out.provide(pool::take());
        }
        Ok(())
    }

    /// `feed`'s first step: queue the message now if the buffer has room,
    /// else park it for the future to queue.
    #[inline]
    fn queue_or_park(&mut self, message: Message) {
        if self.conn.outgoing().len() >= self.config.write_buffer_limit {
            self.extra_mut().parked = Some(message);
        } else if let Err(e) = self.start_send(message) {
            self.extra_mut().send_error = Some(e);
        }
    }

    /// `feed`'s future: reports a failed queueing, or waits for room and
    /// queues the parked message.
    #[inline]
    fn poll_queued(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let Some(extra) = self.extra.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        if let Some(e) = extra.send_error.take() {
            return Poll::Ready(Err(e));
        }
        if extra.parked.is_none() {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_ready_send(cx))?;
        let message = self.extra.as_mut().and_then(|x| x.parked.take());
        Poll::Ready(message.map_or(Ok(()), |m| self.start_send(m)))
    }
}

impl<S> WebSocket<S> {
    /// A `feed`/`send` future dropped early: its message is not sent.
    fn unpark(&mut self) {
        if let Some(extra) = self.extra.as_mut() {
            extra.parked = None;
            extra.send_error = None;
        }
    }
}

/// The future [`WebSocket::recv`] returns: one pointer.
#[must_use = "futures do nothing unless you `.await` or poll them"]
#[derive(Debug)]
pub struct Recv<'a, S> {
    ws: &'a mut WebSocket<S>,
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
#[must_use = "the message may wait for room in the buffer: `.await` it"]
pub struct Feed<'a, S> {
    ws: &'a mut WebSocket<S>,
}

impl<S> Future for Feed<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = Result<()>;

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
#[must_use = "the message may wait for room in the buffer: `.await` it"]
pub struct SendMessage<'a, S> {
    ws: &'a mut WebSocket<S>,
    queued: bool,
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
        if this.finish() == Finish::NotStarted && this.conn.state() == State::Open {
            this.start_close(Some(CloseFrame::new(CloseCode::NORMAL, "")))?;
        }
        this.poll_flush_out(cx)
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
