//! Waiting for the server's shutdown without a shared lock per sleep.
//!
//! Every connection waits for the one shutdown token. Polling tokio-util's
//! wait again locks the token's list of waiters, which every connection on
//! every core shares, and a connection that sleeps between messages polls
//! it once per message. [`ShutdownWait`] registers once and then reads the
//! token's flag (one atomic load): the waker it registered is its task's,
//! which stays the same for the task's life, so the cancellation still
//! wakes it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

pin_project_lite::pin_project! {
    /// A task's wait for `token`'s cancellation, registered at its first
    /// poll only. Polled from one task: its waker must not change.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use duplex_server::shutdown::ShutdownWait;
    /// let token = tokio_util::sync::CancellationToken::new();
    /// let wait = ShutdownWait::new(&token);
    /// tokio::pin!(wait);
    /// let canceller = token.clone();
    /// tokio::spawn(async move { canceller.cancel() });
    /// std::future::poll_fn(|cx| wait.as_mut().poll_on(&token, cx)).await;
    /// assert!(token.is_cancelled());
    /// # }
    /// ```
    pub struct ShutdownWait<'a> {
        #[pin]
        wait: WaitForCancellationFuture<'a>,
        registered: bool,
    }
}

impl<'a> ShutdownWait<'a> {
    /// A wait for `token`.
    pub fn new(token: &'a CancellationToken) -> Self {
        Self {
            wait: token.cancelled(),
            registered: false,
        }
    }

    /// Ready once `token` (the one this wait was made from) is cancelled.
    /// The token is passed in rather than kept, so that the wait is no
    /// larger than tokio-util's (it is part of every idle connection).
    pub fn poll_on(
        self: Pin<&mut Self>,
        token: &CancellationToken,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        if token.is_cancelled() {
            return Poll::Ready(());
        }
        let this = self.project();
        if std::mem::replace(this.registered, true) {
            // Registered with this task's waker: the cancellation wakes it.
            return Poll::Pending;
        }
        this.wait.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// Registered once, the wait is still woken by a later cancellation,
    /// however many times it was polled in between.
    #[tokio::test]
    async fn a_wait_polled_many_times_is_woken_by_the_cancellation() {
        let token = CancellationToken::new();
        let wait = ShutdownWait::new(&token);
        tokio::pin!(wait);
        for _ in 0..3 {
            let pending = poll_fn(|cx| Poll::Ready(wait.as_mut().poll_on(&token, cx))).await;
            assert!(pending.is_pending());
        }
        let canceller = token.clone();
        let cancelling = tokio::spawn(async move { canceller.cancel() });
        tokio::time::timeout(
            std::time::Duration::from_secs(20),
            poll_fn(|cx| wait.as_mut().poll_on(&token, cx)),
        )
        .await
        .expect("woken by the cancellation");
        cancelling.await.unwrap();
    }
}
