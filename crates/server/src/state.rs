//! What every connection and request shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::task::TaskTracker;

use crate::auth::TokenVerifier;
use crate::broker::Broker;
use crate::endpoint::SocketServers;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::signal::Signal;
use crate::store::Store;

/// The server's shared state.
pub struct AppState {
    /// The configuration in force.
    pub settings: Settings,
    /// Subscriptions and delivery.
    pub hub: Arc<Hub>,
    /// The publish pipeline.
    pub broker: Broker,
    /// History.
    pub store: Store,
    /// Counters.
    pub metrics: Metrics,
    /// JWT verification, when a secret is configured.
    pub verifier: Option<TokenVerifier>,
    /// The key `/api` requests need (`None`: no key needed).
    pub api_key: Option<String>,
    /// Cancelled when the server shuts down.
    pub shutdown: Signal,
    /// Every connection task, to wait for on shutdown.
    pub tasks: TaskTracker,
    /// The WebSocket endpoints' settings.
    pub sockets: SocketServers,
    /// The open WebSocket connections, against their limits.
    pub admission: Arc<crate::admission::Admission>,
    /// The file-transfer relay's transfers.
    pub transfers: Arc<crate::transfer::Rooms>,
    /// Which node holds which transfer, when nodes share them (Redis).
    pub directory: Option<Arc<crate::transfer::Directory>>,
    /// This node's name, which its connection ids start with, so they
    /// are unique among nodes sharing channels.
    pub node: Arc<str>,
    next_client: AtomicU64,
}

/// What a node needs to share file transfers with other nodes.
pub struct SharedTransfers {
    /// Where the other nodes reach this one (`ws://HOST:PORT`), if known.
    pub url: Option<String>,
    /// The secret every node shares (kept in Redis).
    pub secret: String,
}

impl AppState {
    /// Shared state over already-started parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        budget: duplex::MemoryBudget,
        hub: Arc<Hub>,
        broker: Broker,
        store: Store,
        metrics: Metrics,
        api_key: Option<String>,
        shared_transfers: Option<SharedTransfers>,
    ) -> Self {
        let node = match &store {
            Store::Redis(redis) => redis.node().clone(),
            Store::Sqlite(_) => crate::store::new_epoch().into(),
        };
        let verifier = settings.jwt_secret.as_deref().map(TokenVerifier::new);
        let sockets = SocketServers::new(&settings, budget);
        let admission = crate::admission::Admission::new(
            settings.max_connections,
            settings.max_connections_per_address,
        );
        let transfers = Arc::new(crate::transfer::Rooms::new(
            crate::transfer::Limits::from_settings(&settings),
        ));
        let directory = match (&store, shared_transfers) {
            (Store::Redis(redis), Some(shared)) => Some(Arc::new(crate::transfer::Directory::new(
                redis.clone(),
                shared.url,
                shared.secret,
                sockets.files_config(),
            ))),
            _ => None,
        };
        Self {
            transfers,
            directory,
            settings,
            hub,
            broker,
            store,
            metrics,
            verifier,
            api_key,
            shutdown: Signal::new(),
            tasks: TaskTracker::new(),
            sockets,
            admission,
            node,
            next_client: AtomicU64::new(1),
        }
    }

    /// A fresh connection id: `c7`, or `<node>-c7` when nodes share
    /// channels through Redis.
    pub fn next_client_id(&self) -> Arc<str> {
        let n = self.next_client.fetch_add(1, Ordering::Relaxed);
        match self.store {
            Store::Sqlite(_) => format!("c{n}").into(),
            Store::Redis(_) => format!("{}-c{n}", self.node).into(),
        }
    }
}
