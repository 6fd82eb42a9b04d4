//! A memory budget shared by many connections: a bound on the sum of what
//! they hold on behalf of their peers, where each connection's own limits
//! (message size, frame size) bound only its part.
//!
//! A connection charges the budget for what it holds of messages still
//! arriving (its read buffer and the message being put together, inflated
//! data included) once that passes [`FREE_BYTES`]; small messages never
//! touch it. When a charge would pass the limit, the heaviest holder goes:
//! it is closed with 1013 (try again later) and its memory freed, while the
//! connection that asked stops reading (TCP backpressure holds its peer)
//! until memory is released. A connection that is itself the heaviest
//! cannot make progress and is the one closed. So a crowd of peers each
//! holding a large unfinished message costs at most the budget, and peers
//! sending ordinary messages are not slowed at all.
//!
//! A large message stays charged once it has arrived, for as long as it
//! is alive: the application holding it, or a send queue writing it back
//! (an echo to a peer that never reads). It still counts towards its
//! connection's weight, so that connection is the one shed; a shed
//! connection's pending sends fail and its unsent output is dropped, which
//! is what frees such a message.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;

/// What a connection may hold without charging the budget: its read buffer
/// and a message of this size being put together.
pub const FREE_BYTES: usize = 64 << 10;

/// A bound on the memory many connections hold for their peers. Clone it
/// into the [`Config`](crate::Config) of every socket that shares it.
///
/// ```
/// use duplex::{Config, MemoryBudget};
///
/// let budget = MemoryBudget::new(256 << 20);
/// let config = Config::default().with_memory_budget(budget.clone());
/// assert_eq!(budget.limit(), 256 << 20);
/// assert_eq!(budget.used(), 0);
/// assert_eq!(budget.shed(), 0);
/// # drop(config);
/// ```
#[derive(Clone)]
pub struct MemoryBudget(Arc<Shared>);

struct Shared {
    limit: usize,
    used: AtomicUsize,
    /// Connections holding a charge (few: those receiving large messages).
    holders: Mutex<Vec<Weak<Holder>>>,
    /// Connections waiting for memory to be released.
    waiters: Mutex<Vec<Waker>>,
    shed: AtomicU64,
    paused: AtomicU64,
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit", &self.limit())
            .field("used", &self.used())
            .finish()
    }
}

