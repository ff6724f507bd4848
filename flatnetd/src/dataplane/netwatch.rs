//! Notices this host's own addresses changing (a DHCP renumbering, a
//! laptop moving networks, a WSL2 VM given a new address after resume).
//!
//! After such a change, peers still send to the old address (or to the NAT
//! mapping made for it), and nothing tells them otherwise until this host
//! sends them something: with only persistent keepalives that can take 25 s.
//! So on a change the data plane sends every directly reached peer a
//! keepalive at once; WireGuard's roaming then moves the peer to the new
//! source address within a round trip. (The Lighthouse client reports the
//! new local addresses itself, see `lighthouse::local_addrs`.)

use std::net::Ipv4Addr;

/// How often the addresses are compared, in data-plane ticks (100 ms).
pub const EVERY_TICKS: u32 = 10;

/// The last address set seen; [`AddrWatch::update`] says when it changed.
#[derive(Debug, Default)]
pub struct AddrWatch {
    last: Option<Vec<Ipv4Addr>>,
}

impl AddrWatch {
    /// Feed the current addresses (any order); true when they differ from
    /// the previous call's. The first call only records them.
    pub fn update(&mut self, mut now: Vec<Ipv4Addr>) -> bool {
        now.retain(|a| !a.is_loopback() && !a.is_unspecified());
        now.sort_unstable();
        now.dedup();
        let changed = self.last.as_ref().is_some_and(|l| *l != now);
        self.last = Some(now);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn first_sight_is_no_change_then_renumbering_is() {
        let mut w = AddrWatch::default();
        assert!(!w.update(vec![a("192.168.1.1"), a("127.0.0.1")]));
        // Same set, another order, loopback aside: no change.
        assert!(!w.update(vec![a("127.0.0.1"), a("192.168.1.1")]));
        assert!(w.update(vec![a("192.168.1.7")]));
        assert!(!w.update(vec![a("192.168.1.7")]));
        // An address added (a second LAN) counts too.
        assert!(w.update(vec![a("192.168.1.7"), a("10.0.0.5")]));
    }
}
