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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The container name; served by the gateway as `<name>.<domain>`.
    pub name: String,
    pub node: String,
    pub ip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
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
