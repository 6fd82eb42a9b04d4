//! One connection to `/files`: a sender that opens (or takes back) a
//! transfer, or a receiver that joins one. Data goes sender → receiver
//! within the receiver's credit window; small replies go back the other way.
//! The messages, close codes, frame header and credit accounting are
//! `duplex_transfer`'s, the same the clients use.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use duplex::{BudgetShare, CloseFrame, MemoryBudget, Message, WebSocket};
use duplex_transfer::limits::MAX_RECEIVER_FRAME;
use duplex_transfer::peer_frame::{self, PEER_HEADER};
use duplex_transfer::{Credit, RelayClose, RelayMessage};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::bridge;
use super::directory::{Directory, Opened};
use super::rooms::{Refusal, Rooms, SenderId};
use crate::endpoint::Peer;
use crate::redis::transfers::Holder;
use crate::signal::Signal;

/// How long a new connection has to say what it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a closing connection waits for the peer's close frame, so that
/// the reason is delivered.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Messages queued for a sender's connection (credit, peer events and
/// receivers' frames, each small).
const SENDER_QUEUE: usize = 256;

/// Serves one connection until it closes or the server shuts down. With
/// a `directory` (nodes sharing transfers), a receiver or returning
/// sender of a transfer another node holds is forwarded there.
pub async fn run<S>(
    mut ws: WebSocket<S>,
    rooms: Arc<Rooms>,
    directory: Option<Arc<Directory>>,
    client: Peer,
    shutdown: Signal,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (hello, first) = match tokio::time::timeout(HELLO_TIMEOUT, ws.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => (RelayMessage::parse(t.as_str()).ok(), Message::Text(t)),
        Ok(Some(Ok(_))) => (None, Message::text("")),
        _ => return,
    };
    let mut connection = Connection {
        ws,
        first,
        rooms,
        directory,
        client,
        shutdown,
    };
    if client.misrouted {
        let refusal = Refusal::new(
            RelayClose::Unreachable,
            "this connection was forwarded to a server that does not hold the transfer (a stale or wrong --advertise-url); try again",
        );
        return refuse(&mut connection.ws, &refusal).await;
    }
    match hello {
        Some(RelayMessage::Create {
            size,
            nameplate,
            token,
        }) => connection.create(size, nameplate.zip(token)).await,
        Some(RelayMessage::Reattach { nameplate, token }) => {
            connection.reattach(nameplate, token).await
        }
        Some(RelayMessage::Join { nameplate }) => connection.join(nameplate).await,
        _ => {
            let malformed = Refusal::new(
                RelayClose::Malformed,
                "the first message must be create, reattach (with nameplate and token) or join (with nameplate)",
            );
            refuse(&mut connection.ws, &malformed).await
        }
    }
}

/// A new connection that said what it is, and what serving it takes.
struct Connection<S> {
    ws: WebSocket<S>,
    /// Its first message, for the node it may be forwarded to.
    first: Message,
    rooms: Arc<Rooms>,
    directory: Option<Arc<Directory>>,
    client: Peer,
    shutdown: Signal,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// A sender opening a transfer, or recreating one the relay forgot
    /// (`again`: its nameplate and token).
    async fn create(mut self, size: u64, again: Option<(u32, String)>) {
        let (tx, rx) = mpsc::channel(SENDER_QUEUE);
        let opened = match &self.directory {
            None => self.rooms.create(size, tx, again).map(Opened::Here),
            Some(directory) => directory.open(&self.rooms, size, tx, again).await,
        };
        match opened {
            Ok(Opened::Here(created)) => {
                sender(self.ws, created, rx, self.rooms, self.shutdown).await
            }
            // A sender recreating its transfer while a live node holds
            // the code: that node answers.
            Ok(Opened::Elsewhere { node, url }) => {
                let directory = self.directory.clone();
                let directory = directory.expect("opened elsewhere through it");
                self.forward(directory, node, url).await
            }
            Err(refusal) => refuse(&mut self.ws, &refusal).await,
        }
    }

    /// A sender taking its transfer back on a new connection.
    async fn reattach(mut self, nameplate: u32, token: String) {
        match self.locate(nameplate).await {
            Ok(Where::There(directory, node, url)) => {
                return self.forward(directory, node, url).await;
            }
            // A holder that stopped renewing is dead or cut off: the
            // sender finds out here (4404) and opens the transfer again.
            Ok(Where::Here | Where::Lapsed) => {}
            Err(refusal) => return refuse(&mut self.ws, &refusal).await,
        }
        let (tx, rx) = mpsc::channel(SENDER_QUEUE);
        match self.rooms.reattach(nameplate, &token, tx) {
            Ok(created) => sender(self.ws, created, rx, self.rooms, self.shutdown).await,
            Err(refusal) => refuse(&mut self.ws, &refusal).await,
        }
    }

