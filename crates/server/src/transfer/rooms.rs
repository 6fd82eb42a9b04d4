//! The transfers a relay knows: each is a *room* found by its nameplate
//! (the number in `7-violet-anchor`; the words never reach the relay), with
//! one sender and up to `max_receivers` receivers, and the limits that keep
//! the relay small: concurrent transfers, declared size, code expiry and a
//! budget of failed joins per client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use duplex::Message;
use rand::Rng;
use std::sync::Arc;
use tokio::sync::mpsc;

use crate::settings::Settings;

/// Receivers that may fail the key exchange (a wrong code) on one transfer
/// before the relay cancels it: guessing the words is capped per transfer,
/// whatever addresses the guesses come from.
pub const MAX_WRONG_CODES: u32 = 5;

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
        let window = s.transfer_window.max(64 << 10);
        Self {
            max_size: s.transfer_max_size,
            max_transfers: s.transfer_max_concurrent,
            max_receivers: s.transfer_max_receivers.max(1),
            code_ttl: Duration::from_secs(s.transfer_code_ttl),
            window,
            max_frame: window.min(2 << 20),
            max_failed_joins: s.transfer_failed_joins,
        }
    }
}

/// A close code and the reason sent with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The close code (4xxx, see docs/transfer.md).
    pub code: u16,
    /// What went wrong and what to do.
    pub reason: String,
}

impl Refusal {
    pub(crate) fn new(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// What the relay holds for one receiver: its queue and its unacknowledged
/// bytes.
pub struct ReceiverSlot {
    /// Messages for the receiver's connection.
    pub tx: mpsc::UnboundedSender<Message>,
    /// Bytes queued or being written to the receiver (at most the window).
    pub in_flight: Arc<AtomicU64>,
    /// Where it connects from.
    pub ip: Option<IpAddr>,
    /// Whether the sender accepted it (its key exchange succeeded).
    pub accepted: bool,
}

/// One transfer.
pub struct Room {
    token: String,
    created: Instant,
    /// The connected sender's queue.
    pub sender: Option<mpsc::Sender<Message>>,
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
}

/// What a sender gets back from [`Rooms::create`].
pub struct Created {
    /// The number part of the code.
    pub nameplate: u32,
    /// The secret that lets this sender reattach after a drop.
    pub token: String,
}

impl Rooms {
    /// An empty relay.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            rooms: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// Opens a transfer of `size` bytes for a sender whose queue is `tx`.
    ///
    /// `again` asks for a given nameplate and token: a sender whose relay
    /// restarted (and forgot it) recreates its transfer under the code its
    /// receivers already have. It is refused (4409) if the nameplate is in
    /// use.
    pub fn create(
        &self,
        size: u64,
        tx: mpsc::Sender<Message>,
        again: Option<(u32, String)>,
    ) -> Result<Created, Refusal> {
        if size > self.limits.max_size {
            return Err(Refusal::new(
                4413,
                format!(
                    "the transfer is {size} bytes; this relay takes at most {}",
                    self.limits.max_size
                ),
            ));
        }
        let mut rooms = self.rooms.lock().expect("rooms");
        self.expire(&mut rooms);
        if rooms.len() >= self.limits.max_transfers {
            return Err(Refusal::new(
                4503,
                "the relay has too many transfers open; try again later",
            ));
        }
        let mut rng = rand::rng();
        // Short numbers while the relay is quiet, longer ones when busy.
        let space = (rooms.len() as u32).saturating_mul(10).max(100);
        let (nameplate, token) = match again {
            Some((n, _)) if n == 0 || rooms.contains_key(&n) => {
                return Err(Refusal::new(
                    4409,
                    "this code is in use by another transfer; start a new one",
                ));
            }
            Some((n, token)) if token.len() >= 16 => (n, token),
            Some(_) => return Err(Refusal::new(4400, "the token is too short")),
            None => {
                let n = loop {
                    let n = rng.random_range(1..space);
                    if !rooms.contains_key(&n) {
                        break n;
                    }
                };
                let token = (0..24)
                    .map(|_| {
                        char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])
                    })
                    .collect();
                (n, token)
            }
        };
        rooms.insert(
            nameplate,
            Room {
                token: token.clone(),
                created: Instant::now(),
                sender: Some(tx),
                receivers: HashMap::new(),
                next_peer: 1,
                wrong_codes: 0,
            },
        );
        Ok(Created { nameplate, token })
    }

