//! The receive loop: reads, hands out messages (lent in place when it
//! can), answers what the protocol answers, and waits without holding
//! buffers.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use duplex_proto::teardown::Event;
use duplex_proto::{Incoming, Message, MessageRef, State, Teardown};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::WebSocket;
use crate::budget::Admit;
use crate::error::{Error, Result};
use crate::pool;

/// What one step of the receive loop decided.
enum Turn {
    /// Carry on with this turn of the loop.
    Go,
    /// Start the loop again (something changed).
    Again,
    /// Return this to the caller.
    Out(Poll<Option<Result<Incoming>>>),
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
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
        if let Some(out) = self.poll_stashed_close(wcx) {
            return out;
        }
        loop {
            if self.tearing_down() || self.conn.state() == State::Closed {
                return self.poll_finish(rcx, wcx);
            }
            if self.account().is_some_and(|a| a.charge.is_shed()) {
                self.shed();
                continue;
            }
            let turn = match self.poll_backpressure(rcx, wcx) {
                Turn::Go => self.take_decoded(rcx, wcx),
                stop => stop,
            };
            match turn {
                Turn::Go => {}
                Turn::Again => continue,
                Turn::Out(out) => return out,
            }
            // Flush what this batch produced before waiting for more input.
            if !self.conn.outgoing().is_empty() {
                if let Poll::Ready(Err(e)) = self.poll_write_out(wcx) {
                    return self.fail_io(e);
                }
            }
            let turn = match self.admit_read(rcx) {
                Turn::Go => self.poll_read_turn(rcx),
                stop => stop,
            };
            match turn {
                Turn::Go | Turn::Again => continue,
                Turn::Out(out) => return out,
            }
        }
    }

    /// The receive loop's common case, decided inline by the futures that
    /// receive before they call the loop: a whole small data frame is
    /// already in the read buffer and the loop would have nothing else to
    /// do first. Lends it and says `true`; otherwise changes nothing for
    /// the loop. (The loop is too large to inline, and handing its result
    /// back through memory cost more than deciding this case.)
    #[inline]
    pub(crate) fn lend_buffered(&mut self) -> bool {
        self.quiet()
            && self.conn.outgoing().len() < self.config.write_buffer_limit
            && self.conn.lend_buffered()
    }

    /// Nothing the receive loop sees to before it takes a decoded message:
    /// no stashed close, no teardown, not shed. (Backpressure is the
    /// caller's to check.)
    #[inline]
    pub(super) fn quiet(&self) -> bool {
        self.extra.as_ref().is_none_or(|x| {
            x.stashed.is_none()
                && x.teardown.is_none()
                && !x.account.as_ref().is_some_and(|a| a.charge.is_shed())
        })
    }

    /// A received close frame waits in `stashed` until its reply is
    /// flushed, so the caller sees it only once the handshake is answered.
    #[inline]
    fn poll_stashed_close(
        &mut self,
        wcx: &mut Context<'_>,
    ) -> Option<Poll<Option<Result<Incoming>>>> {
        let msg = self.extra.as_mut().and_then(|x| x.stashed.take())?;
        if let Poll::Ready(Err(e)) = self.poll_write_out(wcx) {
            self.extra_mut().pending_error.get_or_insert(e.into());
        } else if !self.conn.outgoing().is_empty() {
            self.extra_mut().stashed = Some(msg);
            return Some(Poll::Pending);
        }
        Some(Poll::Ready(Some(Ok(Incoming::Message(msg)))))
    }

    /// Backpressure: read no more while too much waits to be written.
    #[inline]
    fn poll_backpressure(&mut self, rcx: &mut Context<'_>, wcx: &mut Context<'_>) -> Turn {
        if self.conn.outgoing().len() < self.config.write_buffer_limit {
            return Turn::Go;
        }
        match self.poll_write_out(wcx) {
            Poll::Ready(Ok(())) => Turn::Go,
            Poll::Ready(Err(e)) => Turn::Out(self.fail_io(e)),
            Poll::Pending => {
                // Woken if the budget sheds us meanwhile (what waits to be
                // written may be a large message kept charged).
                if let Some(account) = self.account() {
                    account.charge.wake_when_shed(rcx.waker());
                }
                Turn::Out(Poll::Pending)
            }
        }
    }

    /// The next message already in the read buffer, if one is whole.
    #[inline]
    fn take_decoded(&mut self, rcx: &mut Context<'_>, wcx: &mut Context<'_>) -> Turn {
        match self.conn.next_incoming() {
            Ok(Some(Incoming::Lent)) => Turn::Out(Poll::Ready(Some(Ok(Incoming::Lent)))),
            Ok(Some(Incoming::Message(msg))) => {
                if let (Some(t), Message::Pong(_)) = (&mut self.timers, &msg) {
                    t.pong();
                }
                if matches!(msg, Message::Close(_)) {
                    self.arm_close_deadline();
                    self.extra_mut().stashed = Some(msg);
                    return Turn::Out(self.poll_incoming_with(rcx, wcx));
                }
                let msg = self.keep_charged(msg);
                Turn::Out(Poll::Ready(Some(Ok(Incoming::Message(msg)))))
            }
            // The protocol closed (its close frame is queued): tear down.
            Ok(None) if self.conn.state() == State::Closed => Turn::Again,
            Ok(None) => Turn::Go,
            Err(e) => {
                self.set_pending_error(e.into());
                Turn::Again
            }
        }
    }

    /// Charges the memory budget for the next read (see
    /// [`charge_budget`](Self::charge_budget)) and says whether to read.
    #[inline]
    fn admit_read(&mut self, rcx: &mut Context<'_>) -> Turn {
        match self.charge_budget(rcx) {
            // A frame already here waits to be inflated further.
            Admit::Granted if self.conn.inflation_pending() => Turn::Again,
            Admit::Granted => Turn::Go,
            Admit::Retry => Turn::Again,
            Admit::Wait => {
                self.park_buffers();
                Turn::Out(Poll::Pending)
            }
            Admit::Shed => {
                self.shed();
                Turn::Again
            }
        }
    }

    /// Reads once; while nothing arrives, keeps the timers and gives its
    /// buffers and charge back.
    #[inline]
    fn poll_read_turn(&mut self, rcx: &mut Context<'_>) -> Turn {
        match self.poll_read_more(rcx) {
            Poll::Ready(Ok(0)) => {
                if self.conn.receive_eof() {
                    self.set_pending_error(Error::AbnormalClosure);
                }
                Turn::Again
            }
            Poll::Ready(Ok(_)) => {
                if let Some(t) = &mut self.timers {
                    t.received();
                }
                Turn::Again
            }
            Poll::Ready(Err(e)) => Turn::Out(self.fail_io(e)),
            Poll::Pending => {
                if self.poll_timers(rcx) {
                    return Turn::Again;
                }
                if self.deadline_passed(rcx) {
                    // The peer never answered our close frame.
                    let teardown = self.conn.teardown(true).on(Event::TimedOut);
                    self.force_teardown(teardown);
                    return Turn::Again;
                }
                if let Some(account) = self.account() {
                    account.charge.wake_when_shed(rcx.waker());
                }
                self.park_buffers();
                self.settle_budget();
                Turn::Out(Poll::Pending)
            }
        }
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

    /// Receives, as [`recv`](Self::recv) does, for manual `poll` code.
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
    /// let next = std::future::poll_fn(|cx| ws.poll_recv(cx)).await;
    /// assert_eq!(next.unwrap()?.as_text(), Some("hi"));
    /// # Ok(()) }
    /// ```
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message>>> {
        if self.lend_buffered() {
            return Poll::Ready(Some(Ok(self.own(Incoming::Lent))));
        }
        let incoming = ready!(self.poll_incoming(cx));
        Poll::Ready(incoming.map(|r| r.map(|i| self.own(i))))
    }

    pub(super) fn fail_io(&mut self, e: io::Error) -> Poll<Option<Result<Incoming>>> {
        self.conn.receive_eof();
        self.set_teardown(Teardown::Done);
        Poll::Ready(Some(Err(e.into())))
    }

    pub(super) fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let wanted = self.conn.bytes_wanted();
        let buf = self.conn.read_buf();
        if buf.capacity() == 0 {
            *buf = pool::take();
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(wanted.max(pool::DEFAULT_CAPACITY));
        }
        let spare = buf.spare_capacity_mut();
        let room = spare.len();
        let mut rb = ReadBuf::uninit(spare);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        // SAFETY: the reader initialised `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        // The read filled the buffer, and not just its last few bytes: the
        // peer sends more than a buffer per read. What is buffered moves to
        // a read-ahead buffer, so that the next read takes up to 64 KiB.
        let filled = n == room && n >= pool::MIN_FREE;
        if filled && buf.capacity() < pool::READ_AHEAD_CAPACITY / 2 && self.read_ahead_fits() {
            let buf = self.conn.read_buf();
            let mut ahead = pool::take_read_ahead();
            ahead.extend_from_slice(buf);
            let mut small = std::mem::replace(buf, ahead);
            small.clear();
            pool::give(small);
        }
        Poll::Ready(Ok(n))
    }

    /// Whether a read-ahead buffer may be taken: always without a memory
    /// budget; with one, while the budget is less than half used. The
    /// larger buffer is charged on the next turn, and it must be granted
    /// then: a connection made to wait would hold it uncharged.
    pub(super) fn read_ahead_fits(&self) -> bool {
        self.config
            .memory_budget
            .as_ref()
            .is_none_or(|b| b.used() + pool::READ_AHEAD_CAPACITY <= b.limit() / 2)
    }

    /// Lends empty buffers to the thread's pool while we wait.
    pub(super) fn park_buffers(&mut self) {
        if self.conn.read_buf().is_empty() {
            pool::give(std::mem::take(self.conn.read_buf()));
        }
        if let Some(b) = self.conn.outgoing().recycle() {
            pool::give(b);
        }
    }
}
