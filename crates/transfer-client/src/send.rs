//! `duplex send`: announce a transfer, print its code, and serve every
//! receiver that joins with it — key exchange, manifest, then the chunks
//! each one is missing, within the relay's credit — until the wanted
//! number of receivers are done. A dropped relay connection is reopened
//! (with backoff) under the same code.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::BytesMut;
use duplex::Message;
use duplex_transfer::channel::Channel;
use duplex_transfer::control::Control;
use duplex_transfer::digest::{DIGEST, FileDigest, chunk_count};
use duplex_transfer::peer_frame::{self, CHUNK_OVERHEAD};
use duplex_transfer::seal::{Direction, Handshake};
use duplex_transfer::{Credit, Kind, PeerFrame, RelayClose, RelayMessage};
use std::io::{Read, Seek};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::link::{self, Link};
use crate::manifest::{self, Source};
use crate::{Events, SendEvent, SendOptions, backoff};

type Reporter = Events<SendEvent>;

/// Files and folders in one transfer: the receiver's `have` message (a
/// number per entry) must fit the relay's limit on receiver frames.
const MAX_ENTRIES: usize = 2000;
/// Reconnects in a row without any receiver making progress before the
/// sender gives up.
const MAX_FAILURES: u32 = 8;
/// A receiver whose message is being handled is in [`Sender::peers`].
const SERVED: &str = "the receiver being served";

/// Runs `duplex send`.
pub async fn run(args: SendOptions, reporter: Reporter) -> anyhow::Result<()> {
    let sources = collect(&args.paths, &reporter).await?;
    let total: u64 = sources.iter().map(|s| s.entry.size).sum();
    let url = link::relay_url(&args.server)?;
    let mut link = link::connect(&url).await?;
    let words = crate::words::pick_two();
    let create = RelayMessage::Create {
        size: total,
        nameplate: None,
        token: None,
    };
    link.tx.send(create.to_message()).await?;
    let created = expect_created(&mut link).await?;
    let chunk_size = duplex_transfer::limits::chunk_size(created.max_frame);
    check_manifest_fits(&mut link, &sources, chunk_size as u64, &created).await?;
    let code = format!("{}-{words}", created.nameplate);
    reporter.emit(SendEvent::Code {
        code: code.clone(),
        files: sources.iter().filter(|s| !s.entry.dir).count(),
        bytes: total,
    });
    let (stop_tx, stop_rx) = mpsc::unbounded_channel();
    let mut sender = Sender {
        stop_tx,
        stop_rx,
        digests: Arc::new(Digests::new(sources.len())),
        sources: Arc::new(sources),
        chunk_size: chunk_size as u64,
        code,
        window: created.window,
        reporter,
        done: 0,
        want: args.receivers.max(1),
        peers: HashMap::new(),
        done_receivers: Default::default(),
        progressed: false,
    };
    let relay = Relay {
        url,
        total,
        created,
        failures: 0,
    };
    sender.serve(link, relay).await
}

/// The files and folders under `paths`, hashed; an error when there are
/// none, or more than one transfer carries.
async fn collect(paths: &[std::path::PathBuf], reporter: &Reporter) -> anyhow::Result<Vec<Source>> {
    let paths = paths.to_vec();
    let skipped = reporter.clone();
    let sources = tokio::task::spawn_blocking(move || {
        manifest::collect(&paths, &mut |path, why| {
            skipped.emit(SendEvent::Skipped {
                path: path.display().to_string(),
                why: why.to_owned(),
            })
        })
    })
    .await
    .context("hashing the files")??;
    if sources.is_empty() {
        bail!("nothing to send: no regular files or folders among the paths given");
    }
    if sources.len() > MAX_ENTRIES {
        bail!(
            "{} files and folders is more than one transfer carries ({MAX_ENTRIES}); send an archive (tar) or fewer folders at a time",
            sources.len()
        );
    }
    Ok(sources)
}

/// The manifest every receiver gets.
fn manifest_of(sources: &[Source], chunk_size: u64) -> Control {
    Control::Manifest {
        entries: sources.iter().map(|s| s.entry.clone()).collect(),
        chunk_size,
        bye: true,
    }
}

