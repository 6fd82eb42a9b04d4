//! Who is in which channel, across nodes: membership, presence, typing,
//! kicks and bans in Redis, and node leases so a dead node's members leave.
//!
//! Each channel's members are one hash on its shard, an entry per
//! subscriber of any node (`lua/members.lua` has the format). Joining checks
//! bans and nicknames against every node's members in one script; joins,
//! leaves and kicks are announced on the channel's pub/sub channel, so
//! every node following it tells its own subscribers, in order with the
//! publications.
//!
//! Every node renews a lease in every shard each [`LEASE_RENEW`]; a node
//! whose lease ends ([`LEASE`]: it crashed, or lost Redis) counts as gone:
//! the next renewal by any node removes its members and announces a leave
//! for each, so presence has no ghosts for longer than about
//! `LEASE + LEASE_RENEW`. Presence reads skip a dead node's members even
//! before that.
//!
//! A node that may have missed news (its lease had lapsed, or its pub/sub
//! connection dropped) registers its subscribers again, checked as a new
//! join is: a subscriber that was banned, kicked or lost its name while the
//! node was out of reach is removed here too; one that had been removed
//! comes back with a `join`. Until that succeeds, it is tried again at each
//! renewal.

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use redis::Script;

use super::entry;
use super::keys::{self, ChannelKeys};
use super::{Redis, Shard, deadline};
use crate::hub::{Hub, banned, name_taken, sort_members};
use crate::store::StoreError;
use duplex_hub::{ErrorCode, HubError, Member};

/// How long a node counts as alive after renewing its lease.
pub const LEASE: Duration = Duration::from_secs(3);
/// How often a node renews its lease (and removes dead nodes' members).
pub const LEASE_RENEW: Duration = Duration::from_secs(1);

pub(super) fn script(body: &str) -> Script {
    Script::new(&format!("{}\n{body}", include_str!("lua/members.lua")))
}

static JOIN: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/join.lua")));
static LEAVE: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/leave.lua")));
static PRESENCE: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/presence.lua")));
static KICK: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/kick.lua")));
static RENEW: LazyLock<Script> = LazyLock::new(|| script(include_str!("lua/lease.lua")));

/// Whether a join is checked (a new subscription) or a registration again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Join {
    Checked,
    Again,
}

/// What Redis answered a join.
enum Joined {
    Ok,
    /// Refused, with the error for the client.
    Refused(HubError),
}

impl Redis {
    async fn join_as(
        &self,
        channel: &str,
        member: &Member,
        presence: bool,
        how: Join,
    ) -> Result<Joined, StoreError> {
        let shard = self.shard(channel);
        let keys = ChannelKeys::of(channel);
        let member_json = serde_json::to_string(member).expect("members serialise");
        let mut call = JOIN.key(&keys.members);
        call.key(&keys.banned)
            .key(keys::node_channels(&self.node))
            .key(keys::NODES)
            .key(&keys.kicked)
            .arg(&*self.node)
            .arg(&*member.client)
            .arg(u8::from(presence))
            .arg(member_json)
            .arg(&keys.announce)
            .arg(channel)
            .arg(u8::from(how == Join::Checked));
        let mut conn = shard.commands.clone();
        let answer: String = deadline(shard, call.invoke_async(&mut conn)).await?;
        match answer.as_str() {
            "ok" => Ok(Joined::Ok),
            "banned" => Ok(Joined::Refused(banned(channel, &member.name))),
            "kicked" => Ok(Joined::Refused(HubError::new(
                ErrorCode::Forbidden,
                format!("kicked from {channel} by an admin"),
            ))),
            "name_taken" => Ok(Joined::Refused(name_taken(channel, &member.name))),
            other => Err(StoreError::Failed(format!(
                "the join script answered {other:?}"
            ))),
        }
    }

    /// Registers a new subscriber of `channel` with every node: fails if its
    /// name is banned there, or (for presence) taken by another user;
    /// otherwise the others get a `join` push.
    pub async fn join(
        &self,
        channel: &str,
        member: &Member,
        presence: bool,
    ) -> Result<(), HubError> {
        match self.join_as(channel, member, presence, Join::Checked).await {
            Ok(Joined::Ok) => Ok(()),
            Ok(Joined::Refused(e)) => Err(e),
            Err(e) => {
                // The script may have run before the deadline passed: make
                // sure no entry outlives the failed subscription.
                self.leave(channel, &member.client).await;
                Err(e.into())
            }
        }
    }

    /// Unregisters a subscriber in the background (waited for on
    /// shutdown); the others get a `leave` push.
    pub fn spawn_leave(self: &Arc<Self>, channel: &str, client: &str) {
        let (redis, channel, client) = (self.clone(), channel.to_owned(), client.to_owned());
        self.leaving
            .spawn(async move { redis.leave(&channel, &client).await });
    }

    /// Unregisters a subscriber; the others get a `leave` push. A leave
    /// that cannot reach Redis is retried with each lease renewal.
    pub async fn leave(&self, channel: &str, client: &str) {
        if let Err(e) = self.try_leave(channel, client).await {
            tracing::warn!(%channel, %client, "leaving in Redis failed ({e}); retried later");
            self.unfinished_leaves
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((channel.into(), client.into()));
        }
    }

