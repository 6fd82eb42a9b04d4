//! Publishing and membership: store first, then deliver, in offset order.
//!
//! Two engines, one contract: a publisher is answered only once its
//! publication is stored, and every subscriber sees each channel's offsets
//! strictly in order, which is what lets a session drop duplicates by
//! offset during recovery.
//!
//! - **Embedded** (one node, SQLite): one task takes publish requests from
//!   a queue, appends everything waiting in one batch, and only after the
//!   commit fans the publications out and answers the publishers. Being
//!   the only writer, it delivers in offset order.
//! - **Redis** (several nodes): one atomic script per publish stores and
//!   announces it; every node following the channel delivers what is
//!   announced, in order ([`crate::redis`]).
//!
//! Membership (subscribing, presence, typing, kicks) follows the same
//! split: the embedded engine asks this node's [`Hub`]; with Redis, every
//! node's members are checked and announced through Redis.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use duplex::{Charged, MemoryBudget};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use crate::hub::{Hub, Subscriber};
use crate::metrics::Metrics;
use crate::publication::{Publication, now_ms};
use crate::redis::{Following, Redis};
use crate::store::{NewPublication, SqliteStore};
use duplex_hub::{ErrorCode, HubError, Member};

/// How long a publish waits for the memory budget to make room before it
/// is refused with `unavailable`.
pub const ROOM_WAIT: Duration = Duration::from_secs(1);
/// How long an idempotency key is remembered: a repeat within it returns
/// the first publish's result and stores nothing.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(300);
/// How many keys one node remembers at most (embedded engine).
const IDEMPOTENCY_MAX: usize = 100_000;

/// What a publisher is told: where its publication went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The channel.
    pub channel: Arc<str>,
    /// The channel's epoch.
    pub epoch: Arc<str>,
    /// The publication's offset.
    pub offset: u64,
    /// Acceptance time, ms since the Unix epoch.
    pub ts_ms: i64,
}

impl Receipt {
    /// The reply to the publisher: `publish`'s result.
    pub fn published(&self) -> duplex_hub::Published<'_> {
        duplex_hub::Published {
            channel: std::borrow::Cow::Borrowed(&self.channel),
            offset: self.offset,
            epoch: std::borrow::Cow::Borrowed(&self.epoch),
            ts: duplex_hub::rfc3339_millis(self.ts_ms).into(),
        }
    }

    fn of(p: &Publication) -> Self {
        Self {
            channel: p.channel.clone(),
            epoch: p.epoch.clone(),
            offset: p.offset,
            ts_ms: p.ts_ms,
        }
    }
}

/// A publication on its way to the store ([`Broker::submit`]): resolves
/// to its receipt once the publication is durable, or to why it was not
/// stored.
#[derive(Debug)]
#[must_use = "a publisher is answered only once its publication is stored"]
pub struct PendingPublish(Pending);

#[derive(Debug)]
enum Pending {
    /// Queued for the embedded store's next commit.
    Queued(oneshot::Receiver<Result<Receipt, HubError>>),
    /// Decided already (refused, or stored through Redis); `None` once
    /// taken.
    Answered(Option<Result<Receipt, HubError>>),
}

impl PendingPublish {
    /// A publish decided without waiting for the store.
    pub fn answered(result: Result<Receipt, HubError>) -> Self {
        Self(Pending::Answered(Some(result)))
    }
}

impl Future for PendingPublish {
    type Output = Result<Receipt, HubError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Pending::Queued(rx) => Pin::new(rx)
                .poll(cx)
                .map(|stored| stored.unwrap_or_else(|_| Err(shutting_down()))),
            Pending::Answered(result) => Poll::Ready(
                result
                    .take()
                    .expect("a PendingPublish is polled to completion once"),
            ),
        }
    }
}

fn shutting_down() -> HubError {
    HubError::new(ErrorCode::Internal, "the server is shutting down")
}

