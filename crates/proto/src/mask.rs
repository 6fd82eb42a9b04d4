//! Payload masking (RFC 6455 §5.3).
//!
//! Every frame a client sends is XORed with a 4-byte key. Masking sits on the
//! hot path of every received byte on a server, so it works on 32-byte blocks
//! that the compiler turns into SIMD XORs, and falls back to bytes only for
//! the tail. Masking is its own inverse: the same call masks and unmasks.
//!
//! ```
//! use duplex_proto::mask::apply_mask;
//! let mut payload = *b"abc";
//! apply_mask(&mut payload, [0x20, 0x20, 0x20, 0x20], 0); // flips ASCII case
//! assert_eq!(&payload, b"ABC");
//! ```

/// XORs `buf` with the mask `key`, as if `buf` started `offset` bytes into
/// the masked payload (so a payload can be unmasked piece by piece as it
/// arrives).
///
/// ```
/// use duplex_proto::mask::apply_mask;
/// let key = [1, 2, 3, 4];
/// let mut data = *b"hello, world";
/// apply_mask(&mut data, key, 0);
/// assert_ne!(&data, b"hello, world");
/// // Unmask in two pieces: the second starts 5 bytes into the payload.
/// let (a, b) = data.split_at_mut(5);
/// apply_mask(a, key, 0);
/// apply_mask(b, key, 5);
/// assert_eq!(&data, b"hello, world");
/// ```
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotate(key, offset);
    // The key repeated over a word: the same bytes in memory whatever the
    // byte order, since both halves are equal.
    let key4 = u32::from_ne_bytes(key);
    let key8 = u64::from(key4) | (u64::from(key4) << 32);
    let bulk = buf.len() & !31;
    let (blocks, rest) = buf.split_at_mut(bulk);
    if !blocks.is_empty() {
        mask_blocks(blocks, key8);
    }
    // 32, 8 and 4 are multiples of 4, so each tail starts at the same key
    // phase. Small payloads (most chat and RPC messages) are all tail: a
    // word at a time, inline, with no call and no byte loop.
    let mut words = rest.chunks_exact_mut(8);
    for word in &mut words {
        let word: &mut [u8; 8] = word.try_into().expect("exact chunk");
        *word = (u64::from_ne_bytes(*word) ^ key8).to_ne_bytes();
    }
    let rest = words.into_remainder();
    let rest = match rest.split_first_chunk_mut::<4>() {
        Some((word, tail)) => {
            *word = (u32::from_ne_bytes(*word) ^ key4).to_ne_bytes();
            tail
        }
        None => rest,
    };
    for (b, k) in rest.iter_mut().zip(key) {
        *b ^= k;
    }
}

/// The bulk of a large payload: fixed 32-byte blocks, which LLVM turns into
/// vector XORs. Out of line, so that the small-payload path stays short.
#[inline(never)]
fn mask_blocks(blocks: &mut [u8], key8: u64) {
    for block in blocks.chunks_exact_mut(32) {
        let block: &mut [u8; 32] = block.try_into().expect("exact chunk");
        for word in block.chunks_exact_mut(8) {
            let word: &mut [u8; 8] = word.try_into().expect("exact chunk");
            *word = (u64::from_ne_bytes(*word) ^ key8).to_ne_bytes();
        }
    }
}

/// Appends `src` masked with `key` to `dst`: copy and mask in one pass, as a
/// client does when it frames a payload it does not own.
///
/// ```
/// use duplex_proto::mask::{apply_mask, extend_masked};
/// let mut out = bytes::BytesMut::new();
/// extend_masked(&mut out, b"abc", [9, 9, 9, 9]);
/// apply_mask(&mut out, [9, 9, 9, 9], 0);
/// assert_eq!(&out[..], b"abc");
/// ```
#[inline]
pub fn extend_masked(dst: &mut bytes::BytesMut, src: &[u8], key: [u8; 4]) {
    let start = dst.len();
    dst.extend_from_slice(src);
    apply_mask(&mut dst[start..], key, 0);
}

#[inline]
fn rotate(key: [u8; 4], offset: usize) -> [u8; 4] {
    let r = offset & 3;
    [key[r], key[(r + 1) & 3], key[(r + 2) & 3], key[(r + 3) & 3]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(offset + i) % 4];
        }
    }

    proptest! {
        #[test]
        fn matches_bytewise_definition(data in proptest::collection::vec(any::<u8>(), 0..300), key: [u8; 4], offset in 0usize..8) {
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask(&mut fast, key, offset);
            naive(&mut slow, key, offset);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn any_split_unmasks_the_same(data in proptest::collection::vec(any::<u8>(), 0..200), key: [u8; 4], cut in 0usize..200) {
            let cut = cut.min(data.len());
            let mut whole = data.clone();
            apply_mask(&mut whole, key, 0);
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(cut);
            apply_mask(a, key, 0);
            apply_mask(b, key, cut);
            prop_assert_eq!(whole, pieces);
        }
    }
}
