//! Closing the transport once the protocol is closed: the driver of
//! [`duplex_proto::Teardown`], which decides the order (who closes TCP
//! first, what is drained, when to stop waiting); this file only writes,
//! shuts down, reads and keeps the close timeout.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use duplex_proto::teardown::Event;
use duplex_proto::{CloseFrame, Incoming, Teardown};
use tokio::io::{AsyncRead, AsyncWrite};

use super::WebSocket;
use crate::error::Result;

impl<S> WebSocket<S> {
    /// How far closing the transport has got; `None` before it started.
    pub(super) fn teardown(&self) -> Option<Teardown> {
        self.extra.as_ref().and_then(|x| x.teardown)
    }

    /// Whether closing the transport has started: nothing more may be sent.
    pub(super) fn tearing_down(&self) -> bool {
        self.teardown().is_some()
    }

    pub(super) fn set_teardown(&mut self, teardown: Teardown) {
        self.extra_mut().teardown = Some(teardown);
    }

    /// Starts the close timeout, if it is not running. It runs from the
    /// moment the protocol leaves `Open` (`Connection::close_timer_runs`).
    pub(super) fn arm_close_deadline(&mut self) {
        debug_assert!(self.conn.close_timer_runs() || self.tearing_down());
        let timeout = self.config.close_timeout;
        let extra = self.extra_mut();
        if extra.close_deadline.is_none() {
            extra.close_deadline = Some(Box::pin(tokio::time::sleep(timeout)));
        }
    }

    /// Whether the close timeout fired.
    pub(super) fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        self.extra
            .as_mut()
            .and_then(|x| x.close_deadline.as_mut())
            .is_some_and(|d| d.as_mut().poll(cx).is_ready())
    }
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Sends a close frame (the closing handshake's first half).
    pub(super) fn start_close(&mut self, frame: Option<CloseFrame>) -> Result<()> {
        self.conn.close(frame)?;
        self.arm_close_deadline();
        Ok(())
    }

    /// Starts closing the transport as the protocol decides, counting an
    /// error of our own (set before) as unclean.
    pub(super) fn begin_teardown(&mut self) {
        if !self.tearing_down() {
            let teardown = self.conn.teardown(self.has_pending_error());
            self.set_teardown(teardown);
        }
        self.arm_close_deadline();
    }

    /// Starts closing the transport in a given step (output abandoned, or
    /// the close timeout fired), whatever was under way.
    pub(super) fn force_teardown(&mut self, teardown: Teardown) {
        self.set_teardown(teardown);
        self.arm_close_deadline();
    }

    /// Takes the teardown's steps until it is done, then reports how the
    /// connection ended (an error, or `None` for a clean end).
    pub(super) fn poll_finish(
        &mut self,
        rcx: &mut Context<'_>,
        wcx: &mut Context<'_>,
    ) -> Poll<Option<Result<Incoming>>> {
        self.begin_teardown();
        loop {
            let step = self.teardown().expect("begun above");
            let event = match step {
                Teardown::Flush { .. } => match self.poll_write_out(wcx) {
                    Poll::Ready(Ok(())) => Event::Flushed,
                    Poll::Ready(Err(_)) => Event::WriteFailed,
                    Poll::Pending if self.deadline_passed(rcx) => Event::TimedOut,
                    Poll::Pending => return Poll::Pending,
                },
                Teardown::Shutdown { .. } => match Pin::new(&mut self.io).poll_shutdown(wcx) {
                    Poll::Ready(_) => Event::ShutDown,
                    Poll::Pending if self.deadline_passed(rcx) => Event::TimedOut,
                    Poll::Pending => return Poll::Pending,
                },
                Teardown::Drain { .. } => {
                    // What arrives now is discarded, unread.
                    self.conn.read_buf().clear();
                    match self.poll_read_more(rcx) {
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Event::Eof,
                        Poll::Ready(Ok(_)) => continue,
                        Poll::Pending if self.deadline_passed(rcx) => Event::TimedOut,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Teardown::Done => return Poll::Ready(self.finished()),
            };
            self.set_teardown(step.on(event));
        }
    }

    /// The end: buffers go back to the pool, and the error (if any) is
    /// reported once.
    fn finished(&mut self) -> Option<Result<Incoming>> {
        self.conn.read_buf().clear();
        self.conn.shrink();
        self.park_buffers();
        let error = self.extra.as_mut().and_then(|x| x.pending_error.take());
        error.map(Err)
    }
}
