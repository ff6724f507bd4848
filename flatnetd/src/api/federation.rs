//! The Flatnet-wide catalog, `GET /v1/catalog/all`: this host's services
//! plus every peer's, so a gateway needs one catalog URL (its own host's)
//! however many hosts join.
//!
//! Each peer's own catalog is fetched over the tunnel from
//! `http://<peer's gateway address>:<this host's catalog port>/v1/catalog`
//! (every host serves the catalog on the same port). This module is the
//! sans-IO part: checking what a peer sent, remembering its last good
//! catalog, and merging; `catalog.rs` does the fetching.
//!
//! A peer can only speak for its own subnet: services whose address is
//! outside it are dropped, and every service is labelled with the peer's
//! name as the Lighthouse knows it, not the name the peer claims. A peer
//! that does not answer keeps its last good services for [`STALE_FOR`]
//! (a gateway would otherwise drop its routes on one lost poll); a peer
//! that is no longer a peer is forgotten at once.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use flatnet_wire::catalog::{
    is_container_address, is_dns_label, Catalog, PeerSource, Service, CATALOG_VERSION,
};
use ipnet::Ipv4Net;

/// How long a peer's last good catalog stands in when fetching fails.
pub const STALE_FOR: Duration = Duration::from_secs(300);
/// A peer's catalog fetched this recently is not fetched again.
pub const FRESH_FOR: Duration = Duration::from_secs(2);
/// Most services taken from one peer, and in the whole merged catalog
/// (the gateway accepts 10,000).
pub const MAX_PEER_SERVICES: usize = 4096;
pub const MAX_SERVICES: usize = 10_000;
/// Largest catalog body accepted from a peer.
pub const MAX_BODY: usize = 1 << 20;

/// A peer as the data plane knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub subnet: Ipv4Net,
}

/// Check a peer's catalog and keep what it may say: services of its own
/// subnet with DNS-label names and real ports, labelled with its name.
pub fn accept(peer: &Peer, c: Catalog) -> Result<Vec<Service>, String> {
    if c.version != CATALOG_VERSION {
        return Err(format!(
            "catalog version {} (want {CATALOG_VERSION})",
            c.version
        ));
    }
    let mut out = Vec::new();
    for mut s in c.services {
        if out.len() >= MAX_PEER_SERVICES {
            break;
        }
        // Its own subnet only, and never its gateway address: that is the
        // host itself (DNS, catalog, metrics), not a container.
        if !is_container_address(peer.subnet, s.ip) || !is_dns_label(&s.name) {
            continue;
        }
        s.ports
            .retain(|p| p.port != 0 && (p.protocol == "tcp" || p.protocol == "udp"));
        if s.ports.is_empty() {
            continue;
        }
        s.node.clone_from(&peer.name);
        s.owner = None; // ours to decide, not the peer's
        out.push(s);
    }
    Ok(out)
}

#[derive(Debug, Clone)]
struct Entry {
    subnet: Ipv4Net,
    services: Vec<Service>,
    fetched: Instant,
    error: Option<String>,
}

/// Last good catalogs of the peers.
#[derive(Debug, Default)]
pub struct PeerCatalogs {
    entries: HashMap<String, Entry>,
    /// When each peer was last asked (whatever came of it).
    tried: HashMap<String, Instant>,
}

impl PeerCatalogs {
    /// Peers whose catalog should be fetched now, claimed by the caller:
    /// not asked within [`FRESH_FOR`], whether that went well or not, so
    /// requests for `/v1/catalog/all` (however many) ask a failing peer at
    /// most once per interval.
    pub fn claim_due(&mut self, peers: &[Peer], now: Instant) -> Vec<Peer> {
        self.tried.retain(|n, _| peers.iter().any(|p| &p.name == n));
        let due: Vec<Peer> = peers
            .iter()
            .filter(|p| {
                let moved = self
                    .entries
                    .get(&p.name)
                    .is_some_and(|e| e.subnet != p.subnet);
                moved
                    || self
                        .tried
                        .get(&p.name)
                        .is_none_or(|t| now.saturating_duration_since(*t) >= FRESH_FOR)
            })
            .cloned()
            .collect();
        for p in &due {
            self.tried.insert(p.name.clone(), now);
        }
        due
    }

