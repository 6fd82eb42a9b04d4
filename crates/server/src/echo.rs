//! The echo endpoint: every text or binary message comes straight back.
//!
//! Messages are received borrowed ([`WebSocket::recv_ref`]): a small one is
//! echoed straight from the read buffer, with no per-message reference
//! count. Replies are *fed*, not sent: `recv` flushes them when it is about to wait
//! for the network, so a burst of messages from one read is answered with
//! one write.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use duplex::{CloseCode, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::admission::Admitted;
use crate::state::AppState;

/// Echoes until the peer closes or the server shuts down; the connection
/// counts as open (`admitted`) until then.
///
/// This future is an idle echo connection's memory, so it holds only the
/// socket, the shared state, the admission and one shutdown wait, made once
/// rather than on every message.
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
    async move {
        let metrics = &state.metrics;
        metrics.connections.inc();
        metrics.connections_total.inc();
        let shutdown = state.shutdown.wait();
        tokio::pin!(shutdown);
        // Messages and bytes echoed since the counters were last updated:
        // they are shared atomics, so they are added to once per batch (when
        // the socket is about to wait), not four times per message.
        let mut unreported = (0u64, 0u64);
        loop {
            // A hand-written select of shutdown and the socket (the macro's
            // state made this future twice as large), in a block so that no
            // slot for the message outlives it (see `bench/src/duplex_echo.rs`).
            let queued = {
                // Borrowed, not owned (`recv_ref`): a small message stays in
                // the read buffer and is copied once, straight to the output.
                let mut recv = ws.recv_ref();
                let next = poll_fn(|cx| {
                    // The flag is one atomic load, read before each message;
                    // the wait registers the first time the task sleeps.
                    if state.shutdown.is_fired() {
                        return Poll::Ready(None);
                    }
                    let polled = Pin::new(&mut recv).poll(cx);
                    if polled.is_pending() {
                        report(metrics, &mut unreported);
                        if shutdown.as_mut().poll_on(&state.shutdown, cx).is_ready() {
                            return Poll::Ready(None);
                        }
                    }
                    polled.map(Some)
                })
                .await;
                match next {
                    None => {
                        drop(recv);
                        // Boxed: only a closing connection needs this state.
                        let _ =
                            Box::pin(ws.close(CloseCode::GOING_AWAY, "server shutting down")).await;
                        break;
                    }
                    Some(None) => break,
                    Some(Some(Ok(received))) if received.message().is_data() => {
                        unreported.0 += 1;
                        unreported.1 += received.message().len() as u64;
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
                break;
            }
        }
        report(metrics, &mut unreported);
        metrics.connections.dec();
        // Used in place until here: counted as open while echoing.
        drop(admitted);
    }
}

/// Adds a batch of echoed messages and bytes to the shared counters.
fn report(metrics: &crate::metrics::Metrics, unreported: &mut (u64, u64)) {
    let (messages, bytes) = std::mem::take(unreported);
    if messages > 0 {
        metrics.messages_in.inc_by(messages);
        metrics.bytes_in.inc_by(bytes);
        metrics.messages_out.inc_by(messages);
        metrics.bytes_out.inc_by(bytes);
    }
}
