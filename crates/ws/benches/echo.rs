//! The library's own cost per echoed message, without the kernel: a server
//! socket over an in-memory stream that always has one pipelined batch of
//! masked client frames to read and takes every write whole. One iteration
//! is one batch: 16 messages received with `recv_ref` and echoed from the
//! read buffer, then one write, as `duplex serve` /echo did on a busy
//! connection; and the same batch as `duplex serve` /echo does it now: the
//! first message received with `recv_ref` and echoed, the other 15 echoed
//! at once by `echo_buffered`.

use std::hint::black_box;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use duplex::proto::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};
use duplex::proto::mask::extend_masked;
use duplex::proto::{Connection, Role};
use duplex::{Config, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const BATCH: usize = 16;

/// Reads give the batch's frames over and over (at most one batch per
/// read), writes vanish.
struct Looped {
    batch: Vec<u8>,
    at: usize,
}

impl AsyncRead for Looped {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = (this.batch.len() - this.at).min(buf.remaining());
        buf.put_slice(&this.batch[this.at..this.at + n]);
        this.at = (this.at + n) % this.batch.len();
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Looped {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn batch(size: usize) -> Vec<u8> {
    let payload = vec![0x42u8; size];
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut wire = bytes::BytesMut::new();
    for _ in 0..BATCH {
        let header = FrameHeader {
            fin: true,
            rsv1: false,
            opcode: OpCode::Binary,
            mask: Some(key),
            payload_len: size as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.write(&mut head);
        wire.extend_from_slice(&head[..n]);
        extend_masked(&mut wire, &payload, key);
    }
    wire.to_vec()
}

fn echo(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo");
    let budgets = [None, Some(duplex::MemoryBudget::new(1 << 30))];
    for (size, budget) in [
        (16usize, &budgets[0]),
        (16, &budgets[1]),
        (4096, &budgets[0]),
    ] {
        let io = Looped {
            batch: batch(size),
            at: 0,
        };
        let conn = Connection::new(Role::Server, Default::default(), None);
        let config = match budget {
            Some(b) => Config::default().with_memory_budget(b.clone()),
            None => Config::default(),
        };
        let mut ws = WebSocket::from_parts(io, conn, config, None);
        let name = match budget {
            Some(_) => format!("recv_ref_echo_{size}_budget"),
            None => format!("recv_ref_echo_{size}"),
        };
        let mut cx = Context::from_waker(Waker::noop());
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    let Poll::Ready(Some(Ok(received))) = pin!(ws.recv_ref()).poll(&mut cx) else {
                        panic!("a message is always there");
                    };
                    black_box(received.message().len());
                    let Poll::Ready(Ok(())) = pin!(received.echo()).poll(&mut cx) else {
                        panic!("there is always room");
                    };
                }
            })
        });
    }
    for size in [16usize, 4096] {
        let io = Looped {
            batch: batch(size),
            at: 0,
        };
        let conn = Connection::new(Role::Server, Default::default(), None);
        let mut ws = WebSocket::from_parts(io, conn, Config::default(), None);
        let mut cx = Context::from_waker(Waker::noop());
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(format!("echo_buffered_{size}"), |b| {
            b.iter(|| {
                // A batch of 4 KiB frames may take more than one read.
                let mut echoed = 0;
                while echoed < BATCH {
                    let Poll::Ready(Some(Ok(received))) = pin!(ws.recv_ref()).poll(&mut cx) else {
                        panic!("a message is always there");
                    };
                    let Poll::Ready(Ok(())) = pin!(received.echo()).poll(&mut cx) else {
                        panic!("there is always room");
                    };
                    echoed += 1 + ws.echo_buffered().messages;
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, echo);
criterion_main!(benches);
