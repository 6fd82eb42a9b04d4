//! Frame encode and parse throughput, counted in payload bytes: a client
//! frame encoded (header + masked copy of the payload) and a frame parsed
//! (header) and unmasked in place, beside `memcpy` of the payload.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use duplex_proto::frame::{FrameHeader, MAX_HEADER_LEN, OpCode};
use duplex_proto::mask::{apply_mask, extend_masked};

const SIZES: [usize; 3] = [16, 4096, 1 << 20];
const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

fn header(size: usize) -> FrameHeader {
    FrameHeader {
        fin: true,
        rsv1: false,
        opcode: OpCode::Binary,
        mask: Some(KEY),
        payload_len: size as u64,
    }
}

fn frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for size in SIZES {
        let payload = vec![0x42u8; size];
        let mut wire = BytesMut::with_capacity(size + MAX_HEADER_LEN);
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header(size).write(&mut head);
        wire.extend_from_slice(&head[..n]);
        extend_masked(&mut wire, &payload, KEY);
        let encoded = wire.to_vec();
        let mut dst = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("memcpy", size), &size, |b, _| {
            b.iter(|| dst.copy_from_slice(black_box(&payload)))
        });
        group.bench_with_input(BenchmarkId::new("encode_masked", size), &size, |b, _| {
            b.iter(|| {
                wire.clear();
                let mut head = [0u8; MAX_HEADER_LEN];
                let n = black_box(header(size)).write(&mut head);
                wire.extend_from_slice(&head[..n]);
                extend_masked(&mut wire, black_box(&payload), KEY);
            })
        });
        let mut buf = encoded.clone();
        group.bench_with_input(BenchmarkId::new("parse_unmask", size), &size, |b, _| {
            b.iter(|| {
                let (h, used) = FrameHeader::parse(black_box(&buf)).unwrap().unwrap();
                let key = h.mask.unwrap();
                apply_mask(&mut buf[used..], key, 0);
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
    targets = frame
}
criterion_main!(benches);
