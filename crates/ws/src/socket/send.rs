//! Sending: queueing at once when there is room, parking one message when
//! there is not (backpressure), and writing everything queued with as few
//! syscalls as the stream allows.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Buf;
use duplex_proto::Message;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Feed, WebSocket};
use crate::budget::Admit;
use crate::error::{Error, Result};
use crate::pool;

/// How many buffers one vectored write hands the kernel at most.
const MAX_IOVECS: usize = 64;

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
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

    /// Writes out what is queued for a caller waiting on it (`send`,
    /// `flush`). If the memory budget sheds this connection while its peer
    /// does not read, the wait ends with [`Error::MemoryBudget`] instead
    /// of lasting for ever.
    pub(crate) fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let shed =
            |ws: &Self| !ws.tearing_down() && ws.account().is_some_and(|a| a.charge.is_shed());
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

    /// Waits until another message may be queued.
    pub(crate) fn poll_ready_send(&mut self, wcx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.tearing_down() {
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
        let closing = matches!(message, Message::Close(_));
        self.conn.send(message)?;
        if closing {
            self.arm_close_deadline();
        }
        if self.config.memory_budget.is_some() {
            self.charge_sent();
        }
        Ok(())
    }

    /// Checks that a message may be queued and gives the output a buffer.
    #[inline]
    pub(super) fn prepare_send(&mut self) -> Result<()> {
        if self.tearing_down() {
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
    pub(super) fn queue_or_park(&mut self, message: Message) {
        if self.conn.outgoing().len() >= self.config.write_buffer_limit {
            self.extra_mut().parked = Some(message);
        } else if let Err(e) = self.start_send(message) {
            self.extra_mut().send_error = Some(e);
        }
    }

    /// `feed`'s future: reports a failed queueing, or waits for room and
    /// queues the parked message.
    #[inline]
    pub(super) fn poll_queued(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        match self.extra.as_ref() {
            // Queued already: the common case, decided inline.
            None => Poll::Ready(Ok(())),
            Some(x) if x.send_error.is_none() && x.parked.is_none() => Poll::Ready(Ok(())),
            Some(_) => self.poll_queued_slow(cx),
        }
    }

    /// `poll_queued` when the message failed or waits for room.
    fn poll_queued_slow(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
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
}

impl<S> WebSocket<S> {
    /// A `feed`/`send` future dropped early: its message is not sent.
    pub(super) fn unpark(&mut self) {
        if let Some(extra) = self.extra.as_mut() {
            extra.parked = None;
            extra.send_error = None;
        }
    }
}
