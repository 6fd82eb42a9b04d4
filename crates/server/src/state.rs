//! What every connection and request shares.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::TokenVerifier;
use crate::broker::Broker;
use crate::endpoint::SocketServers;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::SqliteStore;

/// How long an `Idempotency-Key` is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(300);
/// How many keys are remembered at most.
const IDEMPOTENCY_MAX: usize = 100_000;

/// The server's shared state.
pub struct AppState {
    /// The configuration in force.
    pub settings: Settings,
    /// Subscriptions and delivery.
    pub hub: Arc<Hub>,
    /// The publish pipeline.
    pub broker: Broker,
    /// History.
    pub store: SqliteStore,
    /// Counters.
    pub metrics: Metrics,
    /// JWT verification, when a secret is configured.
    pub verifier: Option<TokenVerifier>,
    /// The key `/api` requests need (`None`: no key needed).
    pub api_key: Option<String>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Every connection task, to wait for on shutdown.
    pub tasks: TaskTracker,
    /// The WebSocket endpoints' settings.
    pub sockets: SocketServers,
    /// The open WebSocket connections, against their limits.
    pub admission: Arc<crate::admission::Admission>,
    /// The file-transfer relay's transfers.
    pub transfers: Arc<crate::transfer::Rooms>,
    next_client: AtomicU64,
    idempotency: Mutex<HashMap<String, (Instant, String)>>,
}

impl AppState {
    /// Shared state over already-started parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        budget: duplex::MemoryBudget,
        hub: Arc<Hub>,
        broker: Broker,
        store: SqliteStore,
        metrics: Metrics,
        api_key: Option<String>,
    ) -> Self {
        let verifier = settings.jwt_secret.as_deref().map(TokenVerifier::new);
        let sockets = SocketServers::new(&settings, budget);
        let admission = crate::admission::Admission::new(
            settings.max_connections,
            settings.max_connections_per_address,
        );
        let transfers = Arc::new(crate::transfer::Rooms::new(
            crate::transfer::Limits::from_settings(&settings),
        ));
        Self {
            transfers,
            settings,
            hub,
            broker,
            store,
            metrics,
            verifier,
            api_key,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            sockets,
            admission,
            next_client: AtomicU64::new(1),
            idempotency: Mutex::default(),
        }
    }

    /// A fresh connection number.
    pub fn next_client_id(&self) -> u64 {
        self.next_client.fetch_add(1, Ordering::Relaxed)
    }

    /// The remembered answer to a publish with this idempotency key.
    pub fn idempotent_result(&self, key: &str) -> Option<String> {
        let map = self.idempotency.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(at, _)| at.elapsed() < IDEMPOTENCY_TTL)
            .map(|(_, r)| r.clone())
    }

    /// Remembers the answer to a publish with this idempotency key.
    pub fn remember_result(&self, key: String, result: String) {
        let mut map = self.idempotency.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= IDEMPOTENCY_MAX {
            map.retain(|_, (at, _)| at.elapsed() < IDEMPOTENCY_TTL);
        }
        if map.len() < IDEMPOTENCY_MAX {
            map.insert(key, (Instant::now(), result));
        }
    }
}
