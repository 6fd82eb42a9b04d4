//! The echo endpoint: every text or binary message comes straight back.
//!
//! The messages already whole in the read buffer are echoed at once
//! ([`WebSocket::echo_buffered`]: one copy each, unmasked on the way); the
//! next is received borrowed ([`WebSocket::recv_ref`]), so a small one is
//! echoed straight from the read buffer too, with no per-message reference
//! count. Replies are *fed*, not sent: `recv` flushes them when it is about to wait
//! for the network, so a burst of messages from one read is answered with
//! one write.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use duplex::{CloseCode, Echoed, Received, RecvRef, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::admission::{Admitted, Seat};
use crate::metrics::Metrics;
use crate::signal::Parked;
use crate::state::AppState;

/// Echoes until the peer closes or the server shuts down; the connection
/// counts as open (`admitted`) until then.
///
/// This future is most of an idle echo connection's memory: tokio rounds a
/// task up to 128 bytes, and each step costs every idle connection. So it
/// holds the socket and one [`Held`], made before the `async` block and
/// moved into it whole, and across its `.await`s one pointer-sized future.
///
/// Not an `async fn`, and not wrapped in one by the caller: those move
/// their arguments into fresh locals, and the socket would be stored twice
/// in the future (it was, in the accept loop's wrapper: 0.12 KiB more per
/// idle connection).
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn run<S>(
    mut ws: WebSocket<S>,
    state: Arc<AppState>,
    admitted: Admitted,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    state.metrics.connections.inc();
    state.metrics.connections_total.inc();
    let mut held = Held {
        state,
        seat: Some(admitted.detach()),
        parked: Parked::default(),
        unreported: Unreported::default(),
    };
    async move {
        // Whether the loop ended for the shutdown.
        let shutting_down = loop {
            // Nothing more is echoed once the shutdown fired (`Next` checks
            // it too, before each message it waits for).
            if held.state.shutdown.is_fired() {
                break true;
            }
            let echoed = ws.echo_buffered();
            held.unreported.count(echoed, &held.state.metrics);
            // In a block, so that no slot for the message outlives it (see
            // `bench/src/duplex_echo.rs`).
            let queued = {
                let next = Next {
                    recv: ws.recv_ref(),
                    held: &mut held,
                };
                match next.await {
                    None => break true,
                    Some(None) => break false,
                    Some(Some(Ok(received))) if received.message().is_data() => {
                        let one = Echoed {
                            messages: 1,
                            bytes: received.message().len(),
                        };
                        held.unreported.count(one, &held.state.metrics);
                        received.echo()
                    }
                    Some(Some(Ok(_))) => continue,
                    Some(Some(Err(e))) => {
                        tracing::debug!("echo: {e}");
                        continue;
                    }
                }
            };
            if let Err(e) = queued.await {
                tracing::debug!("echo: send failed: {e}");
                break false;
            }
        };
        if shutting_down {
            // Boxed, and awaited outside the loop: only a closing connection
            // needs this state, and no slot of the loop's is kept for it.
            let _ = Box::pin(ws.close(CloseCode::GOING_AWAY, "server shutting down")).await;
        }
        drop(held);
    }
}

/// What an echo connection holds besides its socket, packed: the shared
/// state, its admission, its place among the shutdown's parked wakers and
/// the counts not yet added to the shared counters. Dropped when the
/// connection ends, it settles all four.
pub struct Held {
    state: Arc<AppState>,
    /// Its place in the admission count (without a second `Arc`: the
    /// state holds the admission).
    seat: Option<Seat>,
    parked: Parked,
    unreported: Unreported,
}

impl Drop for Held {
    fn drop(&mut self) {
        let metrics = &self.state.metrics;
        self.unreported.report(metrics);
        self.state.shutdown.unpark(&mut self.parked);
        metrics.connections.dec();
        if let Some(seat) = self.seat.take() {
            self.state.admission.release(seat);
        }
    }
}

/// Messages and bytes echoed since the shared counters were last added to:
/// they are atomics every core shares, so they are added to once per batch
/// (when the socket is about to wait), not four times per message.
#[derive(Default)]
struct Unreported {
    messages: u32,
    bytes: u32,
}

impl Unreported {
    /// Counts echoed messages: a batch from [`WebSocket::echo_buffered`]
    /// or one from `recv_ref`.
    #[inline]
    fn count(&mut self, echoed: Echoed, metrics: &Metrics) {
        if echoed.messages == 0 {
            return;
        }
        let fits = u32::try_from(echoed.messages)
            .ok()
            .zip(u32::try_from(echoed.bytes).ok())
            .and_then(|(m, b)| Some((self.messages.checked_add(m)?, self.bytes.checked_add(b)?)));
        match fits {
            Some((messages, bytes)) => {
                self.messages = messages;
                self.bytes = bytes;
            }
            // Too much to hold in 32 bits: add it all now.
            None => {
                self.report(metrics);
                add(metrics, echoed.messages as u64, echoed.bytes as u64);
            }
        }
    }

    fn report(&mut self, metrics: &Metrics) {
        let Self { messages, bytes } = std::mem::take(self);
        if messages > 0 {
            add(metrics, messages.into(), bytes.into());
        }
    }
}

fn add(metrics: &Metrics, messages: u64, bytes: u64) {
    metrics.messages_in.inc_by(messages);
    metrics.bytes_in.inc_by(bytes);
    metrics.messages_out.inc_by(messages);
    metrics.bytes_out.inc_by(bytes);
}

/// The next message, or `None` once the server shuts down: a select of the
/// socket and the shutdown, written out (the macro's state made the echo
/// task twice as large).
struct Next<'a, 'h, S> {
    recv: RecvRef<'a, S>,
    held: &'h mut Held,
}

impl<'a, S> Future for Next<'a, '_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = Option<Option<duplex::Result<Received<'a, S>>>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let shutdown = &this.held.state.shutdown;
        // One atomic load before each message.
        if shutdown.is_fired() {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut this.recv).poll(cx);
        if polled.is_pending() {
            this.held.unreported.report(&this.held.state.metrics);
            if shutdown.poll_parked(&mut this.held.parked, cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        polled.map(Some)
    }
}
