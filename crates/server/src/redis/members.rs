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
//! before that. A node that finds its own lease had lapsed registers its
//! subscribers again (announcing a join for those that had been removed).

use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use redis::Script;

use super::entry;
use super::keys::{self, ChannelKeys};
use super::{Redis, Shard, deadline};
use crate::hub::{Hub, banned, name_taken, sort_members};
use crate::protocol::{HubError, Member};
use crate::store::StoreError;

/// How long a node counts as alive after renewing its lease.
pub const LEASE: Duration = Duration::from_secs(3);
/// How often a node renews its lease (and removes dead nodes' members).
pub const LEASE_RENEW: Duration = Duration::from_secs(1);

fn script(body: &str) -> Script {
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

impl Redis {
    async fn join_as(
        &self,
        channel: &str,
        member: &Member,
        presence: bool,
        how: Join,
    ) -> Result<(), HubError> {
        let shard = self.shard(channel);
        let keys = ChannelKeys::of(channel);
        let member_json = serde_json::to_string(member).expect("members serialise");
        let mut call = JOIN.key(&keys.members);
        call.key(&keys.banned)
            .key(keys::node_channels(&self.node))
            .key(keys::NODES)
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
            "ok" => Ok(()),
            "banned" => Err(banned(channel, &member.name)),
            "name_taken" => Err(name_taken(channel, &member.name)),
            other => Err(StoreError::Failed(format!("the join script answered {other:?}")).into()),
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
        self.join_as(channel, member, presence, Join::Checked).await
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
            self.leave(&channel, &client).await;
        }
        if lapsed == 1 {
            for channel in hub.channel_names() {
                if !std::ptr::eq(self.shard(&channel), shard) {
                    continue;
                }
                for (member, presence) in hub.subscribers(&channel) {
                    self.join_as(&channel, &member, presence, Join::Again)
                        .await
                        .map_err(|e| StoreError::Unreachable(e.message))?;
                }
            }
        }
        Ok(())
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
        for shard in &redis.shards {
            if let Err(e) = redis.renew(shard, &hub).await {
                tracing::warn!("renewing this node's lease in Redis at {}: {e}", shard.url);
            }
        }
    }
}
