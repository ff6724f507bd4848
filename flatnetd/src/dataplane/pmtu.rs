//! Path MTU discovery per peer (sans-IO).
//!
//! The tunnel's packets must fit the narrowest link between two hosts, and
//! that link is often not the local one: a WSL2 VM behind a corporate VPN,
//! a PPPoE line, a tunnel in the path. Classic PMTU discovery needs the
//! ICMP "fragmentation needed" that such paths often drop (a black hole).
//! So, like Tailscale's PMTU probing (and RFC 8899's packetization-layer
//! discovery), each host sends the peer padded probes of several sizes with
//! the don't-fragment bit set, and the peer acknowledges each one it gets
//! with a small ack. The largest acknowledged size is the path MTU toward
//! that peer; the data plane then gives the peer's subnet a route with
//! `mtu = path MTU - OVERHEAD`, so TCP (MSS clamped to the route) and the
//! kernel's own fragmentation size inner packets to fit.
//!
//! Wire format ([`flatnet_wire::probe`], on the WireGuard socket, see
//! [`super::classify`]): a probe is `0x20 0 0 0 | nonce | size | padding`,
//! `size` being the whole IPv4 packet it travels in; an ack is 14 bytes. Probes carry no
//! secret: the nonce only makes acks unforgeable by anyone who did not see
//! the probe, and an ack is taken only from the address probed. A probe is
//! answered only to a current peer's address, with fewer bytes than it
//! carried, so the port is no amplifier.
//!
//! [`Prober`] is one peer's state machine: it is fed the local route's MTU
//! toward the peer (the ceiling), acks and the time, and says when to send
//! which probes and what the path MTU is.

use std::time::{Duration, Instant};

pub use flatnet_wire::probe::{
    ack, parse_ack, parse_probe, write_probe, ACK, IP_UDP, MAX_MTU, MIN_MTU, PROBE,
};
/// Outer bytes added to an inner packet: IPv4 + UDP + WireGuard data
/// header and tag (32).
pub const OVERHEAD: u16 = 60;
/// Sizes tried, largest first: jumbo, Ethernet, PPPoE, common tunnels and
/// VPNs, IPv6's minimum, and the floor. Only those up to the ceiling go out
/// (netcheck's probes toward the Lighthouse use the same sizes).
pub const LADDER: &[u16] = &[
    9000, 1500, 1492, 1480, 1460, 1440, 1420, 1400, 1380, 1360, 1340, 1320, 1300, 1280, 1200, 1024,
    576,
];
/// Each size is sent this many times per round, so one lost probe does not
/// pass for a narrow path.
const COPIES: u64 = 2;
/// How long a round waits for acks.
pub const ROUND: Duration = Duration::from_secs(1);
/// Confirmed paths are probed again this often (a path can widen or narrow).
pub const REPROBE: Duration = Duration::from_secs(600);
/// A round with no ack at all (peer unreachable or too old to answer)
/// is retried after this, doubling up to [`REPROBE`].
const RETRY: Duration = Duration::from_secs(5);

/// One probe to send: its size and nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub size: u16,
    pub nonce: u64,
}

#[derive(Debug)]
struct Round {
    base: u64,
    sizes: Vec<u16>,
    started: Instant,
    best: Option<u16>,
}

/// One peer's path MTU discovery.
#[derive(Debug)]
pub struct Prober {
    ceiling: u16,
    confirmed: Option<u16>,
    round: Option<Round>,
    next: Instant,
    retry: Duration,
}

impl Prober {
    /// A prober whose first round is due now. `ceiling` is the local
    /// route's MTU toward the peer (`IP_MTU`).
    pub fn new(ceiling: u16, now: Instant) -> Self {
        Prober {
            ceiling: ceiling.clamp(MIN_MTU, MAX_MTU),
            confirmed: None,
            round: None,
            next: now,
            retry: RETRY,
        }
    }

    /// The path changed (new endpoint or local route): forget what was
    /// learnt and probe again now.
    pub fn restart(&mut self, ceiling: u16, now: Instant) {
        *self = Prober::new(ceiling, now);
    }

    pub fn ceiling(&self) -> u16 {
        self.ceiling
    }

    /// The path MTU to use: the largest size the peer acknowledged, or
    /// the ceiling while nothing is known (a peer that never answers is
    /// treated as the local route says, as before probing existed).
    pub fn path_mtu(&self) -> u16 {
        self.confirmed.unwrap_or(self.ceiling).min(self.ceiling)
    }

    /// Whether the path MTU comes from an acknowledged probe.
    pub fn confirmed(&self) -> bool {
        self.confirmed.is_some()
    }

    /// Advance time: closes a round whose wait is over and, when a round
    /// is due, starts one and returns its probes. `nonce` is a fresh random
    /// value from the caller.
    pub fn poll(&mut self, now: Instant, nonce: u64) -> Vec<Probe> {
        if let Some(r) = &self.round {
            if now.saturating_duration_since(r.started) < ROUND {
                return Vec::new();
            }
            let best = r.best;
            self.round = None;
            match best {
                Some(b) => {
                    self.confirmed = Some(b);
                    self.retry = RETRY;
                    self.next = now + REPROBE;
                }
                None => {
                    // Nothing came back: keep what was known and try later.
                    self.next = now + self.retry;
                    self.retry = (self.retry * 2).min(REPROBE);
                }
            }
        }
        if now < self.next {
            return Vec::new();
        }
        let sizes: Vec<u16> = std::iter::once(self.ceiling)
            .chain(LADDER.iter().copied().filter(|&s| s < self.ceiling))
            .collect();
        // Nonces base .. base + sizes * COPIES: the range names the round.
        let base = nonce & !0xffff;
        let probes = sizes
            .iter()
            .enumerate()
            .flat_map(|(i, &size)| {
                (0..COPIES).map(move |c| Probe {
                    size,
                    nonce: base + (i as u64) * COPIES + c,
                })
            })
            .collect();
        self.round = Some(Round {
            base,
            sizes,
            started: now,
            best: None,
        });
        probes
    }

