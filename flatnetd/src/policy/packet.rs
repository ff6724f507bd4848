//! What the policy looks at in an IPv4 packet: addresses, protocol and
//! destination port. Read in place, no copy.

use std::net::Ipv4Addr;

/// The fields of a packet the policy judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    /// TCP/UDP destination port; `None` for other protocols and for
    /// fragments after the first (which carry no ports).
    pub dport: Option<u16>,
}

/// Parse an IPv4 packet's header (and the ports of a TCP or UDP one).
/// `None` for anything that is not a well-formed IPv4 packet.
pub fn flow(p: &[u8]) -> Option<Flow> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if ihl < 20 || p.len() < ihl {
        return None;
    }
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let proto = p[9];
    let frag_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
    let dport = match proto {
        6 | 17 if frag_offset == 0 => {
            let b = p.get(ihl + 2..ihl + 4)?;
            Some(u16::from_be_bytes([b[0], b[1]]))
        }
        _ => None,
    };
    Some(Flow {
        src,
        dst,
        proto,
        dport,
    })
}

#[cfg(test)]
pub(crate) fn build(src: &str, dst: &str, proto: u8, dport: u16, frag_offset: u16) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[6..8].copy_from_slice(&frag_offset.to_be_bytes());
    p[9] = proto;
    p[12..16].copy_from_slice(&src.parse::<Ipv4Addr>().unwrap().octets());
    p[16..20].copy_from_slice(&dst.parse::<Ipv4Addr>().unwrap().octets());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_first_fragments_only_and_garbage_is_none() {
        let f = flow(&build("10.87.255.1", "10.87.2.5", 6, 443, 0)).unwrap();
        assert_eq!((f.proto, f.dport), (6, Some(443)));
        assert_eq!(f.dst, Ipv4Addr::new(10, 87, 2, 5));
        let later = flow(&build("10.87.255.1", "10.87.2.5", 17, 53, 185)).unwrap();
        assert_eq!(later.dport, None);
        assert_eq!(
            flow(&build("10.87.255.1", "10.87.2.5", 1, 0, 0))
                .unwrap()
                .dport,
            None
        );
        let mut short = build("10.87.255.1", "10.87.2.5", 6, 443, 0);
        short.truncate(22);
        assert_eq!(flow(&short), None, "a TCP packet cut before its ports");
        assert_eq!(flow(&[0x60; 40]), None, "IPv6");
        assert_eq!(flow(&[0x4f; 30]), None, "header longer than the packet");
        assert_eq!(flow(&[]), None);
    }
}
