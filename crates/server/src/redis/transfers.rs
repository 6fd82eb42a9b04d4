//! Which node holds each file transfer, when several nodes share them.
//!
//! A transfer lives on one node (its relay holds the sender's and the
//! receivers' connections); a node that gets a receiver, or a sender
//! coming back, for a transfer it does not hold asks Redis which node
//! does, and forwards the connection there ([`crate::transfer::bridge`]).
//! The claim is one hash per nameplate, `duplex:transfer:N` (`node`,
//! `url`), on the shard of that key; a claim whose node's lease ended
//! counts as none (`lua/claim_transfer.lua`), so a transfer's number is
//! free again within a lease of its node's death.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::keys;
use super::{Redis, deadline};
use crate::store::StoreError;

/// How long a claim lasts without being renewed. Its holder renews it
/// every [`CLAIM_RENEW`] while the transfer is open; the time to live only
/// clears claims a dead node left behind.
pub const CLAIM_TTL: Duration = Duration::from_secs(60);
/// How often a node renews the claims of its open transfers (and drops
/// those of transfers that ended).
pub const CLAIM_RENEW: Duration = Duration::from_secs(10);

static CLAIM: LazyLock<Script> =
    LazyLock::new(|| super::members::script(include_str!("lua/claim_transfer.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/release_transfer.lua")));

/// Who holds a transfer's nameplate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// This node.
    This,
    /// Another node, alive, reachable at `url` (empty if it has no
    /// advertised URL).
    Other {
        /// Its name.
        node: String,
        /// Where other nodes reach its `/files` (`ws://HOST:PORT`).
        url: String,
    },
    /// A node whose lease ended (it is dead, or cut off from Redis):
    /// only told by [`Redis::transfer_holder`]; a claim takes it over.
    Lapsed,
    /// No node.
    Nobody,
}

/// The hash claiming transfer `nameplate`.
pub fn transfer_key(nameplate: u32) -> String {
    format!("duplex:transfer:{nameplate}")
}

impl Redis {
    /// Claims `nameplate` for this node (reachable at `url`), unless a
    /// live node holds it already; renews this node's claim.
    pub async fn claim_transfer(&self, nameplate: u32, url: &str) -> Result<Holder, StoreError> {
        self.holder_call(nameplate, url, true).await
    }

    /// Who holds `nameplate`.
    pub async fn transfer_holder(&self, nameplate: u32) -> Result<Holder, StoreError> {
        self.holder_call(nameplate, "", false).await
    }

    async fn holder_call(
        &self,
        nameplate: u32,
        url: &str,
        claim: bool,
    ) -> Result<Holder, StoreError> {
        let key = transfer_key(nameplate);
        let shard = self.shard(&key);
        let mut call = CLAIM.key(&key);
        call.key(keys::NODES)
            .arg(self.node.as_ref())
            .arg(url)
            .arg(CLAIM_TTL.as_millis() as u64)
            .arg(if claim { "1" } else { "0" });
        let mut conn = shard.commands.clone();
        let reply: Vec<String> = deadline(shard, call.invoke_async(&mut conn)).await?;
        Ok(match reply.as_slice() {
            [this] if this == "1" => Holder::This,
            [lapsed] if lapsed == "2" => Holder::Lapsed,
            [_, node, url] => Holder::Other {
                node: node.clone(),
                url: url.clone(),
            },
            _ => Holder::Nobody,
        })
    }

    /// Removes this node's claim of `nameplate` (its transfer ended).
    pub async fn release_transfer(&self, nameplate: u32) -> Result<(), StoreError> {
        let key = transfer_key(nameplate);
        let shard = self.shard(&key);
        let mut call = RELEASE.key(&key);
        call.arg(self.node.as_ref());
        let mut conn = shard.commands.clone();
        let _: i64 = deadline(shard, call.invoke_async(&mut conn)).await?;
        Ok(())
    }
}
