//! The end of the transport: what a driver does with the TCP connection
//! once the WebSocket is closed (or given up on), in which order, and when
//! it stops waiting.
//!
//! RFC 6455 §7.1.1 asks that the server close the TCP connection first, so
//! that the server, not the client, holds the TIME_WAIT; a client that
//! completed the closing handshake waits for the server's FIN and closes
//! only then (or after a timeout). Both sides read and discard until the
//! peer's FIN before they let the socket go: closing a socket with unread
//! data makes the kernel send a reset, which can destroy the close frame
//! still in flight to the peer.
//!
//! ```text
//!                      new(role, clean)
//!                            │
//!                            ▼
//!        write failed  ┌───────────┐
//!       ┌──────────────│   Flush   │ the close frame (and what precedes it) is written
//!       │              └───────────┘
//!       │        flushed, │     │ flushed (client, clean)
//!       │  or timed out   │     │
//!       │                 ▼     ▼
//!       │  ┌──────────────────┐   ┌──────────────────────┐
//!       │  │ Shutdown         │   │ Drain                │
//!       │  │ { eof_seen }     │   │ { shut_down: false } │ a clean client waits
//!       │  └──────────────────┘   └──────────────────────┘ for the server's FIN
//!       │    │ shut down   │ eof_seen    │ eof (or read error)
//!       │    │ (or timed   │             │
//!       │    ▼  out)       │             └──▶ Shutdown { eof_seen: true }
//!       │  ┌──────────────────────┐
//!       │  │ Drain                │ discard until the peer's FIN
//!       │  │ { shut_down: true }  │
//!       │  └──────────────────────┘
//!       │    │ eof, read error or timed out
//!       ▼    ▼
//!     ┌─────────┐
//!     │  Done   │ the driver reports how the connection ended
//!     └─────────┘
//! ```
//!
//! **The close timeout** (python-websockets' `close_timeout`) is the
//! driver's one timer here: it starts when the connection leaves
//! [`State::Open`](crate::State::Open) (a close frame sent or received, or
//! the connection failed) and bounds the closing handshake and this
//! teardown together. When it fires the driver reports
//! [`Event::TimedOut`]; every step then moves on without the peer.
//!
//! A driver loops: do what the step says, report what happened, repeat
//! until [`Teardown::Done`].
//!
//! ```
//! use duplex_proto::teardown::{Event, Teardown};
//! use duplex_proto::Role;
//!
//! // A server: write the close frame, send FIN, then read until the client's FIN.
//! let mut t = Teardown::new(Role::Server, true);
//! assert_eq!(t, Teardown::Flush { drain_first: false });
//! t = t.on(Event::Flushed);
//! assert_eq!(t, Teardown::Shutdown { eof_seen: false });
//! t = t.on(Event::ShutDown);
//! assert_eq!(t, Teardown::Drain { shut_down: true });
//! t = t.on(Event::Eof);
//! assert_eq!(t, Teardown::Done);
//!
//! // A client after a clean closing handshake lets the server close first.
//! let t = Teardown::new(Role::Client, true).on(Event::Flushed);
//! assert_eq!(t, Teardown::Drain { shut_down: false });
//! assert_eq!(t.on(Event::Eof), Teardown::Shutdown { eof_seen: true });
//! ```

use crate::Role;

/// Where a connection's transport is in its ending; each variant is what
/// the driver must do next (see the [module](self) diagram). Not
/// `#[non_exhaustive]` on purpose: a driver must handle every step, and a
/// new one should fail its build rather than fall into a wildcard arm.
///
/// ```
/// use duplex_proto::teardown::{Event, Teardown};
/// use duplex_proto::Role;
/// // A client whose peer never answered the close: the timeout moves it on.
/// let t = Teardown::new(Role::Client, false);
/// assert_eq!(t.on(Event::TimedOut), Teardown::Shutdown { eof_seen: false });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Teardown {
    /// Write everything queued (the close frame is last) and flush.
    Flush {
        /// Wait for the peer's FIN before closing our side: a client after
        /// a clean closing handshake (RFC 6455 §7.1.1).
        drain_first: bool,
    },
    /// Close our side of the transport (send FIN; `poll_shutdown`).
    Shutdown {
        /// The peer's FIN was already read: nothing is left after this.
        eof_seen: bool,
    },
    /// Read and discard until the peer's FIN, so a reset for unread data
    /// cannot destroy our close frame on its way.
    Drain {
        /// Our side is already closed: the peer's FIN ends everything.
        shut_down: bool,
    },
    /// Nothing is left to do: the driver reports how the connection ended.
    Done,
}

