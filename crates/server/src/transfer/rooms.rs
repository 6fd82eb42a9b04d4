//! The transfers a relay knows: each is a *room* found by its nameplate
//! (the number in `7-violet-anchor`; the words never reach the relay), with
//! one sender and up to `max_receivers` receivers, and the limits that keep
//! the relay small: concurrent transfers, declared size, code expiry and a
//! budget of failed joins per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duplex::{CloseFrame, Message};
use duplex_transfer::{Credit, RelayClose, limits};
use rand::Rng;
use tokio::sync::mpsc;

use crate::settings::Settings;

/// Receivers that may fail the key exchange (a wrong code) on one transfer
/// before the relay cancels it: guessing the words is capped per transfer,
/// whatever addresses the guesses come from.
pub const MAX_WRONG_CODES: u32 = 5;

/// Characters in a transfer's reattach token (5.2 bits each).
const TOKEN_LENGTH: usize = 24;

/// The relay's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest total size a sender may announce, in bytes.
    pub max_size: u64,
    /// Transfers open at once.
    pub max_transfers: usize,
    /// Receivers one transfer may have at once.
    pub max_receivers: usize,
    /// How long a code may be used to join after it was created.
    pub code_ttl: Duration,
    /// Bytes of data the relay holds for one receiver at most (the credit
    /// window).
    pub window: usize,
    /// Largest binary message, header included.
    pub max_frame: usize,
    /// Failed joins one client address may make per minute.
    pub max_failed_joins: u32,
}

impl Limits {
    /// The limits configured in `settings`.
    pub fn from_settings(s: &Settings) -> Self {
        let window = s.transfer_window.max(limits::MIN_WINDOW);
        Self {
            max_size: s.transfer_max_size,
            max_transfers: s.transfer_max_concurrent,
            max_receivers: s.transfer_max_receivers.max(1),
            code_ttl: Duration::from_secs(s.transfer_code_ttl),
            window,
            max_frame: limits::max_frame(window),
            max_failed_joins: s.transfer_failed_joins,
        }
    }
}

/// A close code and the reason sent with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The close code (see docs/transfer.md).
    pub code: RelayClose,
    /// What went wrong and what to do.
    pub reason: String,
}

impl Refusal {
    pub(crate) fn new(code: RelayClose, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }

    /// As a close message for a connection's queue.
    pub fn to_close(&self) -> Message {
        Message::Close(Some(CloseFrame::new(
            self.code.close_code(),
            self.reason.as_str(),
        )))
    }
}

/// Which connection is a transfer's sender: a new one is numbered on every
/// create or reattach, so that a connection that was replaced cannot act
/// for the transfer (or detach the one that replaced it) when it ends.
pub type SenderId = u64;

/// The connected sender of a transfer.
pub struct SenderSlot {
    /// Its connection's number.
    pub id: SenderId,
    /// Its connection's queue.
    pub tx: mpsc::Sender<Message>,
}

/// What the relay holds for one receiver: its queue and its unacknowledged
/// bytes.
pub struct ReceiverSlot {
    /// Messages for the receiver's connection.
    pub tx: mpsc::UnboundedSender<Message>,
    /// Bytes queued or being written to the receiver (at most the window).
    pub credit: Arc<Credit>,
    /// Where it connects from.
    pub ip: Option<IpAddr>,
    /// Whether the sender accepted it (its key exchange succeeded).
    pub accepted: bool,
}

/// One transfer.
pub struct Room {
    token: String,
    created: Instant,
    /// The connected sender.
    pub sender: Option<SenderSlot>,
    /// Connected receivers by peer number.
    pub receivers: HashMap<u32, ReceiverSlot>,
    next_peer: u32,
    wrong_codes: u32,
}

/// Every transfer of this relay.
pub struct Rooms {
    /// The limits in force.
    pub limits: Limits,
    rooms: Mutex<HashMap<u32, Room>>,
    failures: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
    next_sender: std::sync::atomic::AtomicU64,
    /// When this relay started: see [`RESTART_GRACE`].
    started: Instant,
}

/// For this long after the relay starts, a join to an unknown nameplate
/// is not counted as a failure of its address: after a restart, receivers
/// rejoin transfers the relay forgot until their senders recreate them,
/// and several receivers behind one address used to be locked out (4429)
/// by their own retries. Wrong codes (a failed key exchange) still count.
const RESTART_GRACE: Duration = Duration::from_secs(120);

