//! Several `duplex serve` nodes sharing channels through Redis.
//!
//! Nothing here is a cluster protocol of our own: Redis holds each
//! channel's epoch, offset and capped history, and announces each
//! publication on the channel's pub/sub channel. Any node can publish to
//! any channel and answer history and recovery for it.
//!
//! - **Publish** is one server-side script (`redis/lua/publish.lua`):
//!   the idempotency check, the offset, the history entry, the trimming by
//!   count and age and the announcement happen in one step, and the
//!   publisher is answered only once Redis has it. Times come from Redis's
//!   clock, so every node agrees.
//! - **Delivery** goes through the pub/sub channel to the nodes that
//!   follow it: a node subscribes to a channel when its first local
//!   subscriber arrives and unsubscribes when the last one leaves
//!   ([`follower`]). A node with no subscriber for a channel receives
//!   nothing for it.
//! - **Nothing missed**: a node checks every announcement's offset against
//!   the last one it delivered. A gap (pub/sub lost messages) is filled from
//!   the history stream; and when the pub/sub connection comes back after a
//!   drop, the node re-reads every followed channel's position at once and
//!   delivers what it missed, rather than waiting for the next publication.
//!   What cannot be recovered any more (trimmed, or a new epoch) closes
//!   that channel's subscribers with 1012, and they come back with `since`
//!   and are told `recovered: false`.
//! - **Several Redis servers** share the channels by a consistent hash of
//!   the name ([`keys::shard_of`]); every key of a channel is on its shard.
//!
//! Every Redis call has a deadline ([`TIMEOUT`]): a publish that cannot
//! reach Redis fails at once with `unavailable`, never silently.

mod entry;
mod follower;
pub mod keys;
pub mod members;
pub mod transfers;

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use anyhow::Context;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use tokio_util::task::TaskTracker;

pub use follower::Following;

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::publication::Publication;
use crate::store::{
    HistoryPage, MAX_PAGE_BYTES, NewPublication, Position, Range, Retention, StoreError,
};
use entry::Place;
use follower::Follower;
use keys::ChannelKeys;

/// The longest any one Redis call may take before it counts as failed.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// How long a channel's epoch and offset outlive its last publication.
pub const POSITION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Entries read from a history stream per call.
const CHUNK: usize = 1000;

static PUBLISH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/publish.lua")));

/// One Redis server and this node's connections to it.
struct Shard {
    url: String,
    commands: ConnectionManager,
    follower: Arc<Follower>,
}

/// The result of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// Where it went.
    pub epoch: Arc<str>,
    /// Its offset.
    pub offset: u64,
    /// Acceptance time, ms since the Unix epoch, by Redis's clock.
    pub ts_ms: i64,
    /// False when an earlier publish with the same idempotency key was
    /// found: nothing new was stored.
    pub fresh: bool,
}

/// Channels, history and delivery shared through one or more Redis
/// servers.
pub struct Redis {
    shards: Vec<Shard>,
    retention: Retention,
    /// This node's name: its lease, and the owner of its members.
    node: Arc<str>,
    /// Leaves that could not reach Redis: (channel, connection id).
    unfinished_leaves: Mutex<Vec<(Arc<str>, Arc<str>)>>,
    /// The leaves under way, waited for on shutdown.
    leaving: TaskTracker,
    /// The most missed publications a node delivers by itself after an
    /// outage; past it, subscribers are told to recover with `since`.
    catch_up_limit: u64,
}

