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
use duplex::{CloseCode, CloseFrame, Message};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::crypto::{Direction, Handshake};
use super::manifest::{self, Source};
use super::progress::{Bar, Reporter};
use super::wire::{self, CHUNK_OVERHEAD, Channel, Control, Link, PAKE, SEALED, relay_msg};
use super::{SendArgs, backoff};

/// Largest chunk; smaller when the relay's frames are.
const CHUNK: usize = 1 << 20;
/// Files and folders in one transfer: the receiver's `have` message (a
/// number per entry) must fit the relay's 64 KiB limit on receiver messages.
const MAX_ENTRIES: usize = 2000;

/// Runs `duplex send`.
pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let paths = args.paths.clone();
    let sources = tokio::task::spawn_blocking(move || manifest::collect(&paths))
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
    let total: u64 = sources.iter().map(|s| s.entry.size).sum();
    let url = wire::relay_url(&args.server)?;
    let mut link = wire::connect(&url).await?;
    let words = super::words::pick_two();
    link.tx
        .send(relay_msg(json!({"type": "create", "size": total})))
        .await?;
    let created = expect_created(&mut link).await?;
    let code = format!("{}-{words}", created.nameplate);
    let reporter = Reporter::new(args.json);
    if args.json {
        println!("{}", json!({"code": code}));
    } else {
        println!("{code}");
        eprintln!(
            "duplex: sending {} file(s), {total} bytes; on the other machine run: duplex receive {code}",
            sources.iter().filter(|s| !s.entry.dir).count()
        );
    }
    let chunk_size = CHUNK
        .min(created.max_frame.saturating_sub(CHUNK_OVERHEAD + 64))
        .max(1024);
    let mut sender = Sender {
        sources: Arc::new(sources),
        chunk_size: chunk_size as u64,
        code,
        window: created.window,
        reporter,
        done: 0,
        want: args.receivers.max(1),
        peers: HashMap::new(),
    };
    let mut failures = 0u32;
    loop {
        match sender.session(&mut link).await {
            Ok(()) => break,
            Err(e) if e.downcast_ref::<Refused>().is_some() => return Err(e),
            Err(e) => {
                sender.drop_peers();
                failures += 1;
                if failures > 8 {
                    return Err(e.context("the relay connection kept failing; giving up"));
                }
                let delay = backoff(failures);
                sender.reporter.event(
                    json!({"event": "reconnect", "error": format!("{e:#}"), "delay_ms": delay.as_millis() as u64}),
                    || Some(format!("{e:#}; reconnecting in {delay:?}")),
                );
                tokio::time::sleep(delay).await;
                let open = |kind: &'static str| {
                    let url = url.clone();
                    let hello = json!({"type": kind, "size": total,
                        "nameplate": created.nameplate, "token": created.token});
                    async move {
                        let mut l = wire::connect(&url).await?;
                        l.tx.send(relay_msg(hello)).await?;
                        expect_created(&mut l).await?;
                        anyhow::Ok(l)
                    }
                };
                let attempt = async {
                    match open("reattach").await {
                        // The relay restarted and forgot the transfer:
                        // recreate it under the same code.
                        Err(e) if e.downcast_ref::<Refused>().is_some_and(|r| r.1 == 4404) => {
                            open("create").await
                        }
                        other => other,
                    }
                };
                match attempt.await {
                    Ok(l) => {
                        link = l;
                        failures = 0;
                    }
                    Err(e) if e.downcast_ref::<Refused>().is_some() => return Err(e),
                    Err(e) => sender.reporter.event(
                        json!({"event": "error", "message": format!("{e:#}")}),
                        || Some(format!("{e:#}")),
                    ),
                }
            }
        }
    }
    let _ = link
        .tx
        .send(Message::Close(Some(CloseFrame::new(
            CloseCode::NORMAL,
            "transfer complete",
        ))))
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = link.reader.recv().await {}
    })
    .await;
    Ok(())
}

/// The relay refused us for good: the reason, and the close code.
#[derive(Debug)]
pub struct Refused(pub String, pub u16);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