/// What a sender gets back from [`Rooms::create`] and [`Rooms::reattach`].
pub struct Created {
    /// The number part of the code.
    pub nameplate: u32,
    /// The secret that lets this sender reattach after a drop.
    pub token: String,
    /// This connection, as the transfer's sender.
    pub sender: SenderId,
}

impl Rooms {
    /// An empty relay.
    pub fn new(limits: Limits) -> Self {
        Self::started_at(limits, Instant::now())
    }

    fn started_at(limits: Limits, started: Instant) -> Self {
        Self {
            limits,
            rooms: Mutex::default(),
            failures: Mutex::default(),
            next_sender: Default::default(),
            started,
        }
    }

    fn sender_slot(&self, tx: mpsc::Sender<Message>) -> SenderSlot {
        let id = self
            .next_sender
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        SenderSlot { id, tx }
    }

    /// Opens a transfer of `size` bytes for a sender whose queue is `tx`.
    ///
    /// `again` asks for a given nameplate and token: a sender whose relay
    /// restarted (and forgot it) recreates its transfer under the code its
    /// receivers already have, and nodes sharing transfers open one under
    /// the nameplate they claimed. It is refused (4409) if the nameplate is
    /// in use.
    pub fn create(
        &self,
        size: u64,
        tx: mpsc::Sender<Message>,
        again: Option<(u32, String)>,
    ) -> Result<Created, Refusal> {
        let mut rooms = self.rooms.lock().expect("rooms");
        self.admits(&mut rooms, size)?;
        let (nameplate, token) = match again {
            Some((n, _)) if n == 0 || rooms.contains_key(&n) => {
                return Err(Refusal::new(
                    RelayClose::SenderNotConnected,
                    "this code is in use by another transfer; start a new one",
                ));
            }
            Some((n, token)) if token.len() >= 16 => (n, token),
            Some(_) => {
                return Err(Refusal::new(
                    RelayClose::Malformed,
                    "the token is too short",
                ));
            }
            None => (Self::pick(&rooms, 0), Self::new_token()),
        };
        let slot = self.sender_slot(tx);
        let sender = slot.id;
        rooms.insert(
            nameplate,
            Room {
                token: token.clone(),
                created: Instant::now(),
                sender: Some(slot),
                receivers: HashMap::new(),
                next_peer: 1,
                wrong_codes: 0,
            },
        );
        Ok(Created {
            nameplate,
            token,
            sender,
        })
    }

    /// Whether a transfer of `size` bytes may be opened now: its size,
    /// and the number of transfers open.
    pub fn may_open(&self, size: u64) -> Result<(), Refusal> {
        self.admits(&mut self.rooms.lock().expect("rooms"), size)
    }

    fn admits(&self, rooms: &mut HashMap<u32, Room>, size: u64) -> Result<(), Refusal> {
        if size > self.limits.max_size {
            return Err(Refusal::new(
                RelayClose::TooLarge,
                format!(
                    "the transfer is {size} bytes; this relay takes at most {}",
                    self.limits.max_size
                ),
            ));
        }
        self.expire(rooms);
        if rooms.len() >= self.limits.max_transfers {
            return Err(Refusal::new(
                RelayClose::Busy,
                "the relay has too many transfers open; try again later",
            ));
        }
        Ok(())
    }

    /// A nameplate no transfer here uses, for a new transfer: short while
    /// the relay is quiet, longer when busy. Each step of `widen` makes
    /// the range ten times larger, for nodes sharing transfers that found
    /// their pick taken by another node.
    pub fn free_nameplate(&self, widen: u32) -> u32 {
        Self::pick(&self.rooms.lock().expect("rooms"), widen)
    }

    fn pick(rooms: &HashMap<u32, Room>, widen: u32) -> u32 {
        let space = (rooms.len() as u32)
            .saturating_mul(10)
            .max(100)
            .saturating_mul(10u32.saturating_pow(widen));
        let mut rng = rand::rng();
        loop {
            let n = rng.random_range(1..space);
            if !rooms.contains_key(&n) {
                return n;
            }
        }
    }

    /// A new transfer's secret, which lets its sender reattach.
    pub fn new_token() -> String {
        crate::random::name(TOKEN_LENGTH)
    }

