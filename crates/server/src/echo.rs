//! The echo endpoint: every text or binary message comes straight back.
//!
//! Replies are *fed*, not sent: `recv` flushes them when it is about to wait
//! for the network, so a burst of messages from one read is answered with
//! one write.

use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::task::Poll;

use duplex::{CloseCode, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::state::AppState;

/// Echoes until the peer closes or the server shuts down.
///
/// This future is an idle echo connection's memory, so it holds only the
/// socket, the shared state and one shutdown wait, made once rather than on
/// every message.
///
/// Not an `async fn`: those move their arguments into fresh locals, and the
/// socket would be stored twice in the future.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn run<S>(mut ws: WebSocket<S>, state: Arc<AppState>) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async move {
        let metrics = &state.metrics;
        metrics.connections.inc();
        metrics.connections_total.inc();
        let shutdown = state.shutdown.cancelled();
        tokio::pin!(shutdown);
        loop {
            // Shutdown first, then the socket (a hand-written select: the
            // macro's state made this future twice as large).
            let next = poll_fn(|cx| {
                if shutdown.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                ws.poll_recv(cx).map(Some)
            })
            .await;
            match next {
                None => {
                    // Boxed: only a closing connection needs this state.
                    let _ = Box::pin(ws.close(CloseCode::GOING_AWAY, "server shutting down")).await;
                    break;
                }
                Some(None) => break,
                Some(Some(Ok(msg))) if msg.is_data() => {
                    metrics.messages_in.inc();
                    metrics.bytes_in.inc_by(msg.len() as u64);
                    metrics.messages_out.inc();
                    metrics.bytes_out.inc_by(msg.len() as u64);
                    if let Err(e) = ws.feed(msg).await {
                        tracing::debug!("echo: send failed: {e}");
                        break;
                    }
                }
                Some(Some(Ok(_))) => {}
                Some(Some(Err(e))) => tracing::debug!("echo: {e}"),
            }
        }
        metrics.connections.dec();
    }
}