struct Created {
    nameplate: u64,
    token: String,
    window: usize,
    max_frame: usize,
}

async fn expect_created(link: &mut Link) -> anyhow::Result<Created> {
    let reply = tokio::time::timeout(Duration::from_secs(30), link.reader.recv())
        .await
        .context("the relay did not answer within 30 s")?;
    let value: Value = match reply {
        Some(Ok(Message::Text(t))) => {
            serde_json::from_str(t.as_str()).context("the relay sent invalid JSON")?
        }
        Some(Ok(other)) => {
            bail!("the relay sent {other:?} instead of a reply; is --server a Duplex relay?")
        }
        Some(Err(e)) => return Err(e).context("the relay connection failed"),
        None => bail!("the relay closed the connection"),
    };
    if value["type"] == "error" {
        let code = value["code"].as_u64().unwrap_or(0) as u16;
        let message = value["message"].as_str().unwrap_or("no reason given");
        let why = format!("the relay refused: {message} (code {code})");
        return Err(Refused(why, code).into());
    }
    Ok(Created {
        nameplate: value["nameplate"]
            .as_u64()
            .context("no nameplate in the relay's reply")?,
        token: value["token"].as_str().unwrap_or_default().to_owned(),
        window: value["window"].as_u64().unwrap_or(1 << 20) as usize,
        max_frame: value["max_frame"].as_u64().unwrap_or(1 << 20) as usize,
    })
}

enum State {
    Handshaking(Handshake),
    Confirming(Channel),
    Ready(Channel),
}

struct Peer {
    state: Option<State>,
    credit: Arc<Semaphore>,
    retries: mpsc::UnboundedSender<(u32, u64)>,
    retries_rx: Option<mpsc::UnboundedReceiver<(u32, u64)>>,
    pump: Option<JoinHandle<()>>,
}

struct Sender {
    sources: Arc<Vec<Source>>,
    chunk_size: u64,
    code: String,
    window: usize,
    reporter: Reporter,
    done: usize,
    want: usize,
    peers: HashMap<u32, Peer>,
}

impl Sender {
    fn wrong_code(&self, peer: u32) {
        self.reporter
            .event(json!({"event": "wrong_code", "peer": peer}), || {
                Some("a receiver tried a wrong code; still waiting for the right one".into())
            });
    }

    fn drop_peers(&mut self) {
        for (_, peer) in self.peers.drain() {
            if let Some(pump) = peer.pump {
                pump.abort();
            }
        }
    }

