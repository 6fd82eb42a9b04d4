//! The hub: which connections are subscribed to which channels, and
//! delivery to them.
//!
//! Each subscriber has a bounded queue ([`crate::queue`]). Delivery never
//! waits: if a queue is full the subscriber is a slow consumer, and it is
//! cut off (1013) rather than allowed to slow the publisher or grow the
//! server's memory. Publications arrive in batches (one commit's, one
//! channel's), and each subscriber gets a batch as one queue entry.
//!
//! Every push is encoded once for all its subscribers and charged once to
//! the memory budget, for as long as any queue or write buffer holds it;
//! each subscriber that keeps it alive carries its weight, so when the
//! budget is spent the subscribers holding most are shed (1013), not the
//! publisher and not those keeping up.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use duplex::{BudgetShare, MemoryBudget, Message, Text, Weight};

use crate::metrics::Metrics;
use crate::publication::Publication;
use crate::queue::{QueueSender, Refused};
use crate::signal::Signal;
use duplex_hub::{ErrorCode, HubError, Member, MemberEvent, MemberPush};

/// What a subscriber's queue carries.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// Publications of one channel, in offset order.
    Publications(Arc<Publications>),
    /// A presence or typing push, already encoded.
    Push(Text),
    /// This connection was kicked from a channel.
    Kicked {
        /// The channel.
        channel: Arc<str>,
        /// Why.
        reason: String,
    },
    /// Publications of this channel were lost before reaching this node:
    /// the connection must come back with `since` to learn what it missed.
    Lost {
        /// The channel.
        channel: Arc<str>,
    },
}

impl Delivery {
    /// Bytes it keeps alive.
    fn len(&self) -> usize {
        match self {
            Self::Publications(batch) => batch.bytes,
            Self::Push(text) => text.len(),
            Self::Kicked { .. } | Self::Lost { .. } => 0,
        }
    }

    /// Messages it becomes on the wire, as a queue's limit counts them.
    pub fn messages(&self) -> usize {
        match self {
            Self::Publications(batch) => batch.pushes.len(),
            Self::Push(_) | Self::Kicked { .. } | Self::Lost { .. } => 1,
        }
    }
}

/// Publications of one channel, in offset order, as their subscribers get
/// them: each one's offset (to drop what a recovery already sent) and its
/// push, encoded once for all.
#[derive(Debug)]
pub struct Publications {
    /// The channel.
    pub channel: Arc<str>,
    /// Offset and push of each publication.
    pub pushes: Vec<(u64, Text)>,
    /// The pushes' bytes, all together.
    pub bytes: usize,
}

impl Publications {
    /// `pushes` of `channel`, in offset order.
    pub fn new(channel: Arc<str>, pushes: Vec<(u64, Text)>) -> Self {
        let bytes = pushes.iter().map(|(_, push)| push.len()).sum();
        Self {
            channel,
            pushes,
            bytes,
        }
    }
}

/// A delivery in a subscriber's queue, weighing on that subscriber's share
/// of the memory budget until it is taken out.
#[derive(Debug)]
pub struct Queued {
    /// What is delivered.
    pub delivery: Delivery,
    _weight: Option<Weight>,
}

impl Queued {
    /// `delivery`, weighing on `share`.
    pub fn new(delivery: Delivery, share: Option<&BudgetShare>) -> Self {
        let weight = share.map(|s| s.weigh(delivery.len()));
        Self {
            delivery,
            _weight: weight,
        }
    }
}

/// A connection's handle, as the hub holds it.
#[derive(Clone)]
pub struct Subscriber {
    /// Who it is.
    pub member: Member,
    /// Its queue.
    pub queue: QueueSender,
    /// Its share of the memory budget, which its queue weighs on.
    pub share: Option<BudgetShare>,
    /// Fired when the connection must be cut off as a slow consumer.
    pub slow: Signal,
    /// Whether it appears in presence.
    pub presence: bool,
}

#[derive(Default)]
struct Channel {
    subscribers: HashMap<Arc<str>, Subscriber>,
    banned: HashSet<String>,
}

/// All channels with subscribers on this node.
pub struct Hub {
    channels: RwLock<HashMap<Arc<str>, Arc<Mutex<Channel>>>>,
    metrics: Metrics,
    budget: MemoryBudget,
}

impl Hub {
    /// An empty hub reporting to `metrics`, charging what it queues to
    /// `budget`.
    pub fn new(metrics: Metrics, budget: MemoryBudget) -> Self {
        Self {
            channels: RwLock::default(),
            metrics,
            budget,
        }
    }

    /// `json` as a push, charged to the budget while any copy is alive.
    fn charged(&self, json: bytes::Bytes, also: usize) -> Text {
        let charge = self.budget.charge(json.len() + also);
        match Message::Text(text(json)).hold_with(charge) {
            Message::Text(t) => t,
            _ => unreachable!("hold_with keeps the kind"),
        }
    }

