//! Payload masking (RFC 6455 §5.3).
//!
//! Every frame a client sends is XORed with a 4-byte key. Masking sits on the
//! hot path of every received byte on a server, so it works on 32-byte blocks
//! that the compiler turns into SIMD XORs, and falls back to bytes only for
//! the tail. Masking is its own inverse: the same call masks and unmasks.

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
    let block = repeat_key::<32>(key);
    let mut blocks = buf.chunks_exact_mut(32);
    for chunk in &mut blocks {
        // A fixed-size XOR of two arrays: LLVM emits vector instructions.
        let chunk: &mut [u8; 32] = chunk.try_into().expect("exact chunk");
        for (b, k) in chunk.iter_mut().zip(block.iter()) {
            *b ^= k;
        }
    }
    // 32 is a multiple of 4, so the tail starts at the same key phase.
    for (i, b) in blocks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
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

#[inline]
fn repeat_key<const N: usize>(key: [u8; 4]) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = key[i & 3];
    }
    out
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
