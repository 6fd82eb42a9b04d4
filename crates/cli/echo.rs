//! The echo endpoint: every text or binary message comes straight back.
//!
//! Replies are *fed*, not sent: `recv` flushes them when it is about to wait
//! for the network, so a burst of messages from one read is answered with
//! one write.

use duplex::{WebSocket, upgrade::Upgraded};

/// Echoes until the peer closes. Errors end this connection only.
pub async fn run(mut ws: WebSocket<Upgraded>) {
    while let Some(msg) = ws.recv().await {
        match msg {
            Ok(msg) if msg.is_data() => {
                if let Err(e) = ws.feed(msg).await {
                    tracing::debug!("echo: send failed: {e}");
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("echo: {e}"),
        }
    }
}