    /// Record a fetch result.
    pub fn record(&mut self, peer: &Peer, result: Result<Catalog, String>, now: Instant) {
        match result.and_then(|c| accept(peer, c)) {
            Ok(services) => {
                self.entries.insert(
                    peer.name.clone(),
                    Entry {
                        subnet: peer.subnet,
                        services,
                        fetched: now,
                        error: None,
                    },
                );
            }
            Err(e) => match self.entries.get_mut(&peer.name) {
                // Keep the last good services, if they are about this subnet.
                Some(old) if old.subnet == peer.subnet => old.error = Some(e),
                _ => {
                    self.entries.insert(
                        peer.name.clone(),
                        Entry {
                            subnet: peer.subnet,
                            services: vec![],
                            fetched: now.checked_sub(STALE_FOR).unwrap_or(now),
                            error: Some(e),
                        },
                    );
                }
            },
        }
    }

    /// This host's catalog plus every current peer's (last good, while not
    /// older than [`STALE_FOR`]). Peers that left are forgotten.
    pub fn merge(&mut self, own: Catalog, peers: &[Peer], now: Instant) -> Catalog {
        self.entries.retain(|name, e| {
            peers
                .iter()
                .any(|p| &p.name == name && p.subnet == e.subnet)
        });
        let mut services = own.services;
        let mut sources = Vec::new();
        for p in peers {
            let Some(e) = self.entries.get(&p.name) else {
                sources.push(PeerSource {
                    node: p.name.clone(),
                    services: 0,
                    age_secs: None,
                    error: Some("not fetched yet".into()),
                });
                continue;
            };
            let age = now.saturating_duration_since(e.fetched);
            let usable = age < STALE_FOR && !e.services.is_empty();
            let room = MAX_SERVICES.saturating_sub(services.len());
            let taken = if usable {
                e.services.len().min(room)
            } else {
                0
            };
            services.extend(e.services.iter().take(taken).cloned());
            sources.push(PeerSource {
                node: p.name.clone(),
                services: taken,
                age_secs: (age < STALE_FOR || e.error.is_none()).then_some(age.as_secs()),
                error: e.error.clone(),
            });
        }
        services.sort_by(|a, b| a.name.cmp(&b.name).then(a.ip.cmp(&b.ip)));
        Catalog {
            version: CATALOG_VERSION,
            node: own.node,
            services,
            peers: sources,
            gateways: own.gateways,
        }
    }
}

#[cfg(test)]
mod tests {
    use flatnet_wire::catalog::ServicePort;

    use super::*;

    fn svc(name: &str, node: &str, ip: &str) -> Service {
        Service {
            name: name.into(),
            node: node.into(),
            ip: ip.parse().unwrap(),
            ports: vec![ServicePort {
                port: 80,
                protocol: "tcp".into(),
            }],
            owner: None,
        }
    }

    fn cat(node: &str, services: Vec<Service>) -> Catalog {
        Catalog {
            version: 1,
            node: node.into(),
            services,
            peers: vec![],
            gateways: vec![],
        }
    }

    fn peer(name: &str, subnet: &str) -> Peer {
        Peer {
            name: name.into(),
            subnet: subnet.parse().unwrap(),
        }
    }

