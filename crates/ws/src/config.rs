//! Settings shared by clients and servers: limits, compression, timeouts
//! and the outgoing buffer bound.

use std::time::Duration;

use duplex_proto::{DeflateConfig, Limits};

use crate::MemoryBudget;

/// How a WebSocket behaves once open. All limits are first-class settings:
/// the defaults suit a public server.
///
/// Every connection setting is spelled here, once: builders take a whole
/// `Config` ([`ClientBuilder::config`](crate::ClientBuilder::config),
/// [`ServerBuilder::config`](crate::ServerBuilder::config)) and have no
/// setters of their own for these. New settings may be added in any
/// release, so a `Config` is built from [`Config::default`] with the
/// `with_*` methods.
///
/// ```
/// use std::time::Duration;
/// use duplex::Config;
/// let config = Config::default()
///     .with_ping_interval(Duration::from_secs(20))
///     .with_max_message_size(1 << 20);
/// assert_eq!(config.limits.max_message_size, 1 << 20);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Limits on incoming frames and messages.
    pub limits: Limits,
    /// permessage-deflate: `Some` to offer (client) or accept (server) it.
    /// Default: `None` (compression off) for clients, accepted by servers
    /// built with [`crate::ServerBuilder`].
    pub deflate: Option<DeflateConfig>,
    /// When more than this many bytes wait to be written, `send` waits for
    /// the peer to read instead of queueing more (and reading pauses, so
    /// pongs cannot pile up either). Default 1 MiB.
    pub write_buffer_limit: usize,
    /// Send a ping after this long without receiving anything. Default: off.
    pub ping_interval: Option<Duration>,
    /// Fail the connection (1011) if no pong arrives this long after a ping.
    /// Default 20 s.
    pub pong_timeout: Duration,
    /// Close the connection (1001) after this long without receiving
    /// anything. Default: off.
    pub idle_timeout: Option<Duration>,
    /// How long the opening handshake may take. Default 10 s.
    pub handshake_timeout: Duration,
    /// How long to wait for the peer's close frame and TCP close after ours.
    /// Default 5 s.
    pub close_timeout: Duration,
    /// A bound on the memory held for peers' large messages (arriving, and
    /// arrived ones still alive, an echo waiting to be written included),
    /// shared with every socket whose config holds a clone of it (see
    /// [`MemoryBudget`]). Default: none.
    pub memory_budget: Option<MemoryBudget>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            deflate: None,
            write_buffer_limit: 1 << 20,
            ping_interval: None,
            pong_timeout: Duration::from_secs(20),
            idle_timeout: None,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            memory_budget: None,
        }
    }
}

impl Config {
    /// Sets the largest message accepted (after reassembly and inflation).
    ///
    /// ```
    /// let config = duplex::Config::default().with_max_message_size(1 << 20);
    /// assert_eq!(config.limits.max_message_size, 1 << 20);
    /// ```
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.limits.max_message_size = bytes;
        self
    }

    /// Sets the largest frame accepted.
    ///
    /// ```
    /// let config = duplex::Config::default().with_max_frame_size(64 << 10);
    /// assert_eq!(config.limits.max_frame_size, 64 << 10);
    /// ```
    pub fn with_max_frame_size(mut self, bytes: usize) -> Self {
        self.limits.max_frame_size = bytes;
        self
    }

    /// Sets all the limits on incoming frames and messages.
    ///
    /// ```
    /// use duplex::{Config, Limits};
    /// let config = Config::default().with_limits(Limits { max_fragments: 64, ..Limits::default() });
    /// assert_eq!(config.limits.max_fragments, 64);
    /// ```
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Enables permessage-deflate with default settings.
    ///
    /// ```
    /// let config = duplex::Config::default().with_compression();
    /// assert_eq!(config.deflate, Some(duplex::DeflateConfig::default()));
    /// ```
    pub fn with_compression(mut self) -> Self {
        self.deflate = Some(DeflateConfig::default());
        self
    }

    /// Sets permessage-deflate: `Some` to offer (client) or accept
    /// (server) it with these settings, `None` for no compression.
    ///
    /// ```
    /// let server = duplex::ServerBuilder::new();
    /// let config = server.get_config().clone().with_deflate(None);
    /// assert!(config.deflate.is_none());
    /// ```
    pub fn with_deflate(mut self, deflate: Option<DeflateConfig>) -> Self {
        self.deflate = deflate;
        self
    }

    /// Sets how many unsent bytes make `send` wait for the peer.
    ///
    /// ```
    /// let config = duplex::Config::default().with_write_buffer_limit(64 << 10);
    /// assert_eq!(config.write_buffer_limit, 64 << 10);
    /// ```
    pub fn with_write_buffer_limit(mut self, bytes: usize) -> Self {
        self.write_buffer_limit = bytes;
        self
    }

    /// Sets how long a keepalive ping may go unanswered.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = duplex::Config::default()
    ///     .with_ping_interval(Duration::from_secs(20))
    ///     .with_pong_timeout(Duration::from_secs(5));
    /// assert_eq!(config.pong_timeout, Duration::from_secs(5));
    /// ```
    pub fn with_pong_timeout(mut self, timeout: Duration) -> Self {
        self.pong_timeout = timeout;
        self
    }

    /// Sets how long the opening handshake may take.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = duplex::Config::default().with_handshake_timeout(Duration::from_secs(3));
    /// assert_eq!(config.handshake_timeout, Duration::from_secs(3));
    /// ```
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets how long to wait for the peer's close frame and TCP close
    /// (the close timeout of [`duplex_proto::Teardown`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = duplex::Config::default().with_close_timeout(Duration::from_secs(1));
    /// assert_eq!(config.close_timeout, Duration::from_secs(1));
    /// ```
    pub fn with_close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Enables keepalive pings.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = duplex::Config::default().with_ping_interval(Duration::from_secs(30));
    /// assert_eq!(config.ping_interval, Some(Duration::from_secs(30)));
    /// ```
    pub fn with_ping_interval(mut self, every: Duration) -> Self {
        self.ping_interval = Some(every);
        self
    }

    /// Shares `budget` with the other sockets that hold it.
    ///
    /// ```
    /// use duplex::{Config, MemoryBudget};
    /// let budget = MemoryBudget::new(64 << 20);
    /// let config = Config::default().with_memory_budget(budget.clone());
    /// assert_eq!(config.memory_budget.map(|b| b.limit()), Some(64 << 20));
    /// ```
    pub fn with_memory_budget(mut self, budget: MemoryBudget) -> Self {
        self.memory_budget = Some(budget);
        self
    }

    /// Enables the idle timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = duplex::Config::default().with_idle_timeout(Duration::from_secs(300));
    /// assert_eq!(config.idle_timeout, Some(Duration::from_secs(300)));
    /// ```
    pub fn with_idle_timeout(mut self, after: Duration) -> Self {
        self.idle_timeout = Some(after);
        self
    }

    pub(crate) fn proto(&self) -> duplex_proto::Config {
        duplex_proto::Config {
            limits: self.limits,
            deflate: self.deflate.unwrap_or_default(),
        }
    }
}
