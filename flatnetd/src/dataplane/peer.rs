//! One WireGuard peer: a boringtun [`Tunn`] plus what Flatnet keeps about it
//! (endpoint, AllowedIPs, counters). Sans-IO: callers hand in datagrams and
//! packets and get back what to send where, so tests run two peers against
//! each other in memory.
//!
//! Time: `Tunn` reads its own monotonic clock; the data plane drives it by
//! calling [`Peer::tick`] every [`TICK`]. Unit tests build boringtun with its
//! `mock-instant` feature and move that clock by hand.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use std::sync::Arc;

use boringtun::{
    noise::{errors::WireGuardError, rate_limiter::RateLimiter, Tunn, TunnResult},
    x25519::PublicKey,
};
use flatnet_wire::PeerStatus;
use ipnet::Ipv4Net;

use super::{classify::WgKind, keys::Identity, pmtu::Prober};
use crate::config::{encode_key, PeerConfig};

/// How often the data plane calls [`Peer::tick`].
pub const TICK: Duration = Duration::from_millis(100);

/// WireGuard's data message overhead: 16 header + 16 tag.
pub const DATA_OVERHEAD: usize = 32;
/// The largest handshake message; output buffers must be at least this big.
pub const MIN_OUT: usize = 148;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("wireguard: {0:?}")]
    Wg(WireGuardError),
    #[error("inner source {0} is outside the peer's AllowedIPs {1}")]
    NotAllowed(Ipv4Addr, Ipv4Net),
    #[error("IPv6 is not carried")]
    Ipv6,
}

/// Something a peer wants done with a buffer it filled.
#[derive(Debug)]
pub enum Output<'a> {
    /// Send this datagram back to where the one being handled came from.
    Network(&'a [u8]),
    /// Send this handshake initiation of ours to the peer's current
    /// destination ([`Peer::dest`]), never to the handled datagram's
    /// source: that may be a replay's sender.
    Initiate(&'a [u8]),
    /// Write this decrypted IPv4 packet to the TUN device.
    Tunnel(&'a [u8]),
}

pub struct Peer {
    pub name: String,
    pub public_key: [u8; 32],
    pub subnet: Ipv4Net,
    pub endpoint: SocketAddr,
    pub keepalive: u16,
    /// Our 24-bit index; boringtun puts it in the top bits of every
    /// receiver index it hands out, so `receiver_index >> 8` finds us.
    pub index: u32,
    tunn: Tunn,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Authenticated datagrams received, and datagrams sent.
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub handshakes: u64,
    /// The Lighthouse node id of a peer learnt from it.
    pub node_id: Option<u32>,
    /// Send through the Lighthouse relay instead of to [`Peer::endpoint`].
    pub relayed: bool,
    /// Whether the hole-punching logic has seen a direct path yet
    /// (`None` for static peers, which are always direct).
    pub path: Option<PathState>,
    /// Authenticated datagrams that arrived straight over UDP, and through
    /// the relay: the punching logic watches these counters.
    pub direct_rx: u64,
    pub relay_rx: u64,
    /// Path MTU discovery toward [`Peer::endpoint`], with the endpoint it
    /// measures (a new endpoint is a new path). `None` until the data
    /// plane's timer first looks at the peer.
    pub pmtu: Option<(SocketAddr, Prober)>,
    /// A remote member: never dialled, found where it sends from.
    pub member: bool,
    /// Remote members behind this peer (its hub): AllowedIPs too.
    pub also: Vec<Ipv4Net>,
}

/// How a Lighthouse peer is reached, as shown in status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathState {
    Connecting,
    Direct,
    Relay,
}

impl PathState {
    pub fn as_str(self) -> &'static str {
        match self {
            PathState::Connecting => "connecting",
            PathState::Direct => "direct",
            PathState::Relay => "relay",
        }
    }
}

