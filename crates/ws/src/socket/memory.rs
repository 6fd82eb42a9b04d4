//! The connection's side of the memory budget (see [`crate::budget`]):
//! charging what it holds for its peer, giving it back, and closing with
//! 1013 when the budget sheds it.

use std::task::{Context, Waker};

use duplex_proto::{CloseCode, CloseFrame, Message, Teardown};
use tokio::io::{AsyncRead, AsyncWrite};

use super::WebSocket;
use crate::budget::{Account, Admit, CHARGE_STEP, LARGE_MESSAGE, charge_for};
use crate::error::Error;

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Charges the memory budget (if any) for what this connection buffers
    /// for its peer before reading more: messages still arriving and the
    /// next read, and what waits to be written.
    pub(super) fn charge_budget(&mut self, rcx: &mut Context<'_>) -> Admit {
        if self.config.memory_budget.is_none() {
            return Admit::Granted;
        }
        // Only a frame known to be larger than the buffer is granted ahead;
        // a read's own growth is charged on the next turn, so a connection
        // exchanging small messages is never charged at all.
        let want = self.conn.held_bytes_after(self.conn.bytes_wanted());
        // What is granted bounds inflation too (one compressed frame can
        // inflate to the message limit), a step at a time.
        self.conn.allow_memory(charge_for(want).max(CHARGE_STEP));
        let waiting = self.output_held();
        let admit = self.charge(want + waiting, rcx);
        if admit != Admit::Granted {
            // Not yet: inflate nothing past what is held now.
            let held = self.conn.held_bytes();
            self.conn.allow_memory(held.max(CHARGE_STEP));
        }
        admit
    }

    /// Sets this connection's charge for buffering `held` bytes for its
    /// peer, both ways (see [`charge_for`]): the shared budget is touched
    /// only when that crosses a step.
    ///
    /// Inline, always: most calls (one per message sent) leave the charge
    /// as it is, and rustc otherwise made it a call (34 instructions per
    /// echoed message, by callgrind, against 10 inline).
    #[inline(always)]
    pub(super) fn charge(&mut self, held: usize, cx: &mut Context<'_>) -> Admit {
        if self.config.memory_budget.is_none() {
            return Admit::Granted;
        }
        let want = charge_for(held);
        if want == self.account().map_or(0, |a| a.charge.incoming()) {
            return Admit::Granted;
        }
        self.charge_anew(want, cx)
    }

    /// [`charge`](Self::charge) when the charge changes.
    fn charge_anew(&mut self, want: usize, cx: &mut Context<'_>) -> Admit {
        let Some(budget) = &self.config.memory_budget else {
            return Admit::Granted;
        };
        // The account is made the first time: most connections never need it.
        let budget = budget.clone();
        let account = self
            .extra_mut()
            .account
            .get_or_insert_with(|| Account::new(budget));
        account.budget.set(&mut account.charge, want, cx.waker())
    }

    /// Gives back what this connection no longer buffers (its buffers
    /// went back to the pool, its output was written): an idle connection
    /// holds no charge.
    pub(super) fn settle_budget(&mut self) {
        if self.account().is_none() {
            return;
        }
        let held = self.conn.held_bytes() + self.output_held();
        let Some(account) = self.extra.as_mut().and_then(|x| x.account.as_mut()) else {
            return;
        };
        let want = charge_for(held);
        if want < account.charge.incoming() {
            // Lower than what is held: only gives back, never waits.
            account.budget.set(&mut account.charge, want, Waker::noop());
        }
    }

    /// A large message that arrived stays charged to this connection for
    /// as long as it is alive (see [`crate::budget`]).
    pub(super) fn keep_charged(&mut self, msg: Message) -> Message {
        match self.account() {
            Some(account) if msg.len() > LARGE_MESSAGE && account.charge.incoming() > 0 => {
                let kept = account.budget.keep(&account.charge, msg.len());
                msg.hold_with(kept)
            }
            _ => msg,
        }
    }

    /// Charges what was just queued to send. It is queued already, so this
    /// does not wait: past the limit the heaviest connection is shed (this
    /// one, if it is the heaviest), and the next send waits in
    /// `poll_ready_send`.
    #[inline]
    pub(super) fn charge_sent(&mut self) {
        let held = self.conn.held_bytes() + self.output_held();
        if self.charge(held, &mut Context::from_waker(Waker::noop())) == Admit::Shed {
            self.shed();
        }
    }

    /// What the output holds: what waits to be written, and the room left
    /// in its buffer (a read-ahead buffer the echo moved to, say; see
    /// `provide_echo_room`). A small pooled buffer is within
    /// [`UNCHARGED`](crate::budget::UNCHARGED) with the read buffer.
    fn output_held(&mut self) -> usize {
        let out = self.conn.outgoing();
        out.len() + out.room()
    }

    /// This connection's account with the memory budget, once it has one.
    pub(super) fn account(&self) -> Option<&Account> {
        self.extra.as_ref().and_then(|x| x.account.as_ref())
    }

    /// Closes the connection with 1013 because the memory budget is spent
    /// and it holds the most, freeing what it holds at once. A peer that
    /// reads is told why; for one that does not (its output backed up),
    /// the unsent output is dropped, frames cut short and the close frame
    /// included, and the TCP connection shut down.
    pub(super) fn shed(&mut self) {
        let backed_up = self.conn.outgoing().len() >= self.config.write_buffer_limit;
        let _ = self.conn.close(Some(CloseFrame::new(
            CloseCode::TRY_AGAIN_LATER,
            "the server is short of memory; try again later",
        )));
        self.conn.discard_incoming();
        if let Some(account) = self.account() {
            account.release_all();
        }
        self.set_pending_error(Error::MemoryBudget);
        if backed_up {
            self.conn.outgoing().discard();
            self.force_teardown(Teardown::abandon());
        } else {
            self.begin_teardown();
        }
    }

    /// Sheds the connection while a send waits for a peer that does not
    /// read (so its output is backed up: see [`shed`](Self::shed)).
    pub(super) fn shed_while_sending(&mut self) -> Error {
        self.shed();
        // Whoever waits to send has a peer that does not read: what waits
        // is dropped now (its charge was given back), not flushed for ever.
        self.conn.outgoing().discard();
        self.force_teardown(Teardown::abandon());
        Error::MemoryBudget
    }
}
