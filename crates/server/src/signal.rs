//! A one-shot signal many tasks wait for: the server's shutdown, a hub
//! subscriber's cut-off.
//!
//! A connection checks its signals on every message, so checking must not
//! lock anything. tokio-util's `CancellationToken` does: its
//! `is_cancelled` locks the token's tree, and polling its wait again locks
//! its list of waiters — and every connection on every core shares the one
//! shutdown. A [`Signal`] is a flag read with one atomic load, beside a
//! [`Notify`] that wakes the waiters once; [`SignalWait`] registers a task
//! at its first poll and afterwards only reads the flag.
//!
//! An idle echo connection is mostly its task, so it waits more cheaply
//! still: its task's waker is kept by the signal ([`Signal::poll_parked`]),
//! and the connection holds only its 4-byte place ([`Parked`]) where a
//! `Notify` waiter would take 72 bytes of the task.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use slab::Slab;

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// Fired once, by anyone holding a clone; waited for by many.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use duplex_server::signal::Signal;
/// let shutdown = Signal::new();
/// let waiter = shutdown.clone();
/// let waiting = tokio::spawn(async move { waiter.fired().await });
/// shutdown.fire();
/// waiting.await.unwrap();
/// assert!(shutdown.is_fired());
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct Signal(Arc<State>);

#[derive(Debug, Default)]
struct State {
    fired: AtomicBool,
    notify: Notify,
    /// The wakers of tasks waiting through [`Signal::poll_parked`].
    parked: Mutex<Slab<Waker>>,
}

/// A task's place among a signal's parked wakers (see
/// [`Signal::poll_parked`]); give it back with [`Signal::unpark`].
#[derive(Debug, Default)]
pub struct Parked(Option<NonZeroU32>);

impl Signal {
    /// A signal not yet fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal and wakes every task waiting for it. Idempotent.
    pub fn fire(&self) {
        // Set before the wake-up: a woken wait reads the flag.
        if !self.0.fired.swap(true, Ordering::SeqCst) {
            self.0.notify.notify_waiters();
            let parked = std::mem::take(&mut *self.parked());
            for waker in parked {
                waker.1.wake();
            }
        }
    }

    /// Ready once the signal has fired; until then, the first poll leaves
    /// `cx`'s waker with the signal and notes where in `parked`. Later
    /// polls read the flag only, so the task's waker must not change.
    /// The task gives its place back with [`Signal::unpark`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use duplex_server::signal::{Parked, Signal};
    /// let shutdown = Signal::new();
    /// let firing = shutdown.clone();
    /// tokio::spawn(async move { firing.fire() });
    /// let mut parked = Parked::default();
    /// std::future::poll_fn(|cx| shutdown.poll_parked(&mut parked, cx)).await;
    /// shutdown.unpark(&mut parked);
    /// # }
    /// ```
    pub fn poll_parked(&self, parked: &mut Parked, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_fired() {
            return Poll::Ready(());
        }
        if parked.0.is_none() {
            let mut wakers = self.parked();
            // Read again under the lock: a fire takes the wakers under it,
            // after setting the flag, so it either sees this one or was seen.
            if self.is_fired() {
                return Poll::Ready(());
            }
            let key = wakers.insert(cx.waker().clone());
            let place = u32::try_from(key + 1).ok().and_then(NonZeroU32::new);
            parked.0 = Some(place.expect("fewer than 4 billion parked tasks"));
        }
        Poll::Pending
    }

    /// Gives back a place taken by [`Signal::poll_parked`], if any.
    pub fn unpark(&self, parked: &mut Parked) {
        if let Some(place) = parked.0.take() {
            // Gone already if the signal fired.
            self.parked().try_remove(place.get() as usize - 1);
        }
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, Slab<Waker>> {
        self.0.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the signal has fired: one atomic load.
    pub fn is_fired(&self) -> bool {
        self.0.fired.load(Ordering::SeqCst)
    }

    /// Completes once the signal has fired. For waits polled a few times;
    /// a loop that polls on every message uses [`Signal::wait`].
    pub async fn fired(&self) {
        // Made before the flag is read: a fire in between still completes it.
        let notified = self.0.notify.notified();
        if self.is_fired() {
            return;
        }
        notified.await;
    }

    /// A wait for this signal that registers once (see [`SignalWait`]).
    pub fn wait(&self) -> SignalWait<'_> {
        SignalWait {
            notified: self.0.notify.notified(),
            registered: false,
        }
    }
}

pin_project_lite::pin_project! {
    /// A task's wait for a [`Signal`], registered at its first poll only;
    /// later polls read the signal's flag. Polled from one task: its waker
    /// must not change, since the fire wakes the one it registered.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use duplex_server::signal::Signal;
    /// let shutdown = Signal::new();
    /// let wait = shutdown.wait();
    /// tokio::pin!(wait);
    /// let firing = shutdown.clone();
    /// tokio::spawn(async move { firing.fire() });
    /// std::future::poll_fn(|cx| wait.as_mut().poll_on(&shutdown, cx)).await;
    /// assert!(shutdown.is_fired());
    /// # }
    /// ```
    pub struct SignalWait<'a> {
        #[pin]
        notified: Notified<'a>,
        registered: bool,
    }
}

