//! This host's IPv4 addresses outside the Flatnet (`ip -4 -o addr show`,
//! minus loopback and the Flatnet's own addresses): what same-LAN peers and
//! routed clients can use to reach it.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// (interface, address) pairs, in the kernel's order.
pub fn outside(cidr: Ipv4Net) -> Vec<(String, Ipv4Addr)> {
    let mut out = Vec::new();
    let Ok(all) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in all {
        let Some(ip) = a
            .address
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .map(|s| s.ip())
        else {
            continue;
        };
        if ip.is_loopback() || ip.is_unspecified() || cidr.contains(&ip) {
            continue;
        }
        out.push((a.interface_name, ip));
    }
    out
}