/// The manifest travels in one frame, which must fit the relay's frame
/// and window: say so now rather than fail every receiver later.
async fn check_manifest_fits(
    link: &mut Link,
    sources: &[Source],
    chunk_size: u64,
    created: &Created,
) -> anyhow::Result<()> {
    let manifest = manifest_of(sources, chunk_size);
    let largest = created.max_frame.min(created.window as usize);
    let manifest_len = Channel::sealed_len(&manifest);
    if manifest_len > largest {
        // The relay lets go of the transfer now rather than keep it for a
        // reattach.
        link.finish("the file list is too large for this relay")
            .await;
        bail!(
            "the list of {} files and folders takes {manifest_len} bytes, more than this relay carries in one message ({largest} bytes, set by its --transfer-window); send fewer files at a time, or an archive (tar)",
            sources.len()
        );
    }
    Ok(())
}

/// The transfer on the relay, and what it takes to open it again after
/// the connection dropped.
struct Relay {
    url: String,
    /// Bytes in the transfer.
    total: u64,
    /// The relay's first answer: the code, and the limits chunks are
    /// sized for.
    created: Created,
    /// Reconnects in a row without any receiver making progress.
    failures: u32,
}

impl Relay {
    /// A new connection to the transfer after `last` broke the previous
    /// one, tried with backoff; an error once reconnecting kept failing, or
    /// the relay refused for good.
    async fn reconnect(
        &mut self,
        mut last: anyhow::Error,
        reporter: &Reporter,
    ) -> anyhow::Result<Link> {
        loop {
            self.failures += 1;
            if self.failures > MAX_FAILURES {
                return Err(last.context("the relay connection kept failing; giving up"));
            }
            let delay = backoff(self.failures);
            reporter.emit(SendEvent::Reconnect {
                error: format!("{last:#}"),
                delay_ms: delay.as_millis() as u64,
            });
            tokio::time::sleep(delay).await;
            match reopen(&self.url, self.total, &self.created).await {
                Ok(l) => return Ok(l),
                Err(e) if Refused::is_final(&e) => return Err(e),
                Err(e) => last = e,
            }
        }
    }
}

/// Takes the transfer back on a new connection: `reattach`, or, when the
/// relay forgot the transfer (it restarted), `create` under the same
/// nameplate and token, which the receivers already have.
async fn reopen(url: &str, total: u64, created: &Created) -> anyhow::Result<Link> {
    let open = |hello: RelayMessage| async move {
        let mut l = link::connect(url).await?;
        l.tx.send(hello.to_message()).await?;
        let again = expect_created(&mut l).await?;
        // Chunks are sized, and credit counted, for the first answer.
        if (again.window, again.max_frame) != (created.window, created.max_frame) {
            let why = format!(
                "the relay came back with other limits (a window of {} bytes and frames of {}, was {} and {}); run duplex send again",
                again.window, again.max_frame, created.window, created.max_frame
            );
            return Err(Refused::for_good(why, RelayClose::Malformed));
        }
        anyhow::Ok(l)
    };
    let reattach = RelayMessage::Reattach {
        nameplate: created.nameplate,
        token: created.token.clone(),
    };
    match open(reattach).await {
        Err(e) if Refused::is(&e, RelayClose::NotFound) => {
            let recreate = RelayMessage::Create {
                size: total,
                nameplate: Some(created.nameplate),
                token: Some(created.token.clone()),
            };
            match open(recreate).await {
                // Another transfer took the code while the relay had
                // forgotten ours: waiting will not give it back.
                Err(e) if Refused::is(&e, RelayClose::SenderNotConnected) => {
                    let why = format!("{e:#}; start a new transfer (a new code)");
                    Err(Refused::for_good(why, RelayClose::SenderNotConnected))
                }
                other => other,
            }
        }
        other => other,
    }
}

/// The relay refused us: the reason, the close code, and whether for good
/// (else the sender tries again later).
#[derive(Debug)]
pub struct Refused {
    why: String,
    close: RelayClose,
    for_good: bool,
}

impl Refused {
    fn for_good(why: String, close: RelayClose) -> anyhow::Error {
        Self {
            why,
            close,
            for_good: true,
        }
        .into()
    }