    /// An ack arrived from the peer's address. Returns whether it belonged
    /// to the current round.
    pub fn on_ack(&mut self, nonce: u64, size: u16) -> bool {
        let Some(r) = &mut self.round else {
            return false;
        };
        let Some(off) = nonce.checked_sub(r.base) else {
            return false;
        };
        let i = (off / COPIES) as usize;
        if r.sizes.get(i) != Some(&size) {
            return false;
        }
        r.best = Some(r.best.map_or(size, |b| b.max(size)));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn probe_and_ack_round_trip() {
        let mut buf = vec![0u8; 2000];
        let n = write_probe(0xdead_beef, 1280, &mut buf).unwrap();
        assert_eq!(n, 1252);
        assert_eq!(parse_probe(&buf[..n]), Some((0xdead_beef, 1280)));
        // Truncated on the way (or lying about its size): refused.
        assert_eq!(parse_probe(&buf[..n - 1]), None);
        let a = ack(7, 1280);
        assert_eq!(parse_ack(&a), Some((7, 1280)));
        assert_eq!(parse_ack(&a[..13]), None);
        assert_eq!(parse_ack(&buf[..14]), None, "a probe is no ack");
        // Out-of-range sizes are junk.
        assert_eq!(write_probe(1, 100, &mut buf), None);
        assert_eq!(parse_ack(&ack(1, 100)), None);
        assert_eq!(write_probe(1, 1500, &mut buf[..100]), None);
    }

    #[test]
    fn first_round_sends_every_size_up_to_the_ceiling_twice() {
        let now = t0();
        let mut p = Prober::new(1400, now);
        let probes = p.poll(now, 0x1234_0000);
        let sizes: Vec<u16> = probes.iter().map(|p| p.size).collect();
        assert_eq!(sizes[..4], [1400, 1400, 1380, 1380]);
        assert!(sizes.iter().all(|&s| s <= 1400));
        assert_eq!(*sizes.last().unwrap(), 576);
        // Nothing more until the round is over.
        assert!(p.poll(now + Duration::from_millis(500), 0).is_empty());
        assert_eq!(p.path_mtu(), 1400, "the ceiling while unknown");
    }

    #[test]
    fn largest_acked_size_wins_and_is_reprobed_later() {
        let now = t0();
        let mut p = Prober::new(1500, now);
        let probes = p.poll(now, 0x10000);
        // The path carries 1280 and below (a black hole beyond).
        for pr in probes.iter().filter(|p| p.size <= 1280) {
            assert!(p.on_ack(pr.nonce, pr.size));
        }
        let later = now + ROUND;
        assert!(p.poll(later, 0x20000).is_empty());
        assert_eq!(p.path_mtu(), 1280);
        assert!(p.confirmed());
        assert!(p
            .poll(later + REPROBE - Duration::from_secs(1), 0)
            .is_empty());
        assert!(!p.poll(later + REPROBE, 0x30000).is_empty());
    }

    #[test]
    fn forged_or_stale_acks_are_ignored() {
        let now = t0();
        let mut p = Prober::new(1500, now);
        let probes = p.poll(now, 0x50000);
        let small = probes.iter().find(|p| p.size == 1280).unwrap();
        // Right nonce, wrong size: a forger guessing cannot raise the MTU.
        assert!(!p.on_ack(small.nonce, 1500));
        // Nonce from another round.
        assert!(!p.on_ack(0x40000, 1500));
        assert!(p.on_ack(small.nonce, 1280));
        p.poll(now + ROUND, 0x60000);
        assert_eq!(p.path_mtu(), 1280);
        // An ack after its round closed changes nothing.
        assert!(!p.on_ack(small.nonce, 1280));
    }

    #[test]
    fn silence_keeps_the_ceiling_and_backs_off() {
        let now = t0();
        let mut p = Prober::new(1500, now);
        assert!(!p.poll(now, 0).is_empty());
        assert!(p.poll(now + ROUND, 0).is_empty());
        assert_eq!(p.path_mtu(), 1500);
        assert!(!p.confirmed());
        // Retried after 5 s, then 10 s.
        let t = now + ROUND + RETRY;
        assert!(!p.poll(t, 0).is_empty());
        assert!(p.poll(t + ROUND, 0).is_empty());
        assert!(p.poll(t + ROUND + RETRY, 0).is_empty());
        assert!(!p.poll(t + ROUND + RETRY * 2, 0).is_empty());
    }

    #[test]
    fn restart_forgets_the_old_path() {
        let now = t0();
        let mut p = Prober::new(1500, now);
        for pr in p.poll(now, 0) {
            p.on_ack(pr.nonce, pr.size);
        }
        p.poll(now + ROUND, 0);
        assert_eq!(p.path_mtu(), 1500);
        p.restart(1280, now + ROUND);
        assert_eq!(p.path_mtu(), 1280);
        assert!(!p.confirmed());
        assert!(!p.poll(now + ROUND, 0).is_empty());
    }
}
