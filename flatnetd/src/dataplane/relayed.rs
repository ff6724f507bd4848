//! Handshakes that arrive through the Lighthouse relay, sans I/O.
//!
//! A relayed datagram has no source address, only the node id the
//! Lighthouse stamped on it. Two things follow:
//! - WireGuard's cookies are bound to a source address, so each relaying
//!   node gets a stable stand-in address ([`cookie_addr`]): under load a
//!   relayed peer gets a cookie reply (through the relay) and its retry
//!   passes, where with no address boringtun could only say "under load".
//! - Every member can send relayed handshakes, so each source node has its
//!   own budget ([`HandshakeBudget`]), checked before MAC1 and before any
//!   X25519: one member's flood costs a hash-map lookup per packet and
//!   leaves other nodes' handshakes alone.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    time::Instant,
};

use flatnet_lighthouse::budget::Bucket;

/// The stand-in source address of node `node` for cookies: a unique local
/// IPv6 address (`fd66:6c61:7400::<node>`), never a real one.
pub fn cookie_addr(node: u32) -> IpAddr {
    let [a, b, c, d] = node.to_be_bytes();
    IpAddr::V6(Ipv6Addr::new(
        0xfd66,
        0x6c61,
        0x7400,
        0,
        0,
        0,
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, d]),
    ))
}

/// Relayed handshake initiations one node may send per second, sustained
/// (an honest node sends one every few seconds at most).
pub const PER_SEC: f64 = 5.0;
/// And in one burst.
pub const BURST: f64 = 20.0;
/// Nodes tracked at once; beyond this, full budgets are forgotten first.
const MAX_NODES: usize = 4096;

/// A token bucket per source node.
#[derive(Debug, Default)]
pub struct HandshakeBudget {
    buckets: HashMap<u32, Bucket>,
}

impl HandshakeBudget {
    /// Whether node `src` may have one more relayed handshake looked at now.
    pub fn allow(&mut self, src: u32, now: Instant) -> bool {
        if self.buckets.len() >= MAX_NODES && !self.buckets.contains_key(&src) {
            // Full budgets carry no memory worth keeping; failing that, the
            // node heard from longest ago goes.
            self.buckets.retain(|_, b| !b.is_full(now));
            if self.buckets.len() >= MAX_NODES {
                let oldest = self
                    .buckets
                    .iter()
                    .min_by_key(|(_, b)| b.last_used())
                    .map(|(n, _)| *n);
                if let Some(n) = oldest {
                    self.buckets.remove(&n);
                }
            }
        }
        self.buckets
            .entry(src)
            .or_insert_with(|| Bucket::new(PER_SEC, BURST, now))
            .allow(now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_node_has_its_own_stand_in_address() {
        assert_ne!(cookie_addr(1), cookie_addr(2));
        assert_eq!(cookie_addr(7), cookie_addr(7));
        assert_eq!(
            cookie_addr(0x0102_0304).to_string(),
            "fd66:6c61:7400::102:304"
        );
    }

    #[test]
    fn a_flooding_node_spends_only_its_own_budget() {
        let t0 = Instant::now();
        let mut b = HandshakeBudget::default();
        let flood = (0..10_000).filter(|_| b.allow(9, t0)).count();
        assert_eq!(flood, BURST as usize);
        // Another node is untouched by it.
        assert!(b.allow(7, t0));
        // The flooder gets PER_SEC more each second, no more.
        let later = t0 + Duration::from_secs(2);
        let again = (0..10_000).filter(|_| b.allow(9, later)).count();
        assert_eq!(again, (2.0 * PER_SEC) as usize);
    }

    #[test]
    fn many_nodes_stay_bounded() {
        let t0 = Instant::now();
        let mut b = HandshakeBudget::default();
        for n in 0..(MAX_NODES as u32 * 3) {
            b.allow(n, t0 + Duration::from_secs(10));
        }
        assert!(b.buckets.len() <= MAX_NODES + 1);
    }
}