    /// Serves receivers until enough are done (`Ok`) or the connection
    /// drops (`Err`).
    async fn session(&mut self, link: &mut Link) -> anyhow::Result<()> {
        loop {
            let msg = match link.reader.recv().await {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => return Err(e).context("the relay connection failed"),
                None => bail!("the relay closed the connection"),
            };
            match msg {
                Message::Text(text) => {
                    let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                        continue;
                    };
                    let peer = value["peer"].as_u64().unwrap_or(0) as u32;
                    match value["type"].as_str() {
                        Some("peer_joined") => {
                            let (hs, msg) = Handshake::start(&self.code);
                            let (tx, rx) = mpsc::unbounded_channel();
                            self.peers.insert(
                                peer,
                                Peer {
                                    state: Some(State::Handshaking(hs)),
                                    credit: Arc::new(Semaphore::new(self.window)),
                                    retries: tx,
                                    retries_rx: Some(rx),
                                    pump: None,
                                },
                            );
                            link.tx
                                .send(Message::Binary(wire::frame(peer, PAKE, &[&msg])))
                                .await?;
                        }
                        Some("peer_left") => {
                            let Some(p) = self.peers.remove(&peer) else {
                                continue;
                            };
                            if let Some(pump) = p.pump {
                                pump.abort();
                            }
                            if matches!(p.state, Some(State::Confirming(_))) {
                                // It could not open our confirmation.
                                self.wrong_code(peer);
                            }
                        }
                        Some("credit") => {
                            if let Some(p) = self.peers.get(&peer) {
                                p.credit
                                    .add_permits(value["bytes"].as_u64().unwrap_or(0) as usize);
                            }
                        }
                        Some("error") => {
                            let message = value["message"].as_str().unwrap_or("no reason given");
                            bail!("the relay reports: {message}");
                        }
                        _ => {}
                    }
                }
                Message::Binary(data) if data.len() >= 5 => {
                    let peer = u32::from_be_bytes(data[..4].try_into().expect("4 bytes"));
                    if self.on_peer(link, peer, data[4], &data[5..]).await? {
                        return Ok(());
                    }
                }
                Message::Close(frame) => {
                    let (code, reason) = frame.map(|f| (f.code.0, f.reason)).unwrap_or_default();
                    if matches!(code, 4400 | 4403 | 4404 | 4008) {
                        let why =
                            format!("the relay ended the transfer: {reason} (close code {code})");
                        return Err(Refused(why, code).into());
                    }
                    bail!("the relay closed the connection: {reason} (close code {code})");
                }
                _ => {}
            }
        }
    }

    /// Handles one peer message; `true` when every wanted receiver is done.
    async fn on_peer(
        &mut self,
        link: &Link,
        peer: u32,
        kind: u8,
        body: &[u8],
    ) -> anyhow::Result<bool> {
        let Some(p) = self.peers.get_mut(&peer) else {
            return Ok(false);
        };
        match (p.state.take(), kind) {
            (Some(State::Handshaking(hs)), PAKE) => {
                let mut channel = Channel::new(Arc::new(hs.finish(body)?), Direction::ToReceiver);
                link.tx.send(channel.seal(peer, &Control::Confirm)).await?;
                p.state = Some(State::Confirming(channel));
            }
            (Some(State::Confirming(mut channel)), SEALED) => match channel.open(body) {
                Some(Control::Confirm) => {
                    link.tx
                        .send(relay_msg(json!({"type": "accept", "peer": peer})))
                        .await?;
                    let entries = self.sources.iter().map(|s| s.entry.clone()).collect();
                    let manifest = Control::Manifest {
                        entries,
                        chunk_size: self.chunk_size,
                    };
                    link.tx.send(channel.seal(peer, &manifest)).await?;
                    p.state = Some(State::Ready(channel));
                }
                _ => {
                    self.peers.remove(&peer);
                    self.wrong_code(peer);
                    link.tx
                        .send(relay_msg(json!({"type": "drop", "peer": peer,
                            "reason": "wrong code: the key exchange failed"})))
                        .await?;
                }
            },
            (Some(State::Ready(mut channel)), SEALED) => {
                let msg = channel.open(body);
                let chunks = channel.for_chunks();
                p.state = Some(State::Ready(channel));
                match msg {
                    Some(Control::Have { offsets }) if offsets.len() == self.sources.len() => {
                        let already: u64 = offsets.iter().sum();
                        let total: u64 = self.sources.iter().map(|s| s.entry.size).sum();
                        let mut bar = self.reporter.bar(
                            total,
                            &format!("receiver {peer}"),
                            json!({"peer": peer}),
                        );
                        bar.set(already.min(total));
                        if let Some(retries) = p.retries_rx.take() {
                            let pump = Pump {
                                peer,
                                sources: self.sources.clone(),
                                chunk_size: self.chunk_size,
                                offsets,
                                credit: p.credit.clone(),
                                tx: link.tx.clone(),
                                channel: chunks,
                            };
                            p.pump = Some(tokio::spawn(pump.run(retries, bar)));
                        }
                    }
                    Some(Control::Retry { file, chunk }) => {
                        self.reporter.event(
                            json!({"event": "retry", "peer": peer, "file": file, "chunk": chunk}),
                            || {
                                Some(format!(
                                    "receiver {peer} asked again for chunk {chunk} of file {file}"
                                ))
                            },
                        );
                        let _ = p.retries.send((file, chunk));
                    }
                    Some(Control::Done) => {
                        if let Some(pump) = p.pump.take() {
                            pump.abort();
                        }
                        self.done += 1;
                        self.reporter
                            .event(json!({"event": "done", "peer": peer}), || {
                                Some(format!("receiver {peer} has everything, verified"))
                            });
                        return Ok(self.done >= self.want);
                    }
                    Some(Control::Fail { message }) => {
                        self.reporter.event(
                            json!({"event": "receiver_failed", "peer": peer, "message": message}),
                            || Some(format!("receiver {peer} gave up: {message}")),
                        );
                    }
                    _ => {}
                }
            }
            (state, _) => p.state = state,
        }
        Ok(false)
    }
}