    /// Whether a transfer with this nameplate is open here.
    pub fn contains(&self, nameplate: u32) -> bool {
        let mut rooms = self.rooms.lock().expect("rooms");
        self.expire(&mut rooms);
        rooms.contains_key(&nameplate)
    }

    /// The nameplates of the transfers open here.
    pub fn nameplates(&self) -> Vec<u32> {
        let mut rooms = self.rooms.lock().expect("rooms");
        self.expire(&mut rooms);
        rooms.keys().copied().collect()
    }

    /// Lets a sender whose connection dropped take its transfer back. A
    /// connection still attached (the relay has not noticed it is gone) is
    /// replaced: its queue is dropped, which ends it, and the receivers
    /// joined through it are closed with 4001 so that they join the new
    /// one, which knows nothing of them.
    pub fn reattach(
        &self,
        nameplate: u32,
        token: &str,
        tx: mpsc::Sender<Message>,
    ) -> Result<Created, Refusal> {
        let mut rooms = self.rooms.lock().expect("rooms");
        self.expire(&mut rooms);
        match rooms.get_mut(&nameplate) {
            Some(room) if room.token == token => {
                let slot = self.sender_slot(tx);
                let sender = slot.id;
                room.sender = Some(slot);
                let away =
                    Refusal::new(RelayClose::SenderAway, "the sender reconnected; join again");
                for (_, receiver) in room.receivers.drain() {
                    let _ = receiver.tx.send(away.to_close());
                }
                Ok(Created {
                    nameplate,
                    token: token.to_owned(),
                    sender,
                })
            }
            _ => Err(Refusal::new(
                RelayClose::NotFound,
                "this transfer is gone (expired or finished); start a new one",
            )),
        }
    }

    /// A receiver joins; returns its peer number and the sender's queue.
    pub fn join(
        &self,
        nameplate: u32,
        ip: Option<IpAddr>,
        tx: mpsc::UnboundedSender<Message>,
        credit: Arc<Credit>,
    ) -> Result<(u32, mpsc::Sender<Message>), Refusal> {
        if !self.may_try(ip) {
            return Err(Refusal::new(
                RelayClose::TooManyFailures,
                "too many wrong codes from this address; wait a minute and check the code",
            ));
        }
        let mut rooms = self.rooms.lock().expect("rooms");
        self.expire(&mut rooms);
        let Some(room) = rooms.get_mut(&nameplate) else {
            drop(rooms);
            if self.started.elapsed() > RESTART_GRACE {
                self.failed(ip);
            }
            return Err(Refusal::new(
                RelayClose::NotFound,
                "no transfer with this code: check it (codes expire)",
            ));
        };
        if room.created.elapsed() > self.limits.code_ttl {
            return Err(Refusal::new(
                RelayClose::Expired,
                "this code has expired; ask for a new one",
            ));
        }
        let Some(sender) = room.sender.as_ref().map(|s| s.tx.clone()) else {
            return Err(Refusal::new(
                RelayClose::SenderNotConnected,
                "the sender is not connected right now; try again shortly",
            ));
        };
        if room.receivers.len() >= self.limits.max_receivers {
            return Err(Refusal::new(
                RelayClose::Busy,
                "this transfer has as many receivers as it may; try again later",
            ));
        }
        let peer = room.next_peer;
        room.next_peer += 1;
        room.receivers.insert(
            peer,
            ReceiverSlot {
                tx,
                credit,
                ip,
                accepted: false,
            },
        );
        Ok((peer, sender))
    }

    /// Runs `f` on a transfer, if it still exists.
    pub fn with<R>(&self, nameplate: u32, f: impl FnOnce(&mut Room) -> R) -> Option<R> {
        self.rooms.lock().expect("rooms").get_mut(&nameplate).map(f)
    }

