//! `transfer`: the throughput of one large transfer through the `/files`
//! relay of `duplex serve`, beside a raw TCP copy of the same bytes on the
//! same machine — what the relay, WebSocket framing and the end-to-end
//! encryption cost, as ratios.
//!
//! Three runs, each moving `--size` bytes in `--chunk` pieces from memory to
//! memory (the disk is not measured here):
//! - `tcp`: one loopback TCP connection, written and read by this process;
//! - `plain`: sender and receiver on the relay with its credit flow control,
//!   chunks as they are;
//! - `sealed`: the same after a SPAKE2 key exchange, every chunk sealed
//!   (AES-256-GCM, `duplex_transfer::chunk`) exactly as `duplex send` does,
//!   opened and checked as `duplex receive` does.
//!
//! Every byte received is compared with what was sent; a difference is an
//! error and fails the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use clap::{Args, ValueEnum};
use duplex::{MaybeTlsStream, Message, WebSocketReader};
use duplex_transfer::chunk::{Inbound, Outbound};
use duplex_transfer::peer_frame::{self, PEER_HEADER};
use duplex_transfer::relay_message::Peer;
use duplex_transfer::{Credit, Kind, PeerFrame, RelayMessage};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::report::{Report, Row};
use crate::server_usage::CpuWatch;
use crate::target::Target;
use crate::{Common, parse_size, show_size};
use duplex_transfer::channel::Channel;
use duplex_transfer::seal::{Direction, Handshake};
use duplex_transfer_client::link::{self, Link};

/// Longest wait for any single step (a reply, a chunk): a stuck run fails
/// instead of hanging.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The options of `transfer`.
#[derive(Args)]
pub struct TransferArgs {
    /// The target and the report's form.
    #[command(flatten)]
    pub common: Common,
    /// Bytes to move (k/K = KiB, m/M = MiB, g/G = GiB).
    #[arg(short = 's', long, default_value = "1g", value_parser = parse_size)]
    pub size: usize,
    /// Bytes per chunk (the CLI sends 1 MiB chunks).
    #[arg(long, default_value = "1m", value_parser = parse_size)]
    pub chunk: usize,
    /// Which runs, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "tcp,plain,sealed"
    )]
    pub runs: Vec<Run>,
}

/// One way of moving the bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Run {
    /// A raw TCP copy on loopback: the ceiling.
    Tcp,
    /// Through the relay, chunks as they are.
    Plain,
    /// Through the relay, hashed and sealed end to end like `duplex send`.
    Sealed,
}

/// Runs each of the runs asked for, in order.
pub async fn run(args: &TransferArgs) -> Result<Report> {
    let target = Target::parse(&args.common.url, args.common.allow_remote)?;
    if target.tls.is_some() {
        bail!(
            "the transfer mode measures plain ws:// or http:// only; wss:// is measured by echo and latency"
        );
    }
    if args.chunk == 0 || args.chunk > 2 << 20 {
        bail!("--chunk must be between 1 B and 2 MiB (the relay's largest frame)");
    }
    if args.size == 0 {
        bail!("--size must be at least 1 B");
    }
    let pattern = Arc::new(pattern(args.chunk));
    let mut rows = Vec::new();
    for &run in &args.runs {
        let mut row = match run {
            Run::Tcp => tcp_copy(&target, args.size, &pattern).await?,
            Run::Plain | Run::Sealed => {
                // The relay's own cost per MiB, with --server-pid.
                let watch = CpuWatch::start_if(&args.common.server_pid)?;
                let sealed = run == Run::Sealed;
                let mut row = relay_copy(&args.common.url, args.size, &pattern, sealed).await?;
                if let Some(watch) = watch {
                    let mib = args.size as f64 / f64::from(1u32 << 20);
                    watch.report_per(&mut row, "mib", mib)?;
                }
                row
            }
        };
        row.name = format!(
            "{} {}",
            match run {
                Run::Tcp => "raw TCP copy",
                Run::Plain => "relay, plain",
                Run::Sealed => "relay, end-to-end encrypted",
            },
            show_size(args.size)
        );
        rows.push(row);
    }
    // Each run as a share of the TCP copy, when there is one.
    if let Some(tcp) = rows
        .iter()
        .zip(&args.runs)
        .find(|(_, r)| **r == Run::Tcp)
        .map(|(row, _)| row.mb_per_s())
    {
        for row in &mut rows {
            let share = 100.0 * row.mb_per_s() / tcp.max(1e-9);
            row.extra
                .push(("share_of_tcp_pct".into(), share, "% of TCP".into()));
        }
    }
    Ok(Report {
        mode: "transfer",
        url: args.common.url.clone(),
        unit: "chunks",
        params: json!({ "size": args.size, "chunk": args.chunk }),
        rows,
    })
}