/// What happened to the step the driver was asked to take.
///
/// ```
/// use duplex_proto::teardown::{Event, Teardown};
/// let flushing = Teardown::Flush { drain_first: false };
/// assert_eq!(flushing.on(Event::WriteFailed), Teardown::Done);
/// assert_eq!(flushing.on(Event::Eof), flushing); // no answer to this step
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Everything queued was written and flushed.
    Flushed,
    /// Writing failed: the transport is gone, nothing more can be sent.
    WriteFailed,
    /// Our side of the transport is closed (or closing it failed: either
    /// way there is no more to do for it).
    ShutDown,
    /// The peer's FIN arrived (a read returned 0), or reading failed.
    Eof,
    /// The close timeout fired: stop waiting for the peer.
    TimedOut,
}

impl Teardown {
    /// The teardown of a connection whose protocol is closed. `clean` is
    /// true when the closing handshake completed without an error on either
    /// side: see [`Connection::teardown`](crate::Connection::teardown),
    /// which decides it.
    ///
    /// ```
    /// use duplex_proto::{Role, Teardown};
    /// assert_eq!(Teardown::new(Role::Client, true), Teardown::Flush { drain_first: true });
    /// assert_eq!(Teardown::new(Role::Client, false), Teardown::Flush { drain_first: false });
    /// ```
    pub fn new(role: Role, clean: bool) -> Self {
        Teardown::Flush {
            drain_first: role == Role::Client && clean,
        }
    }

    /// The teardown of a connection whose queued output is abandoned (its
    /// peer does not read, so it would never be flushed): close our side
    /// at once, then drain.
    ///
    /// ```
    /// use duplex_proto::teardown::{Event, Teardown};
    /// let t = Teardown::abandon();
    /// assert_eq!(t.on(Event::ShutDown), Teardown::Drain { shut_down: true });
    /// ```
    pub fn abandon() -> Self {
        Teardown::Shutdown { eof_seen: false }
    }

    /// The next step after `event`. An event that does not answer the
    /// current step (an `Eof` while flushing, say) changes nothing.
    ///
    /// ```
    /// use duplex_proto::teardown::{Event, Teardown};
    /// let draining = Teardown::Drain { shut_down: true };
    /// assert_eq!(draining.on(Event::Eof), Teardown::Done);
    /// ```
    #[must_use]
    pub fn on(self, event: Event) -> Self {
        use Event::*;
        match (self, event) {
            (Teardown::Flush { .. }, WriteFailed) => Teardown::Done,
            (Teardown::Flush { drain_first: true }, Flushed) => {
                Teardown::Drain { shut_down: false }
            }
            (Teardown::Flush { .. }, Flushed | TimedOut) => Teardown::Shutdown { eof_seen: false },
            (Teardown::Shutdown { eof_seen: true }, ShutDown | TimedOut) => Teardown::Done,
            (Teardown::Shutdown { eof_seen: false }, ShutDown | TimedOut) => {
                Teardown::Drain { shut_down: true }
            }
            (Teardown::Drain { shut_down: false }, Eof) => Teardown::Shutdown { eof_seen: true },
            (Teardown::Drain { shut_down: false }, TimedOut) => {
                Teardown::Shutdown { eof_seen: false }
            }
            (Teardown::Drain { shut_down: true }, Eof | TimedOut) => Teardown::Done,
            (step, _) => step,
        }
    }

    /// Whether this step reads from the transport (and discards what it
    /// reads).
    ///
    /// ```
    /// use duplex_proto::Teardown;
    /// assert!(Teardown::Drain { shut_down: false }.reads());
    /// assert!(!Teardown::Shutdown { eof_seen: true }.reads());
    /// ```
    pub fn reads(self) -> bool {
        matches!(self, Teardown::Drain { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Flushed),
            Just(Event::WriteFailed),
            Just(Event::ShutDown),
            Just(Event::Eof),
            Just(Event::TimedOut),
        ]
    }

