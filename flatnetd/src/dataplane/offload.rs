//! Segmentation offload, done by hand (sans-IO).
//!
//! With `IFF_VNET_HDR` and `TUNSETOFFLOAD(TSO4|CSUM)` the kernel hands the
//! TUN reader whole TCP super-packets (up to 64 KiB) with a
//! `virtio_net_hdr` in front, and may leave the TCP checksum unfinished.
//! One read then carries ~45 MTU-sized packets instead of one, and the
//! sending TCP stack does per-packet work once per 64 KiB. Before
//! encryption, [`segment`] cuts such a packet into MTU-sized IPv4 packets
//! with correct headers and checksums, as a NIC doing TSO would.
//!
//! Going the other way, [`Coalescer`] merges consecutive decrypted
//! segments of one TCP flow back into a super-packet (what GRO does on a
//! NIC), so the kernel routes, forwards and delivers 64 KiB at a time
//! instead of 1.4 KiB; anything else is written alone with a header that
//! says "no offload" ([`VnetHdr::plain`]).

use std::net::Ipv4Addr;

/// `sizeof(struct virtio_net_hdr)` (without `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;
pub const F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_ECN: u8 = 0x80;

/// `struct virtio_net_hdr` (little-endian fields on every host we target).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// A header for a packet that needs nothing done.
    pub fn plain() -> Self {
        Self::default()
    }

    pub fn parse(b: &[u8]) -> Option<Self> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    pub fn write(&self, b: &mut [u8; VNET_HDR_LEN]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SegError {
    #[error("malformed packet for its offload header")]
    Malformed,
    #[error("unsupported offload type {0:#x}")]
    Unsupported(u8),
}

/// Add `data` to a ones-complement running sum.
#[inline]
pub fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

/// Fold a running sum into the 16-bit Internet checksum (complemented).
#[inline]
pub fn finish(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The IPv4 pseudo-header's contribution for a transport checksum.
#[inline]
pub fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u64 {
    sum(&src.octets(), 0) + sum(&dst.octets(), 0) + u64::from(proto) + len as u64
}

fn addrs(p: &[u8]) -> (Ipv4Addr, Ipv4Addr) {
    (
        Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        Ipv4Addr::new(p[16], p[17], p[18], p[19]),
    )
}

/// Recompute an IPv4 header's checksum in place.
#[inline]
pub fn ipv4_fix_checksum(p: &mut [u8], ihl: usize) {
    p[10] = 0;
    p[11] = 0;
    let c = finish(sum(&p[..ihl], 0));
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Turn a packet read from a vnet-hdr TUN device into wire-ready IPv4
/// packets, calling `emit` once per packet. `pkt` may be modified (a
/// pending checksum is completed in place); `scratch` must hold one
/// segment (`hdr_len + gso_size`). Returns the number of packets emitted.
pub fn segment(
    h: &VnetHdr,
    pkt: &mut [u8],
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, SegError> {
    match h.gso_type & !GSO_ECN {
        GSO_NONE => {
            if h.flags & F_NEEDS_CSUM != 0 {
                let start = usize::from(h.csum_start);
                let at = start + usize::from(h.csum_offset);
                if at + 2 > pkt.len() {
                    return Err(SegError::Malformed);
                }
                // The field holds the pseudo-header sum already.
                let c = finish(sum(&pkt[start..], 0));
                pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
            }
            emit(pkt);
            Ok(1)
        }
        GSO_TCPV4 => tso4(h, pkt, scratch, emit),
        other => Err(SegError::Unsupported(other)),
    }
}

fn tso4(
    h: &VnetHdr,
    pkt: &[u8],
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, SegError> {
    if pkt.len() < 40 || pkt[0] >> 4 != 4 || pkt[9] != 6 {
        return Err(SegError::Malformed);
    }
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    let thl = usize::from(pkt.get(ihl + 12).ok_or(SegError::Malformed)? >> 4) * 4;
    let hdrs = ihl + thl;
    let mss = usize::from(h.gso_size);
    if ihl < 20 || thl < 20 || hdrs > pkt.len() || mss == 0 || scratch.len() < hdrs + mss {
        return Err(SegError::Malformed);
    }
    let (src, dst) = addrs(pkt);
    let id = u16::from_be_bytes([pkt[4], pkt[5]]);
    let seq = u32::from_be_bytes([pkt[ihl + 4], pkt[ihl + 5], pkt[ihl + 6], pkt[ihl + 7]]);
    let flags = pkt[ihl + 13];
    let payload = &pkt[hdrs..];
    let count = payload.len().div_ceil(mss).max(1);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let len = hdrs + chunk.len();
        let s = &mut scratch[..len];
        s[..hdrs].copy_from_slice(&pkt[..hdrs]);
        s[hdrs..].copy_from_slice(chunk);
        s[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        s[4..6].copy_from_slice(&id.wrapping_add(i as u16).to_be_bytes());
        ipv4_fix_checksum(s, ihl);
        let t = ihl;
        let sq = seq.wrapping_add((i * mss) as u32);
        s[t + 4..t + 8].copy_from_slice(&sq.to_be_bytes());
        let mut f = flags;
        if i + 1 < count {
            f &= !(0x01 | 0x08); // FIN, PSH only on the last segment
        }
        if i > 0 {
            f &= !0x80; // CWR only on the first
        }
        s[t + 13] = f;
        s[t + 16] = 0;
        s[t + 17] = 0;
        let c = finish(sum(&s[t..], pseudo(src, dst, 6, len - ihl)));
        s[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        emit(s);
    }
    if payload.is_empty() {
        // A bare header with a GSO type: pass it on with a full checksum.
        let s = &mut scratch[..hdrs];
        s.copy_from_slice(&pkt[..hdrs]);
        s[ihl + 16] = 0;
        s[ihl + 17] = 0;
        let c = finish(sum(&s[ihl..], pseudo(src, dst, 6, hdrs - ihl)));
        s[ihl + 16..ihl + 18].copy_from_slice(&c.to_be_bytes());
        emit(s);
    }
    Ok(count)
}

/// Largest super-packet handed to the kernel (IPv4 total length limit).
const MAX_SUPER: usize = 65_535;
/// TCP flags that may be merged: ACK and PSH.
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// Merges in-order TCP segments of one flow into a GSO super-packet for a
/// vnet-hdr TUN device. Feed packets with [`Coalescer::push`]; call
/// [`Coalescer::flush`] when a batch of received datagrams is done.
pub struct Coalescer {
    /// `VnetHdr` room, then the super-packet.
    buf: Vec<u8>,
    len: usize,
    count: usize,
    hdrs: usize,
    mss: usize,
    next_seq: u32,
    /// The last merged segment was short or had PSH: nothing may follow.
    closed: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new()
    }
}

/// What identifies a mergeable packet's flow and header.
#[inline]
fn mergeable(p: &[u8]) -> Option<(usize, usize)> {
    if p.len() < 40 || p[0] != 0x45 || p[9] != 6 {
        return None;
    }
    // No fragments (MF clear, offset 0); DF allowed.
    if u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
        return None;
    }
    if usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len() {
        return None;
    }
    let thl = usize::from(p[32] >> 4) * 4;
    if thl < 20 || 20 + thl >= p.len() {
        return None; // no payload, nothing to merge
    }
    if p[33] & !(TCP_ACK | TCP_PSH) != 0 || p[33] & TCP_ACK == 0 {
        return None;
    }
    Some((20 + thl, p.len() - 20 - thl))
}

impl Coalescer {
    pub fn new() -> Self {
        Coalescer {
            buf: vec![0u8; VNET_HDR_LEN + MAX_SUPER],
            len: 0,
            count: 0,
            hdrs: 0,
            mss: 0,
            next_seq: 0,
            closed: false,
        }
    }

    /// Whether `p` continues the packet being built.
    fn continues(&self, p: &[u8], hdrs: usize, plen: usize) -> bool {
        let cur = &self.buf[VNET_HDR_LEN..VNET_HDR_LEN + self.len];
        !self.closed
            && hdrs == self.hdrs
            && plen <= self.mss
            && self.len + plen <= MAX_SUPER
            // Same TOS, TTL, addresses; same ports; same ack and window;
            // identical options (timestamps included).
            && p[1] == cur[1]
            && p[8] == cur[8]
            && p[12..24] == cur[12..24]
            && u32::from_be_bytes([p[24], p[25], p[26], p[27]]) == self.next_seq
            && p[28..32] == cur[28..32]
            && p[34..36] == cur[34..36]
            && p[40..hdrs] == cur[40..hdrs]
    }

    /// Add a decrypted IPv4 packet. Packets that cannot be merged flush
    /// the current super-packet first and are written alone; order is kept.
    pub fn push(&mut self, p: &[u8], mut write: impl FnMut(&[u8])) {
        let Some((hdrs, plen)) = mergeable(p) else {
            self.flush(&mut write);
            let at = VNET_HDR_LEN;
            let hdr: &mut [u8; VNET_HDR_LEN] = (&mut self.buf[..at]).try_into().expect("sized");
            VnetHdr::plain().write(hdr);
            self.buf[at..at + p.len()].copy_from_slice(p);
            write(&self.buf[..at + p.len()]);
            return;
        };
        if self.count > 0 && !self.continues(p, hdrs, plen) {
            self.flush(&mut write);
        }
        let seq = u32::from_be_bytes([p[24], p[25], p[26], p[27]]);
        if self.count == 0 {
            self.buf[VNET_HDR_LEN..VNET_HDR_LEN + p.len()].copy_from_slice(p);
            self.len = p.len();
            self.hdrs = hdrs;
            self.mss = plen;
            self.closed = p[33] & TCP_PSH != 0;
        } else {
            let at = VNET_HDR_LEN + self.len;
            self.buf[at..at + plen].copy_from_slice(&p[hdrs..]);
            self.len += plen;
            if p[33] & TCP_PSH != 0 {
                self.buf[VNET_HDR_LEN + 33] |= TCP_PSH;
                self.closed = true;
            }
            if plen < self.mss {
                self.closed = true;
            }
        }
        self.next_seq = seq.wrapping_add(plen as u32);
        self.count += 1;
    }

    /// Write out the super-packet being built, if any.
    pub fn flush(&mut self, mut write: impl FnMut(&[u8])) {
        if self.count == 0 {
            return;
        }
        let len = self.len;
        let h = if self.count == 1 {
            // Unchanged packet with its own valid checksums.
            VnetHdr::plain()
        } else {
            let p = &mut self.buf[VNET_HDR_LEN..VNET_HDR_LEN + len];
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            ipv4_fix_checksum(p, 20);
            // NEEDS_CSUM: the field carries the pseudo-header sum; the
            // kernel (or the segmenting device) completes it.
            let (src, dst) = addrs(p);
            let ps = !finish(pseudo(src, dst, 6, len - 20));
            p[36..38].copy_from_slice(&ps.to_be_bytes());
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: self.hdrs as u16,
                gso_size: self.mss as u16,
                csum_start: 20,
                csum_offset: 16,
            }
        };
        let hdr: &mut [u8; VNET_HDR_LEN] =
            (&mut self.buf[..VNET_HDR_LEN]).try_into().expect("sized");
        h.write(hdr);
        write(&self.buf[..VNET_HDR_LEN + len]);
        self.count = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4/TCP packet with correct checksums.
    fn tcp(payload: &[u8], seq: u32, flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1000u16.to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 87, 1, 2]);
        p[16..20].copy_from_slice(&[10, 87, 2, 2]);
        p[20..22].copy_from_slice(&5201u16.to_be_bytes());
        p[22..24].copy_from_slice(&40000u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        p.extend_from_slice(payload);
        ipv4_fix_checksum(&mut p, 20);
        let c = finish(sum(
            &p[20..],
            pseudo(addrs(&p).0, addrs(&p).1, 6, p.len() - 20),
        ));
        p[36..38].copy_from_slice(&c.to_be_bytes());
        p
    }

    fn valid(p: &[u8]) -> bool {
        let (s, d) = addrs(p);
        finish(sum(&p[..20], 0)) == 0 && finish(sum(&p[20..], pseudo(s, d, 6, p.len() - 20))) == 0
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071's example words sum to 0xddf2; the checksum is its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum(&data, 0)), !0xddf2);
        assert_eq!(finish(sum(&[0xab], 0)), !0xab00);
    }

    #[test]
    fn vnet_header_round_trips() {
        let h = VnetHdr {
            flags: 1,
            gso_type: GSO_TCPV4,
            hdr_len: 52,
            gso_size: 1368,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut b = [0u8; VNET_HDR_LEN];
        h.write(&mut b);
        assert_eq!(VnetHdr::parse(&b), Some(h));
        assert_eq!(VnetHdr::parse(&b[..9]), None);
    }

    #[test]
    fn tso_splits_into_valid_consecutive_segments() {
        let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut big = tcp(&payload, 1000, 0x18 | 0x01); // PSH|ACK|FIN
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 40,
            gso_size: 1380,
            csum_start: 20,
            csum_offset: 16,
        };
        big[36] ^= 0x55; // the kernel leaves only a partial checksum
        let mut scratch = vec![0u8; 2000];
        let mut segs = vec![];
        let n = segment(&h, &mut big, &mut scratch, |s| segs.push(s.to_vec())).unwrap();
        assert_eq!(n, 4);
        assert_eq!(segs.len(), 4);
        let mut joined = vec![];
        for (i, s) in segs.iter().enumerate() {
            assert!(valid(s), "segment {i} checksums");
            assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), s.len());
            assert_eq!(u16::from_be_bytes([s[4], s[5]]), 0x1000 + i as u16);
            let seq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
            assert_eq!(seq, 1000 + (i * 1380) as u32);
            let last = i == 3;
            assert_eq!(s[33] & 0x09 != 0, last, "PSH/FIN only on the last");
            assert!(s.len() <= 40 + 1380);
            joined.extend_from_slice(&s[40..]);
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn pending_checksum_completed_for_single_packets() {
        let good = tcp(b"hello", 7, 0x18);
        let mut p = good.clone();
        // What the kernel hands over with CHECKSUM_PARTIAL: the pseudo-header sum.
        let (s, d) = addrs(&p);
        let ps = !finish(pseudo(s, d, 6, p.len() - 20));
        p[36..38].copy_from_slice(&ps.to_be_bytes());
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_NONE,
            csum_start: 20,
            csum_offset: 16,
            ..Default::default()
        };
        let mut out = vec![];
        segment(&h, &mut p, &mut [0u8; 64], |x| out.push(x.to_vec())).unwrap();
        assert_eq!(out, vec![good]);
    }

    fn written(frames: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>)> {
        frames
            .iter()
            .map(|f| (VnetHdr::parse(f).unwrap(), f[VNET_HDR_LEN..].to_vec()))
            .collect()
    }

    #[test]
    fn coalescer_merges_a_segmented_stream_back() {
        let payload: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
        let mut big = tcp(&payload, 500, 0x18);
        let h = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1000,
            ..Default::default()
        };
        let mut scratch = vec![0u8; 2000];
        let mut segs = vec![];
        segment(&h, &mut big, &mut scratch, |s| segs.push(s.to_vec())).unwrap();
        assert_eq!(segs.len(), 4);
        let mut c = Coalescer::new();
        let mut out = vec![];
        for s in &segs {
            c.push(s, |f| out.push(f.to_vec()));
        }
        assert!(out.is_empty(), "nothing written before the flush");
        c.flush(|f| out.push(f.to_vec()));
        let w = written(&out);
        assert_eq!(w.len(), 1);
        let (hdr, p) = &w[0];
        assert_eq!(hdr.gso_type, GSO_TCPV4);
        assert_eq!(hdr.gso_size, 1000);
        assert_eq!(hdr.hdr_len, 40);
        assert_eq!(&p[40..], &payload[..]);
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        assert_eq!(finish(sum(&p[..20], 0)), 0, "IP checksum");
        assert_eq!(p[33] & TCP_PSH, TCP_PSH, "PSH of the last segment kept");
        // Completing the partial checksum as the kernel would gives a valid packet.
        let mut full = p.clone();
        let c = finish(sum(&full[20..], 0));
        full[36..38].copy_from_slice(&c.to_be_bytes());
        assert!(valid(&full));
    }

    #[test]
    fn coalescer_keeps_order_and_refuses_what_it_must() {
        let a1 = tcp(&[1u8; 100], 0, 0x10);
        let a2 = tcp(&[2u8; 100], 100, 0x10);
        let gap = tcp(&[3u8; 100], 300, 0x10); // out of order
        let syn = tcp(&[], 0, 0x02);
        let mut icmp = a1.clone();
        icmp[9] = 1;
        let mut c = Coalescer::new();
        let mut out = vec![];
        for p in [&a1, &a2, &gap, &syn, &icmp] {
            c.push(p, |f| out.push(f.to_vec()));
        }
        c.flush(|f| out.push(f.to_vec()));
        let w = written(&out);
        assert_eq!(w.len(), 4, "a1+a2, gap, syn, icmp");
        assert_eq!(w[0].1.len(), 40 + 200);
        assert_eq!(w[1], (VnetHdr::plain(), gap.clone()));
        assert_eq!(w[2], (VnetHdr::plain(), syn));
        assert_eq!(w[3], (VnetHdr::plain(), icmp));
        // A short segment ends a super-packet.
        let s1 = tcp(&[1u8; 100], 0, 0x10);
        let s2 = tcp(&[2u8; 50], 100, 0x10);
        let s3 = tcp(&[3u8; 100], 150, 0x10);
        let mut out = vec![];
        for p in [&s1, &s2, &s3] {
            c.push(p, |f| out.push(f.to_vec()));
        }
        c.flush(|f| out.push(f.to_vec()));
        let w = written(&out);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].1.len(), 40 + 150);
        assert_eq!(w[1], (VnetHdr::plain(), s3));
    }

    #[test]
    fn malformed_and_unsupported_are_errors() {
        let h = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1380,
            ..Default::default()
        };
        let mut short = vec![0x45u8; 30];
        assert_eq!(
            segment(&h, &mut short, &mut [0u8; 2000], |_| {}),
            Err(SegError::Malformed)
        );
        let mut p = tcp(b"x", 1, 0x10);
        let mut tiny = [0u8; 10];
        assert_eq!(
            segment(&h, &mut p, &mut tiny, |_| {}),
            Err(SegError::Malformed)
        );
        let udp = VnetHdr {
            gso_type: 3,
            ..Default::default()
        };
        assert_eq!(
            segment(&udp, &mut p, &mut [0u8; 2000], |_| {}),
            Err(SegError::Unsupported(3))
        );
        let bad_csum = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 60,
            csum_offset: 16,
            ..Default::default()
        };
        assert_eq!(
            segment(&bad_csum, &mut p, &mut [0u8; 2000], |_| {}),
            Err(SegError::Malformed)
        );
    }
}
