//! A memory budget shared by many connections: a bound on the sum of what
//! they hold on behalf of their peers, where each connection's own limits
//! (message size, frame size) bound only its part.
//!
//! A connection charges the budget for everything it buffers for its peer:
//! its read buffer, the message being put together (inflated data
//! included) and what waits to be written, past the [`UNCHARGED`] bytes
//! every busy connection has, in steps of [`CHARGE_STEP`]; a
//! connection exchanging small messages with a peer that keeps up never
//! touches it. When a charge would pass the limit, the heaviest holder goes:
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
//! is what frees such a message. (While it waits to be written it is
//! counted twice, as a message and as output: the budget errs towards
//! shedding.)
//!
//! An application holds memory for its peers too: a hub's queue of
//! deliveries, a relay's buffered chunks, a large reply. A
//! [`BudgetShare`] charges such memory to a connection (it is then shed
//! like any other), and [`MemoryBudget::charge`] charges memory that no
//! one connection owns, such as one message queued for many subscribers:
//! counted once in the sum, while each connection that keeps it alive
//! carries its weight ([`BudgetShare::weigh`]), so the budget sheds the
//! connections that hold most of it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;

/// What a connection may buffer without charging the budget: the 8 KiB
/// read buffer every busy connection has ([`crate::pool`]'s default) and
/// as much again of a partial message or of output on its way, so that a
/// connection exchanging small messages never touches the shared budget.
/// An idle connection lends its buffers to a pool and holds nothing. (A
/// connection whose peer fills every read reads through a 64 KiB buffer,
/// which is charged.)
pub const UNCHARGED: usize = 16 << 10;

/// Charges are taken in steps of this many bytes, so a connection whose
/// buffers hover around a size touches the shared budget only when it
/// crosses a step, not on every read or write; and inflation asks for
/// memory a step at a time.
pub const CHARGE_STEP: usize = 64 << 10;

/// Messages longer than this stay charged to the connection they arrived
/// on for as long as they are alive (shorter ones are charged while they
/// arrive and while they wait to be written, not while the application
/// holds them).
pub const LARGE_MESSAGE: usize = 64 << 10;

/// What a connection buffering `held` bytes is charged: nothing up to
/// [`UNCHARGED`], then `held` rounded up to a [`CHARGE_STEP`].
pub(crate) fn charge_for(held: usize) -> usize {
    if held <= UNCHARGED {
        0
    } else {
        held.div_ceil(CHARGE_STEP) * CHARGE_STEP
    }
}

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

#[derive(Default)]
struct Holders {
    list: Vec<Weak<Holder>>,
    prune_at: usize,
}