    #[test]
    fn a_peer_speaks_only_for_its_own_subnet_and_under_its_own_name() {
        let p = peer("h2", "10.87.2.0/24");
        let mut zero = svc("noport", "h2", "10.87.2.9");
        zero.ports[0].port = 0;
        let mut claims = svc("web", "h9", "10.87.2.5");
        claims.owner = Some(true); // a peer cannot claim a bare name

        let got = accept(
            &p,
            cat(
                "liar",
                vec![
                    claims,
                    svc("forgejo", "h2", "10.87.1.5"), // h1's subnet: hijack attempt
                    svc("dns", "h2", "10.87.2.1"),     // its gateway: the host itself
                    svc("net", "h2", "10.87.2.0"),
                    svc("bcast", "h2", "10.87.2.255"),
                    svc("Bad_Name", "h2", "10.87.2.6"),
                    zero,
                ],
            ),
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].name.as_str(), got[0].node.as_str()), ("web", "h2"));
        assert_eq!(got[0].owner, None);
        let mut v2 = cat("h2", vec![]);
        v2.version = 2;
        assert!(accept(&p, v2).is_err());
    }

    #[test]
    fn merges_own_and_peers_and_keeps_last_good_for_a_while() {
        let t0 = Instant::now();
        let peers = [peer("h2", "10.87.2.0/24"), peer("h3", "10.87.3.0/24")];
        let mut pc = PeerCatalogs::default();
        assert_eq!(pc.claim_due(&peers, t0).len(), 2);
        pc.record(
            &peers[0],
            Ok(cat("h2", vec![svc("web", "h2", "10.87.2.5")])),
            t0,
        );
        pc.record(&peers[1], Err("connection refused".into()), t0);
        let own = cat("h1", vec![svc("git", "h1", "10.87.1.5")]);
        let m = pc.merge(own.clone(), &peers, t0);
        let names: Vec<_> = m.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["git", "web"]);
        assert_eq!(m.node, "h1");
        assert_eq!(m.peers[0].services, 1);
        assert_eq!(m.peers[1].error.as_deref(), Some("connection refused"));

        // Nobody is asked again within FRESH_FOR, not even the failing h3
        // (however many requests come in); after it, both are.
        assert!(pc.claim_due(&peers, t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(pc.claim_due(&peers, t0 + FRESH_FOR).len(), 2);

        // h2 stops answering: its services stay until STALE_FOR.
        let t1 = t0 + Duration::from_secs(60);
        pc.record(&peers[0], Err("timed out".into()), t1);
        let m = pc.merge(own.clone(), &peers, t1);
        assert!(m.services.iter().any(|s| s.name == "web"));
        assert_eq!(m.peers[0].error.as_deref(), Some("timed out"));
        assert_eq!(m.peers[0].age_secs, Some(60));
        let m = pc.merge(own.clone(), &peers, t0 + STALE_FOR);
        assert!(!m.services.iter().any(|s| s.name == "web"), "too old");

        // h2 leaves the Flatnet: forgotten at once.
        pc.record(
            &peers[0],
            Ok(cat("h2", vec![svc("web", "h2", "10.87.2.5")])),
            t1,
        );
        let m = pc.merge(own, &peers[1..], t1);
        assert!(!m.services.iter().any(|s| s.name == "web"));
        assert!(
            pc.claim_due(&peers[..1], t1).len() == 1,
            "a returning peer is fetched again"
        );
    }

    #[test]
    fn a_peer_with_a_new_subnet_is_not_served_its_old_services() {
        let t0 = Instant::now();
        let mut pc = PeerCatalogs::default();
        let old = peer("h2", "10.87.2.0/24");
        pc.record(&old, Ok(cat("h2", vec![svc("web", "h2", "10.87.2.5")])), t0);
        let moved = peer("h2", "10.87.7.0/24");
        assert_eq!(pc.claim_due(std::slice::from_ref(&moved), t0).len(), 1);
        pc.record(&moved, Err("refused".into()), t0);
        let m = pc.merge(cat("h1", vec![]), &[moved], t0);
        assert!(m.services.is_empty());
    }

    #[test]
    fn the_merged_catalog_is_capped() {
        let t0 = Instant::now();
        let mut pc = PeerCatalogs::default();
        let p = peer("h2", "10.87.0.0/16");
        let many: Vec<Service> = (0..5000u32)
            .map(|i| {
                svc(
                    &format!("s{i}"),
                    "h2",
                    &format!("10.87.{}.{}", i / 250, i % 250 + 1),
                )
            })
            .collect();
        pc.record(&p, Ok(cat("h2", many)), t0);
        let own: Vec<Service> = (0..8000u32)
            .map(|i| svc(&format!("o{i}"), "h1", "10.86.0.1"))
            .collect();
        let m = pc.merge(cat("h1", own), &[p], t0);
        assert_eq!(m.services.len(), MAX_SERVICES);
        assert_eq!(m.peers[0].services, MAX_SERVICES - 8000);
    }
}
