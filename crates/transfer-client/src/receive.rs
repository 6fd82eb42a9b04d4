//! `duplex receive`: join a transfer by its code, prove the key, check the
//! manifest (safe paths, nothing overwritten without `--overwrite`), report
//! what is already here, then write each chunk to `NAME.part` once it
//! decrypts and its hash matches, and rename the file into place once its
//! whole-file hash matches. A dropped connection is retried with backoff
//! and resumes from the last verified chunk.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::{Bytes, BytesMut};
use duplex::{CloseFrame, Message};
use duplex_transfer::channel::Channel;
use duplex_transfer::chunk::{ChunkHeader, Inbound};
use duplex_transfer::control::{Control, Entry};
use duplex_transfer::digest::{DIGEST, FileDigest, chunk_count};
use duplex_transfer::seal::{Direction, Handshake};
use duplex_transfer::{Kind, PeerFrame, RelayClose, RelayMessage, peer_frame};
use tokio::io::AsyncWriteExt;

use crate::link::{self, Link};
use crate::manifest;
use crate::{Events, ReceiveEvent, ReceiveOptions, backoff};

type Reporter = Events<ReceiveEvent>;

/// How an attempt ended badly.
enum Failure {
    /// Worth another connection (the transfer resumes).
    Retry(anyhow::Error),
    /// Not: the user must act.
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Fatal(e)
    }
}