struct Shared {
    limit: usize,
    used: AtomicUsize,
    /// Connections holding a charge or a weight, and when to drop the
    /// ones gone from the list (amortized: at twice the live count).
    holders: Mutex<Holders>,
    /// Connections waiting for memory to be released.
    waiters: Mutex<Vec<Waker>>,
    /// Whether `waiters` may hold any: checked before taking its lock on
    /// every release (most releases have nobody to wake).
    anyone_waiting: AtomicBool,
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
    ///
    /// ```
    /// let budget = duplex::MemoryBudget::new(256 << 20);
    /// assert_eq!((budget.limit(), budget.used()), (256 << 20, 0));
    /// ```
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(Shared {
            limit,
            used: AtomicUsize::new(0),
            holders: Mutex::default(),
            waiters: Mutex::default(),
            anyone_waiting: AtomicBool::new(false),
            shed: AtomicU64::new(0),
            paused: AtomicU64::new(0),
        }))
    }

    /// The limit, in bytes.
    ///
    /// ```
    /// let budget = duplex::MemoryBudget::new(1 << 30);
    /// let _over = budget.charge(2 << 30); // never refused: the heaviest is shed
    /// assert_eq!(budget.limit(), 1 << 30);
    /// ```
    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Messages longer than this stay charged to the connection they
    /// arrived on for as long as they are alive; an application that holds
    /// shorter ones for its peer (a relay's queue) charges them itself
    /// through a [`BudgetShare`].
    pub const LARGE_MESSAGE: usize = LARGE_MESSAGE;

    /// Bytes charged now.
    ///
    /// ```
    /// let budget = duplex::MemoryBudget::new(1000);
    /// let queued = budget.charge(300);
    /// assert_eq!(budget.used(), 300);
    /// drop(queued);
    /// assert_eq!(budget.used(), 0);
    /// ```
    pub fn used(&self) -> usize {
        self.0.used.load(Ordering::Relaxed)
    }

    /// A share for memory held on behalf of one peer outside a socket of
    /// this budget (a socket's own share comes from
    /// [`WebSocket::budget_share`](crate::WebSocket::budget_share)).
    ///
    /// ```
    /// let budget = duplex::MemoryBudget::new(1000);
    /// let relay = budget.share(); // for a peer whose chunks a relay buffers
    /// let chunk = relay.charge(400);
    /// assert_eq!(budget.used(), 400);
    /// # drop(chunk);
    /// ```
    pub fn share(&self) -> BudgetShare {
        Charge::new().share(self)
    }

    /// Connections closed with 1013 to keep within the budget, so far.
    ///
    /// ```
    /// let budget = duplex::MemoryBudget::new(1000);
    /// let (greedy, modest) = (budget.share(), budget.share());
    /// let held = (greedy.charge(900), modest.charge(50));
    /// let more = modest.charge(100); // past the limit: the heaviest is shed
    /// assert_eq!(budget.shed(), 1);
    /// assert!(greedy.is_shed());
    /// # drop((held, more));
    /// ```
    pub fn shed(&self) -> u64 {
        self.0.shed.load(Ordering::Relaxed)
    }

    /// Times a connection stopped reading to wait for memory, so far.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let budget = duplex::MemoryBudget::new(100);
    /// let held = budget.charge(80);
    /// // A producer waits for room; memory comes back meanwhile.
    /// tokio::join!(budget.room_for(50), async move { drop(held) });
    /// assert_eq!(budget.paused(), 1);
    /// # }
    /// ```
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
            self.register(&charge.holder);
            return Admit::Granted;
        }
        // Over the limit: the heaviest holder goes, counting this one at
        // what it asks for.
        // Compared at all it would hold: this, and what it keeps alive.
        let weight = charge.holder.held.load(Ordering::Relaxed) + more;
        match self.choose_heaviest(Some(&charge.holder), weight) {
            Choice::Asker => {
                self.mark_shed(&charge.holder);
                return Admit::Shed;
            }
            Choice::Other(h) => self.mark_shed(&h),
            Choice::Leaving | Choice::Nobody => {}
        }
        shared.paused.fetch_add(1, Ordering::Relaxed);
        self.wait(waker);
        // A connection waiting here may be the next one shed, to make room
        // for another: it must then be woken to let go of what it holds,
        // or everyone would wait for it for ever.
        charge.wake_when_shed(waker);
        // Released meanwhile? Then try again rather than sleep.
        if shared.used.load(Ordering::SeqCst) + more <= shared.limit {
            return Admit::Retry;
        }
        Admit::Wait
    }

    /// Picks the connection to shed so that `want` more bytes fit: the
    /// heaviest holder, or `asker` itself if it would be the heaviest at
    /// `want`. Nobody while a connection already shed is letting go.
    fn choose_heaviest(&self, asker: Option<&Arc<Holder>>, want: usize) -> Choice {
        let holders = self.0.holders.lock().expect("not poisoned");
        let mut heaviest: Option<Arc<Holder>> = None;
        for h in holders.list.iter().filter_map(Weak::upgrade) {
            if asker.is_some_and(|a| Arc::ptr_eq(a, &h)) {
                continue;
            }
            if h.shed.load(Ordering::Relaxed) {
                // Its buffers are on their way back: wait for them. What
                // the application holds for it (messages, queues) may not
                // be freed soon, so is not waited for.
                if h.incoming.load(Ordering::Relaxed) > 0 {
                    return Choice::Leaving;
                }
                continue;
            }
            let held = h.held.load(Ordering::Relaxed);
            if held == 0 {
                continue; // shedding it would free nothing
            }
            if heaviest
                .as_ref()
                .is_none_or(|x| held > x.held.load(Ordering::Relaxed))
            {
                heaviest = Some(h);
            }
        }
        match (heaviest, asker) {
            (Some(h), _) if h.held.load(Ordering::Relaxed) >= want => Choice::Other(h),
            (_, Some(_)) => Choice::Asker,
            (Some(h), None) => Choice::Other(h),
            (None, None) => Choice::Nobody,
        }
    }

    /// Tells `holder` it is to close, and counts it.
    fn mark_shed(&self, holder: &Holder) {
        if holder.shed.swap(true, Ordering::Relaxed) {
            return;
        }
        self.0.shed.fetch_add(1, Ordering::Relaxed);
        if let Some(w) = holder.waker.lock().expect("not poisoned").take() {
            w.wake();
        }
    }

    fn register(&self, holder: &Arc<Holder>) {
        if holder.registered.load(Ordering::Relaxed)
            || holder.registered.swap(true, Ordering::Relaxed)
        {
            return;
        }
        let mut holders = self.0.holders.lock().expect("not poisoned");
        if holders.list.len() >= holders.prune_at {
            holders.list.retain(|h| h.strong_count() > 0);
            holders.prune_at = (2 * holders.list.len()).max(64);
        }
        holders.list.push(Arc::downgrade(holder));
    }

    /// Wakes `waker` when memory is next released.
    fn wait(&self, waker: &Waker) {
        let mut waiters = self.0.waiters.lock().expect("not poisoned");
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
        }
        // SeqCst here and in the release: each side must see the other's
        // write (the waiter rechecks `used` after this).
        self.0.anyone_waiting.store(true, Ordering::SeqCst);
    }

    /// Charges `bytes` that no one connection owns, such as one message
    /// queued for many subscribers, until the returned guard is dropped
    /// (tie it to the message with
    /// [`Message::hold_with`](crate::Message::hold_with)). The charge is
    /// never refused, so that what is already accepted is delivered; past
    /// the limit, the heaviest connection is shed to make room. Producers
    /// that can wait call [`room_for`](Self::room_for) first.
    ///
    /// ```
    /// use duplex::{Message, MemoryBudget};
    ///
    /// let budget = MemoryBudget::new(1 << 20);
    /// let push = Message::text("x".repeat(1000));
    /// let push = push.hold_with(budget.charge(1000));
    /// assert_eq!(budget.used(), 1000);
    /// drop(push);
    /// assert_eq!(budget.used(), 0);
    /// ```
    pub fn charge(&self, bytes: usize) -> Charged {
        self.charge_to(None, bytes)
    }

    /// Charges `bytes` that no one connection owns if they fit within the
    /// limit; `None` if they do not (nobody is shed). For what can simply
    /// be refused, such as a new request head.
    ///
    /// ```
    /// use duplex::MemoryBudget;
    ///
    /// let budget = MemoryBudget::new(100);
    /// let head = budget.try_charge(80).expect("fits");
    /// assert!(budget.try_charge(30).is_none());
    /// drop(head);
    /// assert!(budget.try_charge(30).is_some());
    /// ```
    pub fn try_charge(&self, bytes: usize) -> Option<Charged> {
        let limit = self.0.limit;
        self.0
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= limit).then_some(used + bytes)
            })
            .ok()?;
        Some(Charged {
            budget: self.clone(),
            holder: None,
            bytes,
        })
    }

    fn charge_to(&self, holder: Option<&Arc<Holder>>, bytes: usize) -> Charged {
        let used = self.0.used.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if let Some(h) = holder {
            h.held.fetch_add(bytes, Ordering::Relaxed);
            self.register(h);
        }
        if used > self.0.limit {
            let weight = holder.map_or(bytes, |h| h.held.load(Ordering::Relaxed));
            match self.choose_heaviest(holder, weight) {
                Choice::Other(h) => self.mark_shed(&h),
                Choice::Asker => self.mark_shed(holder.expect("an asker")),
                Choice::Leaving | Choice::Nobody => {}
            }
        }
        Charged {
            budget: self.clone(),
            holder: holder.cloned(),
            bytes,
        }
    }

    /// Waits until `bytes` more fit within the limit, shedding the
    /// heaviest connection if they do not. A producer that can wait (a
    /// publisher) calls this before taking on memory, bounded by its own
    /// timeout.
    ///
    /// ```
    /// use duplex::MemoryBudget;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let budget = MemoryBudget::new(100);
    /// let held = budget.charge(80);
    /// let waiting = budget.room_for(50);
    /// drop(held); // memory comes back: the wait ends
    /// waiting.await;
    /// # });
    /// ```
    pub async fn room_for(&self, bytes: usize) {
        let mut asked = false;
        std::future::poll_fn(|cx| {
            let fits = || self.0.used.load(Ordering::SeqCst) + bytes <= self.0.limit;
            if fits() {
                return std::task::Poll::Ready(());
            }
            if !asked {
                asked = true;
                self.0.paused.fetch_add(1, Ordering::Relaxed);
                if let Choice::Other(h) = self.choose_heaviest(None, bytes) {
                    self.mark_shed(&h);
                }
            }
            self.wait(cx.waker());
            if fits() {
                return std::task::Poll::Ready(());
            }
            std::task::Poll::Pending
        })
        .await;
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
    pub(crate) fn keep(&self, charge: &Charge, bytes: usize) -> Charged {
        let bytes = bytes.min(charge.incoming());
        charge.holder.incoming.fetch_sub(bytes, Ordering::Relaxed);
        Charged {
            budget: self.clone(),
            holder: Some(charge.holder.clone()),
            bytes,
        }
    }

    fn give_back(&self, holder: &Holder, bytes: usize) {
        holder.held.fetch_sub(bytes, Ordering::Relaxed);
        self.give_back_unattributed(bytes);
    }

    fn give_back_unattributed(&self, bytes: usize) {
        self.0.used.fetch_sub(bytes, Ordering::SeqCst);
        if !self.0.anyone_waiting.swap(false, Ordering::SeqCst) {
            return;
        }
        let waiters = std::mem::take(&mut *self.0.waiters.lock().expect("not poisoned"));
        for w in waiters {
            w.wake();
        }
    }
}

