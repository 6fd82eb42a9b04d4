//! UTF-8 validation throughput (the incremental `Utf8Validator`, whole and
//! fed in 1 KiB pieces) on ASCII and on mixed-script text, beside `memcpy`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use duplex_proto::utf8::Utf8Validator;

const SIZES: [usize; 3] = [16, 4096, 1 << 20];

/// `size` bytes of valid UTF-8 cycling through 1- to 4-byte sequences.
fn mixed(size: usize) -> Vec<u8> {
    let sample = "héllo wörld κόσμε こんにちは 🎉 ".as_bytes();
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        out.extend_from_slice(sample);
    }
    // Cut at a character boundary at or below `size`.
    let mut end = size.min(out.len());
    while end > 0 && (out[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    out.truncate(end);
    out
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for size in SIZES {
        let ascii: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let text = mixed(size);
        let mut dst = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("memcpy", size), &size, |b, _| {
            b.iter(|| dst.copy_from_slice(black_box(&ascii)))
        });
        group.bench_with_input(BenchmarkId::new("validate_ascii", size), &size, |b, _| {
            b.iter(|| {
                let mut v = Utf8Validator::default();
                v.feed(black_box(&ascii)).unwrap();
                v.finish().unwrap();
            })
        });
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("validate_mixed", size), &size, |b, _| {
            b.iter(|| {
                let mut v = Utf8Validator::default();
                v.feed(black_box(&text)).unwrap();
                v.finish().unwrap();
            })
        });
        group.bench_with_input(
            BenchmarkId::new("validate_mixed_1k_pieces", size),
            &size,
            |b, _| {
                b.iter(|| {
                    let mut v = Utf8Validator::default();
                    for piece in black_box(&text).chunks(1024) {
                        v.feed(piece).unwrap();
                    }
                    v.finish().unwrap();
                })
            },
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
    targets = utf8
}
criterion_main!(benches);
