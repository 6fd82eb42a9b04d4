//! A small per-thread pool of I/O buffers.
//!
//! An idle connection should cost almost no memory (uWebSockets: 0.27 KiB),
//! yet an active one should not allocate per message. So a connection
//! returns its empty read and write buffers here whenever it would wait for
//! the network, and takes one back when bytes arrive: idle connections hold
//! no buffer, busy ones reuse a handful per thread.

use std::cell::RefCell;

use bytes::BytesMut;

/// Buffers kept per thread.
const MAX_POOLED: usize = 64;
/// Larger buffers are freed, not pooled, so one big message does not pin memory.
const MAX_POOLED_CAPACITY: usize = 256 << 10;
/// The size of a fresh buffer.
pub(crate) const DEFAULT_CAPACITY: usize = 8 << 10;

thread_local! {
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A pooled buffer keeps serving while this much of it is free.
const MIN_FREE: usize = DEFAULT_CAPACITY / 2;

/// An empty buffer with at least `MIN_FREE` bytes free.
pub(crate) fn take() -> BytesMut {
    let pooled = POOL.with(|p| p.borrow_mut().pop());
    match pooled {
        Some(mut b) => {
            b.clear();
            // What was read through it is behind its start: the allocation
            // is reclaimed (when no message still shares it) once that
            // leaves less than `MIN_FREE`, not every time. Reclaiming is a
            // call into `bytes` and a copy: a small echo's buffer used to
            // pay it on every wake-up (callgrind: ~100 instructions).
            if b.capacity() < MIN_FREE {
                b.reserve(DEFAULT_CAPACITY);
            }
            b
        }
        None => BytesMut::with_capacity(DEFAULT_CAPACITY),
    }
}

/// Returns an empty buffer to the pool (or frees it).
pub(crate) fn give(buf: BytesMut) {
    if buf.capacity() == 0 || buf.capacity() > MAX_POOLED_CAPACITY || !buf.is_empty() {
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < MAX_POOLED {
            p.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Buf, Bytes};
    use proptest::prelude::*;

    proptest! {
        /// However buffers are used before they go back (bytes read into
        /// them, consumed, split off as messages that live on), a buffer
        /// taken is empty with at least `MIN_FREE` bytes free, and no
        /// message split off earlier changes.
        #[test]
        fn taken_buffers_are_empty_with_room_and_messages_keep_their_bytes(
            uses in prop::collection::vec((1usize..3000, 0usize..3000, any::<bool>(), any::<u8>()), 1..60),
        ) {
            POOL.with(|p| p.borrow_mut().clear());
            let mut kept: Vec<(Bytes, u8)> = Vec::new();
            for (read, consume, split, fill) in uses {
                let mut buf = take();
                prop_assert!(buf.is_empty());
                prop_assert!(buf.capacity() >= MIN_FREE, "{} free", buf.capacity());
                buf.extend_from_slice(&vec![fill; read]);
                let consume = consume.min(read);
                if split {
                    // A message taken out of the buffer, still alive.
                    kept.push((buf.split_to(consume).freeze(), fill));
                } else {
                    buf.advance(consume);
                }
                buf.advance(buf.len()); // the rest consumed too
                give(buf);
                for (message, fill) in &kept {
                    prop_assert!(message.iter().all(|b| b == fill));
                }
            }
        }
    }

    #[test]
    fn a_buffer_is_reused_until_little_is_free_then_reclaimed() {
        POOL.with(|p| p.borrow_mut().clear());
        let mut buf = take();
        let start = buf.as_ptr();
        buf.extend_from_slice(&[1; 100]);
        buf.advance(100);
        give(buf);
        // 100 bytes behind its start: reused as it is.
        let mut buf = take();
        assert_eq!(buf.as_ptr(), start.wrapping_add(100));
        buf.extend_from_slice(&vec![2; DEFAULT_CAPACITY - MIN_FREE]);
        buf.advance(DEFAULT_CAPACITY - MIN_FREE);
        give(buf);
        // Now less than MIN_FREE is free: reclaimed from the start.
        let buf = take();
        assert_eq!(buf.as_ptr(), start);
        assert!(buf.capacity() >= DEFAULT_CAPACITY);
    }
}