    /// A receiver left; a receiver the sender never accepted counts as a
    /// failed join (most likely a wrong code). After [`MAX_WRONG_CODES`] of
    /// them the transfer is cancelled: its sender is closed with 4403.
    pub fn leave(&self, nameplate: u32, peer: u32) {
        let mut rooms = self.rooms.lock().expect("rooms");
        let Some(room) = rooms.get_mut(&nameplate) else {
            return;
        };
        let Some(slot) = room.receivers.remove(&peer) else {
            return;
        };
        if slot.accepted {
            return;
        }
        room.wrong_codes += 1;
        if room.wrong_codes >= MAX_WRONG_CODES {
            let room = rooms.remove(&nameplate).expect("present");
            let refusal = Refusal::new(
                RelayClose::Dropped,
                "too many wrong codes were tried for this transfer; start a new one",
            );
            if let Some(sender) = room.sender {
                let _ = sender.tx.try_send(refusal.to_close());
            }
            for slot in room.receivers.into_values() {
                let _ = slot.tx.send(refusal.to_close());
            }
        }
        drop(rooms);
        self.failed(slot.ip);
    }

    /// Whether `sender` is still the transfer's sender connection.
    pub fn is_sender(&self, nameplate: u32, sender: SenderId) -> bool {
        self.with(nameplate, |room| {
            room.sender.as_ref().is_some_and(|s| s.id == sender)
        })
        .unwrap_or(false)
    }

    /// The sender connection `sender` ended. A clean end removes the
    /// transfer; a drop keeps it for the sender to reattach until the code
    /// expires. Either way the receivers are disconnected (they reconnect
    /// on their own). A connection that was already replaced by a
    /// reattach changes nothing.
    pub fn sender_left(
        &self,
        nameplate: u32,
        sender: SenderId,
        finished: bool,
    ) -> Vec<ReceiverSlot> {
        let mut rooms = self.rooms.lock().expect("rooms");
        let Some(room) = rooms.get_mut(&nameplate) else {
            return Vec::new();
        };
        if room.sender.as_ref().is_none_or(|s| s.id != sender) {
            return Vec::new();
        }
        room.sender = None;
        let slots = room.receivers.drain().map(|(_, s)| s).collect();
        if finished {
            rooms.remove(&nameplate);
        }
        slots
    }

