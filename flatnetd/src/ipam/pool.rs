//! The address pool of one host subnet, and the choice of the next address.
//!
//! Addresses are handed out round-robin from a cursor (like the reference
//! `host-local` plugin) so that an address freed by a removed container is
//! not immediately given to the next one: stale connections and caches
//! pointing at the old container then fail instead of reaching a stranger.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The assignable addresses of a subnet: everything except the network
/// address, the gateway (first host) and the broadcast address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    subnet: Ipv4Net,
}

impl Pool {
    pub fn new(subnet: Ipv4Net) -> Self {
        Self {
            subnet: subnet.trunc(),
        }
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + 1)
    }

    fn first(&self) -> u32 {
        u32::from(self.subnet.network()) + 2
    }

    fn last(&self) -> u32 {
        u32::from(self.subnet.broadcast()) - 1
    }

    /// Number of assignable addresses.
    pub fn capacity(&self) -> u32 {
        self.last().saturating_sub(self.first()) + 1
    }

    /// True when `ip` may be leased to a container.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v >= self.first() && v <= self.last()
    }

    /// The first free address after `cursor` (wrapping around), or `None`
    /// when every address is taken. `is_used` is asked at most
    /// [`Pool::capacity`] times.
    pub fn next_free(
        &self,
        cursor: Option<Ipv4Addr>,
        mut is_used: impl FnMut(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        let (first, last) = (self.first(), self.last());
        if first > last {
            return None;
        }
        let start = match cursor.map(u32::from) {
            Some(c) if c >= first && c < last => c + 1,
            _ => first,
        };
        let span = last - first + 1;
        (0..span)
            .map(|i| first + (start - first + i) % span)
            .map(Ipv4Addr::from)
            .find(|ip| !is_used(*ip))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn pool(s: &str) -> Pool {
        Pool::new(s.parse().unwrap())
    }

    #[test]
    fn skips_network_gateway_and_broadcast() {
        let p = pool("10.87.1.0/24");
        assert_eq!(p.capacity(), 253);
        assert!(!p.contains("10.87.1.0".parse().unwrap()));
        assert!(!p.contains("10.87.1.1".parse().unwrap()));
        assert!(p.contains("10.87.1.2".parse().unwrap()));
        assert!(p.contains("10.87.1.254".parse().unwrap()));
        assert!(!p.contains("10.87.1.255".parse().unwrap()));
        assert!(!p.contains("10.87.2.2".parse().unwrap()));
        assert_eq!(
            p.next_free(None, |_| false),
            Some("10.87.1.2".parse().unwrap())
        );
    }

    #[test]
    fn round_robin_from_cursor_and_wraps() {
        let p = pool("10.87.1.0/24");
        let after = p.next_free(Some("10.87.1.9".parse().unwrap()), |_| false);
        assert_eq!(after, Some("10.87.1.10".parse().unwrap()));
        let wrapped = p.next_free(Some("10.87.1.254".parse().unwrap()), |_| false);
        assert_eq!(wrapped, Some("10.87.1.2".parse().unwrap()));
        // A cursor outside the pool (e.g. after a subnet change) starts over.
        let outside = p.next_free(Some("192.168.0.1".parse().unwrap()), |_| false);
        assert_eq!(outside, Some("10.87.1.2".parse().unwrap()));
    }

    #[test]
    fn fills_every_address_exactly_once_then_exhausts() {
        let p = pool("10.87.1.0/28");
        let mut used = HashSet::new();
        let mut cursor = None;
        while let Some(ip) = p.next_free(cursor, |ip| used.contains(&ip)) {
            assert!(p.contains(ip));
            assert!(used.insert(ip), "{ip} handed out twice");
            cursor = Some(ip);
        }
        assert_eq!(used.len() as u32, p.capacity());
        assert_eq!(used.len(), 13);
    }

    #[test]
    fn freed_address_found_after_wrap() {
        let p = pool("10.87.1.0/29"); // .2 ..= .6
        let used: HashSet<Ipv4Addr> = ["10.87.1.2", "10.87.1.4", "10.87.1.5", "10.87.1.6"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let got = p.next_free(Some("10.87.1.5".parse().unwrap()), |ip| used.contains(&ip));
        assert_eq!(got, Some("10.87.1.3".parse().unwrap()));
    }
}
