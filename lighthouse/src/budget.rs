//! A token bucket: `rate` per second, at most `burst` saved up. Sans I/O
//! (the caller passes the time). Used for what one member may ask of others
//! (Lighthouse `Update`/`Punch`, relayed handshakes in flatnetd).

use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            at: now,
            rate,
            burst,
        }
    }

    fn level(&self, now: Instant) -> f64 {
        (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * self.rate)
            .min(self.burst)
    }

    /// Take one token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.take(1.0, now)
    }

    /// Take `n` tokens if there are that many.
    pub fn take(&mut self, n: f64, now: Instant) -> bool {
        let t = self.level(now);
        let ok = t >= n;
        self.tokens = if ok { t - n } else { t };
        self.at = now;
        ok
    }

    /// Whether it has refilled completely (nothing worth remembering).
    pub fn is_full(&self, now: Instant) -> bool {
        self.level(now) >= self.burst
    }

    /// When it was last used.
    pub fn last_used(&self) -> Instant {
        self.at
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2.0, 5.0, t0);
        assert_eq!((0..100).filter(|_| b.allow(t0)).count(), 5);
        assert!(!b.is_full(t0));
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(
            (0..100).filter(|_| b.allow(t1)).count(),
            5,
            "capped at burst"
        );
        let t2 = t1 + Duration::from_millis(500);
        assert_eq!((0..100).filter(|_| b.allow(t2)).count(), 1);
        assert!(b.is_full(t2 + Duration::from_secs(10)));
    }
}