    /// Transfers open now.
    pub fn len(&self) -> usize {
        self.rooms.lock().expect("rooms").len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expire(&self, rooms: &mut HashMap<u32, Room>) {
        let ttl = self.limits.code_ttl;
        rooms.retain(|_, r| r.sender.is_some() || r.created.elapsed() <= ttl);
    }

    /// Whether `ip` may try to join (it has not failed too often).
    pub fn may_try(&self, ip: Option<IpAddr>) -> bool {
        // Without an address there is nothing fair to key on: one client
        // must not lock everyone out. MAX_WRONG_CODES still caps guessing.
        if ip.is_none() {
            return true;
        }
        let failures = self.failures.lock().expect("failures");
        match failures.get(&ip) {
            Some((since, n)) => {
                since.elapsed() > Duration::from_secs(60) || *n < self.limits.max_failed_joins
            }
            None => true,
        }
    }

    fn failed(&self, ip: Option<IpAddr>) {
        if ip.is_none() {
            return;
        }
        let mut failures = self.failures.lock().expect("failures");
        if failures.len() > 100_000 {
            failures.retain(|_, (since, _)| since.elapsed() <= Duration::from_secs(60));
        }
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() > Duration::from_secs(60) {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credit() -> Arc<Credit> {
        Arc::new(Credit::new(1 << 20))
    }

    fn limits() -> Limits {
        Limits::from_settings(&Settings {
            transfer_failed_joins: 3,
            ..Settings::default()
        })
    }

    /// A relay that has been up for longer than the grace after a start.
    fn settled() -> Rooms {
        let past = Instant::now()
            .checked_sub(RESTART_GRACE + Duration::from_secs(1))
            .expect("the machine has been up for a few minutes");
        Rooms::started_at(limits(), past)
    }

    #[test]
    fn an_address_that_keeps_guessing_is_refused() {
        let rooms = settled();
        let ip = Some("127.0.0.9".parse().unwrap());
        let other = Some("127.0.0.10".parse().unwrap());
        let (tx, _rx) = mpsc::channel(4);
        let n = rooms.create(1, tx, None).unwrap().nameplate;
        let unknown = n + 1;
        for _ in 0..3 {
            let (rtx, _) = mpsc::unbounded_channel();
            let refusal = rooms.join(unknown, ip, rtx, credit()).err().unwrap();
            assert_eq!(refusal.code, RelayClose::NotFound);
        }
        let (rtx, _) = mpsc::unbounded_channel();
        assert_eq!(
            rooms.join(n, ip, rtx, credit()).err().unwrap().code,
            RelayClose::TooManyFailures
        );
        // Another address is not affected.
        let (rtx, _) = mpsc::unbounded_channel();
        assert!(rooms.join(n, other, rtx, credit()).is_ok());
    }

    #[test]
    fn just_after_a_start_receivers_rejoining_forgotten_transfers_are_not_locked_out() {
        let rooms = Rooms::new(limits());
        let ip = Some("127.0.0.9".parse().unwrap());
        for _ in 0..10 {
            let (rtx, _) = mpsc::unbounded_channel();
            let refusal = rooms.join(77, ip, rtx, credit()).err().unwrap();
            assert_eq!(refusal.code, RelayClose::NotFound);
        }
        // The sender recreates its transfer; the receivers get in.
        let (tx, _sender_rx) = mpsc::channel(4);
        rooms
            .create(1, tx, Some((77, "a-token-of-24-characters".into())))
            .unwrap();
        let (rtx, _) = mpsc::unbounded_channel();
        assert!(rooms.join(77, ip, rtx, credit()).is_ok());
    }

    #[test]
    fn wrong_codes_cancel_the_transfer() {
        let rooms = Rooms::new(limits());
        let (tx, mut sender_rx) = mpsc::channel(4);
        let n = rooms.create(1, tx, None).unwrap().nameplate;
        for i in 0..MAX_WRONG_CODES {
            let (rtx, _) = mpsc::unbounded_channel();
            let (peer, _) = rooms.join(n, None, rtx, credit()).unwrap();
            assert_eq!(peer, i + 1);
            rooms.leave(n, peer); // never accepted
        }
        assert!(rooms.is_empty());
        match sender_rx.try_recv().unwrap() {
            Message::Close(Some(f)) => assert_eq!(f.code.0, 4403),
            other => panic!("{other:?}"),
        }
        // An accepted receiver leaving does not count.
        let (tx, _sender_rx) = mpsc::channel(4);
        let n = rooms.create(1, tx, None).unwrap().nameplate;
        for _ in 0..MAX_WRONG_CODES {
            let (rtx, _) = mpsc::unbounded_channel();
            let (peer, _) = rooms.join(n, None, rtx, credit()).unwrap();
            rooms.with(n, |r| r.receivers.get_mut(&peer).unwrap().accepted = true);
            rooms.leave(n, peer);
        }
        assert_eq!(rooms.len(), 1);
    }

    /// Round 1's lost sender: a sender reattached before the relay noticed
    /// its old connection was gone; when the old connection then ended, it
    /// detached the new one, and receivers were told "the sender is not
    /// connected" for good.
    #[test]
    fn a_replaced_sender_connection_ending_does_not_detach_its_successor() {
        let rooms = Rooms::new(limits());
        let (old_tx, mut old_rx) = mpsc::channel(4);
        let created = rooms.create(1, old_tx, None).unwrap();
        let n = created.nameplate;
        let (rtx, mut receiver_rx) = mpsc::unbounded_channel();
        rooms.join(n, None, rtx, credit()).unwrap();

        let (new_tx, _new_rx) = mpsc::channel(4);
        let again = rooms.reattach(n, &created.token, new_tx).unwrap();
        assert_ne!(again.sender, created.sender);
        // The old connection's queue is gone (which ends it) ...
        assert!(old_rx.try_recv().is_err());
        assert!(old_rx.is_closed());
        // ... and the receiver joined through it is told to join again.
        match receiver_rx.try_recv().unwrap() {
            Message::Close(Some(f)) => assert_eq!(f.code, RelayClose::SenderAway.close_code()),
            other => panic!("{other:?}"),
        }
        assert!(!rooms.is_sender(n, created.sender));

        // The old connection ends: nothing changes.
        assert!(rooms.sender_left(n, created.sender, false).is_empty());
        assert!(rooms.is_sender(n, again.sender));
        let (rtx, _) = mpsc::unbounded_channel();
        assert!(rooms.join(n, None, rtx, credit()).is_ok());

        // The current one ends: receivers are released, the transfer waits.
        assert_eq!(rooms.sender_left(n, again.sender, false).len(), 1);
        let (rtx, _) = mpsc::unbounded_channel();
        let refusal = rooms.join(n, None, rtx, credit()).err().unwrap();
        assert_eq!(refusal.code, RelayClose::SenderNotConnected);
    }
}
