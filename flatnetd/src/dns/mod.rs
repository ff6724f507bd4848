//! Flatnet DNS: every container reachable by name from every host.
//!
//! - [`table`]: the names on the Flatnet and who owns a bare name (pure);
//! - [`answer`]: DNS answers from the table, via hickory-proto (pure);
//! - [`server`]: UDP and TCP port 53 on this host's gateway address, who may
//!   ask, and forwarding the rest;
//! - [`upstream`]: the host's own resolvers, read as aardvark-dns reads them;
//! - [`sync`]: peers' names, fetched over the tunnel.
//!
//! Why names travel over the tunnel and not through the Lighthouse: the
//! tunnel already connects every pair of hosts that can reach each other's
//! containers, keeps working while the Lighthouse is down, and carries only
//! what each host serves about itself, which the receiver checks against that
//! peer's subnet. Each host serves its own names as a small zone
//! (`_names.<domain>`, SOA + AXFR over TCP); every host asks each peer for the
//! zone's serial once a second (one small UDP query) and transfers it only
//! when it changed, so a name appears or disappears everywhere within about
//! a second. See docs/dns.md.

pub mod answer;
pub mod server;
pub mod sync;
pub mod table;
pub mod upstream;

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    sync::{Mutex, PoisonError},
};

use flatnet_wire::Lease;

use crate::config::Config;
use answer::{Outcome, Transport, Zone};
use table::{Entry, NameTable, Policy};

/// The live name table and zone facts, shared by the server, the peer sync
/// and the lease code that feeds in this host's own names.
pub struct Dns {
    inner: Mutex<Inner>,
}

struct Inner {
    table: NameTable,
    zone: Zone,
}

/// The names a lease gives its container: the container name and aliases.
pub fn lease_entries(leases: &[Lease]) -> Vec<Entry> {
    let mut out = Vec::new();
    for l in leases {
        if let Some(n) = &l.container_name {
            out.push(Entry {
                name: n.clone(),
                ip: l.ip,
                primary: true,
            });
        }
        let aliases: BTreeSet<&String> = l
            .aliases
            .iter()
            .filter(|a| Some(*a) != l.container_name.as_ref())
            .collect();
        out.extend(aliases.into_iter().map(|n| Entry {
            name: n.clone(),
            ip: l.ip,
            primary: false,
        }));
    }
    out
}

impl Dns {
    pub fn new(config: &Config, now: u64) -> Result<Self, String> {
        let domain = answer::domain_name(&config.dns.domain)
            .map_err(|e| format!("[dns] domain {:?}: {e}", config.dns.domain))?;
        let policy = Policy {
            pins: config.dns.pins.clone(),
            replicas: config.dns.replicas.iter().cloned().collect(),
        };
        Ok(Self {
            inner: Mutex::new(Inner {
                table: NameTable::new(policy),
                zone: Zone {
                    domain,
                    cidr: config.cidr,
                    node: config.node_name.clone(),
                    serial: now as u32,
                },
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This host's leases changed: its own names follow, and the zone's
    /// serial moves on when they did.
    pub fn set_local(&self, leases: &[Lease], now: u64) {
        let created: Vec<(Ipv4Addr, u64)> = leases.iter().map(|l| (l.ip, l.created)).collect();
        let mut g = self.lock();
        let node = g.zone.node.clone();
        let changed = g.table.set_node(&node, &lease_entries(leases), |e| {
            created
                .iter()
                .find(|(ip, _)| *ip == e.ip)
                .map_or(now, |(_, c)| *c)
        });
        if changed {
            g.zone.serial = g.zone.serial.wrapping_add(1).max(now as u32);
        }
    }

    /// What a peer serves about itself (already checked against its
    /// subnet); new names are timed by our clock.
    pub fn set_peer(&self, node: &str, entries: &[Entry], now: u64) -> bool {
        let mut g = self.lock();
        if node.eq_ignore_ascii_case(&g.zone.node) {
            return false; // a peer cannot speak for this host
        }
        g.table.set_node(node, entries, |_| now)
    }

    /// Forget peers that are no longer configured.
    pub fn retain_peers(&self, keep: &[String]) {
        let mut g = self.lock();
        let own = g.zone.node.clone();
        let gone: Vec<String> = g
            .table
            .nodes()
            .filter(|n| *n != own && !keep.iter().any(|k| k == n))
            .map(String::from)
            .collect();
        for n in gone {
            g.table.remove_node(&n);
        }
    }

    pub fn answer(&self, packet: &[u8], transport: Transport) -> Outcome {
        let g = self.lock();
        answer::answer(packet, &g.table, &g.zone, transport)
    }

    /// `(node, name, ip, owns the bare name)` for every name served.
    pub fn list(&self) -> Vec<(String, String, Ipv4Addr, bool)> {
        self.lock().table.list()
    }

    pub fn domain(&self) -> hickory_proto::rr::Name {
        self.lock().zone.domain.clone()
    }
}

#[cfg(test)]
mod tests {
    use flatnet_wire::AttachmentKey;

    use super::*;

    fn lease(name: &str, ip: &str, aliases: &[&str], created: u64) -> Lease {
        Lease {
            key: AttachmentKey {
                network: "fnet".into(),
                container_id: name.into(),
                ifname: "eth0".into(),
            },
            ip: ip.parse().unwrap(),
            netns: None,
            container_name: Some(name.into()),
            ports: vec![],
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            publish: false,
            internal: false,
            created,
            refreshed: 0,
        }
    }

    #[test]
    fn local_leases_feed_the_table_and_move_the_serial() {
        let cfg = Config::parse("node_name = \"h1\"").unwrap();
        let dns = Dns::new(&cfg, 1000).unwrap();
        let s0 = dns.lock().zone.serial;
        dns.set_local(&[lease("web", "10.87.1.2", &["www", "web"], 5)], 2000);
        let s1 = dns.lock().zone.serial;
        assert!(s1 > s0);
        let names: Vec<String> = dns.list().into_iter().map(|r| r.1).collect();
        assert_eq!(names, ["web", "www"]);
        dns.set_local(&[lease("web", "10.87.1.2", &["www"], 5)], 2001);
        assert_eq!(dns.lock().zone.serial, s1, "no change, same serial");
        // A peer cannot publish under this host's name; removed peers go.
        let e = Entry {
            name: "x".into(),
            ip: "10.87.2.2".parse().unwrap(),
            primary: true,
        };
        assert!(!dns.set_peer("H1", std::slice::from_ref(&e), 1));
        assert!(dns.set_peer("h2", &[e], 1));
        dns.retain_peers(&[]);
        assert!(dns.list().iter().all(|r| r.0 == "h1"));
    }
}