/// Memory charged to a budget, given back when this guard is dropped:
/// tie it to a message with [`Message::hold_with`](crate::Message::hold_with)
/// so that it is given back when the last copy of the message goes.
///
/// ```
/// use duplex::{MemoryBudget, Message};
/// let budget = MemoryBudget::new(1 << 20);
/// let charged = budget.charge(5); // one message for many subscribers
/// let message = Message::text("hello").hold_with(charged);
/// let copies = vec![message.clone(), message.clone()];
/// drop(message);
/// assert_eq!(budget.used(), 5); // counted once, while any copy lives
/// drop(copies);
/// assert_eq!(budget.used(), 0);
/// ```
#[must_use = "the charge is given back as soon as the guard is dropped"]
pub struct Charged {
    budget: MemoryBudget,
    /// The connection it weighs on, if any.
    holder: Option<Arc<Holder>>,
    bytes: usize,
}

impl std::fmt::Debug for Charged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Charged")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Drop for Charged {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        match &self.holder {
            Some(h) => self.budget.give_back(h, self.bytes),
            None => self.budget.give_back_unattributed(self.bytes),
        }
    }
}

/// A connection's weight for memory charged elsewhere that it keeps alive
/// (see [`BudgetShare::weigh`]); taken off when dropped.
///
/// ```
/// let budget = duplex::MemoryBudget::new(1 << 20);
/// let subscriber = budget.share();
/// let push = budget.charge(1000); // charged once, for everyone
/// let weight = subscriber.weigh(1000); // this subscriber keeps it alive
/// assert_eq!(budget.used(), 1000);
/// drop((weight, push));
/// assert_eq!(budget.used(), 0);
/// ```
#[must_use = "the weight is taken off as soon as the guard is dropped"]
pub struct Weight {
    holder: Arc<Holder>,
    bytes: usize,
}