    /// A receiver joining a transfer, here or where it is held.
    async fn join(mut self, nameplate: u32) {
        // An address locked out here is not forwarded either.
        if self.rooms.may_try(self.client.address) {
            match self.locate(nameplate).await {
                Ok(Where::There(directory, node, url)) => {
                    return self.forward(directory, node, url).await;
                }
                // Not the receiver's mistake: not counted as a failure.
                Ok(Where::Lapsed) => {
                    let refusal = Refusal::new(
                        RelayClose::Unreachable,
                        "the server holding this transfer stopped answering; trying again until its sender opens it elsewhere",
                    );
                    return refuse(&mut self.ws, &refusal).await;
                }
                Ok(Where::Here) => {}
                Err(refusal) => return refuse(&mut self.ws, &refusal).await,
            }
        }
        self.join_here(nameplate).await
    }

    /// A receiver joining a transfer this node answers for: served until
    /// it leaves.
    async fn join_here(mut self, nameplate: u32) {
        let (tx, rx) = mpsc::unbounded_channel();
        let credit = Arc::new(Credit::new(self.rooms.limits.window as u64));
        match self
            .rooms
            .join(nameplate, self.client.address, tx, credit.clone())
        {
            Ok((peer, to_sender)) => {
                let joined = RelayMessage::PeerJoined { peer };
                if to_sender.send(joined.to_message()).await.is_err() {
                    self.rooms.leave(nameplate, peer);
                    let refusal = Refusal::new(
                        RelayClose::SenderNotConnected,
                        "the sender just left; try again",
                    );
                    return refuse(&mut self.ws, &refusal).await;
                }
                let reply = RelayMessage::Joined {
                    peer,
                    max_frame: self.rooms.limits.max_frame as u64,
                };
                let link = Link {
                    peer,
                    credit,
                    to_sender,
                };
                receiver(self.ws, reply, link, rx, self.shutdown).await;
                self.rooms.leave(nameplate, peer);
            }
            Err(refusal) => refuse(&mut self.ws, &refusal).await,
        }
    }

    /// Where another node holds the transfer, if one does: a connection
    /// another node forwarded is never forwarded again. (`&mut self`
    /// keeps the future `Send`: the socket is not `Sync`.)
    async fn locate(&mut self, nameplate: u32) -> Result<Where, Refusal> {
        let Some(directory) = self.directory.clone().filter(|_| !self.client.forwarded) else {
            return Ok(Where::Here);
        };
        if self.rooms.contains(nameplate) {
            return Ok(Where::Here);
        }
        Ok(match directory.holder(nameplate).await? {
            Holder::Other { url, node } => Where::There(directory, node, url),
            Holder::Lapsed => Where::Lapsed,
            Holder::This | Holder::Nobody => Where::Here,
        })
    }

    /// Carries the connection to `node` (at `url`), which holds its
    /// transfer, unless it cannot get there.
    async fn forward(self, directory: Arc<Directory>, node: String, url: String) {
        let mut ws = self.ws;
        if self.client.forwarded || url.is_empty() {
            let why = if self.client.forwarded {
                format!("node {node} holds this transfer now; try again")
            } else {
                format!(
                    "this transfer is on node {node}, which other nodes cannot reach (it has no --advertise-url)"
                )
            };
            return refuse(&mut ws, &Refusal::new(RelayClose::Unreachable, why)).await;
        }
        let (target, connector) = directory.forward_to(&node, &url, self.client.address);
        bridge::run(ws, self.first, &target, connector, self.shutdown).await
    }
}

/// Where a transfer is, for a connection that names one.
enum Where {
    /// Here, or nowhere (this node answers).
    Here,
    /// On another live node: its name and URL.
    There(Arc<Directory>, String, String),
    /// On a node whose lease ended.
    Lapsed,
}

/// Says why (an `error` message, then the close code) and closes.
pub(super) async fn refuse<S>(ws: &mut WebSocket<S>, refusal: &Refusal)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let error = RelayMessage::Error {
        code: refusal.code.code(),
        message: refusal.reason.clone(),
    };
    let _ = ws.send(error.to_message()).await;
    close(
        ws,
        CloseFrame::new(refusal.code.close_code(), refusal.reason.as_str()),
    )
    .await;
}

