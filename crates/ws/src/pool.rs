//! A small per-thread pool of I/O buffers.
//!
//! An idle connection should cost almost no memory (uWebSockets: 0.27 KiB),
//! yet an active one should not allocate per message. So a connection
//! returns its empty read and write buffers here whenever it would wait for
//! the network, and takes one back when bytes arrive: idle connections hold
//! no buffer, busy ones reuse a handful per thread. A connection whose
//! reads fill their buffer moves to a larger one (see
//! [`READ_AHEAD_CAPACITY`]), pooled apart so that small ones stay small.

use std::cell::RefCell;

use bytes::BytesMut;

use crate::budget::UNCHARGED;

/// Buffers kept per thread.
const MAX_POOLED: usize = 64;
/// The size of a fresh buffer.
pub(crate) const DEFAULT_CAPACITY: usize = 8 << 10;
/// The read buffer of a connection whose reads fill their buffer (a peer
/// streaming, or pipelining large messages): one read then takes up to this
/// much, as a plain TCP echo's 64 KiB buffer does, instead of eight reads
/// and eight writes. Only connections that fill their reads get one, and
/// past [`crate::budget::UNCHARGED`] it is charged to a memory budget like
/// any other bytes held for a peer.
pub(crate) const READ_AHEAD_CAPACITY: usize = 64 << 10;
/// Read-ahead buffers kept per thread.
const MAX_POOLED_READ_AHEAD: usize = 16;
/// Larger buffers are freed, not pooled.
const MAX_READ_AHEAD: usize = 2 * READ_AHEAD_CAPACITY;

thread_local! {
    static POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static READ_AHEAD: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A pooled buffer keeps serving while this much of it is free.
pub(crate) const MIN_FREE: usize = DEFAULT_CAPACITY / 2;

/// An empty buffer with at least `MIN_FREE` bytes free, and no more than
/// [`UNCHARGED`]: what a connection exchanging small messages holds
/// without touching a memory budget.
pub(crate) fn take() -> BytesMut {
    loop {
        let Some(mut b) = POOL.with(|p| p.borrow_mut().pop()) else {
            return BytesMut::with_capacity(DEFAULT_CAPACITY);
        };
        b.clear();
        // What was read through it is behind its start: the allocation
        // is reclaimed (when no message still shares it) once that
        // leaves less than `MIN_FREE`, not every time. Reclaiming is a
        // call into `bytes` and a copy: a small echo's buffer used to
        // pay it on every wake-up (callgrind: ~100 instructions).
        if b.capacity() < MIN_FREE {
            b.reserve(DEFAULT_CAPACITY);
        }
        if b.capacity() <= UNCHARGED {
            return b;
        }
        // A read-ahead buffer, given back when most of it was behind its
        // start: its size shows once reclaimed.
        give(b);
    }
}

/// An empty buffer with at least half of [`READ_AHEAD_CAPACITY`] free.
pub(crate) fn take_read_ahead() -> BytesMut {
    match READ_AHEAD.with(|p| p.borrow_mut().pop()) {
        Some(mut b) => {
            b.clear();
            if b.capacity() < READ_AHEAD_CAPACITY / 2 {
                b.reserve(READ_AHEAD_CAPACITY);
            }
            b
        }
        None => BytesMut::with_capacity(READ_AHEAD_CAPACITY),
    }
}

/// Returns an empty buffer to the pool (or frees it); a large one to the
/// read-ahead buffers'.
///
/// Sorted by the allocation, not by what is left of it: a read-ahead
/// buffer mostly read through looks small until it is reclaimed (cheap for
/// an empty buffer nothing else shares). Larger than two read-ahead
/// buffers (one grown for a large frame): freed, so that one big message
/// does not pin memory.
pub(crate) fn give(mut buf: BytesMut) {
    if buf.capacity() == 0 || !buf.is_empty() {
        return;
    }
    let large = buf.capacity() > UNCHARGED || buf.try_reclaim(UNCHARGED + 1);
    if large && (buf.capacity() > MAX_READ_AHEAD || buf.try_reclaim(MAX_READ_AHEAD + 1)) {
        return;
    }
    let (pool, max) = if large {
        (&READ_AHEAD, MAX_POOLED_READ_AHEAD)
    } else {
        (&POOL, MAX_POOLED)
    };
    pool.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < max {
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
            READ_AHEAD.with(|p| p.borrow_mut().clear());
            let mut kept: Vec<(Bytes, u8)> = Vec::new();
            for (read, consume, split, fill) in uses {
                // Read-ahead buffers, used the same way, go back to the
                // same pool and never come out of `take`.
                let ahead = read % 3 == 0;
                let mut buf = if ahead { take_read_ahead() } else { take() };
                prop_assert!(buf.is_empty());
                if ahead {
                    prop_assert!(buf.capacity() >= READ_AHEAD_CAPACITY / 2, "{} free", buf.capacity());
                } else {
                    prop_assert!(buf.capacity() >= MIN_FREE, "{} free", buf.capacity());
                    prop_assert!(buf.capacity() <= UNCHARGED, "{} held uncharged", buf.capacity());
                }
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

    /// A read-ahead buffer given back with most of it behind its start
    /// looks small; it goes back to the read-ahead buffers all the same,
    /// whatever is left of it, and a connection exchanging small messages
    /// still gets a small buffer.
    #[test]
    fn a_read_ahead_buffer_is_never_taken_for_a_small_one() {
        for left in [100, MIN_FREE, 10 << 10, UNCHARGED] {
            POOL.with(|p| p.borrow_mut().clear());
            READ_AHEAD.with(|p| p.borrow_mut().clear());
            let mut ahead = take_read_ahead();
            let start = ahead.as_ptr();
            let used = ahead.capacity() - left;
            ahead.extend_from_slice(&vec![1; used]);
            ahead.advance(used);
            assert!(
                ahead.capacity() <= UNCHARGED,
                "looks small: {}",
                ahead.capacity()
            );
            give(ahead);
            let mut small = take();
            assert!(small.capacity() <= UNCHARGED, "{left} left");
            assert_ne!(small.as_ptr(), start, "{left} left");
            // Not even once it needs room again.
            small.extend_from_slice(&vec![2; small.capacity()]);
            small.reserve(DEFAULT_CAPACITY);
            assert!(
                small.capacity() <= UNCHARGED + DEFAULT_CAPACITY,
                "{left} left"
            );
            let ahead = take_read_ahead();
            assert_eq!(
                ahead.as_ptr(),
                start,
                "{left} left: the same allocation, reclaimed"
            );
            assert!(ahead.capacity() >= READ_AHEAD_CAPACITY);
        }
    }

    /// A buffer grown for a large frame is freed, not pooled.
    #[test]
    fn a_large_buffer_is_not_pooled() {
        POOL.with(|p| p.borrow_mut().clear());
        READ_AHEAD.with(|p| p.borrow_mut().clear());
        let mut big = BytesMut::with_capacity(1 << 20);
        big.extend_from_slice(&vec![3; (1 << 20) - 100]);
        big.advance((1 << 20) - 100);
        give(big);
        assert_eq!(READ_AHEAD.with(|p| p.borrow().len()), 0);
        assert_eq!(POOL.with(|p| p.borrow().len()), 0);
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