/// Runs `duplex receive`.
pub async fn run(args: ReceiveOptions, reporter: Reporter) -> anyhow::Result<()> {
    let nameplate: u32 = args
        .code
        .split_once('-')
        .and_then(|(n, words)| (!words.is_empty()).then_some(n))
        .and_then(|n| n.parse().ok())
        .with_context(|| {
            format!(
                "{:?} is not a transfer code; it looks like 7-violet-anchor",
                args.code
            )
        })?;
    let url = link::relay_url(&args.server)?;
    let mut failures = 0u32;
    let mut run = Run::new();
    loop {
        match attempt(&args, nameplate, &url, &reporter, &mut run).await {
            Ok(()) => return Ok(()),
            Err(Failure::Fatal(e)) => {
                return run.complete_anyway(&reporter, &e).unwrap_or(Err(e));
            }
            Err(Failure::Retry(e)) => {
                if std::mem::take(&mut run.progressed) {
                    failures = 0;
                }
                failures += 1;
                if failures > 8 {
                    if let Some(done) = run.complete_anyway(&reporter, &e) {
                        return done;
                    }
                    return Err(e.context(
                        "giving up after repeated failures; run the same command again to resume",
                    ));
                }
                let delay = backoff(failures);
                reporter.emit(ReceiveEvent::Reconnect {
                    error: format!("{e:#}"),
                    delay_ms: delay.as_millis() as u64,
                });
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One connection to the relay: joins the transfer and receives through
/// it until everything is here or the connection fails.
async fn attempt(
    args: &ReceiveOptions,
    nameplate: u32,
    url: &str,
    reporter: &Reporter,
    run: &mut Run,
) -> Result<(), Failure> {
    let link = link::connect(url).await.map_err(Failure::Retry)?;
    send(&link, RelayMessage::Join { nameplate }.to_message()).await?;
    let mut connection = Connection {
        args,
        reporter,
        run,
        link,
        handshake: None,
        keys: None,
        confirmed: false,
        plan: None,
        says_bye: false,
        relay_error: None,
        scratch: BytesMut::new(),
    };
    connection.receive().await
}

/// Sends `msg` to the relay; a connection that closed is worth another.
async fn send(link: &Link, msg: Message) -> Result<(), Failure> {
    link.tx
        .send(msg)
        .await
        .map_err(|_| Failure::Retry(anyhow!("the relay connection closed")))
}

/// One connection's receiving, from `join` to everything in place.
struct Connection<'a> {
    args: &'a ReceiveOptions,
    reporter: &'a Reporter,
    run: &'a mut Run,
    link: Link,
    /// Our half of the key exchange, started once the relay said `joined`.
    handshake: Option<Handshake>,
    /// The keys agreed with the sender.
    keys: Option<Keys>,
    /// Whether the sender proved it holds the same key: a message that
    /// does not open after that was altered on the way.
    confirmed: bool,
    /// The manifest being received, once it was checked.
    plan: Option<Plan>,
    /// Whether the sender says `Bye` once it counted our `Done`.
    says_bye: bool,
    /// The relay's `error` message: the reason for the close that follows.
    relay_error: Option<String>,
    /// Where chunks are opened in place (see [`Connection::on_chunk`]).
    scratch: BytesMut,
}

/// The keys agreed with the sender: control messages both ways, chunks in.
struct Keys {
    channel: Channel,
    data_in: Inbound,
}

/// Whether a connection goes on after a message.
enum Flow {
    Continue,
    /// Everything is here and the sender was told.
    Finished,
}

impl Connection<'_> {
    /// Handles the relay's messages until the transfer is done or the
    /// connection fails.
    async fn receive(&mut self) -> Result<(), Failure> {
        loop {
            let msg = match self.link.reader.recv().await {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    return Err(Failure::Retry(anyhow!("the relay connection failed: {e}")));
                }
                None => return Err(Failure::Retry(anyhow!("the relay connection closed"))),
            };
            match msg {
                Message::Text(text) => self.on_relay(text.as_str()).await?,
                Message::Binary(data) => {
                    if let Flow::Finished = self.on_peer(data).await? {
                        return Ok(());
                    }
                }
                Message::Close(frame) => {
                    let started = self.plan.is_some();
                    let relay_error = self.relay_error.take();
                    return Err(closed(frame, relay_error, started, self.run.joined));
                }
                _ => {}
            }
        }
    }

    /// A message from the relay itself.
    async fn on_relay(&mut self, text: &str) -> Result<(), Failure> {
        match RelayMessage::parse(text) {
            Ok(RelayMessage::Joined { .. }) => {
                self.run.joined = true;
                let (handshake, msg) = Handshake::start(&self.args.code);
                self.handshake = Some(handshake);
                let pake = peer_frame::encode(0, Kind::Pake, &[&msg]);
                send(&self.link, Message::Binary(pake)).await?;
            }
            Ok(RelayMessage::Error { message, .. }) => self.relay_error = Some(message),
            Ok(_) => {}
            // The relay speaks JSON: this connection corrupts data.
            Err(e) => {
                return Err(Failure::Retry(anyhow!(
                    "the relay sent an unreadable message ({e}); reconnecting"
                )));
            }
        }
        Ok(())
    }

    /// A message from the sender.
    async fn on_peer(&mut self, data: Bytes) -> Result<Flow, Failure> {
        let Some(PeerFrame { kind, body, .. }) = PeerFrame::parse(&data) else {
            return Ok(Flow::Continue);
        };
        match kind {
            Kind::Pake => {
                self.on_pake(body)?;
                Ok(Flow::Continue)
            }
            Kind::Sealed => self.on_sealed(body).await,
            Kind::Chunk => self.on_chunk(data).await,
        }
    }

    /// The sender's half of the key exchange: the keys.
    fn on_pake(&mut self, body: &[u8]) -> Result<(), Failure> {
        let handshake = self
            .handshake
            .take()
            .ok_or_else(|| anyhow!("the sender started the key exchange twice"))?;
        let sealer = handshake
            .finish(body)
            .map_err(|e| Failure::Fatal(e.into()))?;
        let channel = Channel::new(Arc::new(sealer), Direction::ToSender);
        self.keys = Some(Keys {
            data_in: channel.data_in(),
            channel,
        });
        Ok(())
    }

    /// A control message from the sender: its key confirmation, then the
    /// manifest.
    async fn on_sealed(&mut self, body: &[u8]) -> Result<Flow, Failure> {
        let Some(keys) = self.keys.as_mut() else {
            return Ok(Flow::Continue);
        };
        let Some(control) = keys.channel.open(body) else {
            if !self.confirmed {
                return Err(Failure::Fatal(anyhow!(
                    "wrong code: the key exchange with the sender failed. Check the code with the sender (nothing was written)"
                )));
            }
            // The key is right, so the message was altered on the way:
            // waiting would wait for ever for what it said. Start the
            // connection over.
            return Err(Failure::Retry(anyhow!(
                "a message from the sender did not verify; reconnecting"
            )));
        };
        match control {
            Control::Confirm if !self.confirmed => {
                self.confirmed = true;
                self.send_sealed(&Control::Confirm).await?;
            }
            Control::Manifest {
                entries,
                chunk_size,
                bye,
            } if self.plan.is_none() => {
                self.says_bye = bye;
                return self.on_manifest(entries, chunk_size).await;
            }
            _ => {}
        }
        Ok(Flow::Continue)
    }

    /// Checks the manifest against what is here and tells the sender what
    /// this receiver has; one it cannot receive fails the transfer, and the
    /// sender is told why.
    async fn on_manifest(&mut self, entries: Vec<Entry>, chunk_size: u64) -> Result<Flow, Failure> {
        let verified = self.run.verified.clone();
        let plan =
            match Plan::prepare(entries, chunk_size, self.args, self.reporter, verified).await {
                Ok(plan) => plan,
                Err(e) => {
                    let fail = Control::Fail {
                        message: format!("{e:#}"),
                    };
                    let _ = self.send_sealed(&fail).await;
                    return Err(Failure::Fatal(e));
                }
            };
        let have = Control::Have {
            offsets: plan.offsets.clone(),
            verified: plan.verified_before(),
        };
        self.send_sealed(&have).await?;
        if plan.complete() {
            return self.finish(&plan).await;
        }
        self.plan = Some(plan);
        Ok(Flow::Continue)
    }

    /// A chunk (or a file's seal): written if it verifies, else asked for
    /// again.
    async fn on_chunk(&mut self, data: Bytes) -> Result<Flow, Failure> {
        let (Some(keys), Some(plan)) = (self.keys.as_mut(), self.plan.as_mut()) else {
            return Ok(Flow::Continue);
        };
        let body = &data[peer_frame::PEER_HEADER + 1..];
        let Some(hint) = ChunkHeader::parse(body) else {
            return Ok(Flow::Continue);
        };
        // Opened in place, in a buffer kept from frame to frame: the frame
        // itself shares its memory with the connection's read buffer, and
        // a fresh 1 MiB buffer per chunk costs more in page faults than
        // the decryption.
        self.scratch.clear();
        self.scratch.extend_from_slice(body);
        drop(data);
        let opened = keys.data_in.open(&mut self.scratch);
        let (file, index) = (hint.file, hint.index);
        let step = match opened {
            Some((header, plain)) => {
                plan.on_chunk(header.file, header.index, Some(plain))
                    .await?
            }
            None => plan.on_chunk(file, index, None).await?,
        };
        match step {
            Step::Ignored => {}
            Step::Written => self.run.progressed = true,
            Step::Retry => {
                let retry = Control::Retry { file, chunk: index };
                self.send_sealed(&retry).await?;
            }
            Step::Restart(file) => {
                let retry = Control::Retry { file, chunk: 0 };
                self.send_sealed(&retry).await?;
            }
        }
        if let Some(plan) = self.plan.take_if(|plan| plan.complete()) {
            return self.finish(&plan).await;
        }
        Ok(Flow::Continue)
    }

    /// Seals `control` with the agreed keys and sends it.
    async fn send_sealed(&mut self, control: &Control) -> Result<(), Failure> {
        let keys = self
            .keys
            .as_mut()
            .expect("sealed only after the key exchange");
        send(&self.link, keys.channel.seal(0, control)).await
    }

    /// Everything is here: says `Done` and waits (bounded) until the sender
    /// counted it, so that a `Done` lost with the connection is said again
    /// after a reconnect instead of leaving the sender waiting for ever.
    async fn finish(&mut self, plan: &Plan) -> Result<Flow, Failure> {
        let _ = self.run.complete.set((plan.files(), plan.total));
        let done = Control::Done {
            receiver: Some(self.run.id.clone()),
        };
        let _ = self.send_sealed(&done).await;
        match tokio::time::timeout(BYE_WAIT, self.until_counted()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Failure::Retry(e)),
            // Its connection may be half dead: say it again through the next.
            Err(_) if self.says_bye => {
                return Err(Failure::Retry(anyhow!(
                    "the sender did not confirm within {BYE_WAIT:?} that it counted this receiver"
                )));
            }
            // An older sender, which never says bye.
            Err(_) => {}
        }
        self.link.finish("received").await;
        self.reporter.emit(ReceiveEvent::Done {
            files: plan.files(),
            bytes: plan.total,
            note: None,
        });
        Ok(Flow::Finished)
    }

    /// Waits for the sender's [`Control::Bye`] (or its end of the
    /// transfer): it counted this receiver.
    async fn until_counted(&mut self) -> anyhow::Result<()> {
        let keys = self
            .keys
            .as_mut()
            .expect("done only after the key exchange");
        loop {
            match self.link.reader.recv().await {
                Some(Ok(Message::Binary(data))) => {
                    if let Some(PeerFrame {
                        kind: Kind::Sealed,
                        body,
                        ..
                    }) = PeerFrame::parse(&data)
                        && let Some(Control::Bye) = keys.channel.open(body)
                    {
                        return Ok(());
                    }
                }
                // The sender finished: it counted us.
                Some(Ok(Message::Close(Some(f))))
                    if f.code == RelayClose::Finished.close_code() =>
                {
                    return Ok(());
                }
                Some(Ok(Message::Close(f))) => {
                    let (code, reason) = f
                        .map(|f| (f.code.0, f.reason))
                        .unwrap_or((1005, String::new()));
                    return Err(anyhow!(
                        "the relay closed the connection before the sender counted this receiver: {reason} (close code {code})"
                    ));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    return Err(anyhow!(
                        "the relay connection failed before the sender counted this receiver: {e}"
                    ));
                }
                None => {
                    return Err(anyhow!(
                        "the relay connection closed before the sender counted this receiver"
                    ));
                }
            }
        }
    }
}

