//! One connection to `/files`: a sender that opens (or takes back) a
//! transfer, or a receiver that joins one. Data goes sender → receiver
//! within the receiver's credit window; small replies go back the other way.
//! The messages, close codes, frame header and credit accounting are
//! `duplex_transfer`'s, the same the clients use.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use duplex::{BudgetShare, CloseFrame, MemoryBudget, Message, WebSocket};
use duplex_transfer::limits::MAX_RECEIVER_FRAME;
use duplex_transfer::peer_frame::{self, PEER_HEADER};
use duplex_transfer::{Credit, RelayClose, RelayMessage};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::bridge;
use super::directory::{Directory, Opened};
use super::rooms::{Refusal, Rooms, SenderId};
use crate::endpoint::Peer;
use crate::redis::transfers::Holder;

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
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (hello, text) = match tokio::time::timeout(HELLO_TIMEOUT, ws.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => (RelayMessage::parse(t.as_str()).ok(), Message::Text(t)),
        Ok(Some(Ok(_))) => (None, Message::text("")),
        _ => return,
    };
    let malformed = || {
        Refusal::new(
            RelayClose::Malformed,
            "the first message must be create, reattach (with nameplate and token) or join (with nameplate)",
        )
    };
    if client.misrouted {
        let refusal = Refusal::new(
            RelayClose::Unreachable,
            "this connection was forwarded to a server that does not hold the transfer (a stale or wrong --advertise-url); try again",
        );
        return refuse(&mut ws, &refusal).await;
    }
    // Where another node holds the transfer, if one does: a connection
    // another node forwarded is never forwarded again.
    let elsewhere = |nameplate: u32| {
        let (rooms, directory) = (rooms.clone(), directory.clone());
        async move {
            let Some(directory) = directory.filter(|_| !client.forwarded) else {
                return Ok(Where::Here);
            };
            if rooms.contains(nameplate) {
                return Ok(Where::Here);
            }
            Ok(match directory.holder(nameplate).await? {
                Holder::Other { url, node } => Where::There(directory, node, url),
                Holder::Lapsed => Where::Lapsed,
                Holder::This | Holder::Nobody => Where::Here,
            })
        }
    };
    let forward = |ws: WebSocket<S>, directory: Arc<Directory>, node: String, url: String| {
        let shutdown = shutdown.clone();
        async move {
            let mut ws = ws;
            if client.forwarded || url.is_empty() {
                let why = if client.forwarded {
                    format!("node {node} holds this transfer now; try again")
                } else {
                    format!(
                        "this transfer is on node {node}, which other nodes cannot reach (it has no --advertise-url)"
                    )
                };
                return refuse(&mut ws, &Refusal::new(RelayClose::Unreachable, why)).await;
            }
            let (target, connector) = directory.forward_to(&node, &url, client.address);
            bridge::run(ws, text, &target, connector, shutdown).await
        }
    };
    match hello {
        Some(RelayMessage::Create {
            size,
            nameplate,
            token,
        }) => {
            let (tx, rx) = mpsc::channel(SENDER_QUEUE);
            let again = nameplate.zip(token);
            let opened = match &directory {
                None => rooms.create(size, tx, again).map(Opened::Here),
                Some(directory) => directory.open(&rooms, size, tx, again).await,
            };
            match opened {
                Ok(Opened::Here(created)) => sender(ws, created, rx, rooms, shutdown).await,
                // A sender recreating its transfer while a live node holds
                // the code: that node answers.
                Ok(Opened::Elsewhere { node, url }) => {
                    let directory = directory.expect("opened elsewhere through it");
                    forward(ws, directory, node, url).await
                }
                Err(refusal) => refuse(&mut ws, &refusal).await,
            }
        }
        Some(RelayMessage::Reattach { nameplate, token }) => {
            match elsewhere(nameplate).await {
                Ok(Where::There(directory, node, url)) => {
                    return forward(ws, directory, node, url).await;
                }
                // A holder that stopped renewing is dead or cut off: the
                // sender finds out here (4404) and opens the transfer again.
                Ok(Where::Here | Where::Lapsed) => {}
                Err(refusal) => return refuse(&mut ws, &refusal).await,
            }
            let (tx, rx) = mpsc::channel(SENDER_QUEUE);
            match rooms.reattach(nameplate, &token, tx) {
                Ok(created) => sender(ws, created, rx, rooms, shutdown).await,
                Err(refusal) => refuse(&mut ws, &refusal).await,
            }
        }
        Some(RelayMessage::Join { nameplate }) => {
            // An address locked out here is not forwarded either.
            if rooms.may_try(client.address) {
                match elsewhere(nameplate).await {
                    Ok(Where::There(directory, node, url)) => {
                        return forward(ws, directory, node, url).await;
                    }
                    // Not the receiver's mistake: not counted as a failure.
                    Ok(Where::Lapsed) => {
                        let refusal = Refusal::new(
                            RelayClose::Unreachable,
                            "the server holding this transfer stopped answering; trying again until its sender opens it elsewhere",
                        );
                        return refuse(&mut ws, &refusal).await;
                    }
                    Ok(Where::Here) => {}
                    Err(refusal) => return refuse(&mut ws, &refusal).await,
                }
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let credit = Arc::new(Credit::new(rooms.limits.window as u64));
            match rooms.join(nameplate, client.address, tx, credit.clone()) {
                Ok((peer, to_sender)) => {
                    let joined = RelayMessage::PeerJoined { peer };
                    if to_sender.send(joined.to_message()).await.is_err() {
                        rooms.leave(nameplate, peer);
                        let refusal = Refusal::new(
                            RelayClose::SenderNotConnected,
                            "the sender just left; try again",
                        );
                        return refuse(&mut ws, &refusal).await;
                    }
                    let reply = RelayMessage::Joined {
                        peer,
                        max_frame: rooms.limits.max_frame as u64,
                    };
                    let link = Link {
                        peer,
                        credit,
                        to_sender,
                    };
                    receiver(ws, reply, link, rx, shutdown).await;
                    rooms.leave(nameplate, peer);
                }
                Err(refusal) => refuse(&mut ws, &refusal).await,
            }
        }
        _ => refuse(&mut ws, &malformed()).await,
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
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (nameplate, me) = (created.nameplate, created.sender);
    let share = ws.budget_share();
    let reply = RelayMessage::Created {
        nameplate,
        token: created.token,
        window: rooms.limits.window as u64,
        max_frame: rooms.limits.max_frame as u64,
    };
    let mut finished = false;
    if ws.send(reply.to_message()).await.is_ok() {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = ws.close(RelayClose::GoingAway.close_code(), "server shutting down").await;
                    break;
                }
                out = rx.recv() => match out {
                    Some(Message::Close(Some(frame))) => {
                        let code = RelayClose::from_code(frame.code.0).unwrap_or(RelayClose::Dropped);
                        refuse(&mut ws, &Refusal::new(code, frame.reason)).await;
                        break;
                    }
                    Some(out) => {
                        if ws.send(out).await.is_err() {
                            break;
                        }
                    }
                    // A reattach replaced this connection.
                    None => {
                        let refusal = Refusal::new(
                            RelayClose::SenderAway,
                            "a newer connection of this sender took the transfer over",
                        );
                        refuse(&mut ws, &refusal).await;
                        break;
                    }
                },
                msg = ws.recv() => match msg {
                    Some(Ok(Message::Binary(data))) => {
                        if let Err(refusal) = forward(&rooms, nameplate, me, data, share.as_ref()) {
                            refuse(&mut ws, &refusal).await;
                            break;
                        }
                    }
                    Some(Ok(Message::Text(text))) => {
                        command(&rooms, nameplate, me, RelayMessage::parse(text.as_str()));
                    }
                    Some(Ok(Message::Close(frame))) => {
                        finished = frame.is_some_and(|f| f.code == RelayClose::Finished.close_code());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!("transfer sender: {e}");
                        break;
                    }
                    None => break,
                },
            }
        }
    }
    let ended = if finished {
        Refusal::new(RelayClose::Finished, "the sender finished")
    } else {
        Refusal::new(
            RelayClose::SenderAway,
            "the sender disconnected; reconnect to resume",
        )
    };
    for slot in rooms.sender_left(nameplate, me, finished) {
        let _ = slot.tx.send(ended.to_close());
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
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if ws.send(reply.to_message()).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
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
