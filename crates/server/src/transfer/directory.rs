//! Transfers shared by several nodes (`duplex serve --redis`): each
//! transfer lives on the node its sender opened it on, and Redis says
//! which node that is ([`crate::redis::transfers`]). A receiver, or a
//! sender coming back, that reaches another node is forwarded to it
//! ([`super::bridge`]), so clients behind a load balancer need no sticky
//! sessions.
//!
//! Nodes prove to each other that a forwarded connection comes from a node
//! with a secret they share through Redis ([`NODE_HEADER`]); only then is
//! the client's address it names ([`CLIENT_HEADER`]) believed, so that
//! connection limits and the budget of failed joins count the client, not
//! the node that forwards it.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use duplex::proxy::ProxyConfig;
use duplex::{ClientBuilder, Config, Message};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::rooms::{Created, Refusal, Rooms};
use crate::endpoint::Endpoint;
use crate::redis::Redis;
use crate::redis::transfers::{CLAIM_RENEW, Holder};
use crate::signal::Signal;
use crate::store::StoreError;
use duplex_transfer::RelayClose;

/// The request header carrying the nodes' shared secret.
pub const NODE_HEADER: &str = "x-duplex-node";
/// The request header naming the address of the client a node forwards.
pub const CLIENT_HEADER: &str = "x-duplex-client";
/// The request header naming the node a forwarded connection is meant for:
/// another node (an advertised URL that reaches the wrong one, a restarted
/// node on the same address) refuses it rather than serve it.
pub const HOLDER_HEADER: &str = "x-duplex-holder";
/// Claims renewed at once.
const RENEW_AT_ONCE: usize = 64;
/// How long a node may take to answer a forwarded connection (TCP, TLS
/// and the WebSocket handshake).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Which node holds which transfer, for nodes sharing transfers.
pub struct Directory {
    redis: Arc<Redis>,
    /// Where other nodes reach this one (`ws://HOST:PORT`), if known.
    url: Option<String>,
    secret: String,
    /// The settings of connections forwarded to other nodes: the relay's
    /// limits and memory budget, no proxy.
    connector: ClientBuilder,
    /// Nameplates this node claimed and has not released.
    claimed: Mutex<HashSet<u32>>,
    /// Connections forwarded to other nodes (for `/metrics`).
    forwarded: AtomicU64,
    /// Taken by [`open`](Self::open) and by [`keep`](Self::keep)'s
    /// releases: one at a time.
    turn: tokio::sync::Mutex<()>,
}

/// Where [`Directory::open`] opened a transfer.
pub enum Opened {
    /// Here.
    Here(Created),
    /// Nowhere: a live node holds the nameplate; forward to it.
    Elsewhere {
        /// Its name.
        node: String,
        /// Where it is reached.
        url: String,
    },
}