/// What a close from the relay means for us.
fn closed(
    frame: Option<CloseFrame>,
    relay_error: Option<String>,
    started: bool,
    joined_before: bool,
) -> Failure {
    let (code, reason) = frame
        .map(|f| (f.code.0, f.reason))
        .unwrap_or((1005, String::new()));
    let reason = relay_error.unwrap_or(reason);
    match RelayClose::from_code(code) {
        Some(RelayClose::NotFound) if joined_before => Failure::Retry(anyhow!(
            "the relay no longer knows this transfer (did it restart?); waiting for the sender to come back"
        )),
        Some(RelayClose::Finished) if started => Failure::Fatal(anyhow!(
            "the sender ended the transfer before everything arrived; what was verified is kept in .part files, so receiving again resumes"
        )),
        Some(RelayClose::Finished) => Failure::Fatal(anyhow!("the sender ended the transfer")),
        Some(RelayClose::Dropped) if started => Failure::Fatal(anyhow!(
            "the sender let this receiver go: {reason}; what was verified is kept in .part files"
        )),
        Some(close) if close.is_final() => {
            Failure::Fatal(anyhow!("the relay refused: {reason} (close code {code})"))
        }
        _ => Failure::Retry(anyhow!(
            "the relay closed the connection: {reason} (close code {code})"
        )),
    }
}

