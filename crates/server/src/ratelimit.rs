//! A token bucket: `rate` commands a second on average, bursts up to `burst`.

use std::time::Instant;

/// One connection's command budget.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: burst as f64,
            tokens: burst as f64,
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_bursts_then_the_rate() {
        let start = Instant::now();
        let mut b = TokenBucket {
            rate: 10.0,
            burst: 5.0,
            tokens: 5.0,
            last: start,
        };
        assert_eq!((0..10).filter(|_| b.take_at(start)).count(), 5);
        // 0.5 s later: 5 more tokens at 10/s.
        let later = start + Duration::from_millis(500);
        assert_eq!((0..10).filter(|_| b.take_at(later)).count(), 5);
    }
}
