//! Event counters the rest of flatnetd bumps as things happen: drops by
//! reason, relay traffic, punching, Lighthouse sessions, API requests and
//! DNS. One process-wide set ([`counters`]), always counting: an atomic add
//! costs nothing next to a syscall, and the counts are right from the start
//! whether or not anybody scrapes them. Per-peer traffic is not here: the
//! data plane already counts it per peer, and the collector reads it at
//! scrape time.

use std::sync::{atomic::AtomicU64, LazyLock};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

/// Why the data plane dropped a datagram or packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Not WireGuard, QUIC or an MTU probe, or a malformed probe.
    Junk,
    /// A WireGuard message no peer owns (unknown key or receiver index).
    UnknownPeer,
    /// A handshake refused by the rate limiter, MAC1 or a node's budget.
    HandshakeLimited,
    /// Failed authentication, replayed or out of its window.
    Invalid,
    /// Decrypted, but its source is outside the sending peer's subnet.
    NotAllowed,
    /// An IPv6 packet (Flatnet carries IPv4).
    Ipv6,
    /// A packet from a container toward an address no peer serves.
    NoRoute,
    /// A relayed datagram while no Lighthouse session carries the relay.
    NoRelay,
    /// A relayed datagram from a node that is not the peer it claims.
    WrongRelaySource,
    /// The TUN device refused a decrypted packet.
    TunWrite,
    /// The UDP socket refused a datagram.
    UdpSend,
    /// From a remote member, and its policy does not allow it.
    Policy,
}

impl Drop {
    pub const ALL: [Drop; 12] = [
        Drop::Junk,
        Drop::UnknownPeer,
        Drop::HandshakeLimited,
        Drop::Invalid,
        Drop::NotAllowed,
        Drop::Ipv6,
        Drop::NoRoute,
        Drop::NoRelay,
        Drop::WrongRelaySource,
        Drop::TunWrite,
        Drop::UdpSend,
        Drop::Policy,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::Junk => "junk",
            Drop::UnknownPeer => "unknown_peer",
            Drop::HandshakeLimited => "handshake_limited",
            Drop::Invalid => "invalid",
            Drop::NotAllowed => "not_allowed",
            Drop::Ipv6 => "ipv6",
            Drop::NoRoute => "no_route",
            Drop::NoRelay => "no_relay",
            Drop::WrongRelaySource => "wrong_relay_source",
            Drop::TunWrite => "tun_write",
            Drop::UdpSend => "udp_send",
            Drop::Policy => "policy",
        }
    }
}

/// One API request's labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ApiLabels {
    pub op: &'static str,
    pub result: &'static str,
}

/// One DNS answer's labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DnsLabels {
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// `noerror`, `nxdomain`, `servfail`, `refused`, `formerr`, ...
    pub rcode: String,
}

/// Every event counter of one flatnetd.
#[derive(Debug, Default)]
pub struct Counters {
    drops: [Counter<u64, AtomicU64>; Drop::ALL.len()],
    pub relay_tx_bytes: Counter,
    pub relay_tx_datagrams: Counter,
    pub relay_rx_bytes: Counter,
    pub relay_rx_datagrams: Counter,
    /// `Punch` requests sent to the Lighthouse.
    pub punch_requests: Counter,
    /// Path changes the punching logic made: to direct (a punch, or the
    /// first contact, worked) and to relay (it did not, or a direct path died).
    pub path_to_direct: Counter,
    pub path_to_relay: Counter,
    /// Authenticated Lighthouse sessions started, and ended.
    pub lh_sessions: Counter,
    pub lh_session_ends: Counter,
    pub api: Family<ApiLabels, Counter>,
    pub dns: Family<DnsLabels, Counter>,
}

impl Counters {
    /// Count one drop.
    #[inline]
    pub fn drop(&self, why: Drop) {
        self.drops[why as usize].inc();
    }

    /// Drops so far for one reason.
    pub fn drops(&self, why: Drop) -> u64 {
        self.drops[why as usize].get()
    }

    /// One DNS answer.
    pub fn dns_answer(&self, transport: &'static str, rcode: &str) {
        self.dns
            .get_or_create(&DnsLabels {
                transport,
                rcode: rcode.to_ascii_lowercase(),
            })
            .inc();
    }

    /// One API request and its outcome (`ok` or an error kind).
    pub fn api_request(&self, op: &'static str, result: &'static str) {
        self.api.get_or_create(&ApiLabels { op, result }).inc();
    }
}

static COUNTERS: LazyLock<Counters> = LazyLock::new(Counters::default);

/// This process's counters.
#[inline]
pub fn counters() -> &'static Counters {
    &COUNTERS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_own_counter() {
        let c = Counters::default();
        for (i, d) in Drop::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i, "{} is out of order", d.as_str());
        }
        c.drop(Drop::NoRoute);
        c.drop(Drop::NoRoute);
        c.drop(Drop::Junk);
        assert_eq!(c.drops(Drop::NoRoute), 2);
        assert_eq!(c.drops(Drop::Junk), 1);
        assert_eq!(c.drops(Drop::Invalid), 0);
    }
}