impl SignalWait<'_> {
    /// Ready once `signal` (the one this wait was made from) has fired. The
    /// signal is passed in rather than kept, so that the wait is no larger
    /// than it must be (it is part of every idle connection).
    pub fn poll_on(self: Pin<&mut Self>, signal: &Signal, cx: &mut Context<'_>) -> Poll<()> {
        if signal.is_fired() {
            return Poll::Ready(());
        }
        let this = self.project();
        if std::mem::replace(this.registered, true) {
            // Registered with this task's waker: the fire wakes it.
            return Poll::Pending;
        }
        this.notified.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;

    /// Registered once, a wait is still woken by a later fire, however many
    /// times it was polled in between.
    #[tokio::test]
    async fn a_wait_polled_many_times_is_woken_by_the_fire() {
        let signal = Signal::new();
        let wait = signal.wait();
        tokio::pin!(wait);
        for _ in 0..3 {
            let pending = poll_fn(|cx| Poll::Ready(wait.as_mut().poll_on(&signal, cx))).await;
            assert!(pending.is_pending());
        }
        let firing = signal.clone();
        let fired = tokio::spawn(async move { firing.fire() });
        tokio::time::timeout(
            Duration::from_secs(20),
            poll_fn(|cx| wait.as_mut().poll_on(&signal, cx)),
        )
        .await
        .expect("woken by the fire");
        fired.await.unwrap();
    }

    /// A fire between making a wait and its first poll is not missed, by
    /// either kind of wait, and firing twice is harmless.
    #[tokio::test]
    async fn a_fire_before_the_first_poll_is_seen() {
        let signal = Signal::new();
        let wait = signal.wait();
        let fired = signal.fired();
        signal.fire();
        signal.fire();
        tokio::pin!(wait);
        poll_fn(|cx| wait.as_mut().poll_on(&signal, cx)).await;
        fired.await;
        signal.fired().await;
    }

    /// A place given back before the fire is not kept; after the fire,
    /// nobody parks, and the fire took every place.
    #[tokio::test]
    async fn parked_places_are_given_back() {
        let signal = Signal::new();
        let mut early = Parked::default();
        let pending = poll_fn(|cx| Poll::Ready(signal.poll_parked(&mut early, cx))).await;
        assert!(pending.is_pending());
        signal.unpark(&mut early);
        assert!(signal.parked().is_empty());
        let mut kept = Parked::default();
        let pending = poll_fn(|cx| Poll::Ready(signal.poll_parked(&mut kept, cx))).await;
        assert!(pending.is_pending());
        signal.fire();
        assert!(signal.parked().is_empty());
        signal.unpark(&mut kept);
        let mut late = Parked::default();
        poll_fn(|cx| signal.poll_parked(&mut late, cx)).await;
        assert!(late.0.is_none());
    }

    /// Every one of many waiting tasks wakes, whichever way it waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiter_wakes() {
        let signal = Signal::new();
        let waiters: Vec<_> = (0..64)
            .map(|i| {
                let signal = signal.clone();
                tokio::spawn(async move {
                    match i % 3 {
                        0 => signal.fired().await,
                        1 => {
                            let wait = signal.wait();
                            tokio::pin!(wait);
                            poll_fn(|cx| wait.as_mut().poll_on(&signal, cx)).await;
                        }
                        _ => {
                            let mut parked = Parked::default();
                            poll_fn(|cx| signal.poll_parked(&mut parked, cx)).await;
                            signal.unpark(&mut parked);
                        }
                    }
                })
            })
            .collect();
        tokio::task::yield_now().await;
        signal.fire();
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(20), waiter)
                .await
                .expect("every waiter wakes")
                .unwrap();
        }
        assert!(signal.parked().is_empty());
    }
}
