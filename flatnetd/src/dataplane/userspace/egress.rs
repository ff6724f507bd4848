//! TUN → route by destination → encrypt → UDP: what leaves through the
//! tunnels.
//!
//! Two threads run this path, one at a time. The `flatnet-tun` thread owns
//! it: it reads the TUN device until the queue is empty, then parks in
//! `poll`. The `flatnet-udp` thread, right after it writes decrypted
//! packets into the TUN device, drains what the kernel queued in answer
//! while it wrote (an echo reply, a TCP ACK) if the TUN thread is parked:
//! the answer leaves without waiting for a wake-up of the other thread.
//! This is the run-to-completion that an event loop serving both sockets
//! (boringtun's device) gets for free. Whoever reads holds [`Shared::tun_reader`], so packets
//! leave in the order the kernel queued them.

use std::{io::ErrorKind, sync::atomic::Ordering, sync::Arc};

use tracing::{debug, warn};

use super::{relay_send, send, Shared, View, BUF};
use crate::{
    dataplane::{
        offload::{segment, VnetHdr, VNET_HDR_LEN},
        peer::{ipv4_dst, Dest, TICK},
        peers::lock,
        pmtu, udp,
    },
    metrics::{counters, Drop},
};

/// Packets the UDP thread takes off the TUN queue per turn, at most: the
/// answers to what it just wrote, not the TUN thread's bulk work.
const INLINE_MAX: usize = 4;

/// One thread's buffers and peer-set view for the egress path.
pub(super) struct Egress {
    view: View,
    skip: usize,
    vnet: bool,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    /// Room for a 64 KiB super-packet's segments plus 32 bytes each.
    out: Vec<u8>,
}

/// How a read of the TUN queue went.
enum Read {
    Packet(usize),
    Empty,
    Failed(std::io::Error),
}

impl Egress {
    pub(super) fn new(sh: &Shared) -> Self {
        let vnet = sh.tun.vnet_hdr();
        Egress {
            view: View::new(sh),
            skip: if vnet { VNET_HDR_LEN } else { 0 },
            vnet,
            buf: vec![0u8; BUF + VNET_HDR_LEN],
            scratch: vec![0u8; BUF],
            out: vec![0u8; 2 * BUF],
        }
    }

