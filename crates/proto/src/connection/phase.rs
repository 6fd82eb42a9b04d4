//! Where a connection stands in its closing handshake (RFC 6455 §7), as one
//! value: the public [`State`] and what only an ending connection needs.

use crate::State;
use crate::close::CloseFrame;
use crate::error::ProtocolError;

/// The closing handshake, from this side:
///
/// ```text
///            send close                        receive close
///   Open ─────────────────▶ Ending(CloseSent) ────────────────┐
///    │                         │                               ▼
///    │  receive close           │  protocol error, TCP ends    Ending(Closed)
///    │  (the reply is sent),    └──────────────────────────────▶
///    │  protocol error (a close is sent), TCP ends             ▲
///    └─────────────────────────────────────────────────────────┘
/// ```
///
/// Frames are read only before `Closed`; data is sent only while `Open`.
/// Everything past `Open` is boxed: an open connection carries one pointer
/// (an idle connection's memory is mostly the [`Connection`](super::Connection)).
#[derive(Debug)]
pub(super) enum Phase {
    /// Messages flow both ways ([`State::Open`]).
    Open,
    /// The closing handshake has begun.
    Ending(Box<Ending>),
}

/// Past `Open`.
#[derive(Debug)]
pub(super) enum Ending {
    /// Our close frame is sent; the peer's is awaited ([`State::Closing`]).
    CloseSent,
    /// Nothing more is read ([`State::Closed`]).
    Closed(Closed),
}

/// How a connection ended.
#[derive(Debug, Default)]
pub(super) struct Closed {
    /// Whether our close frame went out: not when the peer's TCP
    /// connection ended while we were open.
    pub(super) close_sent: bool,
    /// The peer's close frame (`Some(None)`: one without a code).
    pub(super) close_received: Option<Option<CloseFrame>>,
    /// The protocol error that failed the connection.
    pub(super) error: Option<ProtocolError>,
}

impl Phase {
    /// The public view.
    pub(super) fn state(&self) -> State {
        match self {
            Phase::Open => State::Open,
            Phase::Ending(ending) => match **ending {
                Ending::CloseSent => State::Closing,
                Ending::Closed(_) => State::Closed,
            },
        }
    }

    /// Whether our close frame went out: nothing may be sent after it.
    pub(super) fn close_sent(&self) -> bool {
        match self {
            Phase::Open => false,
            Phase::Ending(ending) => match &**ending {
                Ending::CloseSent => true,
                Ending::Closed(closed) => closed.close_sent,
            },
        }
    }

    /// How it ended, once it has.
    pub(super) fn closed(&self) -> Option<&Closed> {
        match self {
            Phase::Ending(ending) => match &**ending {
                Ending::Closed(closed) => Some(closed),
                Ending::CloseSent => None,
            },
            Phase::Open => None,
        }
    }

    /// Our close frame went out.
    pub(super) fn on_close_sent(&mut self) {
        match self {
            Phase::Open => *self = Phase::Ending(Box::new(Ending::CloseSent)),
            Phase::Ending(ending) => match &mut **ending {
                Ending::CloseSent => {}
                Ending::Closed(closed) => closed.close_sent = true,
            },
        }
    }

    /// Nothing more is read (a close frame arrived, the connection failed or
    /// the TCP connection ended): how it ended, to be filled in.
    pub(super) fn close(&mut self) -> &mut Closed {
        if self.closed().is_none() {
            let closed = Closed {
                close_sent: self.close_sent(),
                ..Closed::default()
            };
            *self = Phase::Ending(Box::new(Ending::Closed(closed)));
        }
        match self {
            Phase::Ending(ending) => match &mut **ending {
                Ending::Closed(closed) => closed,
                Ending::CloseSent => unreachable!("just closed"),
            },
            Phase::Open => unreachable!("just closed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone, Copy)]
    enum Step {
        SendClose,
        End,
    }

    proptest! {
        /// The state only moves forward, `Closing` only after our close
        /// frame, and whether it was sent is never forgotten.
        #[test]
        fn the_phase_only_moves_forward(steps in prop::collection::vec(
            prop_oneof![Just(Step::SendClose), Just(Step::End)], 0..8)
        ) {
            let mut phase = Phase::Open;
            let mut sent = false;
            let rank = |s: State| match s { State::Open => 0, State::Closing => 1, State::Closed => 2 };
            for step in steps {
                let before = phase.state();
                match step {
                    Step::SendClose => {
                        phase.on_close_sent();
                        sent = true;
                    }
                    Step::End => {
                        phase.close();
                    }
                }
                prop_assert!(rank(phase.state()) >= rank(before));
                prop_assert_eq!(phase.close_sent(), sent);
                prop_assert_eq!(phase.closed().is_some(), phase.state() == State::Closed);
            }
        }
    }
}
