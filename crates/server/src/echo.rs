//! The echo endpoint: every text or binary message comes straight back.
//!
//! Replies are *fed*, not sent: `recv` flushes them when it is about to wait
//! for the network, so a burst of messages from one read is answered with
//! one write.

use duplex::{CloseCode, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Echoes until the peer closes or the server shuts down.
pub async fn run<S>(mut ws: WebSocket<S>, metrics: Metrics, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    metrics.connections.inc();
    metrics.connections_total.inc();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                let _ = ws.close(CloseCode::GOING_AWAY, "server shutting down").await;
                break;
            }
            msg = ws.recv() => match msg {
                None => break,
                Some(Ok(msg)) if msg.is_data() => {
                    metrics.messages_in.inc();
                    metrics.bytes_in.inc_by(msg.len() as u64);
                    metrics.messages_out.inc();
                    metrics.bytes_out.inc_by(msg.len() as u64);
                    if let Err(e) = ws.feed(msg).await {
                        tracing::debug!("echo: send failed: {e}");
                        break;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::debug!("echo: {e}"),
            },
        }
    }
    metrics.connections.dec();
}
