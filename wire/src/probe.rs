//! Small UDP messages on the WireGuard port that are not WireGuard: path
//! MTU probes and their acks (between peers, and toward the Lighthouse's
//! netcheck port), and netcheck's observe/reach requests and replies
//! (toward the Lighthouse). Shared by flatnetd's data plane and the
//! Lighthouse's netcheck responder. Sans-IO.
//!
//! Every message starts with a type byte and three zero bytes, like
//! WireGuard's own (types 1..=4) and unlike QUIC (first byte >= 0x40), so
//! the data plane tells them apart from the header alone:
//! ```text
//! MTU probe:  0x20 0 0 0 | nonce u64 LE | size u16 LE | zero padding   (size - 28 bytes in all)
//! MTU ack:    0x21 0 0 0 | nonce u64 LE | size u16 LE                  (14 bytes)
//! request:    0x22 0 0 0 | nonce u64 LE | kind u8 | zero padding       (19 bytes)
//! reply:      0x23 0 0 0 | nonce u64 LE | kind u8 | IPv4 | port u16 LE (19 bytes)
//! ```
//! `size` is the whole IPv4 packet the probe travels in. A request is as
//! long as its reply, and an ack is shorter than its probe: no message
//! makes its answerer send more than it received.

use std::net::{Ipv4Addr, SocketAddrV4};

pub const PROBE: u8 = 0x20;
pub const ACK: u8 = 0x21;
pub const REQUEST: u8 = 0x22;
pub const REPLY: u8 = 0x23;
/// IPv4 (20) + UDP (8) headers.
pub const IP_UDP: u16 = 28;
/// IPv4's minimum reassembly size: no path is assumed narrower.
pub const MIN_MTU: u16 = 576;
pub const MAX_MTU: u16 = 9000;
const HEADER: usize = 14;
/// Netcheck requests and replies.
pub const NETCHECK_LEN: usize = 19;

/// What a netcheck request asks the Lighthouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// "Which address and port do you see me at?" Answered from the port
    /// that received it.
    Observe,
    /// "Send to me from a port I never sent to": answered from another
    /// port, so the reply only arrives if this host's port takes datagrams
    /// from strangers (no NAT, or a full-cone one).
    Reach,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Observe => 1,
            Kind::Reach => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Observe),
            2 => Some(Kind::Reach),
            _ => None,
        }
    }
}

/// Parse an MTU probe: `(nonce, size)` when its length matches its size.
pub fn parse_probe(d: &[u8]) -> Option<(u64, u16)> {
    let (nonce, size) = header(d, PROBE)?;
    (usize::from(size) == d.len() + usize::from(IP_UDP)).then_some((nonce, size))
}

/// Parse an MTU ack: `(nonce, size)`.
pub fn parse_ack(d: &[u8]) -> Option<(u64, u16)> {
    if d.len() != HEADER {
        return None;
    }
    header(d, ACK)
}

fn header(d: &[u8], kind: u8) -> Option<(u64, u16)> {
    if d.len() < HEADER || d[..4] != [kind, 0, 0, 0] {
        return None;
    }
    let nonce = u64::from_le_bytes(d[4..12].try_into().ok()?);
    let size = u16::from_le_bytes([d[12], d[13]]);
    (MIN_MTU..=MAX_MTU).contains(&size).then_some((nonce, size))
}

/// Write an MTU probe of `size` (whole IPv4 packet) into `out`; returns its
/// length, or `None` if `out` is too short or the size out of range.
pub fn write_probe(nonce: u64, size: u16, out: &mut [u8]) -> Option<usize> {
    if !(MIN_MTU..=MAX_MTU).contains(&size) {
        return None;
    }
    let n = usize::from(size - IP_UDP);
    let b = out.get_mut(..n)?;
    b.fill(0);
    b[0] = PROBE;
    b[4..12].copy_from_slice(&nonce.to_le_bytes());
    b[12..14].copy_from_slice(&size.to_le_bytes());
    Some(n)
}

