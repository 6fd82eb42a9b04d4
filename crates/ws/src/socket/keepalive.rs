//! Keepalive pings and the idle timeout: a timer only connections that
//! configured one pay for.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use bytes::Bytes;
use duplex_proto::{CloseCode, CloseFrame, Message, State};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use super::WebSocket;
use crate::config::Config;
use crate::error::Error;

/// The payload of our keepalive pings.
const KEEPALIVE_PAYLOAD: &[u8] = b"duplex-keepalive";

/// Keepalive and idle-timeout bookkeeping; allocated only when configured.
pub(super) struct Timers {
    sleep: Pin<Box<Sleep>>,
    last_rx: Instant,
    /// Bytes arrived since `last_rx` was set: the next check moves it to
    /// its own `now`, so a busy socket reads the clock once per check, not
    /// once per read as well.
    rx_since: bool,
    /// When our unanswered ping went out.
    ping_sent_at: Option<Instant>,
    ping_interval: Option<Duration>,
    pong_timeout: Duration,
    idle_timeout: Option<Duration>,
}

/// What the timers found due.
enum Due {
    Nothing,
    /// Nothing arrived for the idle timeout.
    Idle(Duration),
    /// Our ping went unanswered for the pong timeout.
    PongMissing(Duration),
    /// Time for a ping.
    Ping,
}

impl Timers {
    /// The timers `config` asks for, if any.
    pub(super) fn new(config: &Config) -> Option<Box<Self>> {
        (config.ping_interval.is_some() || config.idle_timeout.is_some()).then(|| {
            Box::new(Timers {
                sleep: Box::pin(tokio::time::sleep(Duration::from_secs(86_400))),
                last_rx: Instant::now(),
                rx_since: false,
                ping_sent_at: None,
                ping_interval: config.ping_interval,
                pong_timeout: config.pong_timeout,
                idle_timeout: config.idle_timeout,
            })
        })
    }

    /// Bytes arrived: the peer is alive (as of the next check, which
    /// follows when the socket runs out of bytes to read).
    pub(super) fn received(&mut self) {
        self.rx_since = true;
    }

    /// A pong arrived: our ping was answered.
    pub(super) fn pong(&mut self) {
        self.ping_sent_at = None;
    }

    fn due(&mut self, now: Instant) -> Due {
        if std::mem::take(&mut self.rx_since) {
            self.last_rx = now;
        }
        if let Some(idle) = self.idle_timeout {
            if now >= self.last_rx + idle {
                return Due::Idle(idle);
            }
        }
        match (self.ping_sent_at, self.ping_interval) {
            (Some(sent), _) if now >= sent + self.pong_timeout => {
                Due::PongMissing(self.pong_timeout)
            }
            (None, Some(every)) if now >= self.last_rx + every => {
                self.ping_sent_at = Some(now);
                Due::Ping
            }
            _ => Due::Nothing,
        }
    }

    fn deadline(&self, now: Instant) -> Instant {
        let mut at = now + Duration::from_secs(86_400);
        if let Some(idle) = self.idle_timeout {
            at = at.min(self.last_rx + idle);
        }
        match (self.ping_sent_at, self.ping_interval) {
            (Some(sent), _) => at = at.min(sent + self.pong_timeout),
            (None, Some(every)) => at = at.min(self.last_rx + every),
            (None, None) => {}
        }
        at
    }

    /// Sleeps until the next deadline; true once it passed.
    ///
    /// The timer is moved only to an earlier deadline, or once it went off:
    /// traffic pushes the deadline later on every read, and moving a timer
    /// takes the runtime's timer lock. When it goes off early, the check
    /// finds nothing due and sets it to the deadline as it now stands.
    fn poll_sleep(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        let at = self.deadline(now);
        let set = self.sleep.deadline();
        if at < set || set <= now {
            self.sleep.as_mut().reset(at);
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Checks keepalive and idle deadlines. Returns true if it did something
    /// that needs another turn of the loop.
    pub(super) fn poll_timers(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(t) = &mut self.timers else {
            return false;
        };
        if self.conn.state() != State::Open {
            return false;
        }
        let now = Instant::now();
        let (frame, error) = match t.due(now) {
            Due::Nothing => return t.poll_sleep(cx, now),
            Due::Ping => {
                let ping = Message::Ping(Bytes::from_static(KEEPALIVE_PAYLOAD));
                let _ = self.conn.send(ping);
                return true;
            }
            Due::Idle(idle) => (
                CloseFrame::new(CloseCode::GOING_AWAY, "idle timeout"),
                Error::IdleTimeout(idle),
            ),
            Due::PongMissing(timeout) => (
                CloseFrame::new(CloseCode::INTERNAL_ERROR, "keepalive ping timeout"),
                Error::KeepaliveTimeout(timeout),
            ),
        };
        let _ = self.conn.close(Some(frame));
        self.set_pending_error(error);
        self.begin_teardown();
        true
    }
}
