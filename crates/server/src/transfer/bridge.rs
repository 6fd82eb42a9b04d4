//! Forwarding a `/files` connection to the node that holds its transfer
//! ([`super::directory`]): the first message again, then every message
//! both ways, as it is, until either side closes.
//!
//! Nothing is decided here: the holding node's relay counts each
//! receiver's credit and answers every message, exactly as for a client
//! connected to it. The bridge holds at most one socket's write buffer
//! each way ([`duplex::Config::write_buffer_limit`]): it stops reading a
//! side while the other side's buffer is full, so a slow receiver slows
//! its sender through the bridge as it would directly.

use std::time::Duration;

use duplex::{ClientBuilder, CloseFrame, Message, WebSocket};
use duplex_transfer::RelayClose;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::relay::{close, refuse};
use super::rooms::Refusal;

/// How long one side's close may take once the other side closed.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Carries `client`'s connection, whose first message was `hello`, to
/// `target` (the holding node's `/files`) opened with `connector`.
pub async fn run<S>(
    mut client: WebSocket<S>,
    hello: Message,
    target: &str,
    connector: ClientBuilder,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut node = match connector.connect(target).await {
        Ok(node) => node,
        Err(e) => {
            let refusal = Refusal::new(
                RelayClose::Unreachable,
                format!(
                    "the server holding this transfer cannot be reached ({e}); try again shortly"
                ),
            );
            return refuse(&mut client, &refusal).await;
        }
    };
    if node.send(hello).await.is_err() {
        let refusal = Refusal::new(
            RelayClose::Unreachable,
            "the server holding this transfer closed the connection; try again shortly",
        );
        return refuse(&mut client, &refusal).await;
    }
    let limit = |ws_limit: usize| ws_limit.max(1);
    let (client_limit, node_limit) = (
        limit(client.config().write_buffer_limit),
        limit(node.config().write_buffer_limit),
    );
    let dropped = || {
        CloseFrame::new(
            RelayClose::GoingAway.close_code(),
            "the client's connection dropped",
        )
    };
    loop {
        // A side whose write buffer is full is only written to until it
        // has room; the other side is not read meanwhile.
        let node_full = node.buffered_amount() >= node_limit;
        let client_full = client.buffered_amount() >= client_limit;
        tokio::select! {
            _ = shutdown.cancelled() => {
                let reason = "server shutting down";
                let code = RelayClose::GoingAway.close_code();
                let _ = tokio::join!(
                    close(&mut client, CloseFrame::new(code, reason)),
                    close(&mut node, CloseFrame::new(code, reason)),
                );
                return;
            }
            step = step(&mut client, !node_full, client_full) => match step {
                Step::Received(Some(Ok(Message::Close(frame)))) => {
                    // The client ended: the holder hears it as the client
                    // said it (a close without a code is not `finished`).
                    let frame = frame.unwrap_or_else(|| CloseFrame::new(RelayClose::GoingAway.close_code(), ""));
                    let _ = tokio::join!(close(&mut node, frame), drain(&mut client));
                    return;
                }
                Step::Received(Some(Ok(message @ (Message::Text(_) | Message::Binary(_))))) => {
                    if node.feed(message).await.is_err() {
                        return lost(&mut client).await;
                    }
                }
                Step::Received(Some(Ok(_))) | Step::Flushed(Ok(())) => {}
                // Gone without a close: the holder sees a drop, not an end.
                Step::Received(Some(Err(_)) | None) | Step::Flushed(Err(_)) => {
                    return close(&mut node, dropped()).await;
                }
            },
            step = step(&mut node, !client_full, node_full) => match step {
                Step::Received(Some(Ok(Message::Close(frame)))) => {
                    // Without a code it is not `finished`: the client
                    // tries again, as it would directly.
                    let frame = frame.unwrap_or_else(|| CloseFrame::new(RelayClose::GoingAway.close_code(), ""));
                    let _ = tokio::join!(close(&mut client, frame), drain(&mut node));
                    return;
                }
                Step::Received(Some(Ok(message @ (Message::Text(_) | Message::Binary(_))))) => {
                    if client.feed(message).await.is_err() {
                        return close(&mut node, dropped()).await;
                    }
                }
                Step::Received(Some(Ok(_))) | Step::Flushed(Ok(())) => {}
                Step::Received(Some(Err(_)) | None) | Step::Flushed(Err(_)) => {
                    return lost(&mut client).await;
                }
            },
        }
    }
}

/// What one side of the bridge did.
enum Step {
    /// It received this.
    Received(Option<duplex::Result<Message>>),
    /// Its write buffer was written out.
    Flushed(duplex::Result<()>),
}

/// One side's next step: write its buffer out if it is `full`, else
/// receive if the other side has room (`read`), else nothing.
async fn step<S>(ws: &mut WebSocket<S>, read: bool, full: bool) -> Step
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if full {
        Step::Flushed(ws.flush().await)
    } else if read {
        Step::Received(ws.recv().await)
    } else {
        std::future::pending().await
    }
}

/// The holding node went away mid-transfer: the client tries again (its
/// sender opens the transfer elsewhere if that node died).
async fn lost<S>(client: &mut WebSocket<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let refusal = Refusal::new(
        RelayClose::Unreachable,
        "lost the connection to the server holding this transfer; try again shortly",
    );
    refuse(client, &refusal).await;
}

/// Completes a closing handshake the peer started (bounded).
async fn drain<S>(ws: &mut WebSocket<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = ws.recv().await {}
    })
    .await;
}