/// The ack for an MTU probe.
pub fn ack(nonce: u64, size: u16) -> [u8; HEADER] {
    let mut b = [0u8; HEADER];
    b[0] = ACK;
    b[4..12].copy_from_slice(&nonce.to_le_bytes());
    b[12..14].copy_from_slice(&size.to_le_bytes());
    b
}

/// A netcheck request.
pub fn request(nonce: u64, kind: Kind) -> [u8; NETCHECK_LEN] {
    let mut b = [0u8; NETCHECK_LEN];
    b[0] = REQUEST;
    b[4..12].copy_from_slice(&nonce.to_le_bytes());
    b[12] = kind.byte();
    b
}

/// Parse a netcheck request: `(nonce, kind)`.
pub fn parse_request(d: &[u8]) -> Option<(u64, Kind)> {
    if d.len() != NETCHECK_LEN || d[..4] != [REQUEST, 0, 0, 0] || d[13..] != [0; 6] {
        return None;
    }
    Some((
        u64::from_le_bytes(d[4..12].try_into().ok()?),
        Kind::from_byte(d[12])?,
    ))
}

/// The reply to a request from `seen` (the address the request came from).
pub fn reply(nonce: u64, kind: Kind, seen: SocketAddrV4) -> [u8; NETCHECK_LEN] {
    let mut b = [0u8; NETCHECK_LEN];
    b[0] = REPLY;
    b[4..12].copy_from_slice(&nonce.to_le_bytes());
    b[12] = kind.byte();
    b[13..17].copy_from_slice(&seen.ip().octets());
    b[17..19].copy_from_slice(&seen.port().to_le_bytes());
    b
}

/// Parse a netcheck reply: `(nonce, kind, seen)`.
pub fn parse_reply(d: &[u8]) -> Option<(u64, Kind, SocketAddrV4)> {
    if d.len() != NETCHECK_LEN || d[..4] != [REPLY, 0, 0, 0] {
        return None;
    }
    let ip = Ipv4Addr::new(d[13], d[14], d[15], d[16]);
    let port = u16::from_le_bytes([d[17], d[18]]);
    Some((
        u64::from_le_bytes(d[4..12].try_into().ok()?),
        Kind::from_byte(d[12])?,
        SocketAddrV4::new(ip, port),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netcheck_messages_round_trip_and_never_amplify() {
        let seen: SocketAddrV4 = "203.0.113.11:51820".parse().expect("addr");
        for kind in [Kind::Observe, Kind::Reach] {
            let q = request(7, kind);
            assert_eq!(parse_request(&q), Some((7, kind)));
            let r = reply(7, kind, seen);
            assert!(
                r.len() <= q.len(),
                "a reply is never longer than its request"
            );
            assert_eq!(parse_reply(&r), Some((7, kind, seen)));
            assert_eq!(parse_request(&r), None);
            assert_eq!(parse_reply(&q), None);
        }
        let mut bad = request(7, Kind::Observe);
        bad[12] = 9;
        assert_eq!(parse_request(&bad), None, "unknown kind");
        let mut bad = request(7, Kind::Observe);
        bad[15] = 1;
        assert_eq!(parse_request(&bad), None, "padding must be zero");
        assert_eq!(parse_request(&request(7, Kind::Observe)[..18]), None);
        assert_eq!(parse_reply(&[]), None);
    }

    #[test]
    fn probes_and_acks() {
        let mut buf = [0u8; 2000];
        let n = write_probe(5, 1400, &mut buf).expect("fits");
        assert_eq!(n, 1372);
        assert_eq!(parse_probe(&buf[..n]), Some((5, 1400)));
        assert_eq!(parse_probe(&buf[..n - 1]), None, "length must match size");
        assert_eq!(parse_ack(&ack(5, 1400)), Some((5, 1400)));
        assert!(ack(5, 1400).len() < n);
        assert_eq!(write_probe(5, 100, &mut buf), None);
    }
}
