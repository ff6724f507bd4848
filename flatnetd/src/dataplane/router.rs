//! Cryptokey routing: which peer owns a destination address.
//!
//! [`PrefixTable`] is a longest-prefix-match table over IPv4 prefixes. It
//! keeps one hash map per prefix length in use, longest first, so a lookup
//! costs one hash probe per *distinct length* (usually one or two: every
//! peer owns a /24), however many peers there are.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;

/// A multiplicative hash for `u32` keys: the keys are masked addresses,
/// not attacker-chosen collections, and SipHash would dominate a lookup.
#[derive(Default)]
pub struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (u64::from(n) ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type AddrMap<T> = HashMap<u32, T, BuildHasherDefault<AddrHasher>>;

/// Longest-prefix-match table from IPv4 prefixes to values.
#[derive(Debug, Clone)]
pub struct PrefixTable<T> {
    /// (prefix length, mask, network -> value), longest prefix first.
    levels: Vec<(u8, u32, AddrMap<T>)>,
}

impl<T> Default for PrefixTable<T> {
    fn default() -> Self {
        Self { levels: Vec::new() }
    }
}

fn mask(len: u8) -> u32 {
    match len {
        0 => 0,
        l => u32::MAX << (32 - u32::from(l.min(32))),
    }
}

impl<T> PrefixTable<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Insert or replace the value of a prefix; returns the old value.
    pub fn insert(&mut self, net: Ipv4Net, value: T) -> Option<T> {
        let len = net.prefix_len();
        let m = mask(len);
        let key = u32::from(net.network()) & m;
        let pos = match self.levels.iter().position(|(l, _, _)| *l <= len) {
            Some(p) if self.levels[p].0 == len => p,
            Some(p) => {
                self.levels.insert(p, (len, m, AddrMap::default()));
                p
            }
            None => {
                self.levels.push((len, m, AddrMap::default()));
                self.levels.len() - 1
            }
        };
        self.levels[pos].2.insert(key, value)
    }

    /// Remove a prefix (exact match); returns its value.
    pub fn remove(&mut self, net: Ipv4Net) -> Option<T> {
        let len = net.prefix_len();
        let pos = self.levels.iter().position(|(l, _, _)| *l == len)?;
        let key = u32::from(net.network()) & self.levels[pos].1;
        let v = self.levels[pos].2.remove(&key);
        if self.levels[pos].2.is_empty() {
            self.levels.remove(pos);
        }
        v
    }

    /// The value of the longest prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<&T> {
        let a = u32::from(addr);
        self.levels.iter().find_map(|(_, m, map)| map.get(&(a & m)))
    }

    pub fn len(&self) -> usize {
        self.levels.iter().map(|(_, _, m)| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = PrefixTable::new();
        t.insert(net("10.87.0.0/16"), "wide");
        t.insert(net("10.87.2.0/24"), "h2");
        t.insert(net("10.87.2.128/25"), "h2-upper");
        t.insert(net("0.0.0.0/0"), "default");
        assert_eq!(t.lookup(ip("10.87.2.5")), Some(&"h2"));
        assert_eq!(t.lookup(ip("10.87.2.200")), Some(&"h2-upper"));
        assert_eq!(t.lookup(ip("10.87.3.1")), Some(&"wide"));
        assert_eq!(t.lookup(ip("192.0.2.1")), Some(&"default"));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn misses_and_removal() {
        let mut t = PrefixTable::new();
        assert_eq!(t.lookup(ip("10.87.2.1")), None);
        t.insert(net("10.87.2.0/24"), 2);
        t.insert(net("10.87.3.0/24"), 3);
        assert_eq!(t.lookup(ip("10.87.1.9")), None);
        assert_eq!(t.lookup(ip("10.87.3.255")), Some(&3));
        assert_eq!(t.remove(net("10.87.3.0/24")), Some(3));
        assert_eq!(t.remove(net("10.87.3.0/24")), None);
        assert_eq!(t.lookup(ip("10.87.3.1")), None);
        assert_eq!(t.insert(net("10.87.2.0/24"), 22), Some(2));
        assert_eq!(t.lookup(ip("10.87.2.0")), Some(&22));
        t.remove(net("10.87.2.0/24"));
        assert!(t.is_empty());
    }

    #[test]
    fn host_routes_and_many_peers() {
        let mut t = PrefixTable::new();
        for i in 0..=255u32 {
            t.insert(
                Ipv4Net::new(Ipv4Addr::from(0x0a57_0000 | (i << 8)), 24).unwrap(),
                i,
            );
        }
        t.insert(net("10.87.9.9/32"), 999);
        assert_eq!(t.lookup(ip("10.87.9.9")), Some(&999));
        assert_eq!(t.lookup(ip("10.87.9.10")), Some(&9));
        assert_eq!(t.lookup(ip("10.87.255.1")), Some(&255));
        assert_eq!(t.lookup(ip("10.88.0.1")), None);
    }
}