    /// Lets a sender whose connection dropped take its transfer back.
    pub fn reattach(
        &self,
        nameplate: u32,
        token: &str,
        tx: mpsc::Sender<Message>,
    ) -> Result<(), Refusal> {
        let mut rooms = self.rooms.lock().expect("rooms");
        self.expire(&mut rooms);
        match rooms.get_mut(&nameplate) {
            Some(room) if room.token == token => {
                room.sender = Some(tx);
                Ok(())
            }
            _ => Err(Refusal::new(
                4404,
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
        in_flight: Arc<AtomicU64>,
    ) -> Result<(u32, mpsc::Sender<Message>), Refusal> {
        if !self.may_try(ip) {
            return Err(Refusal::new(
                4429,
                "too many wrong codes from this address; wait a minute and check the code",
            ));
        }
        let mut rooms = self.rooms.lock().expect("rooms");
        self.expire(&mut rooms);
        let Some(room) = rooms.get_mut(&nameplate) else {
            drop(rooms);
            self.failed(ip);
            return Err(Refusal::new(
                4404,
                "no transfer with this code: check it (codes expire)",
            ));
        };
        if room.created.elapsed() > self.limits.code_ttl {
            return Err(Refusal::new(
                4410,
                "this code has expired; ask for a new one",
            ));
        }
        let Some(sender) = room.sender.clone() else {
            return Err(Refusal::new(
                4409,
                "the sender is not connected right now; try again shortly",
            ));
        };
        if room.receivers.len() >= self.limits.max_receivers {
            return Err(Refusal::new(
                4503,
                "this transfer has as many receivers as it may; try again later",
            ));
        }
        let peer = room.next_peer;
        room.next_peer += 1;
        room.receivers.insert(
            peer,
            ReceiverSlot {
                tx,
                in_flight,
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
            let reason = "too many wrong codes were tried for this transfer; start a new one";
            let close = || {
                Message::Close(Some(duplex::CloseFrame::new(
                    duplex::CloseCode(4403),
                    reason,
                )))
            };
            if let Some(sender) = room.sender {
                let _ = sender.try_send(close());
            }
            for slot in room.receivers.into_values() {
                let _ = slot.tx.send(close());
            }
        }
        drop(rooms);
        self.failed(slot.ip);
    }

    /// The sender left. A clean end removes the transfer; a drop keeps it
    /// for the sender to reattach until the code expires. Either way the
    /// receivers are disconnected (they reconnect on their own).
    pub fn sender_left(&self, nameplate: u32, finished: bool) -> Vec<ReceiverSlot> {
        let mut rooms = self.rooms.lock().expect("rooms");
        let slots = match rooms.get_mut(&nameplate) {
            Some(room) => {
                room.sender = None;
                room.receivers.drain().map(|(_, s)| s).collect()
            }
            None => Vec::new(),
        };
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

    fn may_try(&self, ip: Option<IpAddr>) -> bool {
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

/// Bytes of a credit grant, as counted by the relay.
pub(crate) fn release(in_flight: &AtomicU64, bytes: u64) {
    in_flight.fetch_sub(bytes, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::from_settings(&Settings {
            transfer_failed_joins: 3,
            ..Settings::default()
        })
    }

    #[test]
    fn an_address_that_keeps_guessing_is_refused() {
        let rooms = Rooms::new(limits());
        let ip = Some("127.0.0.9".parse().unwrap());
        let other = Some("127.0.0.10".parse().unwrap());
        let (tx, _rx) = mpsc::channel(4);
        let n = rooms.create(1, tx, None).unwrap().nameplate;
        let unknown = n + 1;
        for _ in 0..3 {
            let (rtx, _) = mpsc::unbounded_channel();
            let refusal = rooms.join(unknown, ip, rtx, Arc::default()).err().unwrap();
            assert_eq!(refusal.code, 4404);
        }
        let (rtx, _) = mpsc::unbounded_channel();
        assert_eq!(
            rooms.join(n, ip, rtx, Arc::default()).err().unwrap().code,
            4429
        );
        // Another address is not affected.
        let (rtx, _) = mpsc::unbounded_channel();
        assert!(rooms.join(n, other, rtx, Arc::default()).is_ok());
    }

    #[test]
    fn wrong_codes_cancel_the_transfer() {
        let rooms = Rooms::new(limits());
        let (tx, mut sender_rx) = mpsc::channel(4);
        let n = rooms.create(1, tx, None).unwrap().nameplate;
        for i in 0..MAX_WRONG_CODES {
            let (rtx, _) = mpsc::unbounded_channel();
            let (peer, _) = rooms.join(n, None, rtx, Arc::default()).unwrap();
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
            let (peer, _) = rooms.join(n, None, rtx, Arc::default()).unwrap();
            rooms.with(n, |r| r.receivers.get_mut(&peer).unwrap().accepted = true);
            rooms.leave(n, peer);
        }
        assert_eq!(rooms.len(), 1);
    }
}
