//! The data plane's peer set: the peers, the prefix table that routes to
//! them, and the indexes that find the peer of an incoming datagram.
//!
//! A set is immutable once built; a reload builds a new one that shares
//! the `Arc`s of unchanged peers, so their sessions carry on.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::{Arc, Mutex, MutexGuard},
};

use boringtun::noise::{handshake::parse_handshake_anon, rate_limiter::RateLimiter, Packet, Tunn};

use super::{keys::Identity, peer::Peer, router::PrefixTable};
use crate::config::PeerConfig;

pub type PeerRef = Arc<Mutex<Peer>>;

/// Lock a peer, surviving a panic in another thread that held it.
pub fn lock(p: &PeerRef) -> MutexGuard<'_, Peer> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Persistent keepalive of Lighthouse peers: short, so NAT mappings stay
/// open and a dead direct path is noticed within a few intervals.
pub const LIGHTHOUSE_KEEPALIVE: u16 = 5;

/// The keepalive a peer runs with: the configured one, capped at
/// [`LIGHTHOUSE_KEEPALIVE`] (and never off) for peers behind NATs.
pub fn effective_keepalive(c: &PeerConfig, configured: u16) -> u16 {
    if c.member {
        // Its app keeps the NAT open (PersistentKeepalive in its config).
        return 0;
    }
    match c.node_id {
        Some(_) if configured == 0 => LIGHTHOUSE_KEEPALIVE,
        Some(_) => configured.min(LIGHTHOUSE_KEEPALIVE),
        None => configured,
    }
}

#[derive(Default)]
pub struct PeerSet {
    peers: Vec<PeerRef>,
    routes: PrefixTable<usize>,
    by_index: HashMap<u32, usize>,
    by_key: HashMap<[u8; 32], usize>,
}