impl MemoryBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(Shared {
            limit,
            used: AtomicUsize::new(0),
            holders: Mutex::default(),
            waiters: Mutex::default(),
            shed: AtomicU64::new(0),
            paused: AtomicU64::new(0),
        }))
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    /// Connections closed with 1013 to keep within the budget, so far.
    pub fn shed(&self) -> u64 {
        self.0.shed.load(Ordering::Relaxed)
    }

    /// Times a connection stopped reading to wait for memory, so far.
    pub fn paused(&self) -> u64 {
        self.0.paused.load(Ordering::Relaxed)
    }

    /// Charges `charge` `want` bytes in all (more or less than before).
    pub(crate) fn set(&self, charge: &mut Charge, want: usize, waker: &Waker) -> Admit {
        let shared = &self.0;
        let had = charge.holder.incoming.load(Ordering::Relaxed);
        if want <= had {
            self.release(charge, had - want);
            return Admit::Granted;
        }
        let more = want - had;
        let granted = shared
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + more <= shared.limit).then_some(used + more)
            })
            .is_ok();
        if granted {
            charge.holder.incoming.store(want, Ordering::Relaxed);
            charge.holder.held.fetch_add(more, Ordering::Relaxed);
            if !charge.registered {
                charge.registered = true;
                let mut holders = shared.holders.lock().expect("not poisoned");
                holders.retain(|h| h.strong_count() > 0);
                holders.push(Arc::downgrade(&charge.holder));
            }
            return Admit::Granted;
        }
        // Over the limit: the heaviest holder goes, counting this one at
        // what it asks for.
        let heaviest = {
            let holders = shared.holders.lock().expect("not poisoned");
            let live = holders.iter().filter_map(Weak::upgrade);
            // Memory already on its way back: wait for it.
            let mut leaving = false;
            let mut heaviest: Option<Arc<Holder>> = None;
            for h in live {
                if Arc::ptr_eq(&h, &charge.holder) {
                    continue;
                }
                if h.shed.load(Ordering::Relaxed) {
                    // Its unfinished message is freed as it closes; what the
                    // application holds may not be, so is not waited for.
                    leaving |= h.incoming.load(Ordering::Relaxed) > 0;
                    continue;
                }
                let held = h.held.load(Ordering::Relaxed);
                if heaviest
                    .as_ref()
                    .is_none_or(|x| held > x.held.load(Ordering::Relaxed))
                {
                    heaviest = Some(h);
                }
            }
            if leaving {
                None
            } else {
                match heaviest {
                    Some(h) if h.held.load(Ordering::Relaxed) >= want => Some(h),
                    _ => {
                        // This connection is the heaviest: it cannot make
                        // progress.
                        shared.shed.fetch_add(1, Ordering::Relaxed);
                        return Admit::Shed;
                    }
                }
            }
        };
        if let Some(h) = heaviest {
            h.shed.store(true, Ordering::Relaxed);
            shared.shed.fetch_add(1, Ordering::Relaxed);
            if let Some(w) = h.waker.lock().expect("not poisoned").take() {
                w.wake();
            }
        }
        shared.paused.fetch_add(1, Ordering::Relaxed);
        shared
            .waiters
            .lock()
            .expect("not poisoned")
            .push(waker.clone());
        // Released meanwhile? Then try again rather than sleep.
        if shared.used.load(Ordering::Acquire) + more <= shared.limit {
            return Admit::Retry;
        }
        Admit::Wait
    }

    /// Gives back `bytes` of what `charge` holds of arriving messages,
    /// waking connections that wait.
    pub(crate) fn release(&self, charge: &Charge, bytes: usize) {
        if bytes == 0 {
            return;
        }
        charge.holder.incoming.fetch_sub(bytes, Ordering::Relaxed);
        self.give_back(&charge.holder, bytes);
    }

    /// Moves up to `bytes` of `charge` from what is arriving to a message
    /// that has arrived: charged until the returned guard is dropped.
    pub(crate) fn keep(&self, charge: &Charge, bytes: usize) -> Kept {
        let bytes = bytes.min(charge.incoming());
        charge.holder.incoming.fetch_sub(bytes, Ordering::Relaxed);
        Kept {
            budget: self.clone(),
            holder: charge.holder.clone(),
            bytes,
        }
    }

    fn give_back(&self, holder: &Holder, bytes: usize) {
        holder.held.fetch_sub(bytes, Ordering::Relaxed);
        self.0.used.fetch_sub(bytes, Ordering::AcqRel);
        let waiters = std::mem::take(&mut *self.0.waiters.lock().expect("not poisoned"));
        for w in waiters {
            w.wake();
        }
    }
}

/// A message's part of a connection's charge, given back when the last
/// copy of the message is dropped (see [`Message::hold_with`](crate::Message::hold_with)).
pub(crate) struct Kept {
    budget: MemoryBudget,
    holder: Arc<Holder>,
    bytes: usize,
}

impl Drop for Kept {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give_back(&self.holder, self.bytes);
        }
    }
}

/// The outcome of [`MemoryBudget::set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Charged: read on.
    Granted,
    /// Not now: stop reading until woken.
    Wait,
    /// Memory was released while asking: ask again.
    Retry,
    /// This connection is the heaviest: close it with 1013.
    Shed,
}

/// One connection's part of a budget.
pub(crate) struct Charge {
    holder: Arc<Holder>,
    registered: bool,
}

/// A connection's account with a budget: what it holds is given back when
/// it goes.
pub(crate) struct Account {
    pub(crate) budget: MemoryBudget,
    pub(crate) charge: Charge,
}

impl Account {
    pub(crate) fn new(budget: MemoryBudget) -> Self {
        Self {
            budget,
            charge: Charge::new(),
        }
    }

    /// Gives back everything charged for arriving messages (messages that
    /// have arrived are given back as they are dropped).
    pub(crate) fn release_all(&self) {
        self.budget.release(&self.charge, self.charge.incoming());
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.release_all();
    }
}