impl Redis {
    /// Connects to every server in `urls` (`redis://HOST:PORT[/DB]`) as
    /// the node named `node`, and starts following channels for `hub` and
    /// renewing the node's lease. Fails if a server cannot be reached now;
    /// later outages are waited out with reconnects.
    pub async fn connect(
        urls: &[String],
        node: Arc<str>,
        catch_up_limit: u64,
        retention: Retention,
        hub: Arc<Hub>,
        metrics: Metrics,
    ) -> anyhow::Result<Arc<Self>> {
        let mut shards = Vec::with_capacity(urls.len());
        for url in urls {
            let client = redis::Client::open(url.as_str()).with_context(|| {
                format!("invalid Redis URL {url:?} (expected redis://HOST:PORT[/DB])")
            })?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(TIMEOUT))
                .set_response_timeout(Some(TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(1));
            let mut commands = tokio::time::timeout(
                TIMEOUT,
                ConnectionManager::new_with_config(client.clone(), config),
            )
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| {
                format!("cannot reach Redis at {url}: is redis-server running there?")
            })?;
            let _: () = redis::cmd("PING")
                .query_async(&mut commands)
                .await
                .with_context(|| format!("Redis at {url} does not answer PING"))?;
            shards.push((url.clone(), client, commands));
        }
        let redis = Arc::new_cyclic(|weak: &std::sync::Weak<Redis>| Self {
            shards: shards
                .into_iter()
                .map(|(url, client, commands)| Shard {
                    follower: Follower::start(client, weak.clone(), hub.clone(), metrics.clone()),
                    url,
                    commands,
                })
                .collect(),
            retention,
            node,
            unfinished_leaves: Mutex::default(),
            leaving: TaskTracker::new(),
            catch_up_limit,
        });
        tokio::spawn(members::keep_leases(Arc::downgrade(&redis), hub));
        for shard in &redis.shards {
            if !shard.follower.wait_up(2 * TIMEOUT).await {
                anyhow::bail!(
                    "cannot subscribe to announcements in Redis at {}: see the warnings above",
                    shard.url
                );
            }
        }
        Ok(redis)
    }

    /// This node's name among the nodes sharing these servers.
    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    fn shard(&self, channel: &str) -> &Shard {
        &self.shards[keys::shard_of(channel, self.shards.len())]
    }

    /// Stores and announces a publication, in one step; with an
    /// idempotency key, a repeat within [`crate::broker::IDEMPOTENCY_TTL`]
    /// returns the first one's place and stores nothing.
    pub async fn publish(
        &self,
        publication: &NewPublication,
        idempotency_key: Option<&str>,
    ) -> Result<Placed, StoreError> {
        let shard = self.shard(&publication.channel);
        let keys = ChannelKeys::of(&publication.channel);
        let mut call = PUBLISH.key(&keys.meta);
        call.key(&keys.history);
        if let Some(key) = idempotency_key {
            call.key(ChannelKeys::idempotency(&publication.channel, key));
        }
        call.arg(crate::store::new_epoch())
            .arg(self.retention.max_count.max(1))
            .arg(self.retention.max_age_secs.saturating_mul(1000).max(1))
            .arg(POSITION_TTL.as_millis() as u64)
            .arg(&keys.announce)
            .arg(entry::body(&publication.from, &publication.data))
            .arg(crate::broker::IDEMPOTENCY_TTL.as_millis() as u64);
        let mut conn = shard.commands.clone();
        let (fresh, place): (i64, String) = deadline(shard, call.invoke_async(&mut conn)).await?;
        let place = Place::parse(&place)
            .ok_or_else(|| StoreError::Failed(format!("the publish script answered {place:?}")))?;
        Ok(Placed {
            epoch: place.epoch,
            offset: place.offset,
            ts_ms: place.ts_ms,
            fresh: fresh == 1,
        })
    }

    /// A channel's position and a page of its history. Entries older than
    /// the retention age are left out even before the publish script trims
    /// them.
    pub async fn history(&self, channel: &str, range: Range) -> Result<HistoryPage, StoreError> {
        let shard = self.shard(channel);
        let keys = ChannelKeys::of(channel);
        let mut conn = shard.commands.clone();
        let (pipe, want, first) = first_read(&keys, range);
        let ((epoch, offset), (secs, micros), entries): Snapshot =
            deadline(shard, pipe.query_async(&mut conn)).await?;
        let position = Position {
            epoch: epoch.unwrap_or_default(),
            offset: offset.unwrap_or(0),
        };
        if matches!(
            range,
            Range::Before {
                before: Some(0 | 1),
                ..
            }
        ) || want == 0
        {
            return Ok(HistoryPage {
                position,
                publications: Vec::new(),
            });
        }
        let cutoff = secs * 1000 + micros / 1000
            - (self.retention.max_age_secs.min(i64::MAX as u64 / 1000) as i64) * 1000;
        let mut page = Page::new(channel, &position, cutoff, want);
        let mut next = first;
        let mut chunk = entries;
        loop {
            let more = chunk.len() == want.clamp(1, CHUNK);
            for raw in chunk {
                if !page.push(
                    raw,
                    matches!(range, Range::After { .. }).then_some(&mut next),
                ) {
                    return Ok(page.finish(range));
                }
            }
            // Only an `After` page reads on; its later chunks stop at the
            // position read above, so the page is still one snapshot.
            if !more || !matches!(range, Range::After { .. }) || next > position.offset {
                return Ok(page.finish(range));
            }
            let count = (want - page.len()).clamp(1, CHUNK);
            chunk = deadline(
                shard,
                conn.xrange_count::<_, _, _, _, Vec<RawEntry>>(
                    &keys.history,
                    next,
                    position.offset,
                    count,
                ),
            )
            .await?;
        }
    }

    /// Makes this node receive `channel`'s publications until the returned
    /// guard is dropped.
    pub async fn follow(&self, channel: &str) -> Result<Following, StoreError> {
        self.shard(channel).follower.follow(channel).await
    }

    /// The positions of `channels`, all on one server, in one round trip.
    async fn positions(&self, channels: &[Arc<str>]) -> Result<Vec<Position>, StoreError> {
        let Some(first) = channels.first() else {
            return Ok(Vec::new());
        };
        let shard = self.shard(first);
        let mut pipe = redis::pipe();
        for channel in channels {
            pipe.cmd("HMGET")
                .arg(ChannelKeys::of(channel).meta)
                .arg("epoch")
                .arg("offset");
        }
        let mut conn = shard.commands.clone();
        let found: Vec<(Option<String>, Option<u64>)> =
            deadline(shard, pipe.query_async(&mut conn)).await?;
        Ok(found
            .into_iter()
            .map(|(epoch, offset)| Position {
                epoch: epoch.unwrap_or_default(),
                offset: offset.unwrap_or(0),
            })
            .collect())
    }

    /// Channels this node follows, on every server.
    pub fn followed_channels(&self) -> usize {
        self.shards.iter().map(|s| s.follower.channel_count()).sum()
    }

    /// Gives `channel` a new epoch if it is still `old` (see
    /// `lua/renew_epoch.lua`); returns its position now (another node may
    /// have renewed it first).
    pub async fn renew_epoch(&self, channel: &str, old: &str) -> Result<Position, StoreError> {
        static RENEW_EPOCH: LazyLock<Script> =
            LazyLock::new(|| Script::new(include_str!("lua/renew_epoch.lua")));
        let shard = self.shard(channel);
        let keys = ChannelKeys::of(channel);
        let mut call = RENEW_EPOCH.key(&keys.meta);
        call.key(&keys.history)
            .arg(old)
            .arg(crate::store::new_epoch());
        let mut conn = shard.commands.clone();
        let (epoch, offset): (String, u64) = deadline(shard, call.invoke_async(&mut conn)).await?;
        Ok(Position { epoch, offset })
    }

    /// Whether every server's announcements are being received.
    pub fn healthy(&self) -> Result<(), String> {
        for shard in &self.shards {
            if !shard.follower.is_up() {
                return Err(format!("Redis at {} is unreachable", shard.url));
            }
        }
        Ok(())
    }

    /// The value stored under `key` for every node, storing `value` if
    /// there is none yet (so nodes starting together agree on one).
    pub async fn meta_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        let shard = &self.shards[0];
        let mut conn = shard.commands.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_nx(keys::META, key, value)
            .ignore()
            .hget(keys::META, key);
        let (stored,): (String,) = deadline(shard, pipe.query_async(&mut conn)).await?;
        Ok(stored)
    }
}

