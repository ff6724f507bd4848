//! Link, address and route setup through classic `ioctl`s on an `AF_INET`
//! socket: IPv4-only and synchronous, which is all the data plane needs,
//! without an async netlink stack in its threads. Each function names its
//! iproute2 equivalent.

use std::{
    ffi::c_void,
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use ipnet::Ipv4Net;

/// `struct ifreq`: interface name plus a 24-byte union.
#[repr(C)]
pub(crate) struct IfReq {
    pub name: [u8; libc::IFNAMSIZ],
    pub data: [u8; 24],
}

impl IfReq {
    pub fn new(name: &str) -> io::Result<Self> {
        let b = name.as_bytes();
        if b.is_empty() || b.len() >= libc::IFNAMSIZ || b.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {name:?}"),
            ));
        }
        let mut r = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: [0; 24],
        };
        r.name[..b.len()].copy_from_slice(b);
        Ok(r)
    }
}

fn inet_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// ioctl(2) with a pointer argument on a throwaway `AF_INET` socket.
fn sock_ioctl(req: libc::c_ulong, arg: *mut c_void) -> io::Result<()> {
    let s = inet_socket()?;
    // SAFETY: callers pass a pointer to the struct type `req` expects.
    if unsafe { libc::ioctl(s.as_raw_fd(), req as _, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr_in(a: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn as_sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = sockaddr_in(a);
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes);
    // the kernel reads it back as sockaddr_in by its family.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// `ip link set dev NAME mtu MTU`
pub fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    let mut r = IfReq::new(name)?;
    r.data[..4].copy_from_slice(&(mtu as libc::c_int).to_ne_bytes());
    sock_ioctl(libc::SIOCSIFMTU, &mut r as *mut _ as *mut c_void)
}

/// `ip link set dev NAME up`
pub fn set_up(name: &str) -> io::Result<()> {
    let mut r = IfReq::new(name)?;
    sock_ioctl(libc::SIOCGIFFLAGS, &mut r as *mut _ as *mut c_void)?;
    let flags = libc::c_short::from_ne_bytes([r.data[0], r.data[1]])
        | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    r.data[..2].copy_from_slice(&flags.to_ne_bytes());
    sock_ioctl(libc::SIOCSIFFLAGS, &mut r as *mut _ as *mut c_void)
}

/// `ip addr add ADDR/32 dev NAME`
pub fn set_address(name: &str, addr: Ipv4Addr) -> io::Result<()> {
    let mut r = IfReq::new(name)?;
    let sa = as_sockaddr(addr);
    // SAFETY: copying the 16 bytes of a plain C struct.
    let bytes: [u8; 16] = unsafe { std::mem::transmute(sa) };
    r.data[..16].copy_from_slice(&bytes);
    sock_ioctl(libc::SIOCSIFADDR, &mut r as *mut _ as *mut c_void)?;
    let mut m = IfReq::new(name)?;
    // SAFETY: as above.
    let mask: [u8; 16] = unsafe { std::mem::transmute(as_sockaddr(Ipv4Addr::BROADCAST)) };
    m.data[..16].copy_from_slice(&mask);
    sock_ioctl(libc::SIOCSIFNETMASK, &mut m as *mut _ as *mut c_void)
}

fn route(net: Ipv4Net, dev: Option<&str>, reject: bool) -> io::Result<()> {
    // SAFETY: rtentry is plain old data; all-zero is its "unset" value.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = as_sockaddr(net.network());
    rt.rt_genmask = as_sockaddr(net.netmask());
    rt.rt_flags = libc::RTF_UP;
    if reject {
        rt.rt_flags |= libc::RTF_REJECT;
    }
    let mut devname = [0 as libc::c_char; libc::IFNAMSIZ];
    if let Some(d) = dev {
        let b = IfReq::new(d)?.name;
        for (o, i) in devname.iter_mut().zip(b) {
            *o = i as libc::c_char;
        }
        rt.rt_dev = devname.as_mut_ptr();
    }
    match sock_ioctl(libc::SIOCADDRT, &mut rt as *mut _ as *mut c_void) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

/// `ip route add NET dev NAME` (already present is fine)
pub fn add_route(net: Ipv4Net, dev: &str) -> io::Result<()> {
    route(net, Some(dev), false)
}

/// `ip route add unreachable NET` (already present is fine): keeps the
/// local subnet's unused addresses out of the tunnel route.
pub fn add_unreachable(net: Ipv4Net) -> io::Result<()> {
    route(net, None, true)
}

/// Interface index, or `None` if there is no such link
/// (`ip link show NAME`).
pub fn index_of(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}