/// How long a receiver with everything waits for the sender's
/// [`Control::Bye`] before it says `Done` again (or, to an older sender
/// that never says it, goes).
const BYE_WAIT: Duration = Duration::from_secs(10);

/// What outlives one connection of a `duplex receive` run.
struct Run {
    /// Random, so the sender counts this run's `Done` once.
    id: String,
    /// Set (files, bytes) once every file is here, verified and in place:
    /// whatever happens next (the sender or the relay gone), the run
    /// succeeded.
    complete: std::sync::OnceLock<(usize, u64)>,
    /// The files (path, size) this run verified and put in place: after a
    /// reconnect they are not checked again.
    verified: Verified,
    /// Once joined, a relay that no longer knows the code has most likely
    /// restarted: the sender will recreate the transfer under it.
    joined: bool,
    /// Whether the last connection wrote anything (the count of failures
    /// in a row starts over).
    progressed: bool,
}

/// Files (path, size) a receiver run verified and put in place.
type Verified = Arc<std::sync::Mutex<std::collections::HashSet<(String, u64)>>>;

impl Run {
    fn new() -> Self {
        use rand::Rng;
        let id = (0..16)
            .map(|_| {
                char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rand::rng().random_range(0..36)])
            })
            .collect();
        Self {
            id,
            complete: std::sync::OnceLock::new(),
            verified: Verified::default(),
            joined: false,
            progressed: false,
        }
    }

    /// Ends a run that has everything although the sender may not have
    /// heard so (it will not wait for ever: see `duplex send --receivers`).
    fn complete_anyway(
        &self,
        reporter: &Reporter,
        e: &anyhow::Error,
    ) -> Option<anyhow::Result<()>> {
        let &(files, bytes) = self.complete.get()?;
        reporter.emit(ReceiveEvent::Done {
            files,
            bytes,
            note: Some(format!("{e:#}")),
        });
        Some(Ok(()))
    }
}