impl std::fmt::Debug for Weight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weight")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Drop for Weight {
    fn drop(&mut self) {
        self.holder.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// One connection's share of a budget, for memory the application holds on
/// its behalf (get it from
/// [`WebSocket::budget_share`](crate::WebSocket::budget_share)). What is
/// charged or weighed here makes the connection heavier; when the budget
/// sheds it, the socket closes with 1013 like any other, and the
/// application lets go of what it held.
///
/// ```
/// use duplex::{MemoryBudget, BudgetShare};
///
/// let budget = MemoryBudget::new(1000);
/// let (a, b) = (budget.share(), budget.share());
/// let queued = a.charge(600);
/// let _alive = b.weigh(100); // charged elsewhere, kept alive by b
/// assert_eq!(budget.used(), 600);
/// let push = budget.charge(600); // past the limit: the heaviest goes
/// assert!(a.is_shed() && !b.is_shed());
/// drop((queued, push));
/// assert_eq!(budget.used(), 0);
/// ```
#[derive(Clone)]
pub struct BudgetShare {
    budget: MemoryBudget,
    holder: Arc<Holder>,
}

impl std::fmt::Debug for BudgetShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetShare")
            .field("held", &self.holder.held.load(Ordering::Relaxed))
            .field("shed", &self.is_shed())
            .finish()
    }
}

