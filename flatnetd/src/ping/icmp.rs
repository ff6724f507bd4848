//! ICMP echo through the tunnel, for `flatnetctl ping`: building and
//! matching echo messages (pure), and one round trip on a raw socket bound
//! to this host's gateway address, so the request leaves through the
//! Flatnet's TUN device and the reply comes back through it.
//!
//! iproute2/iputils equivalent: `ping -c1 -W1 -I <gateway> <target>`.

use std::{
    io,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use nix::sys::socket::{
    bind, recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag,
    SockProtocol, SockType, SockaddrIn,
};

const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
/// Payload after the 8-byte header: a marker, so stray replies never match.
const MARK: &[u8; 8] = b"flatnet!";

/// The Internet checksum (RFC 1071).
pub fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in b.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request with identifier `id` and sequence `seq`.
pub fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![ECHO_REQUEST, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(MARK);
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// Whether `packet` (an IPv4 packet as a raw socket delivers it) is the
/// reply to our request `(id, seq)` from `from`.
pub fn is_reply(packet: &[u8], from: Ipv4Addr, id: u16, seq: u16) -> bool {
    let Some(&vihl) = packet.first() else {
        return false;
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 || packet.len() < ihl + 16 || packet[9] != 1 {
        return false;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let m = &packet[ihl..];
    src == from
        && m[0] == ECHO_REPLY
        && m[4..6] == id.to_be_bytes()
        && m[6..8] == seq.to_be_bytes()
        && m[8..16] == MARK[..]
}

/// One echo from `src` (an address of this host) to `dst`; the round-trip
/// time, or `Ok(None)` after `timeout` without a reply.
pub fn echo(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    seq: u16,
    timeout: Duration,
) -> io::Result<Option<Duration>> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Icmp,
    )?;
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(src, 0)),
    )?;
    let to = SockaddrIn::from(std::net::SocketAddrV4::new(dst, 0));
    let started = Instant::now();
    sendto(
        fd.as_raw_fd(),
        &echo_request(id, seq),
        &to,
        MsgFlags::empty(),
    )?;
    let mut buf = [0u8; 1500];
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Ok(None);
        }
        let tv =
            nix::sys::time::TimeVal::new(left.as_secs() as _, left.subsec_micros().max(1) as _);
        setsockopt(&fd, sockopt::ReceiveTimeout, &tv)?;
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) if is_reply(&buf[..n], dst, id, seq) => return Ok(Some(started.elapsed())),
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_for(req: &[u8], from: Ipv4Addr) -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        ip.extend_from_slice(&from.octets());
        ip.extend_from_slice(&[10, 87, 1, 1]);
        let mut m = req.to_vec();
        m[0] = ECHO_REPLY;
        m[2..4].copy_from_slice(&[0, 0]);
        let c = checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        ip.extend_from_slice(&m);
        ip
    }

    #[test]
    fn requests_checksum_to_zero_and_replies_match_exactly() {
        let req = echo_request(0x1234, 7);
        assert_eq!(checksum(&req), 0, "a valid message sums to zero");
        let peer = Ipv4Addr::new(10, 87, 2, 1);
        let r = reply_for(&req, peer);
        assert!(is_reply(&r, peer, 0x1234, 7));
        assert!(
            !is_reply(&r, Ipv4Addr::new(10, 87, 3, 1), 0x1234, 7),
            "other source"
        );
        assert!(!is_reply(&r, peer, 0x1234, 8), "other sequence");
        assert!(!is_reply(&r, peer, 0x1235, 7), "other identifier");
        assert!(!is_reply(&r[..30], peer, 0x1234, 7), "truncated");
        assert!(!is_reply(&[], peer, 0x1234, 7));
        let mut req_echoed = r.clone();
        req_echoed[20] = ECHO_REQUEST;
        assert!(
            !is_reply(&req_echoed, peer, 0x1234, 7),
            "a request is no reply"
        );
    }
}
