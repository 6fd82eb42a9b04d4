//! A hub connection's queue: what the hub delivers to it, counted in
//! messages.
//!
//! The hub never waits on a subscriber: it offers, and a queue holding
//! more than its limit refuses, which makes the subscriber a slow consumer.
//! The limit counts messages, not entries, because one entry can carry a
//! whole commit batch of publications (one queue operation and one wake-up
//! per subscriber per batch, not per publication). A queue that is empty
//! takes a batch whatever its size, so that batching alone never cuts off
//! a subscriber that keeps up; the batch is bounded by the broker's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use crate::hub::Queued;

/// A new queue refusing more than `limit` messages at once (at least one).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use duplex_server::hub::{Delivery, Queued};
/// use duplex::Text;
/// use duplex_server::queue::{Refused, queue};
/// let (sender, mut receiver) = queue(1);
/// let push = || Queued::new(Delivery::Push(Text::from("{}")), None);
/// sender.offer(push()).unwrap();
/// assert_eq!(sender.offer(push()), Err(Refused::Full));
/// assert!(receiver.recv().await.is_some());
/// sender.offer(push()).unwrap(); // room again
/// # }
/// ```
pub fn queue(limit: usize) -> (QueueSender, QueueReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let count = Arc::new(Count {
        messages: AtomicUsize::new(0),
        limit: limit.max(1),
    });
    (
        QueueSender {
            tx,
            count: count.clone(),
        },
        QueueReceiver { rx, count },
    )
}

/// Why a queue did not take a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It holds its limit: the connection is a slow consumer.
    Full,
    /// The connection is gone.
    Closed,
}

/// The hub's end of a queue.
#[derive(Debug, Clone)]
pub struct QueueSender {
    tx: mpsc::UnboundedSender<Queued>,
    count: Arc<Count>,
}

/// The connection's end of a queue.
#[derive(Debug)]
pub struct QueueReceiver {
    rx: mpsc::UnboundedReceiver<Queued>,
    count: Arc<Count>,
}

#[derive(Debug)]
struct Count {
    /// Messages queued and not yet taken.
    messages: AtomicUsize,
    limit: usize,
}

impl QueueSender {
    /// Queues `queued` unless the queue holds its limit (see the module
    /// documentation) or the connection is gone. Never waits.
    pub fn offer(&self, queued: Queued) -> Result<(), Refused> {
        let messages = queued.delivery.messages();
        let before = self.count.messages.fetch_add(messages, Ordering::Relaxed);
        if before > 0 && before + messages > self.count.limit {
            self.count.messages.fetch_sub(messages, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        self.tx.send(queued).map_err(|_| {
            self.count.messages.fetch_sub(messages, Ordering::Relaxed);
            Refused::Closed
        })
    }
}

impl QueueReceiver {
    /// The next delivery; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Queued> {
        let queued = self.rx.recv().await?;
        self.count
            .messages
            .fetch_sub(queued.delivery.messages(), Ordering::Relaxed);
        Some(queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Delivery, Publications};
    use duplex::Text;
    use futures_util::FutureExt;
    use proptest::prelude::*;

    fn push() -> Queued {
        Queued::new(Delivery::Push(Text::from("{}")), None)
    }

    fn batch(n: usize) -> Queued {
        let pushes = (1..=n as u64)
            .map(|offset| (offset, Text::from("{}")))
            .collect();
        let batch = Publications::new("c".into(), pushes);
        Queued::new(Delivery::Publications(Arc::new(batch)), None)
    }

    proptest! {
        /// Whatever the limit and the sizes offered, a queue never holds
        /// more than its limit, except one batch taken while it was empty;
        /// it refuses only when it holds something; and it hands back, in
        /// order, exactly what it took.
        #[test]
        fn a_queue_holds_its_limit_in_messages(
            limit in 1usize..20,
            ops in proptest::collection::vec((0usize..30, any::<bool>()), 1..60),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let (sender, mut receiver) = queue(limit);
                let mut held: std::collections::VecDeque<usize> = Default::default();
                for (size, take) in ops {
                    if take {
                        let got = receiver.recv().now_or_never();
                        match held.pop_front() {
                            Some(expected) => {
                                let got = got.flatten().expect("a held delivery is ready");
                                prop_assert_eq!(got.delivery.messages(), expected);
                            }
                            None => prop_assert!(got.is_none(), "nothing held, nothing ready"),
                        }
                        continue;
                    }
                    let offered = if size == 0 { push() } else { batch(size) };
                    let messages = offered.delivery.messages();
                    let holding: usize = held.iter().sum();
                    match sender.offer(offered) {
                        Ok(()) => {
                            prop_assert!(holding == 0 || holding + messages <= limit);
                            held.push_back(messages);
                        }
                        Err(refused) => {
                            prop_assert_eq!(refused, Refused::Full);
                            prop_assert!(holding > 0 && holding + messages > limit);
                        }
                    }
                }
                Ok(())
            })?;
        }
    }

    #[tokio::test]
    async fn a_closed_queue_refuses_and_keeps_no_count() {
        let (sender, receiver) = queue(4);
        drop(receiver);
        assert_eq!(sender.offer(batch(2)), Err(Refused::Closed));
        assert_eq!(sender.count.messages.load(Ordering::Relaxed), 0);
    }
}