impl BudgetShare {
    /// Charges `bytes` to this connection until the guard is dropped.
    /// Never refused; past the limit the heaviest connection (perhaps this
    /// one) is shed.
    ///
    /// ```
    /// let budget = duplex::MemoryBudget::new(1000);
    /// let share = budget.share();
    /// let reply = share.charge(1200); // never refused...
    /// assert_eq!(budget.used(), 1200);
    /// assert!(share.is_shed()); // ...but past the limit, the heaviest goes
    /// # drop(reply);
    /// ```
    pub fn charge(&self, bytes: usize) -> Charged {
        self.budget.charge_to(Some(&self.holder), bytes)
    }

    /// Adds `bytes` to this connection's weight, not to the budget's sum:
    /// for memory charged once with [`MemoryBudget::charge`] that this
    /// connection keeps alive (a message queued for it among others).
    ///
    /// ```
    /// let budget = duplex::MemoryBudget::new(1000);
    /// let (a, b) = (budget.share(), budget.share());
    /// let push = budget.charge(500);
    /// let (_a_keeps, _b_keeps) = (a.weigh(500), b.weigh(500)); // the push, queued for both
    /// let own = b.charge(100);
    /// let more = budget.charge(500); // over: b, heavier with its own 100, is shed
    /// assert!(b.is_shed() && !a.is_shed());
    /// # drop((push, own, more));
    /// ```
    pub fn weigh(&self, bytes: usize) -> Weight {
        self.holder.held.fetch_add(bytes, Ordering::Relaxed);
        self.budget.register(&self.holder);
        Weight {
            holder: self.holder.clone(),
            bytes,
        }
    }

    /// Whether the budget chose this connection to close.
    ///
    /// ```
    /// let budget = duplex::MemoryBudget::new(100);
    /// let share = budget.share();
    /// assert!(!share.is_shed());
    /// let _queue = share.charge(150);
    /// assert!(share.is_shed()); // time to let go of what it holds
    /// ```
    pub fn is_shed(&self) -> bool {
        self.holder.shed.load(Ordering::Relaxed)
    }
}

/// Whom to shed, as [`MemoryBudget::choose_heaviest`] decides.
enum Choice {
    /// Another connection, the heaviest.
    Other(Arc<Holder>),
    /// The one asking: it would be the heaviest.
    Asker,
    /// Nobody yet: a connection already shed is letting go of memory.
    Leaving,
    /// Nobody holds anything to shed.
    Nobody,
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
    /// Whether it is in the budget's list of holders.
    registered: AtomicBool,
    /// Where to wake it when it is chosen.
    waker: Mutex<Option<Waker>>,
}

impl Charge {
    pub(crate) fn new() -> Self {
        Self {
            holder: Arc::default(),
        }
    }

    /// Bytes charged for messages still arriving.
    pub(crate) fn incoming(&self) -> usize {
        self.holder.incoming.load(Ordering::Relaxed)
    }

    /// This connection's share, for what the application holds for it.
    pub(crate) fn share(&self, budget: &MemoryBudget) -> BudgetShare {
        BudgetShare {
            budget: budget.clone(),
            holder: self.holder.clone(),
        }
    }

    /// Whether the budget chose this connection to close.
    pub(crate) fn is_shed(&self) -> bool {
        self.holder.shed.load(Ordering::Relaxed)
    }

