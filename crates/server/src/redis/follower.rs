//! One node's subscription to one Redis server's announcements: which
//! channels it follows, and delivery of what is announced, in offset order,
//! with nothing missed.
//!
//! A node follows a channel while at least one of its connections is
//! subscribed to it: the first [`Follower::follow`] sends `SUBSCRIBE` and
//! returns once Redis has confirmed it (so a subscriber reading history
//! after it misses nothing), the last [`Following`] dropped sends
//! `UNSUBSCRIBE`. Requests arriving together go in one command.
//!
//! For each followed channel the task keeps the last offset it delivered.
//! An announcement at or below it is a repeat and is dropped; one above the
//! next is preceded by the missing ones, read from the history stream. When
//! the connection drops (or stops answering pings), the task reconnects
//! with backoff, subscribes to everything again, and then reads every
//! channel's position, delivering what was published meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::entry::{self, Announcement};
use super::keys::ChannelKeys;
use super::{Redis, TIMEOUT};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::publication::Publication;
use crate::store::{Range, StoreError};

/// How often an idle announcement connection is pinged: a connection cut
/// off without a reset is noticed within this plus [`TIMEOUT`].
const PING_EVERY: Duration = Duration::from_secs(1);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

enum Request {
    Follow(Arc<str>, oneshot::Sender<Result<(), StoreError>>),
    Unfollow(Arc<str>),
}

/// Where delivery of one channel stands.
#[derive(Default)]
struct Followed {
    /// Connections of this node following it.
    count: usize,
    /// Subscribed in Redis, and `last` known.
    active: bool,
    /// The epoch and offset last delivered.
    last: Option<(Arc<str>, u64)>,
}

/// The follower of one Redis server.
pub(super) struct Follower {
    requests: mpsc::UnboundedSender<Request>,
    channels: Mutex<HashMap<Arc<str>, Followed>>,
    /// Whether announcements are being received.
    up: watch::Sender<bool>,
    /// Set when this node may have missed member news (its connection
    /// dropped): its subscribers are registered again at the next lease
    /// renewal (`members.rs`).
    pub(super) reregister: AtomicBool,
}

/// This node follows a channel while this lives.
pub struct Following {
    follower: Arc<Follower>,
    channel: Arc<str>,
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut channels = self.follower.lock();
        let Some(followed) = channels.get_mut(&self.channel) else {
            return;
        };
        followed.count -= 1;
        if followed.count == 0 {
            channels.remove(&self.channel);
            let _ = self
                .follower
                .requests
                .send(Request::Unfollow(self.channel.clone()));
        }
    }
}

