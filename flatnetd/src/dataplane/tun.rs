//! The TUN device: IP packets the host routes into the Flatnet come out
//! of it, decrypted packets from peers go back in.
//!
//! iproute2 equivalent of [`Tun::open`]: `ip tuntap add dev NAME mode tun
//! [vnet_hdr]`, except that the device is not persistent: it disappears
//! (with its routes) when flatnetd's descriptor closes, so a crashed daemon
//! leaves nothing routing into a dead tunnel.
//!
//! With `vnet_hdr`, every packet read or written starts with a
//! [`super::offload::VnetHdr`] and the device offers TSO to the kernel
//! (`TUNSETOFFLOAD`), so reads may return 64 KiB TCP super-packets.

use std::{
    fs::File,
    io::{self, IoSlice, Read, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use super::{link::IfReq, offload::VNET_HDR_LEN};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUN_F_CSUM: libc::c_ulong = 0x01;
const TUN_F_TSO4: libc::c_ulong = 0x02;

pub struct Tun {
    file: File,
    name: String,
    vnet_hdr: bool,
}

fn ioctl_check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Tun {
    /// Open (create) TUN device `name` with `IFF_TUN | IFF_NO_PI`: every
    /// read or write is exactly one IP packet. With `offload`, also
    /// `IFF_VNET_HDR` plus checksum and TCPv4 segmentation offload; if the
    /// kernel refuses those the device is reopened without them.
    pub fn open(name: &str, offload: bool) -> io::Result<Tun> {
        if offload {
            match Self::open_with(name, true) {
                Ok(t) => return Ok(t),
                Err(e) => tracing::warn!("TUN offloads unavailable ({e}); using plain TUN"),
            }
        }
        Self::open_with(name, false)
    }

    fn open_with(name: &str, vnet_hdr: bool) -> io::Result<Tun> {
        // SAFETY: open(2) on a constant path; the fd is owned right away.
        let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        ioctl_check(fd)?;
        // SAFETY: fd is fresh and valid.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut req = IfReq::new(name)?;
        let mut flags = libc::IFF_TUN | libc::IFF_NO_PI;
        if vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        req.data[..2].copy_from_slice(&(flags as libc::c_short).to_ne_bytes());
        // SAFETY: TUNSETIFF takes a struct ifreq.
        ioctl_check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut req) })?;
        if vnet_hdr {
            let sz: libc::c_int = VNET_HDR_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ takes a pointer to int.
            ioctl_check(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ as _, &sz) })?;
            // SAFETY: TUNSETOFFLOAD takes the flags by value.
            ioctl_check(unsafe {
                libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD as _, TUN_F_CSUM | TUN_F_TSO4)
            })?;
        }
        // Non-blocking: the UDP thread also drains the queue, without
        // waiting, when the TUN thread is parked (see `userspace`).
        // SAFETY: F_GETFL/F_SETFL on an fd we own.
        ioctl_check(unsafe {
            let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK)
        })?;
        let len = req
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(req.name.len());
        Ok(Tun {
            file: File::from(fd),
            name: String::from_utf8_lossy(&req.name[..len]).into_owned(),
            vnet_hdr,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether reads and writes carry a `virtio_net_hdr`.
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Read one packet, with its vnet header if enabled; `WouldBlock`
    /// when none is queued (the descriptor is non-blocking).
    #[inline]
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Wait until a packet is queued (`poll(POLLIN)`, no timeout).
    pub fn wait_readable(&self) -> io::Result<()> {
        let mut p = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the call's duration.
        match unsafe { libc::poll(&mut p, 1, -1) } {
            r if r < 0 => Err(io::Error::last_os_error()),
            _ => Ok(()),
        }
    }

    /// Write one plain IP packet (a no-offload header is added if needed).
    #[inline]
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        if self.vnet_hdr {
            const PLAIN: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];
            (&self.file).write_vectored(&[IoSlice::new(&PLAIN), IoSlice::new(packet)])
        } else {
            (&self.file).write(packet)
        }
    }

    /// Write a packet that already starts with a vnet header.
    #[inline]
    pub fn send_raw(&self, packet: &[u8]) -> io::Result<usize> {
        (&self.file).write(packet)
    }
}