/// Where a peer's datagrams go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    Udp(SocketAddr),
    /// Through the Lighthouse to this node id.
    Relay(u32),
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("name", &self.name)
            .field("subnet", &self.subnet)
            .field("endpoint", &self.endpoint)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// A peer with no session yet. `index` must be unique per data plane
    /// and below 2^24.
    pub fn new(me: &Identity, cfg: &PeerConfig, keepalive: u16, index: u32) -> Self {
        Self::with_limiter(me, cfg, keepalive, index, None)
    }

    /// Like [`Peer::new`], sharing the data plane's handshake rate limiter
    /// (whose counter the caller then resets every second).
    pub fn with_limiter(
        me: &Identity,
        cfg: &PeerConfig,
        keepalive: u16,
        index: u32,
        limiter: Option<Arc<RateLimiter>>,
    ) -> Self {
        let tunn = Tunn::new(
            me.secret.clone(),
            PublicKey::from(cfg.public_key),
            None,
            (keepalive > 0).then_some(keepalive),
            index & 0x00ff_ffff,
            limiter,
        );
        Self {
            name: cfg.name.clone(),
            public_key: cfg.public_key,
            subnet: cfg.subnet,
            endpoint: cfg.endpoint,
            keepalive,
            index: index & 0x00ff_ffff,
            tunn,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
            handshakes: 0,
            node_id: cfg.node_id,
            relayed: false,
            path: cfg.node_id.map(|_| PathState::Connecting),
            direct_rx: 0,
            relay_rx: 0,
            pmtu: None,
            member: cfg.member,
            also: cfg.also.clone(),
        }
    }

    /// Where datagrams for this peer go now.
    #[inline]
    pub fn dest(&self) -> Dest {
        match (self.relayed, self.node_id) {
            (true, Some(id)) => Dest::Relay(id),
            _ => Dest::Udp(self.endpoint),
        }
    }

    /// Whether a session is established (keepalives can be sent).
    pub fn has_session(&self) -> bool {
        self.last_handshake().is_some()
    }

    /// A datagram that proves our key to the peer at a new address: a
    /// keepalive when a session exists, else a handshake initiation
    /// (re-sent even when one is in flight, so every candidate gets it).
    pub fn probe(&mut self, out: &mut [u8]) -> Option<usize> {
        let r = if self.has_session() {
            self.tunn.encapsulate(&[], out)
        } else {
            self.tunn.format_handshake_initiation(out, true)
        };
        match r {
            TunnResult::WriteToNetwork(d) => {
                self.count_tx(d.len());
                Some(d.len())
            }
            _ => None,
        }
    }

    #[inline]
    fn count_tx(&mut self, len: usize) {
        self.tx_bytes += len as u64;
        self.tx_packets += 1;
    }

    /// Whether a new config for this peer can keep the running session.
    pub fn compatible(&self, cfg: &PeerConfig, keepalive: u16) -> bool {
        self.public_key == cfg.public_key && self.keepalive == keepalive
    }

    /// Take over changed fields that do not need a new session.
    pub fn update(&mut self, cfg: &PeerConfig) {
        self.name.clone_from(&cfg.name);
        self.subnet = cfg.subnet;
        self.node_id = cfg.node_id;
        self.also.clone_from(&cfg.also);
        // A Lighthouse peer's endpoint is found by punching and roaming,
        // and a member's by roaming alone, not by the peer list.
        if cfg.node_id.is_none() && !cfg.member && self.endpoint != cfg.endpoint {
            self.endpoint = cfg.endpoint;
        }
    }

    /// Encrypt one IP packet from the TUN device into `out`. Returns the
    /// datagram length to send to [`Peer::endpoint`], if any (with no
    /// session yet the packet is queued and a handshake initiation is
    /// returned instead). `out` needs `packet.len() + 32` and at least 148 bytes.
    pub fn encapsulate(&mut self, packet: &[u8], out: &mut [u8]) -> Option<usize> {
        match self.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(d) => {
                self.count_tx(d.len());
                Some(d.len())
            }
            _ => None,
        }
    }

    /// Start a handshake now rather than on the first packet.
    pub fn initiate(&mut self, out: &mut [u8]) -> Option<usize> {
        match self.tunn.format_handshake_initiation(out, false) {
            TunnResult::WriteToNetwork(d) => {
                self.count_tx(d.len());
                Some(d.len())
            }
            _ => None,
        }
    }

    /// Drive timers: retransmit handshakes, rekey, persistent keepalive.
    /// Returns the length of a datagram to send, if one is due.
    pub fn tick(&mut self, out: &mut [u8]) -> Option<usize> {
        match self.tunn.update_timers(out) {
            TunnResult::WriteToNetwork(d) => {
                self.count_tx(d.len());
                Some(d.len())
            }
            _ => None,
        }
    }

    /// Process one datagram that arrived from `from`. Calls `emit` for
    /// every resulting output (handshake replies, queued packets now
    /// sendable, the decrypted packet). Authenticated datagrams move the
    /// peer's endpoint to `from` (roaming), as WireGuard does.
    /// Whether `src` is one of this peer's AllowedIPs: its subnet, or a
    /// remote member it is the hub of.
    #[inline]
    pub fn allows_source(&self, src: Ipv4Addr) -> bool {
        self.subnet.contains(&src) || self.also.iter().any(|n| n.contains(&src))
    }

    pub fn decapsulate(
        &mut self,
        from: SocketAddr,
        kind: WgKind,
        datagram: &[u8],
        out: &mut [u8],
        emit: impl FnMut(&Peer, Output<'_>),
    ) -> Result<(), PeerError> {
        self.decapsulate_from(Some(from), from.ip(), kind, datagram, out, emit)
    }

    /// [`Peer::decapsulate`] for a datagram that came through the
    /// Lighthouse relay: same checks, but the endpoint stays put.
    /// `src` is the relaying node; cookies are bound to its stand-in
    /// address ([`super::relayed::cookie_addr`]).
    pub fn decapsulate_relayed(
        &mut self,
        src: u32,
        kind: WgKind,
        datagram: &[u8],
        out: &mut [u8],
        emit: impl FnMut(&Peer, Output<'_>),
    ) -> Result<(), PeerError> {
        let addr = super::relayed::cookie_addr(src);
        self.decapsulate_from(None, addr, kind, datagram, out, emit)
    }

    fn decapsulate_from(
        &mut self,
        from: Option<SocketAddr>,
        cookie_addr: IpAddr,
        kind: WgKind,
        datagram: &[u8],
        out: &mut [u8],
        mut emit: impl FnMut(&Peer, Output<'_>),
    ) -> Result<(), PeerError> {
        let res = self.tunn.decapsulate(Some(cookie_addr), datagram, out);
        let mut replies = false;
        let result = match res {
            TunnResult::Done => Ok(()),
            TunnResult::Err(WireGuardError::WrongTai64nTimestamp)
                if kind == WgKind::HandshakeInit =>
            {
                self.answer_stale_initiation(out, &mut emit);
                Err(PeerError::Wg(WireGuardError::WrongTai64nTimestamp))
            }
            TunnResult::Err(e) => Err(PeerError::Wg(e)),
            TunnResult::WriteToNetwork(d) => {
                let n = d.len();
                replies = true;
                self.count_tx(n);
                emit(self, Output::Network(&out[..n]));
                Ok(())
            }
            TunnResult::WriteToTunnelV4(p, src) => {
                if self.allows_source(src) {
                    let n = p.len();
                    emit(self, Output::Tunnel(&out[..n]));
                    Ok(())
                } else {
                    Err(PeerError::NotAllowed(src, self.subnet))
                }
            }
            TunnResult::WriteToTunnelV6(..) => Err(PeerError::Ipv6),
        };
        if let Err(PeerError::Wg(_)) = result {
            return result;
        }
        // Authenticated: count it and follow the peer to its new address.
        self.rx_bytes += datagram.len() as u64;
        self.rx_packets += 1;
        match from {
            Some(from) => {
                self.endpoint = from;
                self.direct_rx += 1;
            }
            None => self.relay_rx += 1,
        }
        match kind {
            WgKind::HandshakeInit if replies => self.handshakes += 1,
            WgKind::HandshakeResponse => self.handshakes += 1,
            _ => {}
        }
        if replies {
            // Packets queued while the handshake ran go out now.
            while let TunnResult::WriteToNetwork(d) = self.tunn.decapsulate(None, &[], out) {
                let n = d.len();
                self.count_tx(n);
                emit(self, Output::Network(&out[..n]));
            }
        }
        result
    }

    /// An authenticated initiation whose TAI64N timestamp is not newer than
    /// the last one this peer sent: a replay, or the peer restarted with its
    /// wall clock behind (a WSL2 VM's clock lags after a long sleep until it
    /// is synced; a backward NTP step). WireGuard must refuse it, and the
    /// peer would then be locked out until its clock passes the old stamp:
    /// minutes, or hours after a forward jump was corrected. So we start a
    /// handshake ourselves, toward the peer's current destination: a
    /// restarted peer accepts ours (its new session has no old stamp), and
    /// a replay gets its sender nothing (we send nothing to it, and at most
    /// one initiation per REKEY_TIMEOUT goes to the real peer). The current
    /// session, if any, stays until the new one replaces it.
    fn answer_stale_initiation(
        &mut self,
        out: &mut [u8],
        emit: &mut impl FnMut(&Peer, Output<'_>),
    ) {
        if let TunnResult::WriteToNetwork(d) = self.tunn.format_handshake_initiation(out, false) {
            let n = d.len();
            self.count_tx(n);
            tracing::info!(peer = %self.name, "refused an initiation with an old timestamp (the peer restarted with its clock behind, or a replay); starting a handshake from this side");
            emit(self, Output::Initiate(&out[..n]));
        }
    }

    /// Time since the current session's handshake.
    pub fn last_handshake(&self) -> Option<Duration> {
        self.tunn.time_since_last_handshake()
    }

    /// The path MTU in use toward the peer's endpoint (whole IPv4 packets):
    /// `None` while relayed or not yet measured.
    pub fn path_mtu(&self) -> Option<u16> {
        match &self.pmtu {
            Some((ep, p)) if !self.relayed && *ep == self.endpoint => Some(p.path_mtu()),
            _ => None,
        }
    }

    pub fn status(&self) -> PeerStatus {
        PeerStatus {
            name: self.name.clone(),
            public_key: encode_key(&self.public_key),
            subnet: self.subnet,
            endpoint: self.endpoint.to_string(),
            last_handshake_secs: self.last_handshake().map(|d| d.as_secs()),
            handshakes: self.handshakes,
            rx_bytes: self.rx_bytes,
            tx_bytes: self.tx_bytes,
            rx_packets: Some(self.rx_packets),
            tx_packets: Some(self.tx_packets),
            path: self.path.map(|p| p.as_str().to_string()),
            node_id: self.node_id,
            path_mtu: self.path_mtu(),
            path_note: None,
        }
    }
}

/// The IPv4 destination of a packet read from the TUN device.
#[inline]
pub fn ipv4_dst(packet: &[u8]) -> Option<Ipv4Addr> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let b: [u8; 4] = packet[16..20].try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use mock_instant::MockClock;

    use super::*;
    use crate::dataplane::classify::{classify, Datagram};

    struct Pair {
        a: Peer,
        b: Peer,
    }

    const A_ADDR: &str = "192.168.77.1:51820";
    const B_ADDR: &str = "192.168.77.2:51820";

    fn cfg(name: &str, key: &Identity, subnet: &str, ep: &str) -> PeerConfig {
        PeerConfig {
            name: name.into(),
            public_key: key.public_bytes(),
            endpoint: ep.parse().unwrap(),
            subnet: subnet.parse().unwrap(),
            node_id: None,
            member: false,
            also: vec![],
        }
    }

    /// Host A (10.87.1.0/24) and host B (10.87.2.0/24), each holding the
    /// other as a peer.
    fn pair(keepalive: u16) -> Pair {
        let ka = Identity::generate().unwrap();
        let kb = Identity::generate().unwrap();
        Pair {
            a: Peer::new(&ka, &cfg("b", &kb, "10.87.2.0/24", B_ADDR), keepalive, 1),
            b: Peer::new(&kb, &cfg("a", &ka, "10.87.1.0/24", A_ADDR), keepalive, 2),
        }
    }

    fn kind(d: &[u8]) -> WgKind {
        match classify(d) {
            Datagram::WireGuard(k) => k,
            other => panic!("not wireguard: {other:?}"),
        }
    }

    type Delivered = (Result<(), PeerError>, Vec<Vec<u8>>, Vec<Vec<u8>>);

    /// Deliver a datagram to `to`, collecting what it emits.
    fn deliver(to: &mut Peer, from: &str, d: &[u8]) -> Delivered {
        let mut out = vec![0u8; 2048];
        let (mut net, mut tun) = (vec![], vec![]);
        let r = to.decapsulate(
            from.parse::<SocketAddr>().unwrap(),
            kind(d),
            d,
            &mut out,
            |_, o| match o {
                Output::Network(x) | Output::Initiate(x) => net.push(x.to_vec()),
                Output::Tunnel(x) => tun.push(x.to_vec()),
            },
        );
        (r, net, tun)
    }

    fn ipv4(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        let len = (20 + payload.len()) as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src.parse::<Ipv4Addr>().unwrap().octets());
        p[16..20].copy_from_slice(&dst.parse::<Ipv4Addr>().unwrap().octets());
        p.extend_from_slice(payload);
        p
    }

    /// Handshake A -> B; returns the data packet that was queued behind it.
    fn handshake(p: &mut Pair) -> Vec<u8> {
        let mut out = vec![0u8; 2048];
        let pkt = ipv4("10.87.1.2", "10.87.2.2", b"first");
        let n = p.a.encapsulate(&pkt, &mut out).unwrap();
        let init = out[..n].to_vec();
        assert_eq!(kind(&init), WgKind::HandshakeInit);
        let (r, net, tun) = deliver(&mut p.b, A_ADDR, &init);
        r.unwrap();
        assert!(tun.is_empty());
        assert_eq!(net.len(), 1);
        assert_eq!(kind(&net[0]), WgKind::HandshakeResponse);
        let (r, net, _) = deliver(&mut p.a, B_ADDR, &net[0]);
        r.unwrap();
        // A keepalive confirms the session, then the queued packet leaves.
        assert_eq!(net.len(), 2, "keepalive and the queued packet");
        assert_eq!(net[0].len(), DATA_OVERHEAD);
        assert_eq!(kind(&net[1]), WgKind::Data);
        net[1].clone()
    }

    #[test]
    fn handshake_then_data_both_ways() {
        let mut p = pair(0);
        let first = handshake(&mut p);
        let (r, _, tun) = deliver(&mut p.b, A_ADDR, &first);
        r.unwrap();
        assert_eq!(tun, vec![ipv4("10.87.1.2", "10.87.2.2", b"first")]);
        assert_eq!((p.a.handshakes, p.b.handshakes), (1, 1));
        assert!(p.a.last_handshake().is_some() && p.b.last_handshake().is_some());

        let mut out = vec![0u8; 2048];
        let back = ipv4("10.87.2.2", "10.87.1.2", b"reply");
        let n = p.b.encapsulate(&back, &mut out).unwrap();
        assert!(n >= back.len() + DATA_OVERHEAD);
        assert!(
            !out[..n].windows(5).any(|w| w == b"reply"),
            "ciphertext leaks plaintext"
        );
        let (r, _, tun) = deliver(&mut p.a, B_ADDR, &out[..n]);
        r.unwrap();
        assert_eq!(tun, vec![back]);
        assert!(p.a.rx_bytes > 0 && p.a.tx_bytes > 0);
    }

    #[test]
    fn an_initiation_with_an_old_timestamp_is_refused_and_answered_with_ours_toward_the_peer() {
        let mut p = pair(0);
        let mut out = vec![0u8; 2048];
        let pkt = ipv4("10.87.1.2", "10.87.2.2", b"first");
        let n = p.a.encapsulate(&pkt, &mut out).unwrap();
        let init = out[..n].to_vec();
        let (r, net, _) = deliver(&mut p.b, A_ADDR, &init);
        r.unwrap();
        let (r, net, _) = deliver(&mut p.a, B_ADDR, &net[0]);
        r.unwrap();
        let data = net[1].clone();
        // The same initiation again (a replay, or A restarted with its clock
        // behind): refused, and B starts a handshake of its own, emitted
        // for B's idea of A's destination, not for the sender.
        let mut initiations = vec![];
        let mut replies = vec![];
        let r = p.b.decapsulate(
            "203.0.113.99:4444".parse().unwrap(),
            WgKind::HandshakeInit,
            &init,
            &mut out,
            |_, o| match o {
                Output::Initiate(x) => initiations.push(x.to_vec()),
                Output::Network(x) => replies.push(x.to_vec()),
                Output::Tunnel(_) => {}
            },
        );
        assert!(
            matches!(r, Err(PeerError::Wg(WireGuardError::WrongTai64nTimestamp))),
            "{r:?}"
        );
        assert!(replies.is_empty(), "nothing goes back to the sender");
        assert_eq!(initiations.len(), 1);
        assert_eq!(kind(&initiations[0]), WgKind::HandshakeInit);
        assert_eq!(
            p.b.endpoint,
            A_ADDR.parse().unwrap(),
            "the endpoint stays put"
        );
        // A accepts B's initiation (a restarted A has no stamp of B's).
        let (r, net, _) = deliver(&mut p.a, B_ADDR, &initiations[0]);
        r.unwrap();
        assert_eq!(kind(&net[0]), WgKind::HandshakeResponse);
        // The session in use still carries A's data meanwhile.
        let (r, _, tun) = deliver(&mut p.b, A_ADDR, &data);
        r.unwrap();
        assert_eq!(tun, vec![pkt]);
        // Another replay right away: refused, and no second initiation
        // (ours is in progress), so replays cannot make B flood A.
        let mut again = 0;
        let r = p.b.decapsulate(
            A_ADDR.parse().unwrap(),
            WgKind::HandshakeInit,
            &init,
            &mut out,
            |_, o| {
                if let Output::Initiate(_) = o {
                    again += 1;
                }
            },
        );
        assert!(r.is_err());
        assert_eq!(again, 0);
    }

    /// Deliver a relayed datagram from node `src` to `to`.
    fn deliver_relayed(to: &mut Peer, src: u32, d: &[u8]) -> Delivered {
        let mut out = vec![0u8; 2048];
        let (mut net, mut tun) = (vec![], vec![]);
        let r = to.decapsulate_relayed(src, kind(d), d, &mut out, |_, o| match o {
            Output::Network(x) | Output::Initiate(x) => net.push(x.to_vec()),
            Output::Tunnel(x) => tun.push(x.to_vec()),
        });
        (r, net, tun)
    }

    #[test]
    fn under_load_a_relayed_peer_gets_a_cookie_and_its_retry_passes() {
        let ka = Identity::generate().unwrap();
        let kb = Identity::generate().unwrap();
        // B's limiter is always under load.
        let loaded = Arc::new(RateLimiter::new(&kb.public, 0));
        let mut a = Peer::new(&ka, &cfg("b", &kb, "10.87.2.0/24", B_ADDR), 0, 1);
        let mut b = Peer::with_limiter(
            &kb,
            &cfg("a", &ka, "10.87.1.0/24", A_ADDR),
            0,
            2,
            Some(loaded),
        );
        let mut out = vec![0u8; 2048];
        let n = a.probe(&mut out).unwrap();
        let (r, net, _) = deliver_relayed(&mut b, 1, &out[..n]);
        r.unwrap();
        assert_eq!(net.len(), 1);
        assert_eq!(
            kind(&net[0]),
            WgKind::CookieReply,
            "a cookie, not UnderLoad"
        );
        let (r, _, _) = deliver_relayed(&mut a, 2, &net[0]);
        r.unwrap();
        let n = a.probe(&mut out).unwrap();
        let (r, net, _) = deliver_relayed(&mut b, 1, &out[..n]);
        r.unwrap();
        assert_eq!(kind(&net[0]), WgKind::HandshakeResponse);
        // The cookie was for node 1's stand-in address: node 3 relaying the
        // same packet gets only a cookie of its own.
        let n = a.probe(&mut out).unwrap();
        let (_, net, _) = deliver_relayed(&mut b, 3, &out[..n]);
        assert_eq!(kind(&net[0]), WgKind::CookieReply);
    }

    #[test]
    fn replayed_data_is_rejected() {
        let mut p = pair(0);
        let first = handshake(&mut p);
        deliver(&mut p.b, A_ADDR, &first).0.unwrap();
        let rx = p.b.rx_bytes;
        let (r, net, tun) = deliver(&mut p.b, "203.0.113.9:4444", &first);
        assert!(matches!(r, Err(PeerError::Wg(_))), "{r:?}");
        assert!(net.is_empty() && tun.is_empty());
        assert_eq!(p.b.rx_bytes, rx, "rejected datagrams are not counted");
        assert_eq!(
            p.b.endpoint,
            A_ADDR.parse().unwrap(),
            "replay must not move the endpoint"
        );
    }

    #[test]
    fn garbage_and_tampering_are_rejected() {
        let mut p = pair(0);
        let first = handshake(&mut p);
        let mut bad = first.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(deliver(&mut p.b, A_ADDR, &bad).0.is_err());
        let mut junk = vec![0x55u8; 148];
        junk[0] = 1;
        junk[1..4].fill(0);
        assert!(deliver(&mut p.b, A_ADDR, &junk).0.is_err());
        // The session still works after the garbage.
        let (r, _, tun) = deliver(&mut p.b, A_ADDR, &first);
        r.unwrap();
        assert_eq!(tun.len(), 1);
    }

    #[test]
    fn inner_source_outside_allowed_ips_is_dropped() {
        let mut p = pair(0);
        let first = handshake(&mut p);
        deliver(&mut p.b, A_ADDR, &first).0.unwrap();
        let mut out = vec![0u8; 2048];
        let spoof = ipv4("10.87.9.9", "10.87.2.2", b"spoof");
        let n = p.a.encapsulate(&spoof, &mut out).unwrap();
        let (r, _, tun) = deliver(&mut p.b, A_ADDR, &out[..n]);
        assert!(matches!(r, Err(PeerError::NotAllowed(..))), "{r:?}");
        assert!(tun.is_empty());
    }

    #[test]
    fn authenticated_packets_move_the_endpoint() {
        let mut p = pair(0);
        let first = handshake(&mut p);
        deliver(&mut p.b, "192.168.77.50:6000", &first).0.unwrap();
        assert_eq!(p.b.endpoint, "192.168.77.50:6000".parse().unwrap());
    }

    #[test]
    fn persistent_keepalive_fires_on_the_timer() {
        let mut p = pair(25);
        let first = handshake(&mut p);
        deliver(&mut p.b, A_ADDR, &first).0.unwrap();
        let mut out = vec![0u8; 2048];
        // Quiet period shorter than the interval: nothing to send.
        MockClock::advance(Duration::from_secs(5));
        assert_eq!(p.a.tick(&mut out), None);
        MockClock::advance(Duration::from_secs(21));
        let n = p.a.tick(&mut out).expect("keepalive due after 25 s");
        assert_eq!(n, DATA_OVERHEAD, "a keepalive is an empty data message");
        let ka = out[..n].to_vec();
        let (r, net, tun) = deliver(&mut p.b, A_ADDR, &ka);
        r.unwrap();
        assert!(net.is_empty() && tun.is_empty(), "keepalives carry nothing");
    }

    #[test]
    fn unanswered_handshake_is_retransmitted() {
        let mut p = pair(0);
        let mut out = vec![0u8; 2048];
        p.a.initiate(&mut out).unwrap();
        assert_eq!(p.a.tick(&mut out), None);
        MockClock::advance(Duration::from_secs(6));
        let n = p.a.tick(&mut out).expect("retransmit after REKEY_TIMEOUT");
        assert_eq!(kind(&out[..n]), WgKind::HandshakeInit);
    }

    #[test]
    fn ipv4_dst_parses_only_ipv4() {
        assert_eq!(
            ipv4_dst(&ipv4("10.87.1.2", "10.87.2.3", b"")),
            Some(Ipv4Addr::new(10, 87, 2, 3))
        );
        assert_eq!(ipv4_dst(&[0x60; 40]), None);
        assert_eq!(ipv4_dst(&[0x45; 10]), None);
    }
}