    fn read(&mut self, sh: &Shared) -> Read {
        loop {
            match sh.tun.recv(&mut self.buf) {
                Ok(n) => return Read::Packet(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Read::Empty,
                Err(e) => return Read::Failed(e),
            }
        }
    }

    /// Encrypt and send the packet of `n` bytes in `self.buf`.
    fn packet(&mut self, sh: &Shared, n: usize) {
        if n <= self.skip {
            return;
        }
        let hdr = if self.vnet {
            match VnetHdr::parse(&self.buf[..n]) {
                Some(h) => h,
                None => return,
            }
        } else {
            VnetHdr::plain()
        };
        let pkt = &mut self.buf[self.skip..n];
        let Some(dst) = ipv4_dst(pkt) else { return };
        let Some(peer) = self.view.get(sh).route(dst) else {
            counters().drop(Drop::NoRoute);
            return;
        };
        let out = &mut self.out;
        let mut g = lock(peer);
        let ep = g.dest();
        // Datagrams longer than the path allows go out one by one, for the
        // kernel to fragment: a GSO send of them would be dropped whole.
        let fits = g
            .path_mtu()
            .map_or(usize::MAX, |m| usize::from(m - pmtu::IP_UDP));
        let mut batch = GsoBatch::new();
        let r = segment(&hdr, pkt, &mut self.scratch, |seg| {
            if batch.end + seg.len() + 64 > out.len() {
                batch.finish(|a, b, s| send_batch(sh, &out[a..b], s, ep, fits));
            }
            if let Some(len) = g.encapsulate(seg, &mut out[batch.end..]) {
                batch.push(len, |a, b, s| send_batch(sh, &out[a..b], s, ep, fits));
            }
        });
        drop(g);
        batch.finish(|a, b, s| send_batch(sh, &out[a..b], s, ep, fits));
        if let Err(e) = r {
            debug!("dropping TUN packet: {e}");
        }
    }

    /// The UDP thread's turn: if the TUN thread is parked, send up to
    /// [`INLINE_MAX`] queued packets now.
    pub(super) fn drain(&mut self, sh: &Shared) {
        let Ok(_token) = sh.tun_reader.try_lock() else {
            return;
        };
        for _ in 0..INLINE_MAX {
            match self.read(sh) {
                Read::Packet(n) => self.packet(sh, n),
                Read::Empty | Read::Failed(_) => return,
            }
        }
    }
}

/// The `flatnet-tun` thread.
pub(super) fn tun_loop(sh: Arc<Shared>) {
    let mut e = Egress::new(&sh);
    loop {
        let token = sh.tun_reader.lock().unwrap_or_else(|p| p.into_inner());
        match e.read(&sh) {
            Read::Packet(n) => e.packet(&sh, n),
            Read::Empty => {
                drop(token);
                if let Err(err) = sh.tun.wait_readable() {
                    if err.kind() != ErrorKind::Interrupted {
                        warn!("waiting on {}: {err}", sh.tun.name());
                        std::thread::sleep(TICK);
                    }
                }
            }
            Read::Failed(err) => {
                drop(token);
                warn!("reading {}: {err}", sh.tun.name());
                std::thread::sleep(TICK);
            }
        }
    }
}

/// Encrypted datagrams of one TUN read, laid end to end in `buf` and sent
/// in as few GSO `sendmsg`s as the kernel allows: a run breaks when a
/// datagram is longer than the run's first, follows a shorter one, or the
/// run would pass [`udp::MAX_GSO_BYTES`] / [`udp::MAX_SEGMENTS`].
struct GsoBatch {
    start: usize,
    end: usize,
    seg: usize,
    count: usize,
    short: bool,
}

impl GsoBatch {
    fn new() -> Self {
        GsoBatch {
            start: 0,
            end: 0,
            seg: 0,
            count: 0,
            short: false,
        }
    }

    /// A datagram of `len` bytes was written at `buf[self.end..]`.
    #[inline]
    fn push(&mut self, len: usize, mut flush: impl FnMut(usize, usize, usize)) {
        let fits = self.count > 0
            && !self.short
            && len <= self.seg
            && self.end + len - self.start <= udp::MAX_GSO_BYTES
            && self.count < udp::MAX_SEGMENTS;
        if self.count > 0 && !fits {
            flush(self.start, self.end, self.seg);
            self.start = self.end;
            self.count = 0;
        }
        if self.count == 0 {
            self.seg = len;
            self.short = false;
        } else if len < self.seg {
            self.short = true;
        }
        self.count += 1;
        self.end += len;
    }

    fn finish(&mut self, mut flush: impl FnMut(usize, usize, usize)) {
        if self.count > 0 {
            flush(self.start, self.end, self.seg);
        }
        *self = GsoBatch::new();
    }
}

/// Send a run of datagrams of `seg` bytes; GSO only when `seg` fits the
/// path (`fits`, the largest UDP payload it carries whole).
fn send_batch(sh: &Shared, d: &[u8], seg: usize, to: Dest, fits: usize) {
    let to = match to {
        Dest::Udp(a) => a,
        Dest::Relay(id) => {
            for c in d.chunks(seg.max(1)) {
                relay_send(sh, id, c);
            }
            return;
        }
    };
    if sh.gso.load(Ordering::Relaxed) && d.len() > seg && seg <= fits {
        match udp::send_gso(&sh.udp, d, seg as u16, to) {
            Ok(_) => return,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT)
                ) =>
            {
                warn!("UDP GSO unavailable ({e}); sending datagrams one by one");
                sh.gso.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                counters().drop(Drop::UdpSend);
                debug!(%to, "udp gso send: {e}");
                return;
            }
        }
    }
    for c in d.chunks(seg) {
        send(&sh.udp, c, to);
    }
}