/// A history stream entry: its ID and fields `t`, `p`.
type RawEntry = (String, Vec<(String, String)>);

/// A channel's epoch and offset, Redis's clock, and the first entries.
type Snapshot = ((Option<String>, Option<u64>), (i64, i64), Vec<RawEntry>);

/// A history page being read: contiguous, young enough, within its byte
/// and count limits.
struct Page {
    channel: Arc<str>,
    position: Position,
    epoch: Arc<str>,
    cutoff_ms: i64,
    want: usize,
    bytes: usize,
    publications: Vec<Publication>,
}

impl Page {
    fn new(channel: &str, position: &Position, cutoff_ms: i64, want: usize) -> Self {
        Self {
            channel: channel.into(),
            epoch: position.epoch.as_str().into(),
            position: position.clone(),
            cutoff_ms,
            want,
            bytes: 0,
            publications: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.publications.len()
    }

    /// Adds an entry; false once the page is full. `next`, when reading
    /// forwards, is the offset expected next: a hole ends the page.
    fn push(&mut self, (id, fields): RawEntry, next: Option<&mut u64>) -> bool {
        let Some(offset) = id.split('-').next().and_then(|o| o.parse::<u64>().ok()) else {
            return true;
        };
        if offset > self.position.offset {
            return false;
        }
        if let Some(next) = next {
            if offset != *next && !self.publications.is_empty() {
                return false;
            }
            *next = offset + 1;
        }
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let (Some(ts), Some(body)) = (field("t").and_then(|t| t.parse().ok()), field("p")) else {
            return true;
        };
        if ts < self.cutoff_ms {
            return true;
        }
        let place = Place {
            epoch: self.epoch.clone(),
            offset,
            ts_ms: ts,
        };
        let Some(p) = entry::publication(&self.channel, &place, body) else {
            return true;
        };
        self.bytes += p.data.get().len();
        if self.bytes > MAX_PAGE_BYTES && !self.publications.is_empty() {
            return false;
        }
        self.publications.push(p);
        self.publications.len() < self.want
    }

    fn finish(mut self, range: Range) -> HistoryPage {
        if matches!(range, Range::Before { .. }) {
            self.publications.reverse();
        }
        HistoryPage {
            position: self.position,
            publications: self.publications,
        }
    }
}

/// Error codes of a Redis server that cannot take writes for now.
const UNAVAILABLE: [&str; 6] = [
    "OOM",
    "LOADING",
    "READONLY",
    "MASTERDOWN",
    "BUSY",
    "TRYAGAIN",
];

/// Runs one Redis call within [`TIMEOUT`], naming the server if it fails.
async fn deadline<T>(
    shard: &Shard,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        // Refused: the call never reached Redis.
        Ok(Err(e)) if e.is_connection_refusal() => Err(StoreError::Unreachable(format!(
            "Redis at {}: {e}",
            shard.url
        ))),
        // Cut off or too slow: Redis may have carried it out.
        Ok(Err(e)) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
            Err(StoreError::NoAnswer(format!("Redis at {}: {e}", shard.url)))
        }
        // Conditions of the Redis server that pass: out of memory under
        // noeviction, loading its data after a restart, a replica.
        Ok(Err(e)) if e.code().is_some_and(|c| UNAVAILABLE.contains(&c)) => Err(
            StoreError::Unreachable(format!("Redis at {}: {e}", shard.url)),
        ),
        Ok(Err(e)) => Err(StoreError::Failed(format!("Redis at {}: {e}", shard.url))),
        Err(_) => Err(StoreError::NoAnswer(format!(
            "Redis at {} did not answer within {TIMEOUT:?}",
            shard.url
        ))),
    }
}

/// The first read of a history page, as one atomic pipeline: the
/// channel's position, Redis's clock and the first chunk. Returns it with
/// how many publications are wanted and the first offset asked for.
fn first_read(keys: &ChannelKeys, range: Range) -> (redis::Pipeline, usize, u64) {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("HMGET")
        .arg(&keys.meta)
        .arg("epoch")
        .arg("offset")
        .cmd("TIME");
    let (want, first) = match range {
        Range::After { after, limit } => {
            pipe.cmd("XRANGE")
                .arg(&keys.history)
                .arg(after.saturating_add(1))
                .arg("+");
            (limit, after.saturating_add(1))
        }
        Range::Before { before, limit } => {
            let top = match before {
                Some(0 | 1) => "-".to_owned(), // empty but well formed
                Some(b) => (b - 1).to_string(),
                None => "+".to_owned(),
            };
            pipe.cmd("XREVRANGE").arg(&keys.history).arg(top).arg("-");
            (limit, 0)
        }
    };
    pipe.arg("COUNT").arg(want.clamp(1, CHUNK));
    (pipe, want, first)
}