impl Follower {
    pub(super) fn start(
        client: redis::Client,
        redis: Weak<Redis>,
        hub: Arc<Hub>,
        metrics: Metrics,
    ) -> Arc<Self> {
        let (requests, rx) = mpsc::unbounded_channel();
        let follower = Arc::new(Self {
            requests,
            channels: Mutex::default(),
            up: watch::Sender::new(false),
            reregister: AtomicBool::new(false),
        });
        let task = Task {
            follower: Arc::downgrade(&follower),
            client,
            redis,
            hub,
            metrics,
        };
        tokio::spawn(task.run(rx));
        follower
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Followed>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many channels this node follows on this server.
    pub(super) fn channel_count(&self) -> usize {
        self.lock().len()
    }

    pub(super) fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Waits until announcements are received (for at most `limit`).
    pub(super) async fn wait_up(&self, limit: Duration) -> bool {
        let mut up = self.up.subscribe();
        tokio::time::timeout(limit, up.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Follows `channel` until the guard is dropped; returns once this node
    /// receives its announcements.
    pub(super) async fn follow(self: &Arc<Self>, channel: &str) -> Result<Following, StoreError> {
        let channel: Arc<str> = channel.into();
        let active = {
            let mut channels = self.lock();
            let followed = channels.entry(channel.clone()).or_default();
            followed.count += 1;
            followed.active
        };
        // From here on, dropping the guard (an error below, a cancelled
        // caller) undoes the count.
        let following = Following {
            follower: self.clone(),
            channel: channel.clone(),
        };
        if !active {
            let (tx, rx) = oneshot::channel();
            let stopped = || StoreError::Stopped;
            self.requests
                .send(Request::Follow(channel, tx))
                .map_err(|_| stopped())?;
            match tokio::time::timeout(2 * TIMEOUT, rx).await {
                Ok(Ok(result)) => result?,
                Ok(Err(_)) => return Err(stopped()),
                Err(_) => {
                    return Err(StoreError::Unreachable(
                        "Redis did not confirm the subscription in time".into(),
                    ));
                }
            }
        }
        Ok(following)
    }
}

struct Task {
    follower: Weak<Follower>,
    client: redis::Client,
    redis: Weak<Redis>,
    hub: Arc<Hub>,
    metrics: Metrics,
}

/// Why the connection is given up and made again.
struct Reconnect(String);

impl<E: std::fmt::Display> From<E> for Reconnect {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

impl Task {
    async fn run(self, mut requests: mpsc::UnboundedReceiver<Request>) {
        let mut backoff = MIN_BACKOFF;
        let mut first = true;
        loop {
            let reason = match self.connect().await {
                Ok((sink, stream)) => {
                    backoff = MIN_BACKOFF;
                    if !std::mem::take(&mut first) {
                        if let Some(f) = self.follower.upgrade() {
                            f.reregister.store(true, Ordering::Release);
                        }
                    }
                    self.set_up(true);
                    let reason = self.serve(sink, stream, &mut requests).await;
                    self.set_up(false);
                    match reason {
                        Some(Reconnect(reason)) => reason,
                        None => return, // the node is gone
                    }
                }
                Err(Reconnect(reason)) => reason,
            };
            tracing::warn!("Redis announcements: {reason}; reconnecting in {backoff:?}");
            // Follow requests meanwhile fail at once: nobody waits on an
            // outage for longer than a call's deadline.
            let sleep = tokio::time::sleep(backoff);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    request = requests.recv() => match request {
                        None => return,
                        Some(Request::Follow(_, tx)) => {
                            let _ = tx.send(Err(StoreError::Unreachable(reason.clone())));
                        }
                        Some(Request::Unfollow(_)) => {}
                    },
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn set_up(&self, up: bool) {
        if let Some(f) = self.follower.upgrade() {
            f.up.send_replace(up);
        }
    }

    /// Connects, subscribes to every followed channel and catches each up.
    async fn connect(&self) -> Result<(PubSubSink, PubSubStream), Reconnect> {
        let pubsub = tokio::time::timeout(TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| Reconnect("connecting timed out".into()))??;
        let (mut sink, stream) = pubsub.split();
        let follower = self.follower.upgrade().ok_or(Reconnect("stopped".into()))?;
        let channels: Vec<Arc<str>> = follower.lock().keys().cloned().collect();
        if !channels.is_empty() {
            let names: Vec<String> = channels
                .iter()
                .map(|c| ChannelKeys::of(c).announce)
                .collect();
            within(sink.subscribe(names)).await?;
            self.catch_up(&channels).await?;
        }
        Ok((sink, stream))
    }

    /// Serves until the connection fails (`Some`) or the node stops.
    async fn serve(
        &self,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
        requests: &mut mpsc::UnboundedReceiver<Request>,
    ) -> Option<Reconnect> {
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                n = requests.recv_many(&mut batch, 512) => {
                    if n == 0 {
                        return None;
                    }
                    if let Err(e) = self.handle(&mut sink, &mut batch).await {
                        return Some(e);
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else {
                        return Some(Reconnect("the connection closed".into()));
                    };
                    if let Err(e) = self.on_message(&message).await {
                        return Some(e);
                    }
                }
                _ = ping.tick() => {
                    if let Err(e) = within(sink.ping::<redis::Value>()).await {
                        return Some(e);
                    }
                }
            }
        }
    }

    /// Subscribes and unsubscribes for a batch of requests.
    async fn handle(
        &self,
        sink: &mut PubSubSink,
        batch: &mut Vec<Request>,
    ) -> Result<(), Reconnect> {
        let Some(follower) = self.follower.upgrade() else {
            return Ok(());
        };
        // What each channel ends up as is what the map says now, whatever
        // order the requests came in: followed means subscribed.
        let mut waiting = Vec::new();
        let mut touched: Vec<Arc<str>> = Vec::new();
        for request in batch.drain(..) {
            let channel = match request {
                Request::Follow(channel, tx) => {
                    waiting.push(tx);
                    channel
                }
                Request::Unfollow(channel) => channel,
            };
            if !touched.contains(&channel) {
                touched.push(channel);
            }
        }
        let (follow, unfollow): (Vec<Arc<str>>, Vec<Arc<str>>) = {
            let channels = follower.lock();
            touched.into_iter().partition(|c| channels.contains_key(c))
        };
        let unfollow: Vec<String> = unfollow
            .iter()
            .map(|c| ChannelKeys::of(c).announce)
            .collect();
        let result = async {
            if !unfollow.is_empty() {
                within(sink.unsubscribe(unfollow)).await?;
            }
            if !follow.is_empty() {
                let names: Vec<String> =
                    follow.iter().map(|c| ChannelKeys::of(c).announce).collect();
                within(sink.subscribe(names)).await?;
                self.catch_up(&follow).await?;
            }
            Ok::<_, Reconnect>(())
        }
        .await;
        let answer = result
            .as_ref()
            .map(|_| ())
            .map_err(|Reconnect(e)| StoreError::Unreachable(e.clone()));
        for tx in waiting {
            let _ = tx.send(answer.clone());
        }
        result
    }

    /// Brings a followed channel up to its position in Redis: delivers what
    /// this node missed, or starts from the position if it had nothing yet.
    async fn catch_up(&self, channels: &[Arc<str>]) -> Result<(), Reconnect> {
        let redis = self.redis.upgrade().ok_or(Reconnect("stopped".into()))?;
        // Every position in one round trip per thousand channels.
        for chunk in channels.chunks(1000) {
            let positions = redis.positions(chunk).await?;
            for (channel, now) in chunk.iter().zip(positions) {
                self.catch_up_to(&redis, channel, now).await?;
            }
        }
        Ok(())
    }

    /// [`catch_up`](Self::catch_up) for one channel, now at `now`.
    async fn catch_up_to(
        &self,
        redis: &Redis,
        channel: &Arc<str>,
        now: crate::store::Position,
    ) -> Result<(), Reconnect> {
        let last = {
            let Some(follower) = self.follower.upgrade() else {
                return Ok(());
            };
            let mut channels = follower.lock();
            let Some(followed) = channels.get_mut(channel) else {
                return Ok(()); // nobody follows it any more
            };
            followed.active = true;
            if followed.last.is_none() {
                followed.last = Some((now.epoch.as_str().into(), now.offset));
                return Ok(());
            }
            followed.last.clone()
        };
        let Some((epoch, offset)) = last else {
            return Ok(());
        };
        if !epoch.is_empty() && *epoch == now.epoch && now.offset < offset {
            // Redis came back without publications it had announced (a crash
            // with `appendfsync everysec`): their offsets would be given to
            // other publications. A new epoch makes every client see it.
            let fresh = redis.renew_epoch(channel, &epoch).await?;
            tracing::warn!(%channel, "Redis lost publications {}..={offset}; new epoch {}", now.offset + 1, fresh.epoch);
            self.metrics.broker_lost.inc();
            self.hub.lost(channel);
            self.set_last(channel, &fresh.epoch, fresh.offset);
            return Ok(());
        }
        if now.offset > offset || *epoch != now.epoch {
            self.fill(
                redis,
                channel,
                (&epoch, offset),
                &now.epoch,
                now.offset.saturating_add(1),
            )
            .await?;
        }
        Ok(())
    }

    async fn on_message(&self, message: &redis::Msg) -> Result<(), Reconnect> {
        let Some(channel) = ChannelKeys::channel_of_announce(message.get_channel_name()) else {
            return Ok(());
        };
        let channel: Arc<str> = channel.into();
        let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else {
            return Ok(());
        };
        let publication = match entry::announcement(&channel, payload) {
            Some(Announcement::Publication(p)) => p,
            Some(Announcement::Member(kind, member)) => {
                self.hub.member_event(kind, &channel, &member);
                return Ok(());
            }
            Some(Announcement::Kick { name, ban }) => {
                self.hub.remove_named(&channel, &name, ban);
                return Ok(());
            }
            None => {
                tracing::warn!(%channel, "an announcement in Redis that is not ours; ignored");
                return Ok(());
            }
        };
        let last = {
            let Some(follower) = self.follower.upgrade() else {
                return Ok(());
            };
            let channels = follower.lock();
            match channels.get(&channel) {
                None => return Ok(()), // not followed (any more)
                Some(followed) => followed.last.clone(),
            }
        };
        if let Some((epoch, offset)) = last {
            if *epoch == *publication.epoch && publication.offset <= offset {
                return Ok(()); // delivered already
            }
            if *epoch != *publication.epoch || publication.offset > offset.saturating_add(1) {
                let redis = self.redis.upgrade().ok_or(Reconnect("stopped".into()))?;
                self.fill(
                    &redis,
                    &channel,
                    (&epoch, offset),
                    &publication.epoch,
                    publication.offset,
                )
                .await?;
            }
        }
        self.deliver(Arc::new(publication));
        Ok(())
    }

    /// Delivers what lies between the last delivered and `until`
    /// (exclusive) in epoch `epoch`, from the history stream. What cannot be
    /// read any more (trimmed, or from an epoch that has ended) is lost: the
    /// channel's subscribers are closed, and they come back with `since`.
    async fn fill(
        &self,
        redis: &Redis,
        channel: &Arc<str>,
        (last_epoch, last): (&Arc<str>, u64),
        epoch: &str,
        until: u64,
    ) -> Result<(), Reconnect> {
        // An empty epoch is a channel that had no publication yet.
        if last_epoch.is_empty() || **last_epoch == *epoch {
            let missing = until.saturating_sub(last.saturating_add(1));
            if missing == 0 {
                return Ok(());
            }
            // More than subscribers' queues hold would cut them off as slow
            // consumers: they are better told to recover with `since`, which
            // pages through the history at their pace.
            if missing <= redis.catch_up_limit {
                self.metrics.broker_gaps.inc();
                let limit = missing.min(redis.retention.max_count) as usize;
                let page = redis
                    .history(channel, Range::After { after: last, limit })
                    .await?;
                let mut next = last.saturating_add(1);
                for p in page.publications {
                    if p.offset != next || *p.epoch != *epoch || p.offset >= until {
                        break;
                    }
                    next += 1;
                    self.deliver(Arc::new(p));
                }
                if next == until {
                    return Ok(());
                }
            }
        }
        tracing::warn!(%channel, "publications this node missed cannot all be delivered from here (too many, trimmed, or of an ended epoch); its subscribers recover with since");
        self.metrics.broker_lost.inc();
        self.hub.lost(channel);
        self.set_last(channel, epoch, until.saturating_sub(1));
        Ok(())
    }

    fn deliver(&self, publication: Arc<Publication>) {
        self.set_last(&publication.channel, &publication.epoch, publication.offset);
        self.hub.publish(&publication);
    }

    fn set_last(&self, channel: &Arc<str>, epoch: &str, offset: u64) {
        if let Some(follower) = self.follower.upgrade() {
            if let Some(followed) = follower.lock().get_mut(channel) {
                followed.last = Some((epoch.into(), offset));
            }
        }
    }
}

/// One call on the announcement connection, within [`TIMEOUT`].
async fn within<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, Reconnect> {
    match tokio::time::timeout(TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Reconnect(format!(
            "Redis did not answer within {TIMEOUT:?}"
        ))),
    }
}
