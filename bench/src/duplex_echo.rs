//! Duplex on a raw `TcpStream` with `duplex::accept`: the messages already
//! whole in the read buffer are echoed at once (`echo_buffered`), the next
//! one is received borrowed (`recv_ref`); echoes are queued from the read
//! buffer and leave in one write when the socket next waits.
//!
//! Written for a small task, since an idle connection costs little more
//! than its task: see the comments below (rustc keeps every local that lives
//! across two `.await`s in space that no other `.await` may reuse).

use duplex::WebSocket;
use tokio::io::{AsyncRead, AsyncWrite};

pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    // The handshake and the echo loop are two futures awaited in turn, so
    // they share the same bytes of this one.
    let ws = match duplex::accept(stream).await {
        Ok(ws) => ws,
        Err(_) => return,
    };
    echo(ws).await;
}

/// Not an `async fn`: one of those would copy its argument into a second
/// slot; the `async move` block uses the captured socket in place.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) -> impl Future<Output = ()> {
    async move {
        loop {
            ws.echo_buffered();
            // The message goes to `feed` inside this block, so no slot for it
            // outlives the block: across either `.await` the future holds the
            // socket and one pointer-sized future.
            let queued = {
                // Borrowed, not owned: a small message stays in the read
                // buffer and is copied once, straight to the output.
                let Some(Ok(received)) = ws.recv_ref().await else {
                    return;
                };
                if !received.message().is_data() {
                    continue;
                }
                received.echo()
            };
            if queued.await.is_err() {
                return;
            }
        }
    }
}