enum Step {
    Ignored,
    Written,
    /// Ask for this chunk again.
    Retry,
    /// What was here before did not match: ask for this file from its
    /// start.
    Restart(u32),
}

/// The receiving side of one manifest.
struct Plan {
    entries: Vec<Entry>,
    targets: Vec<PathBuf>,
    /// Per file: bytes here, verified chunk by chunk (the size once all
    /// are, though the file's seal may still be due).
    offsets: Vec<u64>,
    /// Per file: the digest of the chunks that were here before this
    /// connection, which the file's seal must match (the chunks received
    /// now are proven by their tags).
    digests: Vec<FileDigest>,
    /// Per file: already in place under its final name, identical as far
    /// as the size tells (the file's seal decides).
    in_place: Vec<bool>,
    /// Per file: its bytes were here before this connection (a `.part` or
    /// the file itself), so a wrong digest means they are from another
    /// version of the file, not that the connection corrupted them.
    from_before: Vec<bool>,
    /// Per file: verified and put in place by this run through an earlier
    /// connection (nothing more to do).
    done_before: Vec<bool>,
    /// What this run verified, shared with the next connection's plan.
    verified: Verified,
    overwrite: bool,
    chunk: u64,
    cursor: Option<usize>,
    part: Option<tokio::fs::File>,
    failures: HashMap<(u32, u64), u32>,
    total: u64,
    reporter: Reporter,
}

fn part_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().expect("a file name").to_owned();
    name.push(".part");
    target.with_file_name(name)
}

/// What is on disk for one entry before the transfer starts.
struct Found {
    /// Verified and put in place by this run already.
    done_before: bool,
    target: PathBuf,
    /// Bytes here: whole chunks of a `.part`, or the size when complete.
    offset: u64,
    /// Their digest.
    digest: FileDigest,
    /// The file is in place under its final name.
    in_place: bool,
}

/// Checks one entry against what is on disk under `out` and takes the
/// digest of whatever of it is here already: the whole chunks of a
/// `.part` (a chunk cut short by a kill is sent again). Writes nothing.
fn find(
    out: &Path,
    e: &Entry,
    chunk: u64,
    overwrite: bool,
    verified: &Verified,
) -> anyhow::Result<Found> {
    let target = manifest::safe_join(out, &e.path)?;
    no_symlinks_between(out, &target)?;
    let mut found = Found {
        done_before: false,
        offset: 0,
        digest: FileDigest::new(e.size, chunk),
        in_place: false,
        target,
    };
    let target = &found.target;
    if let Ok(meta) = std::fs::symlink_metadata(target) {
        if e.dir {
            if !meta.is_dir() {
                bail!(
                    "{} exists and is not a folder; move it away",
                    target.display()
                );
            }
            return Ok(found);
        }
        if meta.is_file()
            && meta.len() == e.size
            && verified
                .lock()
                .expect("not poisoned")
                .contains(&(e.path.clone(), e.size))
        {
            found.offset = e.size;
            found.in_place = true;
            found.done_before = true;
            return Ok(found);
        }
        // A `.part` beside it means an earlier attempt with --overwrite
        // found it different and is replacing it: resume that.
        let replacing = overwrite && meta.is_file() && part_path(target).is_file();
        if meta.is_file() && meta.len() == e.size && !replacing {
            // Maybe the same file: its digest against the file's seal
            // tells.
            for d in manifest::chunk_digests(target, chunk, 0, chunk_count(e.size, chunk))? {
                found.digest.push(&d);
            }
            found.offset = e.size;
            found.in_place = true;
            return Ok(found);
        }
        if !overwrite || !meta.is_file() {
            bail!(
                "{} already exists; pass --overwrite to replace it (nothing was written)",
                target.display()
            );
        }
    }
    if e.dir {
        return Ok(found);
    }
    let part = part_path(target);
    if let Ok(meta) = std::fs::metadata(&part) {
        // Only whole verified chunks count; whatever follows them (a
        // chunk cut short by a kill) is cut off, since chunks are
        // appended. A whole file still awaits its seal; a longer one is
        // from another version of the file.
        let have = match meta.len() {
            len if len == e.size => len,
            len if len > e.size => 0,
            len => len / chunk * chunk,
        };
        for d in manifest::chunk_digests(&part, chunk, 0, have.div_ceil(chunk))? {
            found.digest.push(&d);
        }
        found.offset = have;
    }
    Ok(found)
}

