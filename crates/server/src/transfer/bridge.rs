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

use std::ops::ControlFlow;
use std::time::Duration;

use duplex::{ClientBuilder, CloseFrame, MaybeTlsStream, Message, WebSocket};
use duplex_transfer::RelayClose;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::signal::Signal;

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
    shutdown: Signal,
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
    let mut bridge = Bridge {
        client_limit: limit(client.config().write_buffer_limit),
        node_limit: limit(node.config().write_buffer_limit),
        client,
        node,
    };
    bridge.carry(&shutdown).await;
}

/// The two sides of a bridge, and how much each may hold unsent.
struct Bridge<S> {
    /// The connection that came here.
    client: WebSocket<S>,
    /// The connection to the holding node.
    node: WebSocket<MaybeTlsStream>,
    client_limit: usize,
    node_limit: usize,
}

impl<S> Bridge<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Carries messages both ways until either side closes or the server
    /// shuts down.
    async fn carry(&mut self, shutdown: &Signal) {
        loop {
            // A side whose write buffer is full is only written to until it
            // has room; the other side is not read meanwhile.
            let node_full = self.node.buffered_amount() >= self.node_limit;
            let client_full = self.client.buffered_amount() >= self.client_limit;
            let flow = tokio::select! {
                _ = shutdown.fired() => {
                    self.shut_down().await;
                    ControlFlow::Break(())
                }
                step = step(&mut self.client, !node_full, client_full) => self.on_client(step).await,
                step = step(&mut self.node, !client_full, node_full) => self.on_node(step).await,
            };
            if flow.is_break() {
                return;
            }
        }
    }

    /// Closes both sides: the server is shutting down.
    async fn shut_down(&mut self) {
        let reason = "server shutting down";
        let code = RelayClose::GoingAway.close_code();
        let _ = tokio::join!(
            close(&mut self.client, CloseFrame::new(code, reason)),
            close(&mut self.node, CloseFrame::new(code, reason)),
        );
    }

    /// Passes on what the client did to the node.
    async fn on_client(&mut self, step: Step) -> ControlFlow<()> {
        match step {
            Step::Received(Some(Ok(Message::Close(frame)))) => {
                // The client ended: the holder hears it as the client
                // said it (a close without a code is not `finished`).
                let frame = frame
                    .unwrap_or_else(|| CloseFrame::new(RelayClose::GoingAway.close_code(), ""));
                let _ = tokio::join!(close(&mut self.node, frame), drain(&mut self.client));
                ControlFlow::Break(())
            }
            Step::Received(Some(Ok(message @ (Message::Text(_) | Message::Binary(_))))) => {
                if self.node.feed(message).await.is_err() {
                    lost(&mut self.client).await;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            }
            Step::Received(Some(Ok(_))) | Step::Flushed(Ok(())) => ControlFlow::Continue(()),
            // Gone without a close: the holder sees a drop, not an end.
            Step::Received(Some(Err(_)) | None) | Step::Flushed(Err(_)) => {
                close(&mut self.node, dropped()).await;
                ControlFlow::Break(())
            }
        }
    }

    /// Passes on what the node did to the client.
    async fn on_node(&mut self, step: Step) -> ControlFlow<()> {
        match step {
            Step::Received(Some(Ok(Message::Close(frame)))) => {
                // Without a code it is not `finished`: the client
                // tries again, as it would directly.
                let frame = frame
                    .unwrap_or_else(|| CloseFrame::new(RelayClose::GoingAway.close_code(), ""));
                let _ = tokio::join!(close(&mut self.client, frame), drain(&mut self.node));
                ControlFlow::Break(())
            }
            Step::Received(Some(Ok(message @ (Message::Text(_) | Message::Binary(_))))) => {
                if self.client.feed(message).await.is_err() {
                    close(&mut self.node, dropped()).await;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            }
            Step::Received(Some(Ok(_))) | Step::Flushed(Ok(())) => ControlFlow::Continue(()),
            Step::Received(Some(Err(_)) | None) | Step::Flushed(Err(_)) => {
                lost(&mut self.client).await;
                ControlFlow::Break(())
            }
        }
    }
}

/// The close the holder gets when the client went without one.
fn dropped() -> CloseFrame {
    CloseFrame::new(
        RelayClose::GoingAway.close_code(),
        "the client's connection dropped",
    )
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
