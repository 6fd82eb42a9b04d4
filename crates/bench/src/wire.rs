//! The client's side of the wire, kept cheap so that the server is the
//! bottleneck: the library's upgrade (duplex-proto's handshake) over raw
//! TCP, frames masked once up front, and an echo checker that parses only
//! headers and compares payloads.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use duplex_proto::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};
use duplex_proto::handshake::HeadLimits;
use duplex_proto::handshake::client::ClientHandshake;
use duplex_proto::handshake::head::{read_response, write_request};
use duplex_proto::mask::apply_mask;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::target::Target;

/// The masking key of every frame we send (any key is valid).
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Opens a TCP connection, from `source` if given (a loopback address).
pub async fn tcp_connect(addr: SocketAddr, source: Option<SocketAddr>) -> Result<TcpStream> {
    let stream = match source {
        None => TcpStream::connect(addr).await?,
        Some(source) => {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.bind(source)?;
            socket.connect(addr).await?
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A connection to the target: plain TCP, TLS over it for `wss://`, or a
/// stream of an HTTP/2 connection (`--http2`).
pub type BenchStream = duplex::MaybeTlsStream;

/// Connects and performs the opening handshake; returns the stream and any
/// bytes that followed the 101 response.
pub async fn ws_connect(
    target: &Target,
    source: Option<SocketAddr>,
) -> Result<(BenchStream, Vec<u8>)> {
    ws_connect_with(target, source, false).await
}

/// The permessage-deflate offer of `--compress`: no context takeover either
/// way, so that every message is compressed on its own — our one pre-built
/// frame stays valid, and each echo inflates without the ones before it.
fn deflate_offer() -> duplex::DeflateConfig {
    duplex::DeflateConfig {
        client_no_context_takeover: true,
        server_no_context_takeover: true,
        ..duplex::DeflateConfig::default()
    }
}

/// [`ws_connect`], offering permessage-deflate when `compress`; fails if the
/// server declines it.
pub async fn ws_connect_with(
    target: &Target,
    source: Option<SocketAddr>,
    compress: bool,
) -> Result<(BenchStream, Vec<u8>)> {
    let tcp = tcp_connect(target.addr, source).await?;
    let mut stream = match &target.tls {
        None => BenchStream::Plain(tcp),
        Some(tls) => {
            let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
            let stream = connector
                .connect(tls.name.clone(), tcp)
                .await
                .context("TLS handshake")?;
            BenchStream::Tls(Box::new(stream))
        }
    };
    // The library's own handshake: the request it writes and the checks it
    // makes of the response (key, upgrade, extensions).
    let handshake = ClientHandshake::new(Vec::new(), compress.then(deflate_offer));
    let request = handshake
        .request(&target.host, &target.path, &http::HeaderMap::new())
        .context("the URL cannot appear in an upgrade request")?;
    let mut wire = Vec::with_capacity(256);
    write_request(&request, &mut wire);
    stream.write_all(&wire).await?;
    let limits = HeadLimits::default();
    let mut buf = Vec::with_capacity(1024);
    let (response, used) = loop {
        if let Some(head) =
            read_response(&buf, &limits).context("a malformed handshake response")?
        {
            break head;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed during the handshake");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let negotiated = handshake
        .verify(&response)
        .map_err(|e| anyhow::anyhow!("upgrade refused: {e}"))?;
    if compress && negotiated.deflate.is_none() {
        bail!("the server declined permessage-deflate; it cannot be benchmarked with --compress");
    }
    Ok((stream, buf.split_off(used)))
}

/// `count` WebSockets as streams of HTTP/2 connections (RFC 8441), as many
/// per connection as the server allows (at most
/// [`duplex::http2::MAX_STREAMS`]);
/// offering permessage-deflate when `compress`, and failing if the server
/// declines it.
pub async fn h2_streams(
    target: &Target,
    count: usize,
    compress: bool,
) -> Result<Vec<(BenchStream, Vec<u8>)>> {
    let mut client = duplex::ClientBuilder::new()
        .proxy(duplex::proxy::ProxyConfig::None)
        .config(duplex::Config::default().with_deflate(compress.then(deflate_offer)));
    let scheme = match &target.tls {
        Some(tls) => {
            client = client.tls_config(tls.config.clone());
            "wss"
        }
        None => "ws",
    };
    let url = format!("{scheme}://{}/", target.host);
    let mut streams = Vec::with_capacity(count);
    while streams.len() < count {
        let h2 = client
            .connect_http2(&url)
            .await
            .with_context(|| format!("HTTP/2 connection to {url}"))?;
        let per_connection = h2
            .max_streams()
            .clamp(1, duplex::http2::MAX_STREAMS as usize);
        for _ in 0..per_connection.min(count - streams.len()) {
            let (stream, response) = h2.open_raw(&target.path).await?;
            let accepted = response
                .headers()
                .get_all("sec-websocket-extensions")
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.contains("permessage-deflate")));
            if compress && !accepted {
                bail!(
                    "the server declined permessage-deflate; it cannot be benchmarked with --compress"
                );
            }
            streams.push((BenchStream::Http2(Box::new(stream)), Vec::new()));
        }
    }
    Ok(streams)
}

/// The payload of `size` bytes every message carries: printable ASCII, so it
/// is valid as text too.
pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// `payload` as masked on the wire by [`masked_frame`].
pub fn masked_payload(payload: &[u8]) -> Vec<u8> {
    let mut out = payload.to_vec();
    apply_mask(&mut out, KEY, 0);
    out
}

/// One masked client frame carrying `payload`.
pub fn masked_frame(payload: &[u8], text: bool) -> Vec<u8> {
    client_frame(payload, text, false)
}

/// A final masked client frame carrying `body`, with RSV1 (compressed) as
/// given.
fn client_frame(body: &[u8], text: bool, rsv1: bool) -> Vec<u8> {
    let header = FrameHeader {
        fin: true,
        rsv1,
        opcode: if text { OpCode::Text } else { OpCode::Binary },
        mask: Some(KEY),
        payload_len: body.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.write(&mut head);
    let mut frame = Vec::with_capacity(n + body.len());
    frame.extend_from_slice(&head[..n]);
    frame.extend_from_slice(body);
    apply_mask(&mut frame[n..], KEY, 0);
    frame
}

/// Realistic text for compressed runs: JSON records with varying numbers
/// and words, `size` bytes long. (The plain [`payload`] repeats the
/// alphabet, which would compress to almost nothing.)
pub fn json_payload(size: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];
    let mut out = String::with_capacity(size + 128);
    let mut i: u64 = 0;
    while out.len() < size {
        let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        out.push_str(&format!(
            "{{\"id\":{i},\"user\":\"{}-{}\",\"score\":{},\"tags\":[\"{}\"]}},",
            WORDS[(x % 8) as usize],
            x % 977,
            x % 10_000,
            WORDS[((x >> 3) % 8) as usize]
        ));
        i += 1;
    }
    out.truncate(size);
    out.into_bytes()
}

/// One masked client frame carrying `payload` compressed on its own
/// (permessage-deflate without context takeover: RSV1 set, the final
/// `00 00 ff ff` removed, RFC 7692 §7.2.1).
pub fn compressed_frame(payload: &[u8], text: bool) -> Vec<u8> {
    client_frame(&deflate(payload), text, true)
}

fn deflate(data: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut z = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    loop {
        let before = z.total_in() as usize;
        z.compress_vec(&data[before..], &mut out, FlushCompress::Sync)
            .expect("deflate into a growing buffer");
        if z.total_in() as usize == data.len() && out.ends_with(&[0, 0, 0xff, 0xff]) {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    out.truncate(out.len() - 4);
    out
}

/// Inflates one message compressed on its own; `None` if it is not valid
/// deflate data or inflates to more than `limit` bytes.
fn inflate(body: &[u8], limit: usize) -> Option<Vec<u8>> {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut z = Decompress::new(false);
    let mut input = body.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(limit + 1);
    loop {
        let before = z.total_in() as usize;
        let status = z
            .decompress_vec(&input[before..], &mut out, FlushDecompress::Sync)
            .ok()?;
        if out.len() > limit {
            return None;
        }
        if z.total_in() as usize == input.len() || status == Status::StreamEnd {
            return Some(out);
        }
        if out.len() == out.capacity() {
            out.reserve(limit + 1 - out.len());
        } else if z.total_in() as usize == before {
            return None;
        }
    }
}

/// Checks a stream of server frames against the expected echo payload,
/// without copying payloads: it counts complete, correct echoes.
pub struct EchoChecker<'a> {
    expected: &'a [u8],
    opcode: OpCode,
    /// The mask the frames must carry: ours for a byte-for-byte TCP mirror.
    mask: Option<[u8; 4]>,
    header: Vec<u8>,
    /// Bytes of the current payload still to come; `None` between frames.
    remaining: Option<usize>,
    /// Compressed replies (RSV1) are accepted and inflated.
    compressed: bool,
    /// The current compressed payload, gathered until it is whole.
    deflated: Option<Vec<u8>>,
    /// Frames that were not an exact echo.
    pub errors: u64,
}

impl<'a> EchoChecker<'a> {
    /// Expects every frame to be a final, unmasked `expected` payload; or,
    /// with `mirror`, our own masked frame back (`expected` is then the
    /// masked payload).
    pub fn new(expected: &'a [u8], text: bool, mirror: bool) -> Self {
        Self {
            expected,
            opcode: if text { OpCode::Text } else { OpCode::Binary },
            mask: mirror.then_some(KEY),
            header: Vec::with_capacity(MAX_HEADER_LEN),
            remaining: None,
            compressed: false,
            deflated: None,
            errors: 0,
        }
    }

    /// Also accepts compressed echoes (permessage-deflate without context
    /// takeover), each inflated and compared; uncompressed ones still count.
    pub fn compressed(mut self) -> Self {
        self.compressed = true;
        self
    }

    /// Consumes `data`; returns how many echoes it completed. A server that
    /// sends anything but the exact echo (a close, another opcode, other
    /// bytes) is an error: counted, and fatal when it breaks the framing.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<u64> {
        let mut done = 0;
        while !data.is_empty() {
            let (used, completed) = match self.remaining {
                Some(left) => self.consume_payload(data, left),
                None => match self.consume_header(data)? {
                    (used, Some(header)) => (used, self.start_frame(&header)?),
                    (used, None) => (used, false),
                },
            };
            data = &data[used..];
            done += u64::from(completed);
        }
        Ok(done)
    }

    /// Consumes bytes of the current payload (`left` of it still to come):
    /// compared in place, or gathered when compressed. Returns the bytes
    /// used and whether they completed the echo.
    #[inline]
    fn consume_payload(&mut self, data: &[u8], left: usize) -> (usize, bool) {
        let n = left.min(data.len());
        if let Some(body) = &mut self.deflated {
            body.extend_from_slice(&data[..n]);
        } else {
            let at = self.expected.len() - left;
            if data[..n] != self.expected[at..at + n] {
                self.errors += 1;
            }
        }
        if n < left {
            self.remaining = Some(left - n);
            return (n, false);
        }
        self.remaining = None;
        if let Some(body) = self.deflated.take() {
            self.check_inflated(&body);
        }
        (n, true)
    }

    /// Consumes bytes of the next frame's header. Returns the bytes used
    /// and the header once it is whole (a header split across reads is
    /// gathered in `self.header`).
    #[inline]
    fn consume_header(&mut self, data: &[u8]) -> Result<(usize, Option<FrameHeader>)> {
        // Fast path: a whole header at the front of `data`.
        if self.header.is_empty()
            && let Some((header, used)) = FrameHeader::parse(data)?
        {
            return Ok((used, Some(header)));
        }
        let take = (MAX_HEADER_LEN - self.header.len()).min(data.len());
        let before = self.header.len();
        self.header.extend_from_slice(&data[..take]);
        match FrameHeader::parse(&self.header)? {
            None => Ok((take, None)),
            Some((header, used)) => {
                self.header.clear();
                Ok((used - before, Some(header)))
            }
        }
    }

    /// Checks a whole header and expects its payload. Returns whether the
    /// frame is already a complete echo (an empty payload).
    #[inline]
    fn start_frame(&mut self, header: &FrameHeader) -> Result<bool> {
        if header.opcode == OpCode::Close {
            bail!("the server closed the connection");
        }
        let deflated = header.rsv1 && self.compressed;
        if header.opcode != self.opcode
            || !header.fin
            || header.mask != self.mask
            || (header.rsv1 && !self.compressed)
            || (!deflated && header.payload_len != self.expected.len() as u64)
            || header.payload_len > 2 * self.expected.len() as u64 + 64
        {
            bail!("unexpected frame from the server: {header:?}");
        }
        if deflated {
            let len = header.payload_len as usize;
            if len == 0 {
                self.check_inflated(&[]);
                return Ok(true);
            }
            self.deflated = Some(Vec::with_capacity(len));
            self.remaining = Some(len);
            return Ok(false);
        }
        if self.expected.is_empty() {
            return Ok(true);
        }
        self.remaining = Some(self.expected.len());
        Ok(false)
    }

    /// Counts an error unless the compressed `body` inflates to the
    /// expected payload.
    fn check_inflated(&mut self, body: &[u8]) {
        if inflate(body, self.expected.len()).as_deref() != Some(self.expected) {
            self.errors += 1;
        }
    }
}

/// Reads into `buf`, failing on end of stream.
pub async fn read_some<S>(stream: &mut S, buf: &mut [u8]) -> Result<usize>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let n = stream.read(buf).await.context("read")?;
    if n == 0 {
        bail!("the server closed the connection");
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader {
            fin: true,
            rsv1: false,
            opcode: OpCode::Binary,
            mask: None,
            payload_len: payload.len() as u64,
        };
        let mut out = Vec::new();
        header.encode(&mut out);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn counts_echoes_split_anywhere() {
        let p = payload(300);
        let mut wire = server_frame(&p);
        wire.extend(server_frame(&p));
        for split in 0..wire.len() {
            let mut checker = EchoChecker::new(&p, false, false);
            let n = checker.feed(&wire[..split]).unwrap() + checker.feed(&wire[split..]).unwrap();
            assert_eq!((n, checker.errors), (2, 0), "split at {split}");
        }
    }

    #[test]
    fn counts_wrong_payloads() {
        let p = payload(16);
        let mut bad = p.clone();
        bad[3] ^= 1;
        let mut checker = EchoChecker::new(&p, false, false);
        assert_eq!(checker.feed(&server_frame(&bad)).unwrap(), 1);
        assert_eq!(checker.errors, 1);
    }

    #[test]
    fn compressed_echoes_inflate_and_are_checked() {
        let p = json_payload(4096);
        assert_eq!(p.len(), 4096);
        let client = compressed_frame(&p, true);
        let (h, used) = FrameHeader::parse(&client).unwrap().unwrap();
        assert!(h.rsv1 && (h.payload_len as usize) < p.len() / 2);
        let mut body = client[used..].to_vec();
        apply_mask(&mut body, h.mask.unwrap(), 0);
        // The same body, unmasked, as a server would send it back.
        let reply = |body: &[u8]| {
            let header = FrameHeader {
                fin: true,
                rsv1: true,
                opcode: OpCode::Text,
                mask: None,
                payload_len: body.len() as u64,
            };
            let mut out = Vec::new();
            header.encode(&mut out);
            out.extend_from_slice(body);
            out
        };
        let mut wire = reply(&body);
        let mut plain = server_frame(&p);
        plain[0] = 0x81; // text
        wire.extend(plain);
        for split in [0, 1, 5, wire.len() / 2, wire.len() - 1] {
            let mut checker = EchoChecker::new(&p, true, false).compressed();
            let n = checker.feed(&wire[..split]).unwrap() + checker.feed(&wire[split..]).unwrap();
            assert_eq!((n, checker.errors), (2, 0), "split at {split}");
        }
        let mut bad = body.clone();
        bad[10] ^= 0x55;
        let mut checker = EchoChecker::new(&p, true, false).compressed();
        assert_eq!(checker.feed(&reply(&bad)).unwrap(), 1);
        assert_eq!(checker.errors, 1);
        // Without --compress a compressed reply breaks the framing.
        assert!(
            EchoChecker::new(&p, true, false)
                .feed(&reply(&body))
                .is_err()
        );
    }

    #[test]
    fn masked_frame_unmasks_to_payload() {
        let p = payload(200);
        let frame = masked_frame(&p, false);
        let (h, used) = FrameHeader::parse(&frame).unwrap().unwrap();
        let mut body = frame[used..].to_vec();
        apply_mask(&mut body, h.mask.unwrap(), 0);
        assert_eq!(body, p);
    }
}
