//! Fuzz target: the permessage-deflate codec on its own.
//!
//! Input layout: the first byte selects the mode and parameters, the rest is
//! split into messages at each `0xAA 0x55` pair (and each message into frames
//! at each `0x55 0xAA` pair), so that the fuzzer controls the boundaries.
//!
//! | selector bits | meaning                                                     |
//! |---------------|-------------------------------------------------------------|
//! | 0             | 0: inflate the bytes as received data, 1: round-trip them through `Deflater` |
//! | 1             | no context takeover                                         |
//! | 2–4           | window bits for the round trip: 9 + n (n = 7 → 15)          |
//! | 5–7           | compression level for the round trip: 0, 1, 2, 4, 6, 7, 8, 9 |
//!
//! Inflating: whatever the bytes, `Inflater` never grows a message past the
//! limit by more than one byte (the decompression-bomb guarantee), and a
//! message it accepts is within the limit. Round trip: what `Deflater`
//! compresses, `Inflater` restores exactly, message after message, with or
//! without context takeover.

#![no_main]

use bytes::BytesMut;
use duplex_proto::deflate::{Deflater, Inflater};
use duplex_proto::{DeflateParams, Role};
use libfuzzer_sys::fuzz_target;

/// Small, so that a few hundred fuzzed bytes can reach it.
const LIMIT: usize = 1000;
const LEVELS: [u32; 8] = [0, 1, 2, 4, 6, 7, 8, 9];

/// Splits `data` at each occurrence of `sep`.
fn split<'a>(data: &'a [u8], sep: &[u8; 2]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < data.len() {
        if data[i..i + 2] == sep[..] {
            parts.push(&data[start..i]);
            i += 2;
            start = i;
        } else {
            i += 1;
        }
    }
    parts.push(&data[start..]);
    parts
}

fn inflate_received(params: &DeflateParams, data: &[u8]) {
    let mut inflater = Inflater::new(params, Role::Server);
    for message in split(data, &[0xAA, 0x55]) {
        let mut out = BytesMut::new();
        for frame in split(message, &[0x55, 0xAA]) {
            let result = inflater.inflate(frame, &mut out, LIMIT);
            assert!(
                out.len() <= LIMIT + 1,
                "{} bytes past a limit of {LIMIT}",
                out.len()
            );
            if result.is_err() {
                // A connection is failed here: nothing more is inflated.
                return;
            }
        }
        let result = inflater.finish_message(&mut out, LIMIT);
        assert!(
            out.len() <= LIMIT + 1,
            "{} bytes past a limit of {LIMIT}",
            out.len()
        );
        match result {
            Ok(()) => assert!(out.len() <= LIMIT, "accepted {} bytes", out.len()),
            Err(_) => return,
        }
    }
}

fn round_trip(selector: u8, data: &[u8]) {
    let no_context_takeover = selector & 2 != 0;
    let bits = 9 + ((selector >> 2) & 7).min(6);
    let level = LEVELS[usize::from(selector >> 5)];
    let params = DeflateParams {
        client_no_context_takeover: no_context_takeover,
        client_max_window_bits: bits,
        ..DeflateParams::default()
    };
    let mut deflater = Deflater::new(&params, Role::Client, level, 0);
    let mut inflater = Inflater::new(&params, Role::Server);
    for message in split(data, &[0xAA, 0x55]) {
        let mut wire = BytesMut::new();
        deflater.compress(message, &mut wire);
        assert!(!wire.is_empty(), "RFC 7692 §7.2.3.6: at least 0x00");
        // Cut the compressed payload into frames where the message had
        // frame separators, scaled to the compressed length.
        let cuts: Vec<usize> = split(message, &[0x55, 0xAA])
            .iter()
            .scan(0, |at, part| {
                *at += part.len();
                Some(*at * wire.len() / message.len().max(1))
            })
            .collect();
        let mut out = BytesMut::new();
        let mut from = 0;
        for &to in &cuts {
            let to = to.clamp(from, wire.len());
            inflater
                .inflate(&wire[from..to], &mut out, usize::MAX)
                .expect("our own compressed data inflates");
            from = to;
        }
        inflater
            .inflate(&wire[from..], &mut out, usize::MAX)
            .expect("our own compressed data inflates");
        inflater
            .finish_message(&mut out, usize::MAX)
            .expect("our own compressed data ends cleanly");
        assert_eq!(
            &out[..],
            message,
            "round trip at level {level}, {bits} bits"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        let params = DeflateParams {
            client_no_context_takeover: selector & 2 != 0,
            ..DeflateParams::default()
        };
        inflate_received(&params, rest);
    } else {
        round_trip(selector, rest);
    }
});
