//! A minimal blocking WebSocket client for the two control endpoints of
//! kosoku's fuzzingserver that the harness calls itself: `/getCaseCount` (how
//! many cases the client under test should run) and `/updateReports` (write
//! the reports and exit, used when the client under test did not).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Time allowed for connecting and for each read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest handshake response or frame accepted.
const MAX_BYTES: usize = 64 * 1024;

/// Asks the fuzzingserver at `addr` how many cases it will serve.
pub fn get_case_count(addr: SocketAddr) -> Result<usize> {
    let (mut stream, mut buf) = open(addr, "/getCaseCount")?;
    loop {
        if let Some((opcode, payload)) = parse_frame(&buf)? {
            if opcode != 1 {
                bail!("/getCaseCount answered with opcode {opcode}, expected a text message");
            }
            let text = String::from_utf8_lossy(&payload);
            return text
                .trim()
                .parse()
                .with_context(|| format!("/getCaseCount answered {text:?}, not a number"));
        }
        read_more(&mut stream, &mut buf).context("reading the /getCaseCount answer")?;
    }
}

/// Tells the fuzzingserver at `addr` that the run is over: it then writes
/// its reports and exits. It completes the handshake and drops the
/// connection without a close frame, so nothing more is read.
pub fn update_reports(addr: SocketAddr, agent: &str) -> Result<()> {
    open(addr, &format!("/updateReports?agent={agent}"))?;
    Ok(())
}

/// Connects and completes the opening handshake for `path`; returns the
/// stream and any bytes received past the handshake response.
fn open(addr: SocketAddr, path: &str) -> Result<(TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    // The key is the RFC 6455 sample; the server's accept value is not checked.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    let head_len = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        read_more(&mut stream, &mut buf).with_context(|| format!("handshake for {path}"))?;
    };
    let head = String::from_utf8_lossy(&buf[..head_len]);
    if !head.starts_with("HTTP/1.1 101") {
        bail!(
            "handshake for {path} answered {:?}",
            head.lines().next().unwrap_or_default()
        );
    }
    let rest = buf.split_off(head_len);
    Ok((stream, rest))
}

fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk)?;
    if n == 0 {
        bail!("connection closed early");
    }
    if buf.len() + n > MAX_BYTES {
        bail!("answer larger than {MAX_BYTES} bytes");
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Parses one complete unmasked, unfragmented frame at the start of `buf`;
/// `None` if more bytes are needed.
fn parse_frame(buf: &[u8]) -> Result<Option<(u8, Vec<u8>)>> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x80 == 0 || b1 & 0x80 != 0 {
        bail!("unexpected fragmented or masked frame from the fuzzingserver");
    }
    let (len, header) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 => bail!("unexpectedly long frame from the fuzzingserver"),
        126 => return Ok(None),
        n => (usize::from(n), 2),
    };
    if buf.len() < header + len {
        return Ok(None);
    }
    Ok(Some((b0 & 0x0f, buf[header..header + len].to_vec())))
}
