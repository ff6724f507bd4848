//! The data plane's one UDP socket, shared by every peer (and later by the
//! Lighthouse's QUIC traffic, see [`super::classify`]), with the kernel's
//! UDP segmentation offloads:
//! - send: `UDP_SEGMENT` (GSO): one `sendmsg` carries up to 64 datagrams of
//!   the same size laid end to end; the kernel splits them as late as it can;
//! - receive: `UDP_GRO`: one `recvmsg` may return a run of same-size
//!   datagrams from one sender, with their size in a control message.

use std::{
    io,
    mem::{size_of, zeroed},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
};

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// The kernel's `UDP_MAX_SEGMENTS`.
pub const MAX_SEGMENTS: usize = 64;
/// Largest GSO send: one IPv4 datagram's worth of payload.
pub const MAX_GSO_BYTES: usize = 65_000;

pub(crate) fn setsockopt_int(
    s: &UdpSocket,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: an int option on our own socket.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            &v as *const _ as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bind `0.0.0.0:port` with generous buffers: the receive thread drains
/// bursts of a whole TCP window at once.
///
/// Datagrams leave with the don't-fragment bit (`IP_PMTUDISC_WANT`,
/// whatever `net.ipv4.ip_no_pmtu_disc` says): that is what makes the
/// path MTU probes ([`super::pmtu`]) measure the path rather than a
/// router's fragmentation; a datagram larger than the known path MTU is
/// still fragmented here rather than refused.
pub fn bind(port: u16) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // Best effort: capped by net.core.{r,w}mem_max.
        let _ = setsockopt_int(&s, libc::SOL_SOCKET, opt, 4 << 20);
    }
    setsockopt_int(
        &s,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_WANT,
    )?;
    Ok(s)
}

/// Ask for coalesced receives (`setsockopt(SOL_UDP, UDP_GRO, 1)`).
pub fn enable_gro(s: &UdpSocket) -> io::Result<()> {
    setsockopt_int(s, SOL_UDP, UDP_GRO, 1)
}

fn sockaddr_v4(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// The MTU of the local route toward `to`, as the kernel would use for a
/// datagram sent there (the route's `mtu`, else the device's, lowered by
/// any cached path MTU): `ip route get TO` then its device's MTU. Taken
/// from a throwaway connected socket (`getsockopt(IP_MTU)`); nothing is
/// sent.
pub fn route_mtu(to: SocketAddr) -> io::Result<u16> {
    let s = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
    s.connect(to)?;
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: an int option read from our own socket into a local.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU,
            &mut v as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u16::try_from(v).unwrap_or(u16::MAX))
}

/// Control-message buffer, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Cmsg([u8; 64]);

/// Send `buf` as datagrams of `seg` bytes each (the last may be shorter)
/// in one `sendmsg` with a `UDP_SEGMENT` control message.
pub fn send_gso(s: &UdpSocket, buf: &[u8], seg: u16, to: SocketAddr) -> io::Result<usize> {
    let SocketAddr::V4(to) = to else {
        return s.send_to(buf, to);
    };
    if buf.len() <= usize::from(seg) {
        return s.send_to(buf, to);
    }
    let mut name = sockaddr_v4(to);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut ctl = Cmsg([0; 64]);
    // SAFETY: msghdr/cmsghdr are filled per cmsg(3): the control buffer
    // is aligned and large enough for one CMSG_SPACE(sizeof(u16)).
    unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = &mut name as *mut _ as *mut libc::c_void;
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.0.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, seg);
        let r = libc::sendmsg(s.as_raw_fd(), &msg, 0);
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }
}

/// Receive into `buf`. Returns the length, the sender and, when the
/// kernel coalesced several datagrams, their size (`UDP_GRO`).
pub fn recv_gro(s: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<usize>)> {
    // SAFETY: as in send_gso; the kernel fills name and control buffers
    // within the lengths given, and we read them back within those lengths.
    unsafe {
        let mut name: libc::sockaddr_in = zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut ctl = Cmsg([0; 64]);
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = &mut name as *mut _ as *mut libc::c_void;
        msg.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.0.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = ctl.0.len() as _;
        let r = libc::recvmsg(s.as_raw_fd(), &mut msg, 0);
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let from = SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)),
            u16::from_be(name.sin_port),
        ));
        let mut seg = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                if v > 0 {
                    seg = Some(v as usize);
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((r as usize, from, seg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_mtu_of_loopback() {
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let m = route_mtu(to).unwrap();
        assert!(m >= 1280, "loopback mtu {m}");
    }

    /// Loopback only: GSO send, GRO (or plain) receive, same bytes back.
    #[test]
    fn gso_send_and_gro_receive_on_loopback() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let gro = enable_gro(&rx).is_ok();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = vec![0u8; 1000 * 3 + 500];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i / 1000) as u8;
        }
        let to = rx.local_addr().unwrap();
        send_gso(&tx, &buf, 1000, to).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut got = vec![];
        let mut rb = vec![0u8; 65536];
        while got.len() < buf.len() {
            let (n, from, seg) = recv_gro(&rx, &mut rb).unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            for d in rb[..n].chunks(seg.unwrap_or(n)) {
                assert!(d.len() <= 1000);
                got.extend_from_slice(d);
            }
        }
        assert_eq!(got, buf, "gro={gro}");
    }
}