struct Job {
    publication: NewPublication,
    reply: oneshot::Sender<Result<Receipt, HubError>>,
    started: Instant,
    /// The publication's weight on the memory budget while it waits.
    _held: Charged,
}

#[derive(Clone)]
enum Engine {
    Embedded {
        queue: mpsc::Sender<Job>,
        /// Idempotency key → the first publish's receipt.
        seen: Arc<Mutex<HashMap<String, (Instant, Receipt)>>>,
    },
    Redis(Arc<Redis>),
}

/// The publish pipeline and membership, on one engine.
#[derive(Clone)]
pub struct Broker {
    engine: Engine,
    hub: Arc<Hub>,
    budget: MemoryBudget,
    metrics: Metrics,
}

impl Broker {
    /// Starts the embedded pipeline's task. A publication waits for room in
    /// `budget` (where the hub charges its push) before it is stored.
    pub fn embedded(
        store: SqliteStore,
        hub: Arc<Hub>,
        metrics: Metrics,
        budget: MemoryBudget,
    ) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(run(rx, store, hub.clone(), metrics.clone()));
        Self {
            engine: Engine::Embedded {
                queue: tx,
                seen: Arc::default(),
            },
            hub,
            budget,
            metrics,
        }
    }

    /// Publishes through Redis, shared by every node connected to it.
    pub fn redis(redis: Arc<Redis>, hub: Arc<Hub>, metrics: Metrics, budget: MemoryBudget) -> Self {
        Self {
            engine: Engine::Redis(redis),
            hub,
            budget,
            metrics,
        }
    }

    /// Publishes `data` to `channel` as `from`; answers once the
    /// publication is durable. With an idempotency key, a repeat within
    /// [`IDEMPOTENCY_TTL`] gets the first one's receipt and stores nothing.
    pub async fn publish(
        &self,
        channel: &str,
        data: Box<RawValue>,
        from: Member,
        idempotency_key: Option<&str>,
    ) -> Result<Receipt, HubError> {
        let Some(key) = idempotency_key else {
            return self.submit(channel, data, from).await.await;
        };
        match &self.engine {
            Engine::Embedded { seen, .. } => {
                if let Some(receipt) = remembered(seen, key) {
                    return Ok(receipt);
                }
                let receipt = self.submit(channel, data, from).await.await?;
                remember(seen, key, receipt.clone());
                Ok(receipt)
            }
            Engine::Redis(redis) => {
                let (publication, _held) = self.admit(channel, data, from).await?;
                self.publish_redis(redis, &publication, Some(key)).await
            }
        }
    }

    /// Starts publishing `data` to `channel` as `from`: returns once the
    /// publication is queued for the store, with what resolves to its
    /// receipt once it is durable. Publications submitted one after the
    /// other by one task are stored in that order, so a connection can have
    /// several in flight and still see its offsets ascend; the embedded
    /// engine then commits them together. (With Redis this waits for the
    /// store, as one script per publish is what orders them.)
    pub async fn submit(&self, channel: &str, data: Box<RawValue>, from: Member) -> PendingPublish {
        let (publication, held) = match self.admit(channel, data, from).await {
            Ok(admitted) => admitted,
            Err(e) => return PendingPublish::answered(Err(e)),
        };
        match &self.engine {
            Engine::Embedded { queue, .. } => {
                let (reply, rx) = oneshot::channel();
                let job = Job {
                    publication,
                    reply,
                    started: Instant::now(),
                    _held: held,
                };
                match queue.send(job).await {
                    Ok(()) => PendingPublish(Pending::Queued(rx)),
                    Err(_) => PendingPublish::answered(Err(shutting_down())),
                }
            }
            Engine::Redis(redis) => {
                PendingPublish::answered(self.publish_redis(redis, &publication, None).await)
            }
        }
    }

    /// Waits for room in the memory budget for `data`, then makes the
    /// publication to store, charged to the budget until it is stored.
    async fn admit(
        &self,
        channel: &str,
        data: Box<RawValue>,
        from: Member,
    ) -> Result<(NewPublication, Charged), HubError> {
        // The stored copy and the push, both about the data's size.
        let room = tokio::time::timeout(ROOM_WAIT, self.budget.room_for(2 * data.get().len()));
        if room.await.is_err() {
            self.metrics.publish_failures.inc();
            return Err(HubError::new(
                ErrorCode::Unavailable,
                "the server's memory budget is spent: nothing was stored; try again later",
            ));
        }
        let held = self.budget.charge(data.get().len());
        let publication = NewPublication {
            channel: channel.to_owned(),
            from,
            data,
            ts_ms: now_ms(),
        };
        Ok((publication, held))
    }

    async fn publish_redis(
        &self,
        redis: &Redis,
        publication: &NewPublication,
        idempotency_key: Option<&str>,
    ) -> Result<Receipt, HubError> {
        let started = Instant::now();
        match redis.publish(publication, idempotency_key).await {
            Ok(placed) => {
                if placed.fresh {
                    self.metrics.publications.inc();
                    self.metrics
                        .publish_latency
                        .observe(started.elapsed().as_secs_f64());
                }
                Ok(Receipt {
                    channel: publication.channel.as_str().into(),
                    epoch: placed.epoch,
                    offset: placed.offset,
                    ts_ms: placed.ts_ms,
                })
            }
            Err(e) => {
                self.metrics.publish_failures.inc();
                tracing::warn!("publish to {}: {e}", publication.channel);
                Err(HubError::from(e))
            }
        }
    }

    /// Subscribes a connection to `channel`: fails if its name is banned
    /// there or (with presence) held by another user; the others get a
    /// `join` push. Once this returns, every later publication reaches the
    /// subscriber, so its history can be read for a recovery. With Redis,
    /// this node receives the channel while the returned guard lives.
    pub async fn join(
        &self,
        channel: &str,
        subscriber: Subscriber,
    ) -> Result<Option<Following>, HubError> {
        let redis = match &self.engine {
            Engine::Embedded { .. } => {
                return self.hub.subscribe(channel, subscriber).map(|()| None);
            }
            Engine::Redis(redis) => redis,
        };
        let (member, presence) = (subscriber.member.clone(), subscriber.presence);
        self.hub.insert(channel, subscriber);
        let joined = async {
            let following = redis.follow(channel).await?;
            redis.join(channel, &member, presence).await?;
            Ok::<_, HubError>(following)
        };
        match joined.await {
            Ok(following) => Ok(Some(following)),
            Err(e) => {
                self.hub.remove(channel, &member.client);
                Err(e)
            }
        }
    }

    /// Unsubscribes a connection; the others get a `leave` push.
    pub fn leave(&self, channel: &str, client: &str) {
        match &self.engine {
            Engine::Embedded { .. } => self.hub.unsubscribe(channel, client),
            Engine::Redis(redis) => {
                self.hub.remove(channel, client);
                redis.spawn_leave(channel, client);
            }
        }
    }

    /// Tells the others in `channel` that `member` is typing.
    pub async fn typing(&self, channel: &str, member: &Member) -> Result<(), HubError> {
        match &self.engine {
            Engine::Embedded { .. } => self.hub.typing(channel, member),
            Engine::Redis(redis) => {
                if !self.hub.is_subscribed(channel, &member.client) {
                    return Err(crate::hub::not_subscribed(channel));
                }
                Ok(redis.typing(channel, member).await?)
            }
        }
    }

    /// Who is present in `channel`, sorted by name.
    pub async fn presence(&self, channel: &str) -> Result<Vec<Member>, HubError> {
        match &self.engine {
            Engine::Embedded { .. } => Ok(self.hub.presence(channel)),
            Engine::Redis(redis) => Ok(redis.presence(channel).await?),
        }
    }

    /// Removes every connection named `name` from `channel` (and bans the
    /// name if asked). Returns how many were removed.
    pub async fn kick(&self, channel: &str, name: &str, ban: bool) -> Result<usize, HubError> {
        match &self.engine {
            Engine::Embedded { .. } => Ok(self.hub.kick(channel, name, ban)),
            Engine::Redis(redis) => Ok(redis.kick(channel, name, ban).await?),
        }
    }

    /// Sets the broker's gauges (with Redis: whether it is reachable, and
    /// the channels this node follows).
    pub fn observe(&self, metrics: &Metrics) {
        if let Engine::Redis(redis) = &self.engine {
            metrics.broker_up.set(i64::from(redis.healthy().is_ok()));
            metrics
                .broker_channels
                .set(redis.followed_channels() as i64);
        }
    }

    /// Whether publications can be stored and delivered now; if not, why.
    pub fn healthy(&self) -> Result<(), String> {
        match &self.engine {
            Engine::Embedded { .. } => Ok(()),
            Engine::Redis(redis) => redis.healthy(),
        }
    }

    /// Stops taking publications and returns once every queued one is stored.
    /// With Redis, the leaves under way are finished and this node's
    /// lease ended.
    pub async fn drain(self) {
        match self.engine {
            Engine::Embedded { queue, .. } => {
                // Waiting for capacity equal to the whole queue means it is empty.
                let _ = queue.reserve_many(queue.max_capacity()).await;
            }
            Engine::Redis(redis) => redis.close().await,
        }
    }
}

