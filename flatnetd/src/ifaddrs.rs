//! This host's IPv4 addresses outside the Flatnet (`ip -4 -o addr show`,
//! minus loopback and the Flatnet's own addresses): what same-LAN peers and
//! routed clients can use to reach it.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// (interface, address) pairs, in the kernel's order.
pub fn outside(cidr: Ipv4Net) -> Vec<(String, Ipv4Addr)> {
    all()
        .into_iter()
        .filter(|(_, ip)| !ip.is_loopback() && !ip.is_unspecified() && !cidr.contains(ip))
        .collect()
}

/// Every IPv4 address of this host (`ip -4 -o addr show`), with its
/// interface, in the kernel's order; empty when they cannot be read.
pub fn all() -> Vec<(String, Ipv4Addr)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let ip = a.address.as_ref()?.as_sockaddr_in()?.ip();
            Some((a.interface_name, ip))
        })
        .collect()
}