impl Plan {
    /// Checks the manifest against what is in the output folder, then
    /// creates its folders: nothing is written unless every entry passes.
    async fn prepare(
        entries: Vec<Entry>,
        chunk: u64,
        options: &ReceiveOptions,
        reporter: &Reporter,
        verified: Verified,
    ) -> anyhow::Result<Self> {
        let (out, overwrite) = (options.out.as_path(), options.overwrite);
        check_manifest(&entries, chunk)?;
        // Every check before anything is written.
        let found = find_all(&entries, out, chunk, overwrite, &verified).await?;
        tokio::fs::create_dir_all(out)
            .await
            .with_context(|| format!("cannot create the output folder {}", out.display()))?;
        let total: u64 = entries.iter().map(|e| e.size).sum();
        let mut plan = Self {
            targets: Vec::new(),
            offsets: Vec::new(),
            digests: Vec::new(),
            in_place: Vec::new(),
            from_before: Vec::new(),
            done_before: Vec::new(),
            verified,
            overwrite,
            entries,
            chunk,
            cursor: None,
            part: None,
            failures: HashMap::new(),
            total,
            reporter: reporter.clone(),
        };
        for f in found {
            plan.add(f);
        }
        plan.create_folders().await?;
        plan.progress();
        plan.cursor = plan.next_file(0);
        Ok(plan)
    }

    /// Takes in what was found on disk for the next entry.
    fn add(&mut self, found: Found) {
        self.from_before.push(found.offset > 0);
        self.done_before.push(found.done_before);
        self.targets.push(found.target);
        self.offsets.push(found.offset);
        self.digests.push(found.digest);
        self.in_place.push(found.in_place);
    }

