//! Masking throughput (`apply_mask`, aligned and at an odd offset) beside a
//! `memcpy` of the same size, the ceiling for a pass over the bytes.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use duplex_proto::mask::apply_mask;

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
