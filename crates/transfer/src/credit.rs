//! Flow control between a sender and one receiver, counted once.
//!
//! The relay gives each receiver a window of `window` bytes. **Every binary
//! frame the sender addresses to that receiver costs its whole length**
//! ([`Credit::cost`]: peer number, kind and body — PAKE and sealed control
//! frames as much as chunks). The sender debits before it sends; the relay
//! debits when the frame arrives (and closes a sender that overdraws with
//! [`RelayClose::Overdrawn`](crate::RelayClose::Overdrawn)), then grants
//! the bytes back, with [`RelayMessage::Credit`](crate::RelayMessage::Credit),
//! once it has written them to the receiver. Both sides use this type, so
//! they count the same bytes: round 1 had the sender count chunks only,
//! and the control frames' credit let it overdraw after a large file.
//!
//! ```
//! # tokio_test_block_on(async {
//! use duplex_transfer::Credit;
//!
//! let credit = Credit::new(100);
//! credit.debit(60).await.unwrap();
//! assert!(credit.try_debit(60).is_err()); // would overdraw
//! credit.grant(60).unwrap(); // the relay wrote them
//! credit.debit(100).await.unwrap();
//! assert!(credit.debit(101).await.is_err()); // can never fit
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// One receiver's credit window.
#[derive(Debug)]
pub struct Credit {
    window: u64,
    in_flight: AtomicU64,
    /// Woken by every grant, for a sender waiting in [`Credit::debit`].
    granted: Notify,
}

/// Why credit could not be taken or given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CreditError {
    /// The frame does not fit in what is left of the window.
    #[error(
        "flow control: {bytes} bytes would exceed the receiver's credit ({in_flight} of {window} in flight)"
    )]
    Overdraft {
        /// The frame's cost.
        bytes: u64,
        /// Bytes unacknowledged before it.
        in_flight: u64,
        /// The window.
        window: u64,
    },
    /// The frame is larger than the whole window: it can never be sent.
    #[error("flow control: a {bytes}-byte frame can never fit a {window}-byte window")]
    TooLarge {
        /// The frame's cost.
        bytes: u64,
        /// The window.
        window: u64,
    },
    /// More credit came back than was taken: the two sides disagree.
    #[error("flow control: {bytes} bytes granted back with only {in_flight} in flight")]
    Overgrant {
        /// The grant.
        bytes: u64,
        /// Bytes unacknowledged before it.
        in_flight: u64,
    },
}

impl Credit {
    /// A full window of `window` bytes.
    pub fn new(window: u64) -> Self {
        Self {
            window,
            in_flight: AtomicU64::new(0),
            granted: Notify::new(),
        }
    }

    /// What sending `frame` costs: every byte of the binary message.
    pub fn cost(frame: &[u8]) -> u64 {
        frame.len() as u64
    }

    /// The window.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Bytes debited and not yet granted back.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Takes `bytes` if they fit now; changes nothing otherwise.
    pub fn try_debit(&self, bytes: u64) -> Result<(), CreditError> {
        if bytes > self.window {
            return Err(CreditError::TooLarge {
                bytes,
                window: self.window,
            });
        }
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |in_flight| {
                (in_flight + bytes <= self.window).then_some(in_flight + bytes)
            })
            .map(drop)
            .map_err(|in_flight| CreditError::Overdraft {
                bytes,
                in_flight,
                window: self.window,
            })
    }

    /// Waits until `bytes` fit, then takes them. Fails at once, with
    /// [`CreditError::TooLarge`], if they never can.
    pub async fn debit(&self, bytes: u64) -> Result<(), CreditError> {
        loop {
            let granted = self.granted.notified();
            tokio::pin!(granted);
            // Registered before the check, so a grant between the check
            // and the wait is not missed.
            granted.as_mut().enable();
            match self.try_debit(bytes) {
                Err(CreditError::Overdraft { .. }) => granted.await,
                other => return other,
            }
        }
    }

    /// Gives `bytes` back. More than is in flight is refused (and nothing
    /// changes): it means the two sides count differently.
    pub fn grant(&self, bytes: u64) -> Result<(), CreditError> {
        let result = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |in_flight| {
                in_flight.checked_sub(bytes)
            })
            .map(drop)
            .map_err(|in_flight| CreditError::Overgrant { bytes, in_flight });
        self.granted.notify_waiters();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The relay's count and the sender's agree on any sequence of
        /// frames (control or chunk, any sizes) and grants: whatever the
        /// sender's `try_debit` lets through, the relay's accepts.
        #[test]
        fn sender_and_relay_never_disagree(
            window in 1u64..5000,
            ops in proptest::collection::vec((any::<bool>(), 0u64..6000), 0..200),
        ) {
            let sender = Credit::new(window);
            let relay = Credit::new(window);
            let mut queued = std::collections::VecDeque::new();
            for (send, n) in ops {
                if send {
                    if sender.try_debit(n).is_ok() {
                        prop_assert!(relay.try_debit(n).is_ok());
                        queued.push_back(n);
                    }
                } else if let Some(n) = queued.pop_front() {
                    relay.grant(n).unwrap();
                    sender.grant(n).unwrap();
                }
                prop_assert_eq!(sender.in_flight(), relay.in_flight());
                prop_assert!(sender.in_flight() <= window);
            }
        }
    }

    #[test]
    fn an_overgrant_is_refused() {
        let c = Credit::new(10);
        c.try_debit(4).unwrap();
        assert_eq!(
            c.grant(5),
            Err(CreditError::Overgrant {
                bytes: 5,
                in_flight: 4
            })
        );
        assert_eq!(c.in_flight(), 4);
    }

    #[tokio::test]
    async fn a_waiting_debit_goes_on_after_a_grant() {
        let c = std::sync::Arc::new(Credit::new(10));
        c.try_debit(10).unwrap();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.debit(7).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        c.grant(10).unwrap();
        waiter.await.unwrap().unwrap();
        assert_eq!(c.in_flight(), 7);
    }
}