/// Chunk contents: not compressible, different from one run to the next
/// only in their position.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The chunk sizes that make up `size` bytes.
fn chunks(size: usize, chunk: usize) -> impl Iterator<Item = usize> {
    (0..size.div_ceil(chunk)).map(move |i| pattern_len(size, chunk, i))
}

/// The raw TCP copy: a listener on the target's loopback address, a writer
/// and a reader task in this process.
async fn tcp_copy(target: &Target, size: usize, pattern: &Arc<Vec<u8>>) -> Result<Row> {
    let listener = TcpListener::bind((target.addr.ip(), 0))
        .await
        .context("cannot listen on loopback for the TCP copy")?;
    let addr = listener.local_addr()?;
    let expected = pattern.clone();
    let reader = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await?;
        let mut buf = vec![0u8; 256 << 10];
        let (mut got, mut wrong) = (0usize, 0u64);
        while got < size {
            let n = tokio::time::timeout(STEP_TIMEOUT, stream.read(&mut buf))
                .await
                .context("the TCP copy stalled")??;
            if n == 0 {
                bail!("the TCP copy ended after {got} of {size} bytes");
            }
            wrong += mismatches(&buf[..n], &expected, got) as u64;
            got += n;
        }
        anyhow::Ok((Instant::now(), wrong))
    });
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let started = Instant::now();
    for len in chunks(size, pattern.len()) {
        stream.write_all(&pattern[..len]).await?;
    }
    stream.flush().await?;
    let (ended, wrong) = reader.await??;
    let mut row = Row::new("tcp");
    row.ops = size.div_ceil(pattern.len()) as u64;
    row.bytes = size as u64;
    row.errors = wrong;
    row.elapsed = ended - started;
    Ok(row)
}

/// Bytes of `got` (received at stream offset `at`) that differ from the
/// cyclic `pattern`; 0 or 1, enough to fail the run.
fn mismatches(got: &[u8], pattern: &[u8], at: usize) -> usize {
    let mut offset = at % pattern.len();
    let mut rest = got;
    while !rest.is_empty() {
        let n = rest.len().min(pattern.len() - offset);
        if rest[..n] != pattern[offset..offset + n] {
            return 1;
        }
        rest = &rest[n..];
        offset = 0;
    }
    0
}