    async fn try_leave(&self, channel: &str, client: &str) -> Result<(), StoreError> {
        let shard = self.shard(channel);
        let keys = ChannelKeys::of(channel);
        let mut call = LEAVE.key(&keys.members);
        call.arg(client).arg(&keys.announce);
        let mut conn = shard.commands.clone();
        let _: i64 = deadline(shard, call.invoke_async(&mut conn)).await?;
        Ok(())
    }

    /// Tells every node's subscribers of `channel` that `member` is typing.
    pub async fn typing(&self, channel: &str, member: &Member) -> Result<(), StoreError> {
        let shard = self.shard(channel);
        let mut conn = shard.commands.clone();
        let announce = ChannelKeys::of(channel).announce;
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(announce).arg(entry::typing(member));
        deadline(shard, publish.query_async::<i64>(&mut conn))
            .await
            .map(|_| ())
    }

    /// Who is present in `channel`, on every live node.
    pub async fn presence(&self, channel: &str) -> Result<Vec<Member>, StoreError> {
        let shard = self.shard(channel);
        let keys = ChannelKeys::of(channel);
        let mut call = PRESENCE.key(&keys.members);
        call.key(keys::NODES);
        let mut conn = shard.commands.clone();
        let present: Vec<String> = deadline(shard, call.invoke_async(&mut conn)).await?;
        let mut members: Vec<Member> = present
            .iter()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect();
        sort_members(&mut members);
        Ok(members)
    }

    /// Removes every subscriber named `name` from `channel` on every node
    /// (and bans the name if asked). Returns how many were removed.
    pub async fn kick(&self, channel: &str, name: &str, ban: bool) -> Result<usize, StoreError> {
        let shard = self.shard(channel);
        let keys = ChannelKeys::of(channel);
        let mut call = KICK.key(&keys.members);
        call.key(&keys.banned)
            .key(&keys.kicked)
            .arg(name)
            .arg(u8::from(ban))
            .arg(&keys.announce);
        let mut conn = shard.commands.clone();
        let removed: usize = deadline(shard, call.invoke_async(&mut conn)).await?;
        Ok(removed)
    }

    /// Renews this node's lease in one shard and removes dead nodes'
    /// members there; registers this node's subscribers again if its lease
    /// had lapsed.
    async fn renew(&self, shard: &Shard, hub: &Hub) -> Result<(), StoreError> {
        let mut call = RENEW.key(keys::NODES);
        call.arg(&*self.node)
            .arg(LEASE.as_millis() as u64)
            .arg(keys::MEMBERS)
            .arg(keys::ANNOUNCE)
            .arg(keys::NODE_CHANNELS);
        let mut conn = shard.commands.clone();
        let (lapsed, removed): (u8, u64) = deadline(shard, call.invoke_async(&mut conn)).await?;
        if removed > 0 {
            tracing::info!("removed {removed} members of nodes that stopped renewing their lease");
        }
        let leaves = std::mem::take(
            &mut *self
                .unfinished_leaves
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for (channel, client) in leaves {
            // Not if the connection subscribed again meanwhile.
            if !hub.is_subscribed(&channel, &client) {
                self.leave(&channel, &client).await;
            }
        }
        let again = &shard.follower.reregister;
        if lapsed == 1 {
            again.store(true, Ordering::Release);
        }
        if again.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.register_again(shard, hub).await {
                again.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Registers every subscriber of this node on `shard`'s channels again
    /// (see the module documentation); those refused are removed here.
    async fn register_again(&self, shard: &Shard, hub: &Hub) -> Result<(), StoreError> {
        for channel in hub.channel_names() {
            if !std::ptr::eq(self.shard(&channel), shard) {
                continue;
            }
            for (member, presence) in hub.subscribers(&channel) {
                if !hub.is_subscribed(&channel, &member.client) {
                    continue; // left meanwhile
                }
                let joined = self
                    .join_as(&channel, &member, presence, Join::Again)
                    .await?;
                if let Joined::Refused(e) = joined {
                    hub.drop_subscriber(&channel, &member.client, &e.message);
                }
            }
        }
        Ok(())
    }

    /// Renews this node's lease in every shard at once.
    async fn renew_all(&self, hub: &Hub) {
        let renewals = self.shards.iter().map(|shard| async move {
            if let Err(e) = self.renew(shard, hub).await {
                tracing::warn!("renewing this node's lease in Redis at {}: {e}", shard.url);
            }
        });
        futures_util::future::join_all(renewals).await;
    }

    /// Leaves this node's place to the others: waits (bounded) for the
    /// leaves under way, and ends its lease, so that the next renewal by
    /// another node removes whatever members it still had.
    pub async fn close(&self) {
        self.leaving.close();
        let _ = tokio::time::timeout(super::TIMEOUT, self.leaving.wait()).await;
        for shard in &self.shards {
            let mut conn = shard.commands.clone();
            let mut end = redis::cmd("ZADD");
            end.arg(keys::NODES).arg(0).arg(&*self.node);
            let _ = deadline(shard, end.query_async::<i64>(&mut conn)).await;
        }
    }
}

/// Renews this node's leases until the node stops.
pub(super) async fn keep_leases(redis: Weak<Redis>, hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(LEASE_RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(redis) = redis.upgrade() else {
            return;
        };
        redis.renew_all(&hub).await;
    }
}