    fn channel(&self, name: &str) -> Option<Arc<Mutex<Channel>>> {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn channel_or_create(&self, name: &str) -> Arc<Mutex<Channel>> {
        if let Some(c) = self.channel(name) {
            return c;
        }
        let mut map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        map.entry(name.into()).or_default().clone()
    }

    /// Adds a subscriber. Fails if its nickname is taken by another user in
    /// the channel, or banned there. Others get a `join` push.
    pub fn subscribe(&self, channel: &str, sub: Subscriber) -> Result<(), HubError> {
        let ch = self.channel_or_create(channel);
        let mut ch = ch.lock().unwrap_or_else(|e| e.into_inner());
        if ch.banned.contains(&*sub.member.name) {
            return Err(banned(channel, &sub.member.name));
        }
        if sub.presence
            && ch.subscribers.values().any(|s| {
                s.presence && s.member.name == sub.member.name && s.member.user != sub.member.user
            })
        {
            return Err(name_taken(channel, &sub.member.name));
        }
        if sub.presence {
            let push = self.member_push(MemberEvent::Join, channel, &sub.member);
            self.deliver_all(&ch, Some(&sub.member.client), Delivery::Push(push));
        }
        ch.subscribers.insert(sub.member.client.clone(), sub);
        Ok(())
    }

    /// Adds a subscriber without checks or pushes: where the nodes share
    /// channels, Redis decides and announces (see [`crate::redis`]).
    pub fn insert(&self, channel: &str, sub: Subscriber) {
        let ch = self.channel_or_create(channel);
        let mut ch = ch.lock().unwrap_or_else(|e| e.into_inner());
        ch.subscribers.insert(sub.member.client.clone(), sub);
    }

    /// Removes a subscriber; others get a `leave` push.
    pub fn unsubscribe(&self, channel: &str, client: &str) {
        if let Some(sub) = self.remove(channel, client) {
            if sub.presence {
                self.member_event(MemberEvent::Leave, channel, &sub.member);
            }
        }
    }

    /// Removes a subscriber without pushes; returns it if it was there.
    pub fn remove(&self, channel: &str, client: &str) -> Option<Subscriber> {
        let ch = self.channel(channel)?;
        let (removed, empty) = {
            let mut ch = ch.lock().unwrap_or_else(|e| e.into_inner());
            let removed = ch.subscribers.remove(client);
            (removed, ch.subscribers.is_empty() && ch.banned.is_empty())
        };
        if empty {
            let mut map = self.channels.write().unwrap_or_else(|e| e.into_inner());
            // Re-check under the write lock: someone may have joined meanwhile.
            if map.get(channel).is_some_and(|c| {
                let c = c.lock().unwrap_or_else(|e| e.into_inner());
                c.subscribers.is_empty() && c.banned.is_empty()
            }) {
                map.remove(channel);
            }
        }
        removed
    }

    /// Tells every subscriber of `channel` but `member` itself that it
    /// joined, left or is typing (`event`).
    pub fn member_event(&self, event: MemberEvent, channel: &str, member: &Member) {
        let Some(ch) = self.channel(channel) else {
            return;
        };
        let ch = ch.lock().unwrap_or_else(|e| e.into_inner());
        let push = self.member_push(event, channel, member);
        self.deliver_all(&ch, Some(&member.client), Delivery::Push(push));
    }

    /// Whether `client` is subscribed to `channel` here.
    pub fn is_subscribed(&self, channel: &str, client: &str) -> bool {
        self.channel(channel).is_some_and(|ch| {
            ch.lock()
                .unwrap_or_else(|e| e.into_inner())
                .subscribers
                .contains_key(client)
        })
    }

    /// The channels with subscribers on this node.
    pub fn channel_names(&self) -> Vec<Arc<str>> {
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
        map.keys().cloned().collect()
    }

    /// Everyone subscribed to `channel` on this node, and whether each
    /// appears in presence.
    pub fn subscribers(&self, channel: &str) -> Vec<(Member, bool)> {
        let Some(ch) = self.channel(channel) else {
            return Vec::new();
        };
        let ch = ch.lock().unwrap_or_else(|e| e.into_inner());
        ch.subscribers
            .values()
            .map(|s| (s.member.clone(), s.presence))
            .collect()
    }

    /// Delivers a publication to every subscriber of its channel.
    pub fn publish(&self, publication: &Publication) {
        self.publish_batch(&publication.channel, std::slice::from_ref(publication));
    }

    /// Delivers publications of `channel`, in offset order, to every
    /// subscriber of it: one queue entry per subscriber.
    pub fn publish_batch<P: std::borrow::Borrow<Publication>>(
        &self,
        channel: &Arc<str>,
        publications: &[P],
    ) {
        let Some(ch) = self.channel(channel) else {
            return;
        };
        let pushes = publications
            .iter()
            .map(|p| {
                let p = p.borrow();
                (p.offset, self.charged(p.push_bytes(), 0))
            })
            .collect();
        let batch = Publications::new(channel.clone(), pushes);
        let ch = ch.lock().unwrap_or_else(|e| e.into_inner());
        self.deliver_all(&ch, None, Delivery::Publications(Arc::new(batch)));
    }

    /// Tells every subscriber of `channel` that some of its publications
    /// were lost before they reached this node.
    pub fn lost(&self, channel: &str) {
        let Some(ch) = self.channel(channel) else {
            return;
        };
        let ch = ch.lock().unwrap_or_else(|e| e.into_inner());
        self.deliver_all(
            &ch,
            None,
            Delivery::Lost {
                channel: channel.into(),
            },
        );
    }

    /// Tells the others in `channel` that `member` is typing.
    pub fn typing(&self, channel: &str, member: &Member) -> Result<(), HubError> {
        if !self.is_subscribed(channel, &member.client) {
            return Err(not_subscribed(channel));
        }
        self.member_event(MemberEvent::Typing, channel, member);
        Ok(())
    }

    /// Who is present in a channel.
    pub fn presence(&self, channel: &str) -> Vec<Member> {
        let mut members: Vec<Member> = self
            .subscribers(channel)
            .into_iter()
            .filter_map(|(member, presence)| presence.then_some(member))
            .collect();
        sort_members(&mut members);
        members
    }

    /// Removes every connection named `name` from a channel (and bans the
    /// name if asked); the others get a `leave` push for each. Returns how
    /// many were removed.
    pub fn kick(&self, channel: &str, name: &str, ban: bool) -> usize {
        if ban {
            let ch = self.channel_or_create(channel);
            ch.lock()
                .unwrap_or_else(|e| e.into_inner())
                .banned
                .insert(name.to_owned());
        }
        let kicked = self.remove_named(channel, name, ban);
        for sub in &kicked {
            if sub.presence {
                self.member_event(MemberEvent::Leave, channel, &sub.member);
            }
        }
        kicked.len()
    }

    /// Removes one connection from a channel, telling it why (as a kick).
    pub fn drop_subscriber(&self, channel: &str, client: &str, reason: &str) {
        if let Some(sub) = self.remove(channel, client) {
            tell_kicked(&sub, channel, reason);
        }
    }

    /// Removes every connection named `name` from a channel, telling each
    /// it was kicked (or banned); no `leave` pushes.
    pub fn remove_named(&self, channel: &str, name: &str, ban: bool) -> Vec<Subscriber> {
        let Some(ch) = self.channel(channel) else {
            return Vec::new();
        };
        let ids: Vec<Arc<str>> = {
            let ch = ch.lock().unwrap_or_else(|e| e.into_inner());
            ch.subscribers
                .values()
                .filter(|s| &*s.member.name == name)
                .map(|s| s.member.client.clone())
                .collect()
        };
        let kicked: Vec<Subscriber> = ids
            .iter()
            .filter_map(|id| self.remove(channel, id))
            .collect();
        let reason = if ban {
            "banned by an admin"
        } else {
            "kicked by an admin"
        };
        for sub in &kicked {
            tell_kicked(sub, channel, reason);
        }
        kicked
    }

    fn member_push(&self, event: MemberEvent, channel: &str, member: &Member) -> Text {
        let body = MemberPush {
            channel: channel.into(),
            member: Cow::Borrowed(member),
        };
        self.charged(event.push(body).encode(), 0)
    }

    fn deliver_all(&self, ch: &Channel, except: Option<&Arc<str>>, delivery: Delivery) {
        for (id, sub) in &ch.subscribers {
            if Some(id) == except {
                continue;
            }
            match sub
                .queue
                .offer(Queued::new(delivery.clone(), sub.share.as_ref()))
            {
                Ok(()) | Err(Refused::Closed) => {}
                Err(Refused::Full) => {
                    if !sub.slow.is_fired() {
                        self.metrics.slow_consumers.inc();
                        sub.slow.fire();
                    }
                }
            }
        }
    }
}

fn text(json: bytes::Bytes) -> Text {
    Text::try_from(json).expect("serde_json writes UTF-8")
}

/// Tells a removed subscriber it was kicked (a full queue cuts it off).
fn tell_kicked(sub: &Subscriber, channel: &str, reason: &str) {
    let delivery = Delivery::Kicked {
        channel: channel.into(),
        reason: reason.into(),
    };
    if sub
        .queue
        .offer(Queued::new(delivery, sub.share.as_ref()))
        .is_err()
    {
        sub.slow.fire();
    }
}

/// Presence lists are sorted by name, then connection.
pub fn sort_members(members: &mut [Member]) {
    members.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.client.cmp(&b.client)));
}

/// The error for a banned name.
pub fn banned(channel: &str, name: &str) -> HubError {
    HubError::new(
        ErrorCode::Banned,
        format!("{name} is banned from {channel}"),
    )
}

/// The error for a nickname another user holds in the channel.
pub fn name_taken(channel: &str, name: &str) -> HubError {
    HubError::new(
        ErrorCode::NameTaken,
        format!("the name {name:?} is taken in {channel}; pick another"),
    )
}

/// The error for a command about a channel the connection is not in.
pub fn not_subscribed(channel: &str) -> HubError {
    HubError::new(
        ErrorCode::NotSubscribed,
        format!("subscribe to {channel} first"),
    )
}