/// Reads the next relay message, skipping binary frames; fails on a
/// close, an error reply or silence.
async fn next_relay_message(link: &mut Link) -> Result<RelayMessage> {
    loop {
        let msg = tokio::time::timeout(STEP_TIMEOUT, link.reader.recv())
            .await
            .context("the relay went silent")?;
        match msg {
            Some(Ok(Message::Text(t))) => {
                let msg = RelayMessage::parse(t.as_str())
                    .context("not a relay message; is the URL a Duplex /files relay?")?;
                if let RelayMessage::Error { code, message } = msg {
                    bail!("the relay refused: {message} (code {code})");
                }
                return Ok(msg);
            }
            Some(Ok(Message::Close(frame))) => bail!("the relay closed: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("the relay connection failed"),
            None => bail!("the relay closed the connection"),
        }
    }
}

/// Reads the next binary frame from the relay (a whole peer frame); the
/// relay's credit grants read on the way go to `credit`.
async fn next_frame(link: &mut Link, credit: Option<&Credit>) -> Result<Bytes> {
    loop {
        let msg = tokio::time::timeout(STEP_TIMEOUT, link.reader.recv())
            .await
            .context("the relay went silent")?;
        match msg {
            Some(Ok(Message::Binary(b))) if PeerFrame::parse(&b).is_some() => return Ok(b),
            Some(Ok(Message::Text(t))) => {
                if let (Some(credit), Ok(RelayMessage::Credit { bytes, .. })) =
                    (credit, RelayMessage::parse(t.as_str()))
                {
                    credit.grant(bytes)?;
                }
            }
            Some(Ok(Message::Close(frame))) => bail!("the relay closed: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("the relay connection failed"),
            None => bail!("the relay closed the connection"),
        }
    }
}

/// A sender and a receiver on the relay: create, join, (key exchange),
/// then the chunks within the relay's credit.
async fn relay_copy(url: &str, size: usize, pattern: &Arc<Vec<u8>>, sealed: bool) -> Result<Row> {
    let mut pair = RelayPair::open(url, size).await?;
    // Every frame to the receiver costs credit, the key exchange's too,
    // counted as the relay counts it.
    let credit = Arc::new(Credit::new(pair.window));
    let (outbound, inbound) = if sealed {
        let (outbound, inbound) = pair.exchange_keys(&credit).await?;
        (Some(outbound), Some(inbound))
    } else {
        (None, None)
    };
    let RelayPair {
        sender,
        receiver,
        peer,
        ..
    } = pair;
    sender
        .tx
        .send(RelayMessage::Accept { peer }.to_message())
        .await?;

    let total_chunks = size.div_ceil(pattern.len());
    let reading = tokio::spawn(receive_chunks(receiver, inbound, pattern.clone(), size));
    // Credit from the relay arrives on the sender's reader.
    let granting = tokio::spawn(grant_credit(sender.reader, credit.clone()));
    let started = Instant::now();
    let mut chunk_sender = ChunkSender {
        tx: &sender.tx,
        outbound,
        peer,
        credit: &credit,
    };
    chunk_sender.send_all(pattern, size).await?;
    let (ended, wrong) = reading.await??;
    let _ = sender.tx.send(Message::Close(None)).await;
    granting.abort();
    let mut row = Row::new("relay");
    row.ops = total_chunks as u64;
    row.bytes = size as u64;
    row.errors = wrong;
    row.elapsed = ended - started;
    Ok(row)
}

/// A sender and a receiver joined on the relay, the receiver not yet
/// accepted.
struct RelayPair {
    sender: Link,
    receiver: Link,
    nameplate: u32,
    /// The receiver's credit window, in bytes of binary frames.
    window: u64,
    /// The receiver, as the sender addresses it.
    peer: Peer,
}

impl RelayPair {
    /// Creates a transfer of `size` bytes as the sender, joins it as the
    /// receiver, and waits until the relay tells the sender.
    async fn open(url: &str, size: usize) -> Result<Self> {
        let mut sender = link::connect(url).await?;
        let create = RelayMessage::Create {
            size: size as u64,
            nameplate: None,
            token: None,
        };
        sender.tx.send(create.to_message()).await?;
        let (nameplate, window) = match next_relay_message(&mut sender).await? {
            RelayMessage::Created {
                nameplate, window, ..
            } => (nameplate, window),
            other => bail!("the relay answered the create with {other:?}"),
        };
        let mut receiver = link::connect(url).await?;
        receiver
            .tx
            .send(RelayMessage::Join { nameplate }.to_message())
            .await?;
        match next_relay_message(&mut receiver).await? {
            RelayMessage::Joined { .. } => {}
            other => bail!("the relay answered the join with {other:?}"),
        }
        let peer = loop {
            if let RelayMessage::PeerJoined { peer } = next_relay_message(&mut sender).await? {
                break peer;
            }
        };
        Ok(Self {
            sender,
            receiver,
            nameplate,
            window,
            peer,
        })
    }

    /// Key exchange through the relay, as the CLI does it: the sender's
    /// sealing of chunks and the receiver's opening of them.
    async fn exchange_keys(&mut self, credit: &Credit) -> Result<(Outbound, Inbound)> {
        let code = format!("{}-bench-run", self.nameplate);
        let (s_hs, s_msg) = Handshake::start(&code);
        let (r_hs, r_msg) = Handshake::start(&code);
        let pake = peer_frame::encode(self.peer, Kind::Pake, &[&s_msg]);
        credit.try_debit(Credit::cost(&pake))?;
        self.sender.tx.send(Message::Binary(pake)).await?;
        self.receiver
            .tx
            .send(Message::Binary(peer_frame::encode(
                0,
                Kind::Pake,
                &[&r_msg],
            )))
            .await?;
        let at_receiver = next_frame(&mut self.receiver, None).await?;
        let at_sender = next_frame(&mut self.sender, Some(credit)).await?;
        let s_key = Arc::new(s_hs.finish(&at_sender[PEER_HEADER + 1..])?);
        let r_key = Arc::new(r_hs.finish(&at_receiver[PEER_HEADER + 1..])?);
        Ok((
            Channel::new(s_key, Direction::ToReceiver).data_out(),
            Channel::new(r_key, Direction::ToSender).data_in(),
        ))
    }
}

/// The receiver's side of the copy: every chunk, checked against
/// `expected`; when the last arrived and how many were wrong.
async fn receive_chunks(
    mut receiver: Link,
    mut inbound: Option<Inbound>,
    expected: Arc<Vec<u8>>,
    size: usize,
) -> Result<(Instant, u64)> {
    let mut wrong = 0u64;
    for index in 0..size.div_ceil(expected.len()) {
        let frame = next_frame(&mut receiver, None).await?;
        let len = pattern_len(size, expected.len(), index);
        let intact = chunk_is_intact(frame, inbound.as_mut(), index, &expected[..len])?;
        wrong += u64::from(!intact);
    }
    let _ = receiver.tx.send(Message::Close(None)).await;
    Ok((Instant::now(), wrong))
}

/// Whether a delivered frame is chunk `index` carrying `expected`; opened
/// first when sealed. A frame that is no peer frame fails the run.
fn chunk_is_intact(
    frame: Bytes,
    inbound: Option<&mut Inbound>,
    index: usize,
    expected: &[u8],
) -> Result<bool> {
    let Some(parsed) = PeerFrame::parse(&frame) else {
        bail!("the relay delivered a malformed frame");
    };
    Ok(match inbound {
        Some(inbound) => {
            // Opened in place, as `duplex receive` does.
            let mut frame = frame
                .try_into_mut()
                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
            matches!(inbound.open(&mut frame[PEER_HEADER + 1..]),
                Some((h, data)) if h.file == 0 && h.index == index as u64 && data[..] == expected[..])
        }
        None => parsed.kind == Kind::Chunk && parsed.body == expected,
    })
}

/// Passes the relay's credit grants, read on the sender's link, to
/// `credit` until the link ends.
async fn grant_credit(
    mut reader: WebSocketReader<MaybeTlsStream>,
    credit: Arc<Credit>,
) -> Result<()> {
    while let Some(Ok(msg)) = reader.recv().await {
        if let Message::Text(t) = msg
            && let Ok(RelayMessage::Credit { bytes, .. }) = RelayMessage::parse(t.as_str())
        {
            credit.grant(bytes)?;
        }
    }
    Ok(())
}

/// The sender's side of the copy: the chunks as peer frames to the
/// receiver, sealed when there is an `outbound`, each within the credit.
struct ChunkSender<'a> {
    tx: &'a mpsc::Sender<Message>,
    outbound: Option<Outbound>,
    peer: Peer,
    credit: &'a Credit,
}

impl ChunkSender<'_> {
    /// Sends `size` bytes of `pattern`, chunk after chunk.
    async fn send_all(&mut self, pattern: &[u8], size: usize) -> Result<()> {
        let mut buf = BytesMut::new();
        for (index, len) in chunks(size, pattern.len()).enumerate() {
            let msg = self.chunk_message(&mut buf, index, &pattern[..len]);
            tokio::time::timeout(
                STEP_TIMEOUT,
                self.credit.debit(Credit::cost(msg.as_bytes())),
            )
            .await
            .context("the relay granted no credit for 30 s")??;
            self.tx
                .send(msg)
                .await
                .context("the sender's link closed")?;
        }
        Ok(())
    }

    /// The peer frame of chunk `index`, built in `buf` when sealed.
    fn chunk_message(&mut self, buf: &mut BytesMut, index: usize, chunk: &[u8]) -> Message {
        match self.outbound.as_mut() {
            Some(out) => {
                out.start(buf, self.peer, 0, index as u64, chunk.len())
                    .copy_from_slice(chunk);
                out.seal(buf);
                Message::Binary(buf.split().freeze())
            }
            None => Message::Binary(peer_frame::encode(self.peer, Kind::Chunk, &[chunk])),
        }
    }
}

/// The length of chunk `index` of a `size`-byte transfer.
fn pattern_len(size: usize, chunk: usize, index: usize) -> usize {
    chunk.min(size - index * chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_and_comparison() {
        assert_eq!(chunks(10, 4).collect::<Vec<_>>(), [4, 4, 2]);
        assert_eq!(pattern_len(10, 4, 2), 2);
        let p = pattern(8);
        let mut stream: Vec<u8> = p.iter().chain(&p).copied().collect();
        assert_eq!(mismatches(&stream[3..13], &p, 3), 0);
        stream[9] ^= 1;
        assert_eq!(mismatches(&stream[3..13], &p, 3), 1);
    }
}
