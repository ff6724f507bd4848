//! The I/O edge of path MTU probing: sends a peer's probes, answers the
//! probes of peers, and feeds acks to the [`pmtu::Prober`] of the peer they
//! came from. Called by the data plane's timer and receive threads.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Instant,
};

use tracing::{debug, info};

use super::{
    peer::Peer,
    peers::{lock, PeerSet},
    pmtu::{self, Prober},
    udp,
};

/// One timer step for `peer`: (re)start probing when its endpoint moved or,
/// when `recheck`, the local route's MTU toward it changed; then send the
/// probes that are due. Relayed peers have no direct path to measure.
pub fn tick(sock: &UdpSocket, peer: &mut Peer, now: Instant, recheck: bool, buf: &mut [u8]) {
    // A remote member runs a stock WireGuard app, which answers no probes.
    if peer.relayed || peer.member {
        return;
    }
    let ep = peer.endpoint;
    let stale = match &peer.pmtu {
        Some((e, _)) => *e != ep,
        None => true,
    };
    if stale || recheck {
        // No route toward the endpoint (yet): try again on a later tick.
        let Ok(ceiling) = udp::route_mtu(ep) else {
            return;
        };
        let same = matches!(&peer.pmtu, Some((e, p)) if *e == ep && p.ceiling() == ceiling);
        if !same {
            if let Some((_, p)) = &peer.pmtu {
                info!(peer = %peer.name, endpoint = %ep, old = p.path_mtu(), ceiling,
                    "path to peer changed; measuring its MTU again");
            }
            peer.pmtu = Some((ep, Prober::new(ceiling, now)));
        }
    }
    let Some((_, prober)) = &mut peer.pmtu else {
        return;
    };
    let before = (prober.path_mtu(), prober.confirmed());
    let probes = prober.poll(now, nonce());
    let after = (prober.path_mtu(), prober.confirmed());
    if after.1 && before != after {
        info!(peer = %peer.name, endpoint = %ep, path_mtu = after.0, "path MTU measured");
    }
    for p in probes {
        if let Some(n) = pmtu::write_probe(p.nonce, p.size, buf) {
            // EMSGSIZE: the local route shrank under us; the next recheck
            // lowers the ceiling.
            if let Err(e) = sock.send_to(&buf[..n], ep) {
                debug!(peer = %peer.name, size = p.size, "MTU probe not sent: {e}");
            }
        }
    }
}

/// A probe arrived: answer it if it came from a current peer's endpoint
/// (never a reflector for anyone else), with an ack smaller than the probe.
pub fn on_probe(sock: &UdpSocket, set: &PeerSet, from: SocketAddr, d: &[u8]) -> bool {
    let Some((nonce, size)) = pmtu::parse_probe(d) else {
        return false;
    };
    if !set.peers().iter().any(|p| lock(p).endpoint == from) {
        return false;
    }
    if let Err(e) = sock.send_to(&pmtu::ack(nonce, size), from) {
        debug!(%from, "MTU probe ack not sent: {e}");
    }
    true
}

/// An ack arrived: hand it to the prober of the peer at `from`.
pub fn on_ack(set: &PeerSet, from: SocketAddr, d: &[u8]) -> bool {
    let Some((nonce, size)) = pmtu::parse_ack(d) else {
        return false;
    };
    set.peers().iter().any(|p| {
        let mut g = lock(p);
        match &mut g.pmtu {
            Some((ep, prober)) if *ep == from => prober.on_ack(nonce, size),
            _ => false,
        }
    })
}

/// A random probe nonce (also netcheck's).
pub(crate) fn nonce() -> u64 {
    let mut b = [0u8; 8];
    // A failure leaves zeros, which only makes the nonce guessable by an
    // on-path observer, who sees the probes anyway.
    super::userspace::getrandom(&mut b);
    u64::from_le_bytes(b)
}
