//! Masking throughput (`apply_mask`, aligned and at an odd offset; at the
//! address a payload has behind a 6-byte header; `mask_into`, copying)
//! beside a `memcpy` of the same size, the ceiling for a pass over the bytes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::mem::MaybeUninit;

use duplex_proto::mask::{apply_mask, mask_into};

const SIZES: [usize; 3] = [16, 4096, 1 << 20];

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in SIZES {
        let src = vec![0x5au8; size];
        let mut buf = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("memcpy", size), &size, |b, _| {
            b.iter(|| buf.copy_from_slice(black_box(&src)))
        });
        group.bench_with_input(BenchmarkId::new("apply_mask", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4], 0))
        });
        group.bench_with_input(
            BenchmarkId::new("apply_mask_offset_3", size),
            &size,
            |b, _| b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4], 3)),
        );
        // A received frame's payload: 6 bytes past a 64-byte boundary.
        let mut framed = vec![0u8; size + 128];
        let at = framed.as_ptr().align_offset(64) + 6;
        let payload = &mut framed[at..at + size];
        group.bench_with_input(BenchmarkId::new("apply_mask_at_6", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut *payload), [1, 2, 3, 4], 0))
        });
        // An echo: from behind a 6-byte header to behind a 2-byte one.
        let mut out = vec![MaybeUninit::<u8>::uninit(); size + 128];
        let to = out.as_ptr().align_offset(64) + 2;
        let echo = &mut out[to..to + size];
        group.bench_with_input(BenchmarkId::new("mask_into_6_to_2", size), &size, |b, _| {
            b.iter(|| {
                mask_into(
                    black_box(&framed[at..at + size]),
                    black_box(&mut *echo),
                    [1, 2, 3, 4],
                )
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
    targets = mask
}
criterion_main!(benches);