    /// Whether `e` is a refusal with this close code.
    fn is(e: &anyhow::Error, close: RelayClose) -> bool {
        e.downcast_ref::<Self>().is_some_and(|r| r.close == close)
    }

    /// Whether `e` is a refusal for good.
    fn is_final(e: &anyhow::Error) -> bool {
        e.downcast_ref::<Self>().is_some_and(|r| r.for_good)
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

impl std::error::Error for Refused {}

/// A file could not be sent as it was announced (it changed, or reading
/// it failed): every receiver would fail on it, so the sender stops
/// instead of waiting for receivers that cannot finish.
#[derive(Debug)]
struct SourceFailed(anyhow::Error);

impl std::fmt::Display for SourceFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for SourceFailed {}

struct Created {
    nameplate: u32,
    token: String,
    window: u64,
    max_frame: usize,
}

async fn expect_created(link: &mut Link) -> anyhow::Result<Created> {
    let reply = tokio::time::timeout(Duration::from_secs(30), link.reader.recv())
        .await
        .context("the relay did not answer within 30 s")?;
    let reply = match reply {
        Some(Ok(Message::Text(t))) => RelayMessage::parse(t.as_str()).context(
            "the relay sent something that is not a relay message; is --server a Duplex relay?",
        )?,
        Some(Ok(other)) => {
            bail!("the relay sent {other:?} instead of a reply; is --server a Duplex relay?")
        }
        Some(Err(e)) => return Err(e).context("the relay connection failed"),
        None => bail!("the relay closed the connection"),
    };
    match reply {
        RelayMessage::Created {
            nameplate,
            token,
            window,
            max_frame,
        } => Ok(Created {
            nameplate,
            token,
            window,
            max_frame: max_frame as usize,
        }),
        RelayMessage::Error { code, message } => {
            let why = format!("the relay refused: {message} (code {code})");
            match RelayClose::from_code(code) {
                Some(close) => Err(Refused {
                    why,
                    close,
                    for_good: close.is_final(),
                }
                .into()),
                None => bail!(why),
            }
        }
        other => bail!("the relay answered {other:?} instead of created"),
    }
}

enum State {
    Handshaking(Handshake),
    Confirming(Channel),
    Ready(Channel),
}

struct Peer {
    state: Option<State>,
    /// This receiver's window, counted as the relay counts it.
    credit: Arc<Credit>,
    retries: mpsc::UnboundedSender<(u32, u64)>,
    retries_rx: Option<mpsc::UnboundedReceiver<(u32, u64)>>,
    pump: Option<JoinHandle<()>>,
}

struct Sender {
    sources: Arc<Vec<Source>>,
    digests: Arc<Digests>,
    chunk_size: u64,
    code: String,
    window: u64,
    reporter: Reporter,
    done: usize,
    want: usize,
    peers: HashMap<u32, Peer>,
    /// The receivers (by their run's id) whose `Done` was counted.
    done_receivers: std::collections::HashSet<String>,
    /// Whether a receiver got anything since the last reconnect.
    progressed: bool,
    /// Pumps report a [`SourceFailed`] here; it ends the session.
    stop_tx: mpsc::UnboundedSender<SourceFailed>,
    stop_rx: mpsc::UnboundedReceiver<SourceFailed>,
}

/// Sends a control frame to `peer`, within its credit. Control frames
/// are small and sent before any chunk, so they fit; one that does not is
/// an error for this receiver (a manifest larger than the relay's window).
async fn send_control(link: &Link, peer: &Peer, frame: Message) -> anyhow::Result<()> {
    peer.credit
        .try_debit(Credit::cost(frame.as_bytes()))
        .context("a control message does not fit the relay's window")?;
    link.tx
        .send(frame)
        .await
        .context("the relay connection closed")
}

impl Sender {
    fn wrong_code(&self, peer: u32) {
        self.reporter.emit(SendEvent::WrongCode { peer });
    }

    fn drop_peers(&mut self) {
        for (_, peer) in self.peers.drain() {
            if let Some(pump) = peer.pump {
                pump.abort();
            }
        }
    }

    /// Serves receivers through `link`, and through a new connection
    /// whenever it drops, until enough are done.
    async fn serve(&mut self, mut link: Link, mut relay: Relay) -> anyhow::Result<()> {
        loop {
            let e = match self.session(&mut link).await {
                Ok(()) => break,
                Err(e) if Refused::is_final(&e) => return Err(e),
                Err(e) if e.is::<SourceFailed>() => {
                    // Every receiver would meet the same file: end the
                    // transfer for all of them, with why.
                    link.finish(&format!("{e:#}")).await;
                    return Err(e);
                }
                Err(e) => e,
            };
            // Let go of the broken connection at once (the relay may not have
            // noticed yet), and of every receiver served through it: they join
            // again through the new one.
            drop(link);
            self.drop_peers();
            if std::mem::take(&mut self.progressed) {
                relay.failures = 0;
            }
            link = relay.reconnect(e, &self.reporter).await?;
        }
        link.finish("transfer complete").await;
        Ok(())
    }
    /// Serves receivers until enough are done (`Ok`) or the connection
    /// drops (`Err`).
    async fn session(&mut self, link: &mut Link) -> anyhow::Result<()> {
        loop {
            let next = tokio::select! {
                next = link.reader.recv() => next,
                Some(failed) = self.stop_rx.recv() => return Err(failed.into()),
            };
            let msg = match next {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => return Err(e).context("the relay connection failed"),
                None => bail!("the relay closed the connection"),
            };
            match msg {
                Message::Text(text) => {
                    // A later version's message: ignore it.
                    let Ok(msg) = RelayMessage::parse(text.as_str()) else {
                        continue;
                    };
                    self.on_relay(link, msg).await?;
                }
                Message::Binary(data) => {
                    let Some(frame) = PeerFrame::parse(&data) else {
                        continue;
                    };
                    if self.on_peer(link, frame).await? {
                        return Ok(());
                    }
                }
                Message::Close(frame) => {
                    let (code, reason) = frame.map(|f| (f.code.0, f.reason)).unwrap_or_default();
                    let why = format!("the relay ended the transfer: {reason} (close code {code})");
                    return match RelayClose::from_code(code) {
                        // The relay forgot us (restarted) is handled by
                        // reopening; every other final code is for good.
                        Some(close) if close.is_final() && close != RelayClose::NotFound => {
                            Err(Refused::for_good(why, close))
                        }
                        _ => bail!("the relay closed the connection: {reason} (close code {code})"),
                    };
                }
                _ => {}
            }
        }
    }

    /// Handles one message from the relay itself.
    async fn on_relay(&mut self, link: &Link, msg: RelayMessage) -> anyhow::Result<()> {
        match msg {
            RelayMessage::PeerJoined { peer } => {
                let (hs, msg) = Handshake::start(&self.code);
                let (tx, rx) = mpsc::unbounded_channel();
                let p = Peer {
                    state: Some(State::Handshaking(hs)),
                    credit: Arc::new(Credit::new(self.window)),
                    retries: tx,
                    retries_rx: Some(rx),
                    pump: None,
                };
                let pake = Message::Binary(peer_frame::encode(peer, Kind::Pake, &[&msg]));
                send_control(link, &p, pake).await?;
                self.peers.insert(peer, p);
            }
            RelayMessage::PeerLeft { peer } => {
                let Some(p) = self.peers.remove(&peer) else {
                    return Ok(());
                };
                if let Some(pump) = p.pump {
                    pump.abort();
                }
                if matches!(p.state, Some(State::Confirming(_))) {
                    // It could not open our confirmation.
                    self.wrong_code(peer);
                }
            }
            RelayMessage::Credit { peer, bytes } => {
                if let Some(p) = self.peers.get(&peer) {
                    p.credit.grant(bytes).context(
                        "the relay and this sender disagree about flow control (please report this)",
                    )?;
                    self.progressed = true;
                }
            }
            // The close that follows would say the same; act on it now.
            RelayMessage::Error { code, message } => {
                let why = format!("the relay ended the transfer: {message} (close code {code})");
                return match RelayClose::from_code(code) {
                    Some(close) if close.is_final() && close != RelayClose::NotFound => {
                        Err(Refused::for_good(why, close))
                    }
                    _ => bail!("the relay reports: {message}"),
                };
            }
            _ => {}
        }
        Ok(())
    }

    /// Handles one peer message; `true` when every wanted receiver is done.
    async fn on_peer(&mut self, link: &Link, frame: PeerFrame<'_>) -> anyhow::Result<bool> {
        let peer = frame.peer;
        let Some(p) = self.peers.get_mut(&peer) else {
            return Ok(false);
        };
        match (p.state.take(), frame.kind) {
            (Some(State::Handshaking(hs)), Kind::Pake) => {
                self.on_pake(link, peer, hs, frame.body).await?;
            }
            (Some(State::Confirming(channel)), Kind::Sealed) => {
                self.on_confirm(link, peer, channel, frame.body).await?;
            }
            (Some(State::Ready(channel)), Kind::Sealed) => {
                return self.on_control(link, peer, channel, frame.body).await;
            }
            (state, _) => p.state = state,
        }
        Ok(false)
    }

    /// The receiver's half of the key exchange: our confirmation of the
    /// key follows.
    async fn on_pake(
        &mut self,
        link: &Link,
        peer: u32,
        hs: Handshake,
        body: &[u8],
    ) -> anyhow::Result<()> {
        let sealer = match hs.finish(body) {
            Ok(sealer) => sealer,
            Err(e) => {
                // This receiver cannot take part; the others go on.
                self.peers.remove(&peer);
                let reason = e.to_string();
                self.reporter.emit(SendEvent::ReceiverFailed {
                    peer,
                    message: reason.clone(),
                });
                let drop = RelayMessage::Drop { peer, reason };
                link.tx.send(drop.to_message()).await?;
                return Ok(());
            }
        };
        let p = self.peers.get_mut(&peer).expect(SERVED);
        let mut channel = Channel::new(Arc::new(sealer), Direction::ToReceiver);
        send_control(link, p, channel.seal(peer, &Control::Confirm)).await?;
        p.state = Some(State::Confirming(channel));
        Ok(())
    }

    /// The receiver's confirmation of the key: it is accepted and gets the
    /// manifest; a receiver with another key (a wrong code) is let go.
    async fn on_confirm(
        &mut self,
        link: &Link,
        peer: u32,
        mut channel: Channel,
        body: &[u8],
    ) -> anyhow::Result<()> {
        match channel.open(body) {
            Some(Control::Confirm) => {
                link.tx
                    .send(RelayMessage::Accept { peer }.to_message())
                    .await?;
                let manifest = manifest_of(&self.sources, self.chunk_size);
                let p = self.peers.get_mut(&peer).expect(SERVED);
                send_control(link, p, channel.seal(peer, &manifest)).await?;
                p.state = Some(State::Ready(channel));
            }
            _ => {
                self.peers.remove(&peer);
                self.wrong_code(peer);
                let drop = RelayMessage::Drop {
                    peer,
                    reason: "wrong code: the key exchange failed".into(),
                };
                link.tx.send(drop.to_message()).await?;
            }
        }
        Ok(())
    }

    /// A control message from a receiver that has the manifest; `true`
    /// when every wanted receiver is done.
    async fn on_control(
        &mut self,
        link: &Link,
        peer: u32,
        mut channel: Channel,
        body: &[u8],
    ) -> anyhow::Result<bool> {
        let msg = channel.open(body);
        let data_out = channel.data_out();
        let p = self.peers.get_mut(&peer).expect(SERVED);
        p.state = Some(State::Ready(channel));
        match msg {
            Some(Control::Have { offsets, verified }) if offsets.len() == self.sources.len() => {
                self.start_pump(link, peer, offsets, &verified, data_out);
            }
            Some(Control::Retry { file, chunk }) => {
                self.reporter.emit(SendEvent::Retry { peer, file, chunk });
                let _ = p.retries.send((file, chunk));
            }
            Some(Control::Done { receiver }) => return Ok(self.on_done(link, peer, receiver)),
            Some(Control::Fail { message }) => {
                self.reporter
                    .emit(SendEvent::ReceiverFailed { peer, message });
            }
            _ => {}
        }
        Ok(false)
    }

    /// The receiver said what it has (`offsets`, and the files it
    /// `verified` already): its pump sends the rest.
    fn start_pump(
        &mut self,
        link: &Link,
        peer: u32,
        offsets: Vec<u64>,
        verified: &[u32],
        data_out: duplex_transfer::chunk::Outbound,
    ) {
        let already: u64 = offsets.iter().sum();
        let total: u64 = self.sources.iter().map(|s| s.entry.size).sum();
        self.reporter.emit(SendEvent::Progress {
            peer,
            bytes: already.min(total),
            total,
        });
        let p = self.peers.get_mut(&peer).expect(SERVED);
        if let Some(retries) = p.retries_rx.take() {
            let pump = Pump {
                peer,
                producer: Producer::new(
                    peer,
                    self.sources.clone(),
                    self.digests.clone(),
                    self.chunk_size,
                    offsets,
                    verified,
                    data_out,
                ),
                credit: p.credit.clone(),
                tx: link.tx.clone(),
                stop: self.stop_tx.clone(),
                reporter: self.reporter.clone(),
                total,
            };
            p.pump = Some(tokio::spawn(pump.run(retries)));
        }
    }

    /// The receiver has everything (`receiver` names its run): it is let
    /// go and counted, once per run; `true` when enough are done.
    fn on_done(&mut self, link: &Link, peer: u32, receiver: Option<String>) -> bool {
        let p = self.peers.get_mut(&peer).expect(SERVED);
        if let Some(pump) = p.pump.take() {
            pump.abort();
        }
        // Let it go. Its window may still hold chunks it no longer
        // needed: wait for credit on a task of its own, since credit
        // arrives through this loop.
        if let Some(State::Ready(channel)) = p.state.as_mut() {
            let bye = channel.seal(peer, &Control::Bye);
            let (credit, tx) = (p.credit.clone(), link.tx.clone());
            tokio::spawn(async move {
                if credit.debit(Credit::cost(bye.as_bytes())).await.is_ok() {
                    let _ = tx.send(bye).await;
                }
            });
        }
        self.progressed = true;
        let first_time = match receiver {
            Some(id) => self.done_receivers.insert(id),
            None => true,
        };
        if first_time {
            self.done += 1;
            self.reporter.emit(SendEvent::Done { peer });
        }
        self.done >= self.want
    }
}

/// The chunk digests of every file, shared by the receivers' pumps: each
/// file's, from its first chunk on, as far as a seal needed them (a
/// receiver resuming: the seal covers the chunks it had before).
struct Digests(Vec<std::sync::Mutex<Vec<[u8; DIGEST]>>>);

impl Digests {
    fn new(files: usize) -> Self {
        Self((0..files).map(|_| Default::default()).collect())
    }
}

/// Sends one receiver the chunks it is missing: a thread reads, digests
/// and seals them (in reused buffers) while this task waits for credit and
/// hands them to the connection.
struct Pump {
    peer: u32,
    producer: Producer,
    credit: Arc<Credit>,
    tx: mpsc::Sender<Message>,
    /// Where a failure of the producer goes: it ends the whole send.
    stop: mpsc::UnboundedSender<SourceFailed>,
    reporter: Reporter,
    /// Bytes in the transfer.
    total: u64,
}

/// What the producer thread hands the pump.
enum Produced {
    /// The next frame; `done` bytes of the transfer are sent with it;
    /// `file` names the file when a new one starts.
    Frame {
        frame: bytes::Bytes,
        done: u64,
        file: Option<String>,
    },
    /// Everything is sent (until a retry).
    Finished,
    /// The producer stopped.
    Failed(anyhow::Error),
}

impl Pump {
    async fn run(self, retries: mpsc::UnboundedReceiver<(u32, u64)>) {
        let peer = self.peer;
        let (frames_tx, mut frames) = mpsc::channel(2);
        let producer = self.producer;
        std::thread::spawn(move || {
            if let Err(e) = producer.run(retries, &frames_tx) {
                let _ = frames_tx.blocking_send(Produced::Failed(e));
            }
        });
        while let Some(produced) = frames.recv().await {
            let result = match produced {
                Produced::Frame { frame, done, file } => {
                    if let Some(path) = file {
                        self.reporter.emit(SendEvent::Sending { peer, path });
                    }
                    let sent = async {
                        self.credit
                            .debit(Credit::cost(&frame))
                            .await
                            .context("a chunk does not fit the relay's window")?;
                        self.tx
                            .send(Message::Binary(frame))
                            .await
                            .context("the relay connection closed")
                    };
                    self.reporter.emit(SendEvent::Progress {
                        peer,
                        bytes: done,
                        total: self.total,
                    });
                    sent.await
                }
                Produced::Finished => {
                    self.reporter.emit(SendEvent::Sent { peer });
                    Ok(())
                }
                Produced::Failed(e) => Err(SourceFailed(e).into()),
            };
            // A closed queue means the connection or the receiver went
            // away: the main loop reports that.
            if let Err(e) = result {
                if !self.tx.is_closed() {
                    if !e.is::<SourceFailed>() {
                        // (A source failure ends the run, which says why.)
                        self.reporter.emit(SendEvent::ReceiverFailed {
                            peer,
                            message: format!("{e:#}"),
                        });
                    }
                    // It would wait for ever for the rest: let it go, with why.
                    let drop = RelayMessage::Drop {
                        peer: self.peer,
                        reason: format!("the sender stopped: {e:#}"),
                    };
                    let _ = self.tx.send(drop.to_message()).await;
                }
                if let Ok(failed) = e.downcast::<SourceFailed>() {
                    let _ = self.stop.send(failed);
                }
                return;
            }
        }
    }
}

/// Reads and seals one receiver's chunks, in order, on a thread of its
/// own; after each file's chunks, its seal.
struct Producer {
    peer: u32,
    sources: Arc<Vec<Source>>,
    digests: Arc<Digests>,
    chunk_size: u64,
    /// Per file, the chunks the receiver had before this connection: the
    /// seal carries their digest (the chunks sent now are proven by their
    /// tags).
    prefix: Vec<u64>,
    /// Per file, whether the receiver verified it already (nothing to send).
    skip: Vec<bool>,
    out: duplex_transfer::chunk::Outbound,
}

/// Frames being built or in flight: a buffer is reused once the
/// connection has let go of the frame made in it.
const BUFFERS: usize = 4;

impl Producer {
    #[allow(clippy::too_many_arguments)]
    fn new(
        peer: u32,
        sources: Arc<Vec<Source>>,
        digests: Arc<Digests>,
        chunk_size: u64,
        offsets: Vec<u64>,
        verified: &[u32],
        out: duplex_transfer::chunk::Outbound,
    ) -> Self {
        let mut skip = vec![false; sources.len()];
        for &i in verified {
            if let Some(s) = skip.get_mut(i as usize) {
                *s = true;
            }
        }
        // A whole file is its chunk count; a `.part`, whole chunks.
        let prefix = offsets.iter().map(|o| o.div_ceil(chunk_size)).collect();
        Self {
            peer,
            sources,
            digests,
            chunk_size,
            prefix,
            skip,
            out,
        }
    }

    /// The next chunk to send at or after `(file, chunk)`; a file's seal
    /// is its chunk number [`chunk_count`].
    fn next(&self, mut file: usize, mut chunk: u64) -> Option<(usize, u64)> {
        while let Some(s) = self.sources.get(file) {
            if !s.entry.dir
                && !self.skip[file]
                && chunk <= chunk_count(s.entry.size, self.chunk_size)
            {
                return Some((file, chunk));
            }
            file += 1;
            chunk = self.prefix.get(file).copied().unwrap_or(0);
        }
        None
    }

    fn run(
        mut self,
        mut retries: mpsc::UnboundedReceiver<(u32, u64)>,
        frames: &mpsc::Sender<Produced>,
    ) -> anyhow::Result<()> {
        let mut pos = self.next(0, self.prefix.first().copied().unwrap_or(0));
        let sources = self.sources.clone();
        let mut open: Option<(usize, std::fs::File)> = None;
        let mut bufs: [BytesMut; BUFFERS] = Default::default();
        let mut turn = 0;
        loop {
            while let Ok((file, chunk)) = retries.try_recv() {
                pos = self.retry(file, chunk);
            }
            let Some((file, chunk)) = pos else {
                if frames.blocking_send(Produced::Finished).is_err() {
                    return Ok(());
                }
                // Everything sent: wait for a retry or the end.
                match retries.blocking_recv() {
                    Some((file, chunk)) => {
                        pos = self.retry(file, chunk);
                        continue;
                    }
                    None => return Ok(()),
                }
            };
            let source = &sources[file];
            let starting = open.as_ref().is_none_or(|(f, _)| *f != file);
            if starting {
                open = Some((file, self.open(file)?));
            }
            let handle = &mut open.as_mut().expect("just opened").1;
            let buf = &mut bufs[turn % BUFFERS];
            turn += 1;
            let count = chunk_count(source.entry.size, self.chunk_size);
            let offset = (chunk * self.chunk_size).min(source.entry.size);
            if chunk == count {
                // The file's seal, once it is known to be unchanged.
                self.check_unchanged(file)?;
                let digest = self.prefix_digest(file)?;
                let plain = self.out.start(buf, self.peer, file as u32, chunk, DIGEST);
                plain.copy_from_slice(&digest);
            } else {
                let len = (source.entry.size - offset).min(self.chunk_size) as usize;
                let plain = self.out.start(buf, self.peer, file as u32, chunk, len);
                handle.seek(SeekFrom::Start(offset))?;
                handle
                    .read_exact(plain)
                    .with_context(|| format!("{} changed while being sent", source.entry.path))?;
            }
            self.out.seal(buf);
            let done = sources[..file].iter().map(|s| s.entry.size).sum::<u64>()
                + offset
                + if chunk == count {
                    0
                } else {
                    buf.len() as u64 - CHUNK_OVERHEAD as u64
                };
            let produced = Produced::Frame {
                frame: buf.split().freeze(),
                done,
                file: starting.then(|| source.entry.path.clone()),
            };
            if frames.blocking_send(produced).is_err() {
                return Ok(()); // the pump is gone
            }
            pos = self.next(file, chunk + 1);
        }
    }

    /// Where to go on after the receiver asked for chunk `chunk` of file
    /// `file` again: from chunk 0, it dropped what it had before.
    fn retry(&mut self, file: u32, chunk: u64) -> Option<(usize, u64)> {
        if let Some(prefix) = self.prefix.get_mut(file as usize) {
            *prefix = (*prefix).min(chunk);
        }
        self.next(file as usize, chunk)
    }

    /// Opens file `file`, as it was announced.
    fn open(&self, file: usize) -> anyhow::Result<std::fs::File> {
        let local = self.sources[file].local.as_ref().expect("a file");
        let handle = std::fs::File::open(local)
            .with_context(|| format!("cannot open {}", local.display()))?;
        self.check_unchanged(file)?;
        Ok(handle)
    }

    /// The digest of the chunks of file `file` the receiver had before:
    /// what its seal carries. Their digests are taken by reading them, once
    /// for every receiver.
    fn prefix_digest(&self, file: usize) -> anyhow::Result<[u8; DIGEST]> {
        let source = &self.sources[file];
        let want = self.prefix[file] as usize;
        let mut digests = self.digests.0[file].lock().expect("not poisoned");
        if digests.len() < want {
            let local = source.local.as_ref().expect("a file");
            let more =
                manifest::chunk_digests(local, self.chunk_size, digests.len() as u64, want as u64)?;
            digests.extend(more);
        }
        let mut digest = FileDigest::new(source.entry.size, self.chunk_size);
        for d in &digests[..want] {
            digest.push(d);
        }
        Ok(digest.finish())
    }

    /// An error unless file `file` is as it was when it was announced.
    fn check_unchanged(&self, file: usize) -> anyhow::Result<()> {
        let source = &self.sources[file];
        let local = source.local.as_ref().expect("files have a local path");
        let meta =
            std::fs::metadata(local).with_context(|| format!("cannot read {}", local.display()))?;
        if meta.len() != source.entry.size || meta.modified().ok() != source.modified {
            return Err(self.changed(file));
        }
        Ok(())
    }

    fn changed(&self, file: usize) -> anyhow::Error {
        anyhow::anyhow!(
            "{} changed while being sent; run duplex send again once it is done changing",
            self.sources[file].entry.path
        )
    }
}