/// Sends one receiver the chunks it is missing.
struct Pump {
    peer: u32,
    sources: Arc<Vec<Source>>,
    chunk_size: u64,
    offsets: Vec<u64>,
    credit: Arc<Semaphore>,
    tx: mpsc::Sender<Message>,
    channel: Channel,
}

impl Pump {
    async fn run(self, mut retries: mpsc::UnboundedReceiver<(u32, u64)>, mut bar: Bar) {
        // A closed queue means the connection or the receiver went away:
        // the main loop reports that.
        if let Err(e) = self.pump(&mut retries, &mut bar).await
            && !self.tx.is_closed()
        {
            eprintln!("duplex: sending to receiver {}: {e:#}", self.peer);
        }
    }

    /// The next chunk to send at or after `(file, chunk)`.
    fn next(&self, mut file: usize, mut chunk: u64) -> Option<(usize, u64)> {
        while let Some(s) = self.sources.get(file) {
            if !s.entry.dir && chunk * self.chunk_size < s.entry.size {
                return Some((file, chunk));
            }
            file += 1;
            chunk = self.offsets.get(file).copied().unwrap_or(0) / self.chunk_size;
        }
        None
    }

    async fn pump(
        &self,
        retries: &mut mpsc::UnboundedReceiver<(u32, u64)>,
        bar: &mut Bar,
    ) -> anyhow::Result<()> {
        let mut pos = self.next(
            0,
            self.offsets.first().copied().unwrap_or(0) / self.chunk_size,
        );
        let mut open: Option<(usize, tokio::fs::File)> = None;
        let mut buf = vec![0u8; self.chunk_size as usize];
        loop {
            while let Ok((file, chunk)) = retries.try_recv() {
                pos = self.next(file as usize, chunk);
            }
            let Some((file, chunk)) = pos else {
                // Everything sent: wait for a retry or the end.
                match retries.recv().await {
                    Some((file, chunk)) => {
                        pos = self.next(file as usize, chunk);
                        continue;
                    }
                    None => return Ok(()),
                }
            };
            let source = &self.sources[file];
            let local = source.local.as_ref().expect("files have a local path");
            if open.as_ref().is_none_or(|(f, _)| *f != file) {
                let f = tokio::fs::File::open(local)
                    .await
                    .with_context(|| format!("cannot open {}", local.display()))?;
                open = Some((file, f));
                bar.message(&source.entry.path);
            }
            let handle = &mut open.as_mut().expect("just opened").1;
            let offset = chunk * self.chunk_size;
            let len = (source.entry.size - offset).min(self.chunk_size) as usize;
            handle.seek(SeekFrom::Start(offset)).await?;
            handle
                .read_exact(&mut buf[..len])
                .await
                .with_context(|| format!("{} changed while being sent", local.display()))?;
            let msg = self
                .channel
                .seal_chunk(self.peer, file as u32, chunk, &buf[..len]);
            self.credit
                .acquire_many(msg.len() as u32)
                .await
                .context("credit closed")?
                .forget();
            self.tx
                .send(msg)
                .await
                .context("the relay connection closed")?;
            let done: u64 = self.sources[..file]
                .iter()
                .map(|s| s.entry.size)
                .sum::<u64>()
                + offset
                + len as u64;
            bar.set(done);
            pos = self.next(file, chunk + 1);
            if pos.is_none() {
                bar.finish();
            }
        }
    }
}
