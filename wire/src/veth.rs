//! Names of the host-side veth of an attachment.
//!
//! The plugin creates `fn` + 8 hex digits of a hash of (container id,
//! ifname) on the host, so DEL finds the interface again with no state and
//! flatnetd can tell, from the name alone, whether a lease's container is
//! still wired (lease reconciliation). Both sides call these functions.

/// FNV-1a over `container_id \0 ifname`, folded to 32 bits.
pub fn attachment_hash(container_id: &str, ifname: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

/// The host end of the attachment's veth pair (`ip link show fnXXXXXXXX`).
pub fn host_ifname(container_id: &str, ifname: &str) -> String {
    format!("fn{:08x}", attachment_hash(container_id, ifname))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_short_and_distinct() {
        let a = attachment_hash("c1", "eth0");
        assert_eq!(a, attachment_hash("c1", "eth0"));
        assert_ne!(a, attachment_hash("c1", "eth1"));
        assert_ne!(attachment_hash("c1e", "th0"), attachment_hash("c1", "eth0"));
        assert_eq!(host_ifname("c1", "eth0").len(), 10);
        assert_eq!(host_ifname("c1", "eth0"), format!("fn{a:08x}"));
    }
}
