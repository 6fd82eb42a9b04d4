//! Known answers of the end-to-end layer, shared with the browser: the
//! values are in `crates/transfer/known-answers.json`, which this test
//! checks (`DUPLEX_REGENERATE=1` rewrites it) and
//! `tests/browser/transfer.spec.mjs` checks the page's Web Crypto code
//! against. Fixed "random" scalars make SPAKE2 reproducible.

use bytes::BytesMut;
use duplex_transfer::chunk::{self, ChunkHeader};
use duplex_transfer::digest::{FileDigest, chunk_digest, hex};
use duplex_transfer::seal::{Direction, Handshake, Sealer, Space, derive_key};
use serde_json::{Value, json};

/// The bytes a fixed "random" source gives: `start`, `start + 1`, ...
struct Counting(u8);

impl rand_core::RngCore for Counting {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }
    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            *b = self.0;
            self.0 = self.0.wrapping_add(1);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for Counting {}

fn answers() -> Value {
    let code = "7-violet-anchor";
    // Side A's scalar comes from the 64 bytes 0..=63, side B's from 64..=127.
    let (a, msg_a) = Handshake::start_with_rng(code, Counting(0));
    let (b, msg_b) = Handshake::start_with_rng(code, Counting(64));
    let shared = a.finish_shared(&msg_b).unwrap();
    assert_eq!(shared, b.finish_shared(&msg_a).unwrap());
    let key = derive_key(&shared);
    let sealer = Sealer::from_shared(&shared);
    let control_plain = br#"{"type":"confirm"}"#;
    let mut control = control_plain.to_vec();
    let tag = sealer.seal_in_place(Direction::ToSender, Space::Control, 5, b"", &mut control);
    control.extend_from_slice(&tag);
    let data = b"hello, chunk";
    let header = ChunkHeader {
        seq: 3,
        file: 2,
        index: 1,
    };
    let mut frame = BytesMut::new();
    chunk::start(&mut frame, 7, header, data.len()).copy_from_slice(data);
    chunk::seal(&mut frame, &sealer, Direction::ToReceiver);
    json!({
        "code": code,
        "rng_a_first_byte": 0,
        "rng_b_first_byte": 64,
        "pake_a": hex(&msg_a),
        "pake_b": hex(&msg_b),
        "shared": hex(&shared),
        "key": hex(&key),
        "control": {
            "direction": Direction::ToSender as u8,
            "seq": 5,
            "plain": std::str::from_utf8(control_plain).unwrap(),
            "sealed": hex(&control),
        },
        "chunk": {
            "direction": Direction::ToReceiver as u8,
            "peer": 7,
            "seq": header.seq,
            "file": header.file,
            "index": header.index,
            "plain": std::str::from_utf8(data).unwrap(),
            "frame": hex(&frame),
        },
        "digest": {
            "data": std::str::from_utf8(data).unwrap(),
            "chunk_size": 5,
            "chunk": hex(&chunk_digest(data)),
            "file": hex(&FileDigest::of(data, 5)),
        },
    })
}

#[test]
fn known_answers_shared_with_the_browser() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/known-answers.json");
    let want = serde_json::to_string_pretty(&answers()).unwrap() + "\n";
    if std::env::var_os("DUPLEX_REGENERATE").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "{path} differs from what crates/transfer computes: the end-to-end layer changed. If on purpose (a new protocol version), run `DUPLEX_REGENERATE=1 cargo test -p duplex-transfer`\n{want}"
    );
}