    /// Wakes `waker` if the budget chooses this connection while it waits
    /// for its peer (only connections holding a charge register).
    pub(crate) fn wake_when_shed(&self, waker: &Waker) {
        // Whatever it holds now: the application may charge its share
        // while the socket waits.
        let mut slot = self.holder.waker.lock().expect("not poisoned");
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

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
    fn a_waiting_holder_that_is_shed_is_woken_to_let_go() {
        struct Flag(std::sync::atomic::AtomicBool);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let budget = MemoryBudget::new(100);
        let (mut heavy, mut waiting) = (Charge::new(), Charge::new());
        assert_eq!(budget.set(&mut heavy, 60, &waker()), Admit::Granted);
        assert_eq!(budget.set(&mut waiting, 30, &waker()), Admit::Granted);
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        let woken = Waker::from(flag.clone());
        // It waits for the heavy one, which is shed to make room...
        assert_eq!(budget.set(&mut waiting, 50, &woken), Admit::Wait);
        assert!(heavy.is_shed());
        // ...and before any memory comes back, it is the one chosen next.
        budget.mark_shed(&waiting.holder);
        assert!(
            flag.0.load(Ordering::SeqCst),
            "a holder shed while it waits is woken, or it never lets go"
        );
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

    #[test]
    fn shared_memory_is_counted_once_and_sheds_the_connection_keeping_most_of_it() {
        let budget = MemoryBudget::new(1000);
        let (slow, quick) = (budget.share(), budget.share());
        // Three messages for both: counted once each in the sum.
        let pushes: Vec<Charged> = (0..3).map(|_| budget.charge(300)).collect();
        let mut slow_queue: Vec<Weight> = (0..3).map(|_| slow.weigh(300)).collect();
        let quick_queue: Vec<Weight> = (0..3).map(|_| quick.weigh(300)).collect();
        assert_eq!(budget.used(), 900);
        // The quick one writes its copies out.
        drop(quick_queue);
        // A fourth would pass the limit: the connection keeping most goes.
        let fourth = budget.charge(300);
        assert!(slow.is_shed() && !quick.is_shed());
        assert_eq!(budget.shed(), 1);
        // The quick one holds nothing: shedding it would free nothing.
        let fifth = budget.charge(300);
        assert!(!quick.is_shed());
        slow_queue.clear();
        drop((pushes, fourth, fifth));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_share_that_would_be_the_heaviest_is_itself_shed() {
        let budget = MemoryBudget::new(1000);
        let (small, big) = (budget.share(), budget.share());
        let _a = small.charge(100);
        let _b = big.charge(950);
        assert!(big.is_shed() && !small.is_shed());
    }

    #[test]
    fn an_asker_is_weighed_with_all_it_holds() {
        let budget = MemoryBudget::new(1000);
        let (a, b) = (budget.share(), budget.share());
        let _a = a.charge(600);
        let _kept = b.weigh(500); // memory b keeps alive, charged elsewhere
        // b asks for less than a holds, but holds more than a in all.
        let _b = b.charge(500);
        assert!(b.is_shed() && !a.is_shed());
    }

    #[tokio::test]
    async fn room_for_waits_for_memory_to_come_back() {
        let budget = MemoryBudget::new(100);
        let holder = budget.share();
        let held = holder.charge(90);
        let mut waiting = std::pin::pin!(budget.room_for(50));
        let mut cx = std::task::Context::from_waker(Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert!(holder.is_shed(), "the heaviest is asked to let go");
        drop(held);
        waiting.await;
        assert_eq!(budget.paused(), 1);
    }

    proptest::proptest! {
        /// Whatever is charged, weighed and dropped in whatever order, the
        /// sum is what is charged and alive, and every guard gives back
        /// exactly what it took.
        #[test]
        fn the_sum_is_what_is_alive(ops in proptest::collection::vec((0u8..4, 0usize..3, 1usize..400), 1..60)) {
            let budget = MemoryBudget::new(1000);
            let shares = [budget.share(), budget.share(), budget.share()];
            let mut charged: Vec<(Charged, usize)> = Vec::new();
            let mut weights: Vec<Weight> = Vec::new();
            for (op, who, bytes) in ops {
                match op {
                    0 => charged.push((shares[who].charge(bytes), bytes)),
                    1 => charged.push((budget.charge(bytes), bytes)),
                    2 => weights.push(shares[who].weigh(bytes)),
                    _ => {
                        if !charged.is_empty() {
                            drop(charged.remove(bytes % charged.len()));
                        }
                        if !weights.is_empty() {
                            drop(weights.remove(bytes % weights.len()));
                        }
                    }
                }
                let alive: usize = charged.iter().map(|(_, b)| b).sum();
                proptest::prop_assert_eq!(budget.used(), alive);
            }
            drop(charged);
            drop(weights);
            proptest::prop_assert_eq!(budget.used(), 0);
            for s in &shares {
                proptest::prop_assert_eq!(s.holder.held.load(Ordering::Relaxed), 0);
            }
        }
    }
}
