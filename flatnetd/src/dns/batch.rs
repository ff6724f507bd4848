//! Batched UDP I/O for the DNS server: `recvmmsg(2)` takes every query
//! already queued (blocking only for the first), `sendmmsg(2)` sends the
//! answers in one call. Under load this trades a wake-up and two system
//! calls per query for a few per batch; with one query at a time it behaves
//! like `recvfrom`/`sendto`. IPv4 only, as the server's sockets are.

use std::{
    io,
    mem::{size_of, zeroed},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::RawFd,
    ptr::null_mut,
};

/// Queries taken per `recvmmsg`.
pub const BATCH: usize = 32;
/// Largest query accepted; longer datagrams are marked truncated and
/// dropped (a real query is a few hundred bytes at most).
pub const MAX_QUERY: usize = 4096;

/// Receive buffers, addresses and the kernel headers pointing at them.
/// Allocated once; the pointers inside stay valid because nothing is
/// resized after [`Batch::new`].
pub struct Batch {
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    filled: usize,
}

// SAFETY: the raw pointers only point into the struct's own heap buffers.
unsafe impl Send for Batch {}

fn v4(sa: &libc::sockaddr_in) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    ))
}

fn sockaddr(a: &SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = a.port().to_be();
    sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
    sa
}

impl Batch {
    pub fn new() -> Self {
        let mut b = Batch {
            bufs: vec![0u8; BATCH * MAX_QUERY],
            // SAFETY: plain old data, zero is valid.
            names: vec![unsafe { zeroed() }; BATCH],
            iovs: Vec::with_capacity(BATCH),
            hdrs: Vec::with_capacity(BATCH),
            filled: 0,
        };
        for i in 0..BATCH {
            b.iovs.push(libc::iovec {
                iov_base: b.bufs[i * MAX_QUERY..].as_mut_ptr().cast(),
                iov_len: MAX_QUERY,
            });
        }
        for i in 0..BATCH {
            // SAFETY: plain old data, zero is valid; pointers set below.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = (&mut b.names[i] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut b.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            b.hdrs.push(h);
        }
        b
    }

    /// Block until at least one query arrives, then take all that are
    /// queued (up to [`BATCH`]). Returns how many.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points at buffers owned by self, sized as
        // declared; the kernel writes at most that much.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                null_mut(),
            )
        };
        if n < 0 {
            self.filled = 0;
            return Err(io::Error::last_os_error());
        }
        self.filled = n as usize;
        Ok(self.filled)
    }

    /// Query `i` of the last [`Batch::recv`] and its sender; `None` when it
    /// was longer than [`MAX_QUERY`] or not from an IPv4 address.
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.filled {
            return None;
        }
        let h = &self.hdrs[i];
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return None;
        }
        let name = &self.names[i];
        if i32::from(name.sin_family) != libc::AF_INET {
            return None;
        }
        let len = (h.msg_len as usize).min(MAX_QUERY);
        Some((&self.bufs[i * MAX_QUERY..i * MAX_QUERY + len], v4(name)))
    }
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

/// Send every `(answer, client)` with as few `sendmmsg` calls as it takes.
/// A datagram the kernel refuses is skipped, as a lost UDP answer would be.
pub fn send_all(fd: RawFd, out: &[(Vec<u8>, SocketAddr)]) {
    let v4s: Vec<(usize, libc::sockaddr_in)> = out
        .iter()
        .enumerate()
        .filter_map(|(i, (_, a))| match a {
            SocketAddr::V4(a) => Some((i, sockaddr(a))),
            SocketAddr::V6(_) => None,
        })
        .collect();
    let mut names: Vec<libc::sockaddr_in> = v4s.iter().map(|(_, s)| *s).collect();
    let mut iovs: Vec<libc::iovec> = v4s
        .iter()
        .map(|(i, _)| libc::iovec {
            iov_base: out[*i].0.as_ptr() as *mut libc::c_void,
            iov_len: out[*i].0.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = (0..v4s.len())
        .map(|k| {
            // SAFETY: plain old data, zero is valid; pointers set next.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = (&mut names[k] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut iovs[k];
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let mut sent = 0;
    while sent < hdrs.len() {
        let rest = &mut hdrs[sent..];
        // SAFETY: the headers point at `names`, `iovs` and `out`, all alive
        // and unchanged for the duration of the call.
        let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
        if n <= 0 {
            // Skip the datagram the kernel refused and go on with the rest.
            sent += 1;
        } else {
            sent += n as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn a_batch_of_queries_in_and_answers_out() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        for i in 0..5u8 {
            client.send_to(&[i; 10], to).unwrap();
        }
        client.send_to(&vec![9u8; MAX_QUERY + 10], to).unwrap();
        let mut b = Batch::new();
        let mut got = Vec::new();
        while got.len() < 6 {
            let n = b.recv(server.as_raw_fd()).unwrap();
            for i in 0..n {
                got.push(b.get(i).map(|(q, from)| (q.to_vec(), from)));
            }
        }
        assert_eq!(got[0].as_ref().unwrap().0, vec![0u8; 10]);
        assert_eq!(got[4].as_ref().unwrap().1, client.local_addr().unwrap());
        assert!(got[5].is_none(), "an oversized datagram is dropped");
        let answers: Vec<(Vec<u8>, SocketAddr)> = got[..5]
            .iter()
            .flatten()
            .map(|(q, from)| (q.iter().map(|x| x + 1).collect(), *from))
            .collect();
        send_all(server.as_raw_fd(), &answers);
        let mut buf = [0u8; 64];
        for i in 0..5u8 {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i + 1; 10]);
        }
    }
}