    /// Creates every folder the entries go in, and reports the files that
    /// resume from what is here.
    async fn create_folders(&self) -> anyhow::Result<()> {
        for i in 0..self.entries.len() {
            let (entry, target) = (&self.entries[i], &self.targets[i]);
            let create = if entry.dir {
                Some(target.as_path())
            } else {
                target.parent()
            };
            if let Some(dir) = create {
                tokio::fs::create_dir_all(dir)
                    .await
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let have = self.offsets[i];
            if !entry.dir && !self.in_place[i] && have > 0 {
                let path = entry.path.clone();
                self.reporter.emit(ReceiveEvent::Resume {
                    file: path,
                    offset: have,
                });
            }
        }
        Ok(())
    }

    fn files(&self) -> usize {
        self.entries.iter().filter(|e| !e.dir).count()
    }

    /// The next file at or after `from` still to verify: every file is,
    /// until its seal arrives (a file already here included), but for
    /// those this run verified through an earlier connection.
    fn next_file(&self, from: usize) -> Option<usize> {
        (from..self.entries.len()).find(|&i| !self.entries[i].dir && !self.done_before[i])
    }

    /// The entries this run verified through an earlier connection.
    fn verified_before(&self) -> Vec<u32> {
        (0..self.entries.len() as u32)
            .filter(|&i| self.done_before[i as usize])
            .collect()
    }

    fn complete(&self) -> bool {
        self.cursor.is_none()
    }

    async fn on_chunk(
        &mut self,
        file: u32,
        index: u64,
        data: Option<&mut [u8]>,
    ) -> anyhow::Result<Step> {
        let i = file as usize;
        let Some(entry) = self.entries.get(i).filter(|_| self.cursor == Some(i)) else {
            return Ok(Step::Ignored); // stale: sent before a retry or resume
        };
        let count = chunk_count(entry.size, self.chunk);
        let at = self.offsets[i].div_ceil(self.chunk);
        if index != at {
            return Ok(Step::Ignored);
        }
        let expected = if index == count {
            DIGEST
        } else {
            (entry.size - self.offsets[i]).min(self.chunk) as usize
        };
        let Some(data) = data.filter(|d| d.len() == expected) else {
            let n = self.failures.entry((file, index)).or_default();
            *n += 1;
            if *n > 5 {
                bail!(
                    "chunk {index} of {} failed verification 5 times; the connection is corrupting data",
                    entry.path
                );
            }
            let path = entry.path.clone();
            self.reporter.emit(ReceiveEvent::Retry {
                file: path,
                chunk: index,
            });
            return Ok(Step::Retry);
        };
        if index == count {
            return self.on_seal(i, data).await;
        }
        if self.part.is_none() {
            let part = part_path(&self.targets[i]);
            self.part = Some(open_part(part, self.offsets[i]).await?);
        }
        let f = self.part.as_mut().expect("open");
        f.write_all(data).await.context("writing a .part file")?;
        self.offsets[i] += data.len() as u64;
        self.reporter.emit(ReceiveEvent::Writing {
            path: entry.path.clone(),
            bytes: self.offsets[i],
            size: entry.size,
        });
        self.progress();
        if self.offsets[i] == entry.size {
            let mut f = self.part.take().expect("open");
            f.flush().await?;
            f.sync_all().await?;
        }
        Ok(Step::Written)
    }

    /// The file's seal: its digest as sent. Equal to ours, the file is
    /// put in place; otherwise what was here from before is dropped and
    /// the file asked for again from its start.
    async fn on_seal(&mut self, i: usize, sent: &[u8]) -> anyhow::Result<Step> {
        let entry = self.entries[i].clone();
        let fresh = FileDigest::new(entry.size, self.chunk);
        let ours = std::mem::replace(&mut self.digests[i], fresh).finish();
        if ours[..] != *sent {
            let target = &self.targets[i];
            if self.in_place[i] && !self.overwrite {
                bail!(
                    "{} already exists with other contents; pass --overwrite to replace it",
                    target.display()
                );
            }
            if !std::mem::take(&mut self.from_before[i]) {
                bail!(
                    "{} does not match the sender's digest (did it change while being sent?); run the command again",
                    entry.path
                );
            }
            // From an earlier attempt at another version of the file.
            self.in_place[i] = false;
            let part = part_path(target);
            let _ = tokio::fs::remove_file(&part).await;
            self.offsets[i] = 0;
            self.progress();
            self.reporter.emit(ReceiveEvent::Restart {
                file: entry.path.clone(),
            });
            return Ok(Step::Restart(i as u32));
        }
        self.install(i).await?;
        self.cursor = self.next_file(i + 1);
        Ok(Step::Written)
    }

    /// Reports the bytes here, verified chunk by chunk.
    fn progress(&self) {
        self.reporter.emit(ReceiveEvent::Progress {
            bytes: self.offsets.iter().sum(),
            total: self.total,
        });
    }

    /// Sets the mode of a verified `NAME.part` and renames it into place
    /// (a file already in place stays).
    async fn install(&mut self, i: usize) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let (entry, target) = (self.entries[i].clone(), self.targets[i].clone());
        if !self.in_place[i] {
            let part = part_path(&target);
            if entry.size == 0 {
                tokio::fs::File::create(&part)
                    .await
                    .with_context(|| format!("cannot write {}", part.display()))?;
            }
            // Only what was verified went into it, so only something else
            // writing to it could make it another size.
            let len = tokio::fs::metadata(&part).await?.len();
            if len != entry.size {
                let _ = tokio::fs::remove_file(&part).await;
                bail!(
                    "{} is {len} bytes, not the {} sent: something else wrote to it; run the command again",
                    part.display(),
                    entry.size
                );
            }
            tokio::fs::set_permissions(&part, std::fs::Permissions::from_mode(entry.mode & 0o777))
                .await?;
            tokio::fs::rename(&part, &target)
                .await
                .with_context(|| format!("cannot move {} into place", part.display()))?;
        }
        self.offsets[i] = entry.size;
        self.verified
            .lock()
            .expect("not poisoned")
            .insert((entry.path.clone(), entry.size));
        self.reporter.emit(ReceiveEvent::File {
            path: entry.path.clone(),
            size: entry.size,
        });
        Ok(())
    }
}