/// What [`PeerSet::rebuild`] did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub kept: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl PeerSet {
    pub fn new(peers: Vec<PeerRef>) -> Self {
        let mut s = PeerSet::default();
        for (i, p) in peers.iter().enumerate() {
            let g = lock(p);
            s.routes.insert(g.subnet, i);
            for n in &g.also {
                s.routes.insert(*n, i);
            }
            s.by_index.insert(g.index, i);
            s.by_key.insert(g.public_key, i);
        }
        s.peers = peers;
        s
    }

    /// A new set for `cfgs`: peers with the same key and keepalive are
    /// carried over (endpoint and subnet updated in place); others are
    /// created with indexes from `next_index`. Returns the set, the new
    /// peers (to start handshakes with) and a summary.
    pub fn rebuild(
        &self,
        me: &Identity,
        cfgs: &[PeerConfig],
        keepalive: u16,
        limiter: Option<&Arc<RateLimiter>>,
        mut next_index: impl FnMut() -> u32,
    ) -> (PeerSet, Vec<PeerRef>, Changes) {
        let mut peers = Vec::with_capacity(cfgs.len());
        let mut fresh = Vec::new();
        let mut ch = Changes::default();
        for c in cfgs {
            let keepalive = effective_keepalive(c, keepalive);
            match self.by_key(&c.public_key) {
                Some(p) if lock(p).compatible(c, keepalive) => {
                    lock(p).update(c);
                    ch.kept.push(c.name.clone());
                    peers.push(p.clone());
                }
                _ => {
                    let p = Arc::new(Mutex::new(Peer::with_limiter(
                        me,
                        c,
                        keepalive,
                        next_index(),
                        limiter.cloned(),
                    )));
                    ch.added.push(c.name.clone());
                    fresh.push(p.clone());
                    peers.push(p);
                }
            }
        }
        for p in &self.peers {
            if !peers.iter().any(|q| Arc::ptr_eq(p, q)) {
                ch.removed.push(lock(p).name.clone());
            }
        }
        (PeerSet::new(peers), fresh, ch)
    }

    pub fn peers(&self) -> &[PeerRef] {
        &self.peers
    }

    /// The peer whose subnet holds `dst` (longest prefix).
    #[inline]
    pub fn route(&self, dst: Ipv4Addr) -> Option<&PeerRef> {
        self.routes.lookup(dst).and_then(|&i| self.peers.get(i))
    }

    /// The peer that issued a receiver index (`receiver_index >> 8`).
    #[inline]
    pub fn by_receiver(&self, receiver_index: u32) -> Option<&PeerRef> {
        self.by_index
            .get(&(receiver_index >> 8))
            .and_then(|&i| self.peers.get(i))
    }

    pub fn by_key(&self, key: &[u8; 32]) -> Option<&PeerRef> {
        self.by_key.get(key).and_then(|&i| self.peers.get(i))
    }

    /// The peer that sent a handshake initiation: decrypts its static key
    /// with ours (the only way to learn who it is from).
    pub fn by_handshake(&self, me: &Identity, datagram: &[u8]) -> Option<&PeerRef> {
        let Ok(Packet::HandshakeInit(init)) = Tunn::parse_incoming_packet(datagram) else {
            return None;
        };
        let half = parse_handshake_anon(&me.secret, &me.public, &init).ok()?;
        self.by_key(&half.peer_static_public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, key: &Identity, subnet: &str) -> PeerConfig {
        PeerConfig {
            name: name.into(),
            public_key: key.public_bytes(),
            endpoint: "192.168.77.2:51820".parse().unwrap(),
            subnet: subnet.parse().unwrap(),
            node_id: None,
            member: false,
            also: vec![],
        }
    }

    #[test]
    fn rebuild_keeps_unchanged_peers_and_routes_new_ones() {
        let me = Identity::generate().unwrap();
        let (k2, k3) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let mut n = 10;
        let mut next = || {
            n += 1;
            n
        };
        let empty = PeerSet::default();
        let c2 = cfg("h2", &k2, "10.87.2.0/24");
        let (s1, fresh, ch) = empty.rebuild(&me, std::slice::from_ref(&c2), 25, None, &mut next);
        assert_eq!(fresh.len(), 1);
        assert_eq!(ch.added, vec!["h2"]);
        let h2 = s1.route("10.87.2.9".parse().unwrap()).unwrap().clone();
        assert!(s1.route("10.87.3.9".parse().unwrap()).is_none());
        let idx = lock(&h2).index;
        assert!(Arc::ptr_eq(s1.by_receiver(idx << 8 | 3).unwrap(), &h2));

        let mut c2b = c2.clone();
        c2b.endpoint = "192.168.77.9:51820".parse().unwrap();
        let (s2, fresh, ch) = s1.rebuild(
            &me,
            &[c2b, cfg("h3", &k3, "10.87.3.0/24")],
            25,
            None,
            &mut next,
        );
        assert_eq!(ch.kept, vec!["h2"]);
        assert_eq!(ch.added, vec!["h3"]);
        assert_eq!(fresh.len(), 1);
        assert!(Arc::ptr_eq(
            s2.route("10.87.2.1".parse().unwrap()).unwrap(),
            &h2
        ));
        assert_eq!(lock(&h2).endpoint.to_string(), "192.168.77.9:51820");
        assert!(s2.route("10.87.3.1".parse().unwrap()).is_some());

        // A keepalive change needs a new Tunn; dropping a peer removes it.
        let (s3, _, ch) = s2.rebuild(&me, &[c2], 10, None, &mut next);
        assert_eq!(ch.added, vec!["h2"]);
        assert_eq!(ch.removed, vec!["h2", "h3"]);
        assert!(!Arc::ptr_eq(
            s3.route("10.87.2.1".parse().unwrap()).unwrap(),
            &h2
        ));
        assert!(s3.route("10.87.3.1".parse().unwrap()).is_none());
    }

    #[test]
    fn handshake_initiations_find_their_sender() {
        let me = Identity::generate().unwrap();
        let other = Identity::generate().unwrap();
        let stranger = Identity::generate().unwrap();
        let (set, _, _) =
            PeerSet::default().rebuild(&me, &[cfg("o", &other, "10.87.2.0/24")], 0, None, || 1);
        let me_as_peer = cfg("me", &me, "10.87.1.0/24");
        let mut out = [0u8; 256];
        let mut from_other = Peer::new(&other, &me_as_peer, 0, 5);
        let n = from_other.initiate(&mut out).unwrap();
        assert!(set.by_handshake(&me, &out[..n]).is_some());
        let mut from_stranger = Peer::new(&stranger, &me_as_peer, 0, 6);
        let n = from_stranger.initiate(&mut out).unwrap();
        assert!(set.by_handshake(&me, &out[..n]).is_none());
        assert!(set.by_handshake(&me, &[1u8; 148]).is_none());
    }
}