fn remembered(seen: &Mutex<HashMap<String, (Instant, Receipt)>>, key: &str) -> Option<Receipt> {
    let map = seen.lock().unwrap_or_else(|e| e.into_inner());
    map.get(key)
        .filter(|(at, _)| at.elapsed() < IDEMPOTENCY_TTL)
        .map(|(_, r)| r.clone())
}

fn remember(seen: &Mutex<HashMap<String, (Instant, Receipt)>>, key: &str, receipt: Receipt) {
    let mut map = seen.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= IDEMPOTENCY_MAX {
        map.retain(|_, (at, _)| at.elapsed() < IDEMPOTENCY_TTL);
    }
    if map.len() < IDEMPOTENCY_MAX {
        map.insert(key.to_owned(), (Instant::now(), receipt));
    }
}

async fn run(mut rx: mpsc::Receiver<Job>, store: SqliteStore, hub: Arc<Hub>, metrics: Metrics) {
    let mut jobs = Vec::with_capacity(256);
    while rx.recv_many(&mut jobs, 256).await > 0 {
        let batch: Vec<NewPublication> = jobs.iter().map(|j| j.publication.clone()).collect();
        match store.append(batch).await {
            Ok(stored) => {
                let stored: Vec<Arc<Publication>> = stored.into_iter().map(Arc::new).collect();
                // Publishers first: a publisher subscribed to its channel
                // then finds its reply decided when the push arrives, and
                // is answered before it is delivered to.
                for (job, publication) in jobs.drain(..).zip(&stored) {
                    metrics.publications.inc();
                    metrics
                        .publish_latency
                        .observe(job.started.elapsed().as_secs_f64());
                    let _ = job.reply.send(Ok(Receipt::of(publication)));
                }
                for (channel, publications) in by_channel(&stored) {
                    hub.publish_batch(channel, &publications);
                }
            }
            Err(e) => {
                metrics.publish_failures.inc();
                let error = HubError::from(e);
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// `stored` grouped by channel, each group in the order it was stored
/// (offset order), the groups in the order of their first publication.
fn by_channel(stored: &[Arc<Publication>]) -> Vec<(&Arc<str>, Vec<&Publication>)> {
    let mut groups: Vec<(&Arc<str>, Vec<&Publication>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for p in stored {
        let at = *index.entry(&p.channel).or_insert_with(|| {
            groups.push((&p.channel, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(p);
    }
    groups
}