/// Refuses a manifest this receiver cannot follow.
fn check_manifest(entries: &[Entry], chunk: u64) -> anyhow::Result<()> {
    if chunk == 0 || chunk > 64 << 20 {
        bail!("the sender's chunk size {chunk} is not usable");
    }
    // Unfinished files are kept as NAME.part: a transfer holding both
    // NAME and NAME.part would write one into the other.
    let files: std::collections::HashSet<&str> = entries
        .iter()
        .filter(|e| !e.dir)
        .map(|e| e.path.as_str())
        .collect();
    if let Some(e) = entries.iter().find(|e| {
        e.path
            .strip_suffix(".part")
            .is_some_and(|p| files.contains(p))
    }) {
        bail!(
            "the transfer holds both {:?} and {:?}, and duplex receive keeps unfinished files as NAME.part; ask the sender to rename one (nothing was written)",
            e.path.trim_end_matches(".part"),
            e.path
        );
    }
    Ok(())
}

/// [`find`] for every entry, on a thread that may block.
async fn find_all(
    entries: &[Entry],
    out: &Path,
    chunk: u64,
    overwrite: bool,
    verified: &Verified,
) -> anyhow::Result<Vec<Found>> {
    let (out_dir, checked, known) = (out.to_owned(), entries.to_vec(), verified.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Found>> {
        checked
            .iter()
            .map(|e| find(&out_dir, e, chunk, overwrite, &known))
            .collect()
    })
    .await?
}
/// Opens `NAME.part` to go on writing after its first `have` bytes (what
/// was verified; anything after them is cut off), locked so that another
/// `duplex receive` into the same folder cannot write into it as well.
async fn open_part(part: PathBuf, have: u64) -> anyhow::Result<tokio::fs::File> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<std::fs::File> {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&part)
            .with_context(|| format!("cannot write {}", part.display()))?;
        // An advisory lock, as every `duplex receive` takes it.
        if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            bail!(
                "another program (another duplex receive?) is writing {}; let it finish or stop it, then run this again",
                part.display()
            );
        }
        f.set_len(have)
            .and_then(|()| f.seek(SeekFrom::End(0)))
            .with_context(|| format!("cannot write {}", part.display()))?;
        Ok(f)
    })
    .await?
    .map(tokio::fs::File::from_std)
}

/// Refuses a target reached through a symbolic link below `out`.
fn no_symlinks_between(out: &Path, target: &Path) -> anyhow::Result<()> {
    let rel = target.strip_prefix(out).expect("joined under out");
    let mut path = out.to_owned();
    for part in rel.components() {
        path.push(part);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!(
                "{} is a symbolic link; refusing to write through it",
                path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two `duplex receive` runs into one folder cannot both write a
    /// `.part`: the second is told, and the first goes on.
    #[tokio::test]
    async fn a_part_file_being_written_is_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("a.bin.part");
        std::fs::write(&part, b"0123456789").unwrap();
        let mut first = open_part(part.clone(), 4).await.unwrap();
        let err = open_part(part.clone(), 0).await.unwrap_err();
        assert!(format!("{err:#}").contains("is writing"), "{err:#}");
        first.write_all(b"xy").await.unwrap();
        first.flush().await.unwrap();
        drop(first);
        // Cut to what was verified, then written after it.
        assert_eq!(std::fs::read(&part).unwrap(), b"0123xy");
        drop(open_part(part.clone(), 6).await.unwrap());
    }
}