    /// The events a real transport can produce for a step: what the step
    /// asked for, a failure of it, or the timeout.
    fn possible(step: Teardown) -> &'static [Event] {
        match step {
            Teardown::Flush { .. } => &[Event::Flushed, Event::WriteFailed, Event::TimedOut],
            Teardown::Shutdown { .. } => &[Event::ShutDown, Event::TimedOut],
            Teardown::Drain { .. } => &[Event::Eof, Event::TimedOut],
            Teardown::Done => &[],
        }
    }

    /// Runs a teardown with events picked (by index) from what is
    /// possible at each step; returns the steps taken and the events.
    fn run_with_events(mut t: Teardown, picks: &[usize]) -> (Vec<Teardown>, Vec<Event>) {
        let (mut steps, mut events) = (vec![t], vec![]);
        for pick in picks {
            let options = possible(t);
            if options.is_empty() {
                break;
            }
            let event = options[pick % options.len()];
            t = t.on(event);
            steps.push(t);
            events.push(event);
        }
        (steps, events)
    }

    fn run(t: Teardown, picks: &[usize]) -> Vec<Teardown> {
        run_with_events(t, picks).0
    }

    fn start() -> impl Strategy<Value = Teardown> {
        prop_oneof![
            (any::<bool>(), any::<bool>()).prop_map(|(client, clean)| Teardown::new(
                if client { Role::Client } else { Role::Server },
                clean
            )),
            Just(Teardown::abandon()),
        ]
    }

    proptest! {
        /// Every possible sequence ends, within four steps, and every step
        /// moves (no event the transport can produce leaves a step as it is).
        #[test]
        fn always_ends_within_four_steps(t in start(), picks in prop::collection::vec(0usize..3, 4)) {
            let steps = run(t, &picks);
            prop_assert_eq!(*steps.last().unwrap(), Teardown::Done, "{:?}", steps);
            for pair in steps.windows(2) {
                prop_assert_ne!(pair[0], pair[1]);
            }
        }

        /// Our side is closed at most once, and every teardown that could
        /// still write closes it (only a failed write skips it).
        #[test]
        fn shuts_down_once_unless_the_transport_failed(t in start(), picks in prop::collection::vec(0usize..3, 4)) {
            let steps = run(t, &picks);
            let shutdowns = steps.iter().filter(|s| matches!(s, Teardown::Shutdown { .. })).count();
            let write_failed = steps.windows(2).any(|p| {
                matches!(p[0], Teardown::Flush { .. }) && p[1] == Teardown::Done
            });
            prop_assert_eq!(shutdowns, usize::from(!write_failed), "{:?}", steps);
        }

        /// RFC 6455 §7.1.1: a server closes TCP before it waits for the
        /// client's FIN; a client that closed cleanly closes only after
        /// the server's FIN, or when the timeout ends the wait.
        #[test]
        fn the_server_closes_first(client in any::<bool>(), clean in any::<bool>(), picks in prop::collection::vec(0usize..3, 4)) {
            let role = if client { Role::Client } else { Role::Server };
            let (steps, events) = run_with_events(Teardown::new(role, clean), &picks);
            let first_shutdown = steps.iter().position(|s| matches!(s, Teardown::Shutdown { .. }));
            let first_drain = steps.iter().position(|s| s.reads());
            if role == Role::Server || !clean {
                if let Some(drain) = first_drain {
                    prop_assert!(first_shutdown.is_some_and(|s| s < drain), "{:?}", steps);
                }
            } else if let Some(shutdown) = first_shutdown {
                // steps[i] follows events[i - 1].
                let eof_or_timeout = matches!(steps[shutdown], Teardown::Shutdown { eof_seen: true })
                    || events[shutdown - 1] == Event::TimedOut;
                prop_assert!(eof_or_timeout, "{:?}", steps);
            }
        }

        /// An event that does not answer the step leaves it as it is, and
        /// `Done` is final.
        #[test]
        fn unrelated_events_change_nothing(t in start(), picks in prop::collection::vec(0usize..3, 0..4), event in any_event()) {
            let step = *run(t, &picks).last().unwrap();
            if !possible(step).contains(&event) {
                prop_assert_eq!(step.on(event), step);
            }
            prop_assert_eq!(Teardown::Done.on(event), Teardown::Done);
        }
    }

    #[test]
    fn a_client_closed_uncleanly_closes_first_then_drains() {
        let t = Teardown::new(Role::Client, false).on(Event::Flushed);
        assert_eq!(t, Teardown::Shutdown { eof_seen: false });
        assert_eq!(t.on(Event::ShutDown), Teardown::Drain { shut_down: true });
    }
}