/// Closes, then waits (bounded) for the peer's close frame so the reason is
/// delivered.
pub(super) async fn close<S>(ws: &mut WebSocket<S>, frame: CloseFrame)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = ws.close(frame.code, &frame.reason).await;
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(_)) = ws.recv().await {}
    })
    .await;
}

async fn sender<S>(
    mut ws: WebSocket<S>,
    created: super::rooms::Created,
    mut rx: mpsc::Receiver<Message>,
    rooms: Arc<Rooms>,
    shutdown: Signal,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let share = ws.budget_share();
    let reply = RelayMessage::Created {
        nameplate: created.nameplate,
        token: created.token,
        window: rooms.limits.window as u64,
        max_frame: rooms.limits.max_frame as u64,
    };
    let mut connection = SenderConnection {
        ws,
        rooms,
        nameplate: created.nameplate,
        me: created.sender,
        share,
        finished: false,
    };
    if connection.ws.send(reply.to_message()).await.is_ok() {
        connection.serve(&mut rx, &shutdown).await;
    }
    connection.tell_receivers();
}

/// A sender's connection, once its transfer is open.
struct SenderConnection<S> {
    ws: WebSocket<S>,
    rooms: Arc<Rooms>,
    nameplate: u32,
    me: SenderId,
    /// The connection's share of the memory budget (see [`forward`]).
    share: Option<BudgetShare>,
    /// Whether the sender closed saying it finished (else it may come
    /// back).
    finished: bool,
}

