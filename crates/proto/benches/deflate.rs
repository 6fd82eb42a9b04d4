//! permessage-deflate throughput, in uncompressed bytes: compressing and
//! inflating one message of chat-like JSON (no context takeover, so each
//! message stands alone), beside `memcpy` of the same size.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use duplex_proto::deflate::{Deflater, Inflater};
use duplex_proto::{DeflateParams, Role};

const SIZES: [usize; 3] = [256, 4096, 256 * 1024];

/// `size` bytes of JSON-like text with some variety (compresses ~5-10x).
fn message(size: usize) -> Vec<u8> {
    let words = [
        "alice", "bob", "deploy", "done", "lobby", "hello", "ping", "ok", "42", "news",
    ];
    let mut out = Vec::with_capacity(size + 64);
    let mut x = 0x2545_f491u32;
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let w = words[(x % words.len() as u32) as usize];
        out.extend_from_slice(
            format!(
                "{{\"from\":\"{w}\",\"n\":{},\"text\":\"{w} {w}\"}},",
                x % 1000
            )
            .as_bytes(),
        );
    }
    out.truncate(size);
    out
}

fn params() -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    }
}

fn deflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate");
    for size in SIZES {
        let input = message(size);
        let mut dst = vec![0u8; size];
        let mut deflater = Deflater::new(&params(), Role::Client, 6, 0);
        let mut inflater = Inflater::new(&params(), Role::Server);
        let mut compressed = BytesMut::new();
        deflater.compress(&input, &mut compressed);
        let compressed = compressed.freeze();
        let mut out = BytesMut::with_capacity(size * 2);
        inflater.inflate(&compressed, &mut out, usize::MAX).unwrap();
        inflater.finish_message(&mut out, usize::MAX).unwrap();
        assert_eq!(&out[..], &input[..], "round trip");
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("memcpy", size), &size, |b, _| {
            b.iter(|| dst.copy_from_slice(black_box(&input)))
        });
        let mut buf = BytesMut::with_capacity(size * 2);
        group.bench_with_input(BenchmarkId::new("compress_level6", size), &size, |b, _| {
            b.iter(|| {
                buf.clear();
                deflater.compress(black_box(&input), &mut buf);
            })
        });
        // The default level: zlib's fastest.
        let mut fast = Deflater::new(&params(), Role::Client, 1, 0);
        group.bench_with_input(BenchmarkId::new("compress_level1", size), &size, |b, _| {
            b.iter(|| {
                buf.clear();
                fast.compress(black_box(&input), &mut buf);
            })
        });
        group.bench_with_input(BenchmarkId::new("inflate", size), &size, |b, _| {
            b.iter(|| {
                out.clear();
                inflater
                    .inflate(black_box(&compressed), &mut out, usize::MAX)
                    .unwrap();
                inflater.finish_message(&mut out, usize::MAX).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = deflate
}
criterion_main!(benches);
