//! How often this host may probe an address that never answered, sans I/O.
//!
//! A peer's candidates include the LAN addresses it claims (its
//! `local_addrs`). A hostile member can claim any private address, with any
//! ports, and every host that punches toward it then sends WireGuard
//! handshake probes there: aimed at a bystander on some LAN. The Lighthouse
//! and [`flatnet_wire::lighthouse::candidate_ok`] keep the claims plausible
//! (no loopback, no Flatnet, no public address but the observed one); this
//! keeps them cheap. Every claimed address (its IP, whatever the port and
//! whichever peers name it) shares one small budget until an authenticated
//! datagram arrives from it: [`UNPROVEN_BURST`] probes, then
//! [`UNPROVEN_PER_MIN`] a minute. One punch's probe window fits in the burst,
//! so an honest LAN candidate is found on the first try and is unlimited
//! from then on; a bystander gets at most `UNPROVEN_BURST + UNPROVEN_PER_MIN`
//! datagrams in the first minute and `UNPROVEN_PER_MIN` in each after.
//!
//! The peer's observed address (where the Lighthouse saw it) is not limited
//! here: it is the peer itself.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use flatnet_lighthouse::budget::Bucket;

/// Probes to a claimed address before anything answered from it: one
/// punch's probe window (3 s, a round every 250 ms).
pub const UNPROVEN_BURST: f64 = 12.0;
/// Then this many a minute (enough for a re-punch every 30 s to send a few).
pub const UNPROVEN_PER_MIN: f64 = 12.0;
/// An address that answered stays unlimited this long after its last
/// authenticated datagram.
pub const ANSWERED_FOR: Duration = Duration::from_secs(600);
/// Addresses tracked at most; past it, new unproven addresses get no probes
/// until idle ones are forgotten.
pub const MAX_TRACKED: usize = 4096;

/// The per-address probe budget of this host.
#[derive(Debug, Default)]
pub struct ProbeLimit {
    unproven: HashMap<IpAddr, Bucket>,
    answered: HashMap<IpAddr, Instant>,
}

impl ProbeLimit {
    /// An authenticated datagram arrived straight from `ip`.
    pub fn answered(&mut self, ip: IpAddr, now: Instant) {
        if self.answered.len() >= MAX_TRACKED && !self.answered.contains_key(&ip) {
            self.forget_idle(now);
            if self.answered.len() >= MAX_TRACKED {
                return;
            }
        }
        self.answered.insert(ip, now);
        self.unproven.remove(&ip);
    }

    /// Whether one probe may go to `ip` now (and count it if so).
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if let Some(t) = self.answered.get(&ip) {
            if now.saturating_duration_since(*t) < ANSWERED_FOR {
                return true;
            }
            self.answered.remove(&ip);
        }
        if !self.unproven.contains_key(&ip) && self.unproven.len() >= MAX_TRACKED {
            self.forget_idle(now);
            if self.unproven.len() >= MAX_TRACKED {
                return false;
            }
        }
        self.unproven
            .entry(ip)
            .or_insert_with(|| Bucket::new(UNPROVEN_PER_MIN / 60.0, UNPROVEN_BURST, now))
            .take(1.0, now)
    }

    /// Addresses tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.unproven.len() + self.answered.len()
    }

    /// Drop buckets that refilled (forgetting them changes nothing) and
    /// answers older than [`ANSWERED_FOR`].
    fn forget_idle(&mut self, now: Instant) {
        self.unproven.retain(|_, b| !b.is_full(now));
        self.answered
            .retain(|_, t| now.saturating_duration_since(*t) < ANSWERED_FOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Probes `ip` gets when asked every 50 ms for `secs` seconds.
    fn sent(l: &mut ProbeLimit, ip: IpAddr, t0: Instant, secs: u64) -> usize {
        (0..secs * 20)
            .filter(|i| l.allow(ip, t0 + Duration::from_millis(i * 50)))
            .count()
    }

    #[test]
    fn a_silent_address_gets_a_burst_then_a_trickle() {
        let t0 = Instant::now();
        let mut l = ProbeLimit::default();
        let victim = ip("192.168.5.20");
        let first = sent(&mut l, victim, t0, 60);
        assert!((23..=24).contains(&first), "{first} in the first minute");
        let second = sent(&mut l, victim, t0 + Duration::from_secs(60), 60);
        assert!((11..=12).contains(&second), "{second} in the second minute");
        // Another address has its own budget.
        assert!(l.allow(ip("192.168.5.21"), t0 + Duration::from_secs(120)));
    }

    #[test]
    fn an_address_that_answered_is_unlimited_for_a_while() {
        let t0 = Instant::now();
        let mut l = ProbeLimit::default();
        let peer = ip("192.168.1.7");
        assert_eq!(sent(&mut l, peer, t0, 1), 12);
        l.answered(peer, t0 + Duration::from_secs(1));
        assert_eq!(sent(&mut l, peer, t0 + Duration::from_secs(1), 10), 200);
        // Silent for longer than ANSWERED_FOR: back to the budget.
        let later = t0 + Duration::from_secs(1) + ANSWERED_FOR;
        assert_eq!(sent(&mut l, peer, later, 1), 12);
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut l = ProbeLimit::default();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            l.allow(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)), t0);
        }
        assert!(l.tracked() <= MAX_TRACKED);
        // Once the buckets refill they are forgotten, and new ones fit.
        let later = t0 + Duration::from_secs(120);
        assert!(l.allow(ip("172.16.0.1"), later));
        assert!(l.tracked() <= MAX_TRACKED);
    }
}
