//! Connection admission: a bound on the WebSocket connections open at once,
//! in all and per client address, checked at the handshake (before the
//! 101) so that a refused client learns why and when to come back: 503
//! with `Retry-After`. Every connection is also a file descriptor, so the
//! default total stays under the process's limit on those.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Seconds a refused client is asked to wait.
pub const RETRY_AFTER_SECS: u64 = 5;

/// The open WebSocket connections, counted against their limits.
#[derive(Debug)]
pub struct Admission {
    /// At most this many in all (0: no limit).
    max_total: usize,
    /// At most this many from one client address (0: no limit).
    max_per_address: usize,
    open: Mutex<Open>,
    refused: AtomicU64,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds its maximum of connections.
    Full {
        /// `--max-connections`.
        max: usize,
    },
    /// This address holds its maximum.
    Address {
        /// `--max-connections-per-address`.
        max: usize,
    },
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let why = match self {
            Self::Full { max } => format!(
                "the server holds its maximum of {max} WebSocket connections (--max-connections); try again later\n"
            ),
            Self::Address { max } => format!(
                "your address holds the maximum of {max} WebSocket connections (--max-connections-per-address); close some or try again later\n"
            ),
        };
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        response
    }
}

/// A connection counted as open until this is dropped.
#[derive(Debug)]
pub struct Admitted {
    /// `None` once detached: the seat is given back by hand.
    admission: Option<Arc<Admission>>,
    seat: Seat,
}

/// An open connection's place in the count, without the way back to its
/// admission: for a holder that keeps the server's state anyway (an idle
/// echo connection, whose every byte counts), which gives it back with
/// [`Admission::release`].
#[derive(Debug)]
#[must_use = "give it back with Admission::release"]
pub struct Seat {
    address: Option<IpAddr>,
}

impl Admitted {
    /// This connection's seat, to be given back with
    /// [`Admission::release`] rather than by dropping.
    pub fn detach(mut self) -> Seat {
        self.admission = None;
        Seat {
            address: self.seat.address.take(),
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            let seat = Seat {
                address: self.seat.address.take(),
            };
            admission.release(seat);
        }
    }
}

impl Admission {
    /// Limits of `max_total` connections and `max_per_address` per client
    /// address (0: none).
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_address,
            open: Mutex::default(),
            refused: AtomicU64::new(0),
        })
    }

    /// Counts a new connection from `address` (unknown: only the total
    /// applies), or says why it cannot open.
    pub fn admit(self: &Arc<Self>, address: Option<IpAddr>) -> Result<Admitted, Refusal> {
        let mut open = self.open.lock().expect("not poisoned");
        if self.max_total > 0 && open.total >= self.max_total {
            return Err(Refusal::Full {
                max: self.max_total,
            });
        }
        // Without a per-address limit there is nothing to count per address
        // (and no map entry per client to keep).
        let address = address.filter(|_| self.max_per_address > 0);
        if let Some(address) = address {
            let n = open.per_address.entry(address).or_default();
            if *n >= self.max_per_address {
                return Err(Refusal::Address {
                    max: self.max_per_address,
                });
            }
            *n += 1;
        }
        open.total += 1;
        Ok(Admitted {
            admission: Some(self.clone()),
            seat: Seat { address },
        })
    }

    /// Gives back a detached seat ([`Admitted::detach`]).
    pub fn release(&self, seat: Seat) {
        let mut open = self.open.lock().expect("not poisoned");
        open.total -= 1;
        if let Some(address) = seat.address {
            if let Some(n) = open.per_address.get_mut(&address) {
                *n -= 1;
                if *n == 0 {
                    open.per_address.remove(&address);
                }
            }
        }
    }

    /// Notes a refusal that was answered (for `/metrics`).
    pub fn count_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals answered so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().expect("not poisoned").total
    }
}

/// The default `--max-connections`: nine tenths of the file descriptors
/// this process may open (the rest is for the database, logs and the
/// listener); 10,000 where the limit cannot be read.
pub fn default_max_connections() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            let soft = line.split_whitespace().nth(3)?;
            soft.parse::<usize>().ok()
        })
        .map_or(10_000, |soft| soft / 10 * 9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn limits_per_address_and_in_all_and_frees_on_drop() {
        let admission = Admission::new(3, 2);
        let a1 = admission.admit(ip("10.0.0.1")).unwrap();
        let a2 = admission.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(
            admission.admit(ip("10.0.0.1")).unwrap_err(),
            Refusal::Address { max: 2 }
        );
        let b1 = admission.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(
            admission.admit(ip("10.0.0.3")).unwrap_err(),
            Refusal::Full { max: 3 }
        );
        drop(a1);
        assert_eq!(admission.open(), 2);
        let a3 = admission.admit(ip("10.0.0.1")).unwrap();
        // A detached seat counts until it is given back.
        let seat = a3.detach();
        assert_eq!(admission.open(), 3);
        admission.release(seat);
        assert_eq!(admission.open(), 2);
        let a4 = admission.admit(ip("10.0.0.1")).unwrap();
        drop((a2, a4, b1));
        assert_eq!(admission.open(), 0);
        assert!(admission.open.lock().unwrap().per_address.is_empty());
    }

    #[test]
    fn zero_means_no_limit() {
        let admission = Admission::new(0, 0);
        let held: Vec<_> = (0..100)
            .map(|_| admission.admit(ip("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(admission.open(), 100);
        assert!(
            admission.open.lock().unwrap().per_address.is_empty(),
            "nothing counted per address without a limit per address"
        );
        drop(held);
        assert_eq!(admission.open(), 0);
    }

    #[test]
    fn a_refusal_is_a_503_with_retry_after() {
        let response = Refusal::Address { max: 2 }.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }
}
