//! A hub connection's answers, in the order of its commands.
//!
//! A `publish` is answered once its publication is stored. Waiting for
//! that before reading the next command would give a publisher one
//! publication per commit, and each subscriber one write per publication.
//! So a connection keeps up to [`PUBLISHES_IN_FLIGHT`] publishes waiting
//! here while it reads on: the store commits them together, subscribers
//! get them in one write, and the replies still go out in command order.
//! Any other command waits until the publishes before it are answered, so
//! it sees them stored.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use serde_json::value::RawValue;

use crate::broker::PendingPublish;
use duplex_hub::{HubError, PUBLISHES_IN_FLIGHT};

/// What a command is answered with.
#[derive(Debug)]
pub enum Answer {
    /// Decided: the reply's result, or the error.
    Now(Result<Box<RawValue>, HubError>),
    /// A publish waiting for the store.
    Stored(PendingPublish),
}

/// A command's answer, decided: its `id` and the reply's result or the
/// error.
pub type Decided = (Option<u64>, Result<Box<RawValue>, HubError>);

/// The answers not sent yet, oldest first, each with its command's `id`.
#[derive(Debug, Default)]
pub struct Answers {
    waiting: VecDeque<(Option<u64>, Answer)>,
}

impl Answers {
    /// Queues the answer to command `id`, after every earlier one.
    pub fn push(&mut self, id: Option<u64>, answer: Answer) {
        self.waiting.push_back((id, answer));
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Whether the connection should stop reading commands for now.
    pub fn is_full(&self) -> bool {
        self.waiting.len() >= PUBLISHES_IN_FLIGHT
    }

    /// The oldest answer, once it is decided.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Decided>> {
        let Some((id, answer)) = self.waiting.pop_front() else {
            return Poll::Ready(None);
        };
        match answer {
            Answer::Now(result) => Poll::Ready(Some((id, result))),
            Answer::Stored(mut pending) => match Pin::new(&mut pending).poll(cx) {
                Poll::Ready(stored) => {
                    let result = stored.map(|receipt| reply_json(&receipt.published()));
                    Poll::Ready(Some((id, result)))
                }
                Poll::Pending => {
                    self.waiting.push_front((id, Answer::Stored(pending)));
                    Poll::Pending
                }
            },
        }
    }

    /// The oldest answer if it is decided now.
    pub fn decided(&mut self) -> Option<Decided> {
        // A waker that wakes nothing: the caller's loop polls again with
        // its own (`poll_next`) before it waits.
        match self.poll_next(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(decided) => decided,
            Poll::Pending => None,
        }
    }

    /// The oldest answer, waiting until it is decided; `None` if nothing
    /// waits.
    pub async fn next(&mut self) -> Option<Decided> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

/// A reply's `result` as JSON.
pub fn reply_json(value: &impl serde::Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("hub replies always serialise")
}
