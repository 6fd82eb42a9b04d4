//! Duplex on a raw `TcpStream` with `duplex::accept`: replies to one read
//! are queued with `feed` and leave in one write when `recv` next waits.

use tokio::io::{AsyncRead, AsyncWrite};

pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let Ok(mut ws) = duplex::accept(stream).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.recv().await {
        if msg.is_data() && ws.feed(msg).await.is_err() {
            return;
        }
    }
}
