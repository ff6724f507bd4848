//! The service catalog: which containers publish which ports at which
//! Flatnet IP. flatnetd serves it at `GET /v1/catalog`; the gateway polls it.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Catalog format version.
pub const CATALOG_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub version: u32,
    /// The node that produced this catalog.
    pub node: String,
    pub services: Vec<Service>,
    /// Only in the Flatnet-wide catalog (`/v1/catalog/all`): where each
    /// peer's part came from. Gateways ignore it; people debugging read it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerSource>,
    /// The gateway addresses of this host and of its peers (the first
    /// address of each host's subnet), where the hosts themselves listen
    /// (DNS, catalog, metrics). A gateway never proxies to them unless its
    /// admin names them (gateway.conf `host_targets`), and no service is
    /// ever at one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<Ipv4Addr>,
}

/// Whether `ip` is an address a container can have in `subnet`: inside it,
/// and neither its network, its gateway (first) nor its broadcast address.
pub fn is_container_address(subnet: ipnet::Ipv4Net, ip: Ipv4Addr) -> bool {
    subnet.contains(&ip)
        && ip != subnet.network()
        && ip != subnet.broadcast()
        && ip != crate::policy::gateway_of(subnet)
}

/// How a peer's services got into the Flatnet-wide catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSource {
    pub node: String,
    /// Services taken from it.
    pub services: usize,
    /// Seconds since its catalog was last fetched successfully (None: never).
    pub age_secs: Option<u64>,
    /// Why the last fetch failed, if it did (its last good catalog is used
    /// for a while).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The container name; served by the gateway as `<name>.<domain>`.
    pub name: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
    /// Whether this service owns the bare name `<name>` on the Flatnet
    /// (Flatnet DNS's rule: pinned, else first come; several only for
    /// opted-in replicas). Set by the host serving the catalog, never taken
    /// from a peer; absent when that host runs no Flatnet DNS. Gateways
    /// route `<name>.<domain>` to owners only and `<name>.<node>.<domain>`
    /// to each node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    pub port: u16,
    pub protocol: String,
}

/// True when `name` is usable as one DNS label (RFC 1123): 1..=63 of
/// `[a-z0-9-]`, not starting or ending with `-`.
pub fn is_dns_label(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_addresses_exclude_the_host_itself() {
        let net: ipnet::Ipv4Net = "10.87.2.0/24".parse().unwrap();
        let ok = |s: &str| is_container_address(net, s.parse().unwrap());
        assert!(ok("10.87.2.2") && ok("10.87.2.254"));
        for no in ["10.87.2.0", "10.87.2.1", "10.87.2.255", "10.87.3.5"] {
            assert!(!ok(no), "{no}");
        }
        // Older catalogs without `gateways` still parse.
        let c: Catalog =
            serde_json::from_str(r#"{"version":1,"node":"h1","services":[]}"#).unwrap();
        assert!(c.gateways.is_empty());
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("forgejo"));
        assert!(is_dns_label("web-1"));
        assert!(!is_dns_label("-web"));
        assert!(!is_dns_label("Web"));
        assert!(!is_dns_label("a.b"));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label(&"a".repeat(64)));
    }
}