impl<S> SenderConnection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Relays between the sender and its receivers (their messages come
    /// through `rx`) until either closes or the server shuts down.
    async fn serve(&mut self, rx: &mut mpsc::Receiver<Message>, shutdown: &Signal) {
        loop {
            let flow = tokio::select! {
                _ = shutdown.fired() => {
                    let _ = self.ws.close(RelayClose::GoingAway.close_code(), "server shutting down").await;
                    ControlFlow::Break(())
                }
                out = rx.recv() => self.deliver(out).await,
                msg = self.ws.recv() => self.on_sender(msg).await,
            };
            if flow.is_break() {
                break;
            }
        }
    }

    /// Delivers a message for the sender; a close (or no more messages)
    /// ends the connection.
    async fn deliver(&mut self, out: Option<Message>) -> ControlFlow<()> {
        match out {
            Some(Message::Close(Some(frame))) => {
                let code = RelayClose::from_code(frame.code.0).unwrap_or(RelayClose::Dropped);
                refuse(&mut self.ws, &Refusal::new(code, frame.reason)).await;
                ControlFlow::Break(())
            }
            Some(out) => {
                if self.ws.send(out).await.is_err() {
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            }
            // A reattach replaced this connection.
            None => {
                let refusal = Refusal::new(
                    RelayClose::SenderAway,
                    "a newer connection of this sender took the transfer over",
                );
                refuse(&mut self.ws, &refusal).await;
                ControlFlow::Break(())
            }
        }
    }

    /// Handles what the sender sent: data for a receiver, or a command.
    async fn on_sender(&mut self, msg: Option<duplex::Result<Message>>) -> ControlFlow<()> {
        match msg {
            Some(Ok(Message::Binary(data))) => {
                let (rooms, share) = (&self.rooms, self.share.as_ref());
                if let Err(refusal) = forward(rooms, self.nameplate, self.me, data, share) {
                    refuse(&mut self.ws, &refusal).await;
                    return ControlFlow::Break(());
                }
            }
            Some(Ok(Message::Text(text))) => {
                let cmd = RelayMessage::parse(text.as_str());
                command(&self.rooms, self.nameplate, self.me, cmd);
            }
            Some(Ok(Message::Close(frame))) => {
                self.finished = frame.is_some_and(|f| f.code == RelayClose::Finished.close_code());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::debug!("transfer sender: {e}");
                return ControlFlow::Break(());
            }
            None => return ControlFlow::Break(()),
        }
        ControlFlow::Continue(())
    }

    /// The sender is gone: its receivers are closed, told whether it
    /// finished or may come back.
    fn tell_receivers(&self) {
        let ended = if self.finished {
            Refusal::new(RelayClose::Finished, "the sender finished")
        } else {
            Refusal::new(
                RelayClose::SenderAway,
                "the sender disconnected; reconnect to resume",
            )
        };
        for slot in self
            .rooms
            .sender_left(self.nameplate, self.me, self.finished)
        {
            let _ = slot.tx.send(ended.to_close());
        }
    }
}

/// A sender's command about one of its receivers. Anything else (a later
/// version's message) is ignored.
fn command(
    rooms: &Rooms,
    nameplate: u32,
    me: SenderId,
    cmd: Result<RelayMessage, serde_json::Error>,
) {
    rooms.with(nameplate, |room| {
        if room.sender.as_ref().is_none_or(|s| s.id != me) {
            return;
        }
        match cmd {
            Ok(RelayMessage::Accept { peer }) => {
                if let Some(slot) = room.receivers.get_mut(&peer) {
                    slot.accepted = true;
                }
            }
            Ok(RelayMessage::Drop { peer, reason }) => {
                let reason: String = reason.chars().take(100).collect();
                if let Some(slot) = room.receivers.get(&peer) {
                    let _ = slot
                        .tx
                        .send(Refusal::new(RelayClose::Dropped, reason).to_close());
                }
            }
            _ => {}
        }
    });
}

/// Queues a sender's binary message for the receiver its header names,
/// within that receiver's credit. What waits in the queue is charged to the
/// sender's share of the memory budget (a large message already is, as it
/// arrived), so a crowd of transfers to slow receivers is bounded in sum.
fn forward(
    rooms: &Rooms,
    nameplate: u32,
    me: SenderId,
    data: Bytes,
    share: Option<&BudgetShare>,
) -> Result<(), Refusal> {
    let Some(peer) = peer_frame::peer_of(&data) else {
        return Err(Refusal::new(
            RelayClose::Malformed,
            "a binary message starts with a 4-byte peer number",
        ));
    };
    rooms
        .with(nameplate, |room| {
            if room.sender.as_ref().is_none_or(|s| s.id != me) {
                return Err(Refusal::new(
                    RelayClose::SenderAway,
                    "a newer connection of this sender took the transfer over",
                ));
            }
            // A receiver that has just left: its data is dropped.
            let Some(slot) = room.receivers.get(&peer) else {
                return Ok(());
            };
            slot.credit
                .try_debit(Credit::cost(&data))
                .map_err(|e| Refusal::new(RelayClose::Overdrawn, e.to_string()))?;
            let message = match share {
                Some(share) if data.len() <= MemoryBudget::LARGE_MESSAGE => {
                    let charge = share.charge(data.len());
                    Message::Binary(data).hold_with(charge)
                }
                _ => Message::Binary(data),
            };
            let _ = slot.tx.send(message);
            Ok(())
        })
        .unwrap_or(Ok(()))
}

/// A receiver's way back to its sender.
struct Link {
    peer: u32,
    credit: Arc<Credit>,
    to_sender: mpsc::Sender<Message>,
}

async fn receiver<S>(
    mut ws: WebSocket<S>,
    reply: RelayMessage,
    link: Link,
    mut rx: mpsc::UnboundedReceiver<Message>,
    shutdown: Signal,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if ws.send(reply.to_message()).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.fired() => {
                let _ = ws.close(RelayClose::GoingAway.close_code(), "server shutting down").await;
                break;
            }
            Some(out) = rx.recv() => match out {
                Message::Close(frame) => {
                    let frame = frame.unwrap_or_else(|| CloseFrame::new(RelayClose::Finished.close_code(), ""));
                    close(&mut ws, frame).await;
                    break;
                }
                out => {
                    let bytes = out.len() as u64;
                    if ws.send(out).await.is_err() {
                        break;
                    }
                    if let Err(e) = link.credit.grant(bytes) {
                        tracing::error!("transfer relay: {e}");
                    }
                    let credit = RelayMessage::Credit { peer: link.peer, bytes };
                    let _ = link.to_sender.send(credit.to_message()).await;
                }
            },
            msg = ws.recv() => match msg {
                Some(Ok(Message::Binary(data))) => {
                    if data.len() < PEER_HEADER || data.len() > MAX_RECEIVER_FRAME {
                        let refusal = Refusal::new(
                            RelayClose::Malformed,
                            format!("receiver messages are {PEER_HEADER}..{MAX_RECEIVER_FRAME} bytes"),
                        );
                        refuse(&mut ws, &refusal).await;
                        break;
                    }
                    let out = peer_frame::readdress(&data, link.peer);
                    if link.to_sender.send(Message::Binary(out)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!("transfer receiver: {e}");
                    break;
                }
            },
        }
    }
    let left = RelayMessage::PeerLeft { peer: link.peer };
    let _ = tokio::time::timeout(HELLO_TIMEOUT, link.to_sender.send(left.to_message())).await;
}