/// What the budget sees of a connection that holds a charge.
#[derive(Default)]
struct Holder {
    /// Its weight: what it holds of arriving messages, and of messages
    /// that arrived and are still alive.
    held: AtomicUsize,
    /// Of `held`, what it holds of arriving messages.
    incoming: AtomicUsize,
    /// Set when the budget chose this connection to close.
    shed: AtomicBool,
    /// Where to wake it when it is chosen.
    waker: Mutex<Option<Waker>>,
}

impl Charge {
    pub(crate) fn new() -> Self {
        Self {
            holder: Arc::default(),
            registered: false,
        }
    }

    /// Bytes charged, arrived messages still alive included.
    pub(crate) fn held(&self) -> usize {
        self.holder.held.load(Ordering::Relaxed)
    }

    /// Bytes charged for messages still arriving.
    pub(crate) fn incoming(&self) -> usize {
        self.holder.incoming.load(Ordering::Relaxed)
    }

    /// Whether the budget chose this connection to close.
    pub(crate) fn is_shed(&self) -> bool {
        self.holder.shed.load(Ordering::Relaxed)
    }

    /// Wakes `waker` if the budget chooses this connection while it waits
    /// for its peer (only connections holding a charge register).
    pub(crate) fn wake_when_shed(&self, waker: &Waker) {
        if self.held() > 0 {
            *self.holder.waker.lock().expect("not poisoned") = Some(waker.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waker() -> Waker {
        Waker::noop().clone()
    }

    #[test]
    fn charges_within_the_limit_are_granted_and_released() {
        let budget = MemoryBudget::new(100);
        let mut a = Charge::new();
        assert_eq!(budget.set(&mut a, 60, &waker()), Admit::Granted);
        assert_eq!(budget.used(), 60);
        assert_eq!(budget.set(&mut a, 20, &waker()), Admit::Granted);
        assert_eq!(budget.used(), 20);
        assert_eq!(budget.set(&mut a, 0, &waker()), Admit::Granted);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn over_the_limit_the_heaviest_other_holder_is_shed_and_the_asker_waits() {
        let budget = MemoryBudget::new(100);
        let (mut heavy, mut light) = (Charge::new(), Charge::new());
        assert_eq!(budget.set(&mut heavy, 80, &waker()), Admit::Granted);
        assert_eq!(budget.set(&mut light, 10, &waker()), Admit::Granted);
        assert_eq!(budget.set(&mut light, 30, &waker()), Admit::Wait);
        assert!(heavy.is_shed() && !light.is_shed());
        assert_eq!(budget.shed(), 1);
        // The heavy one lets go; the light one gets its memory.
        budget.release(&heavy, 80);
        assert_eq!(budget.set(&mut light, 30, &waker()), Admit::Granted);
        assert_eq!(budget.used(), 30);
    }

    #[test]
    fn the_heaviest_asker_is_the_one_shed() {
        let budget = MemoryBudget::new(100);
        let (mut a, mut b) = (Charge::new(), Charge::new());
        assert_eq!(budget.set(&mut a, 30, &waker()), Admit::Granted);
        assert_eq!(budget.set(&mut b, 60, &waker()), Admit::Granted);
        assert_eq!(budget.set(&mut b, 90, &waker()), Admit::Shed);
        assert!(!a.is_shed());
    }

    #[test]
    fn while_a_shed_holder_lets_go_nobody_else_is_shed() {
        let budget = MemoryBudget::new(100);
        let (mut a, mut b, mut c) = (Charge::new(), Charge::new(), Charge::new());
        assert_eq!(budget.set(&mut a, 50, &waker()), Admit::Granted);
        assert_eq!(budget.set(&mut b, 40, &waker()), Admit::Granted);
        assert_eq!(budget.set(&mut c, 5, &waker()), Admit::Granted);
        assert_eq!(budget.set(&mut c, 20, &waker()), Admit::Wait);
        assert!(a.is_shed());
        assert_eq!(budget.set(&mut c, 20, &waker()), Admit::Wait);
        assert!(!b.is_shed(), "a is still letting go");
        assert_eq!(budget.shed(), 1);
    }
}
