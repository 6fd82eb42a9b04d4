//! A peer that sends more than a buffer per read gets larger reads: one
//! read of up to 64 KiB instead of eight of 8 KiB (each read is a system
//! call, and so is the write of its echoes). A connection whose reads do
//! not fill their buffer keeps the small one.

mod common;
mod rawpeer;

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use duplex::proto::frame::OpCode;
use duplex::proto::{Connection, Role};
use duplex::{Config, MemoryBudget, Message, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Gives `wire` as fast as it is read, each read as much as fits, then
/// waits forever; records the room each read offered. Writes vanish.
struct Firehose {
    wire: Vec<u8>,
    at: usize,
    /// At most this much per read (a peer trickling).
    per_read: usize,
    offered: Arc<Mutex<Vec<usize>>>,
}

impl AsyncRead for Firehose {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at == this.wire.len() {
            return Poll::Pending;
        }
        this.offered.lock().unwrap().push(buf.remaining());
        let n = buf
            .remaining()
            .min(this.per_read)
            .min(this.wire.len() - this.at);
        buf.put_slice(&this.wire[this.at..this.at + n]);
        this.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Firehose {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Receives `count` binary messages of `size` bytes (each different)
/// through a server socket reading at most `per_read` bytes at a time;
/// checks every one and returns the room each read offered.
async fn receive(count: usize, size: usize, per_read: usize, config: Config) -> Vec<usize> {
    let payloads: Vec<Vec<u8>> = (0..count)
        .map(|i| common::pseudo_random(size, i as u64 + 1))
        .collect();
    let wire = payloads
        .iter()
        .flat_map(|p| rawpeer::client_frame(OpCode::Binary, true, p))
        .collect();
    let offered = Arc::new(Mutex::new(Vec::new()));
    let io = Firehose {
        wire,
        at: 0,
        per_read,
        offered: offered.clone(),
    };
    let conn = Connection::new(Role::Server, Default::default(), None);
    let mut ws = WebSocket::from_parts(io, conn, config, None);
    for (i, payload) in payloads.iter().enumerate() {
        let got = common::within("a message", ws.recv()).await;
        let Some(Ok(Message::Binary(got))) = got else {
            panic!("message {i}: {got:?}");
        };
        common::assert_same_bytes(&got, payload, &format!("message {i}"));
    }
    offered.lock().unwrap().clone()
}

#[tokio::test]
async fn a_peer_filling_every_read_gets_reads_of_up_to_64_kib() {
    let (count, size) = (128, 4096);
    let offered = receive(count, size, usize::MAX, Config::default()).await;
    assert!(
        offered[0] <= 16 << 10,
        "a connection starts with a small buffer: {offered:?}"
    );
    assert!(
        offered[1..].iter().all(|&room| room >= 16 << 10),
        "once a read filled the buffer, reads take more: {offered:?}"
    );
    let total = count * (size + 8);
    assert!(
        offered.len() <= total / (32 << 10) + 2,
        "{} reads for {total} bytes: {offered:?}",
        offered.len()
    );
}

#[tokio::test]
async fn a_peer_sending_less_than_a_buffer_per_read_keeps_the_small_one() {
    let offered = receive(64, 1000, 3000, Config::default()).await;
    assert!(
        offered.iter().all(|&room| room <= 16 << 10),
        "reads that never fill the buffer never grow it: {offered:?}"
    );
}

/// A read-ahead buffer is charged only on the turn after it is taken, and a
/// connection made to wait then would hold it uncharged: under a memory
/// budget more than half used, reads stay small.
#[tokio::test]
async fn under_a_budget_more_than_half_used_reads_stay_small() {
    let budget = MemoryBudget::new(4 << 20);
    let config = Config::default().with_memory_budget(budget.clone());
    let offered = receive(32, 4096, usize::MAX, config.clone()).await;
    assert!(
        offered[1..].iter().any(|&room| room > 16 << 10),
        "with room in the budget reads grow: {offered:?}"
    );
    let _held = budget.charge(2 << 20);
    let offered = receive(32, 4096, usize::MAX, config).await;
    assert!(
        offered.iter().all(|&room| room <= 16 << 10),
        "{} of {} bytes used: {offered:?}",
        budget.used(),
        budget.limit()
    );
}