impl Directory {
    /// A directory in `redis` for a node reachable at `url`, sharing
    /// `secret` with the other nodes, forwarding with `config` (the
    /// relay's socket settings).
    pub fn new(redis: Arc<Redis>, url: Option<String>, secret: String, config: Config) -> Self {
        let connector = ClientBuilder::new()
            .config(config.with_deflate(None))
            .proxy(ProxyConfig::None)
            .connect_timeout(CONNECT_TIMEOUT)
            .header(NODE_HEADER, &secret);
        Self {
            redis,
            url,
            secret,
            connector,
            claimed: Mutex::default(),
            forwarded: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether a request's [`NODE_HEADER`] value proves it comes from a
    /// node.
    pub fn is_node(&self, presented: &str) -> bool {
        crate::auth::keys_match(presented, &self.secret)
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        self.redis.node()
    }

    /// Opens a transfer here: under a nameplate no live node holds, or
    /// with `again` (a sender recreating its transfer) under that one,
    /// unless a live node holds it: the answer is then that node.
    ///
    /// Claims and their release by [`keep`](Self::keep) take turns, so a
    /// claim is never released between its making and its transfer's
    /// opening.
    pub async fn open(
        &self,
        rooms: &Rooms,
        size: u64,
        tx: mpsc::Sender<Message>,
        again: Option<(u32, String)>,
    ) -> Result<Opened, Refusal> {
        let _turn = self.turn.lock().await;
        if let Some((nameplate, token)) = again {
            return match self.claim(nameplate).await? {
                Holder::Other { node, url } => Ok(Opened::Elsewhere { node, url }),
                _ => rooms
                    .create(size, tx, Some((nameplate, token)))
                    .map(Opened::Here),
            };
        }
        rooms.may_open(size)?;
        // Each round picks in a ten times larger range: nodes busy with
        // many transfers collide more often on short numbers.
        for widen in 0..4 {
            for _ in 0..3 {
                let nameplate = rooms.free_nameplate(widen);
                if self.claim(nameplate).await? != Holder::This {
                    continue;
                }
                let created = rooms.create(size, tx, Some((nameplate, Rooms::new_token())));
                if created.is_err() {
                    self.release(rooms, nameplate).await;
                }
                return created.map(Opened::Here);
            }
        }
        Err(Refusal::new(
            RelayClose::Busy,
            "no free code was found for a new transfer; try again later",
        ))
    }

    /// Claims `nameplate` for this node, unless a live node holds it.
    async fn claim(&self, nameplate: u32) -> Result<Holder, Refusal> {
        let url = self.url.as_deref().unwrap_or("");
        let holder = self
            .redis
            .claim_transfer(nameplate, url)
            .await
            .map_err(unreachable)?;
        if holder == Holder::This {
            self.claimed.lock().expect("claimed").insert(nameplate);
        }
        Ok(holder)
    }

    /// Who holds `nameplate`.
    pub async fn holder(&self, nameplate: u32) -> Result<Holder, Refusal> {
        self.redis
            .transfer_holder(nameplate)
            .await
            .map_err(unreachable)
    }

    /// How to open a connection to `node` at `url` (its advertised base
    /// URL) forwarding the client at `client`: the URL of its `/files`,
    /// and the settings, with the secret, the node meant and the client's
    /// address.
    pub fn forward_to(
        &self,
        node: &str,
        url: &str,
        client: Option<IpAddr>,
    ) -> (String, ClientBuilder) {
        let target = format!("{}{}", url.trim_end_matches('/'), Endpoint::Files.path());
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        let connector = self.connector.clone().header(HOLDER_HEADER, node);
        let connector = match client {
            Some(ip) => connector.header(CLIENT_HEADER, &ip.to_string()),
            None => connector,
        };
        (target, connector)
    }

    /// Connections forwarded to other nodes since start.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Releases the claim of `nameplate`, unless a transfer here holds it
    /// (call with the turn taken).
    async fn release(&self, rooms: &Rooms, nameplate: u32) {
        if rooms.contains(nameplate) {
            return;
        }
        self.claimed.lock().expect("claimed").remove(&nameplate);
        if let Err(e) = self.redis.release_transfer(nameplate).await {
            tracing::debug!("transfer {nameplate}: the claim stays until it expires: {e}");
        }
    }

    /// Keeps the claims of the transfers open on this node (`rooms`) and
    /// releases those of transfers that ended, every [`CLAIM_RENEW`],
    /// until `shutdown`; then releases them all.
    pub async fn keep(self: Arc<Self>, rooms: Arc<Rooms>, shutdown: Signal) {
        let mut tick = tokio::time::interval(CLAIM_RENEW);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.fired() => break,
                _ = tick.tick() => {}
            }
            let open: HashSet<u32> = rooms.nameplates().into_iter().collect();
            let ended: Vec<u32> = {
                let claimed = self.claimed.lock().expect("claimed");
                claimed.difference(&open).copied().collect()
            };
            if !ended.is_empty() {
                let _turn = self.turn.lock().await;
                for nameplate in ended {
                    self.release(&rooms, nameplate).await;
                }
            }
            // Renewed together: one round trip's wait, not one per transfer.
            let this = &self;
            let renewals = futures_util::stream::iter(open).for_each_concurrent(RENEW_AT_ONCE, |nameplate| async move {
                let url = this.url.as_deref().unwrap_or("");
                match this.redis.claim_transfer(nameplate, url).await {
                    Ok(Holder::Other { node, .. }) => tracing::warn!(
                        "transfer {nameplate}: node {node} holds this code now (this node's lease lapsed); its receivers may not find it"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::debug!("transfer {nameplate}: claim not renewed: {e}"),
                }
            });
            tokio::select! {
                _ = shutdown.fired() => break,
                _ = renewals => {}
            }
        }
        // The transfers end with this node: their numbers are free again
        // (or will be, with its lease, if Redis cannot be reached now).
        let claimed: Vec<u32> = self.claimed.lock().expect("claimed").drain().collect();
        let release = async {
            for nameplate in claimed {
                let _ = self.redis.release_transfer(nameplate).await;
            }
        };
        let _ = tokio::time::timeout(crate::redis::TIMEOUT, release).await;
    }
}

fn unreachable(e: StoreError) -> Refusal {
    Refusal::new(
        RelayClose::Unreachable,
        format!("the directory of transfers cannot be reached ({e}); try again shortly"),
    )
}
