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

/// A buffer with at least `DEFAULT_CAPACITY` bytes free.
pub(crate) fn take() -> BytesMut {
    let pooled = POOL.with(|p| p.borrow_mut().pop());
    match pooled {
        Some(mut b) => {
            b.clear();
            // Reclaims the whole allocation when no message still shares it.
            b.reserve(DEFAULT_CAPACITY);
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
