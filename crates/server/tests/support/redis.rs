//! A real `redis-server` on a free loopback port, in its own directory,
//! with an append-only file so it can be killed and restarted on its data;
//! and a TCP proxy in front of it that a test can cut and heal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::LIMIT;

/// A `redis-server` process.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one and waits until it answers.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Self {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        redis.launch().await;
        redis
    }

    fn binary() -> PathBuf {
        let path = PathBuf::from("/usr/bin/redis-server");
        assert!(
            path.exists(),
            "redis-server is not installed: `cargo xtask test` installs it (Debian's redis-server)"
        );
        path
    }

    async fn launch(&mut self) {
        let child = Command::new(Self::binary())
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Ok(mut conn) = self.connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut conn).await;
                if pong.is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A connection for the test's own commands.
    pub async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await
    }

    /// How many connections subscribe to a pub/sub channel.
    pub async fn subscribers(&self, channel: &str) -> usize {
        let mut conn = self.connection().await.unwrap();
        let (_, n): (String, usize) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await
            .unwrap();
        n
    }

    /// SIGKILL: no shutdown, no final save; only what the AOF has.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and data.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy on a free loopback port. `cut` closes every connection
/// through it and refuses new ones until `heal`.
pub struct Proxy {
    pub addr: SocketAddr,
    open: watch::Sender<bool>,
    refusing: Arc<AtomicBool>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, _) = watch::channel(true);
        let refusing = Arc::new(AtomicBool::new(false));
        let (state, refused) = (open.clone(), refusing.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if refused.load(Ordering::Acquire) {
                    continue; // dropped: the connection is reset
                }
                let mut cut = state.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        Self {
            addr,
            open,
            refusing,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.refusing.store(true, Ordering::Release);
        self.open.send_replace(false);
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.open.send_replace(true);
        self.refusing.store(false, Ordering::Release);
    }
}
