//! Flatnet DNS: every container reachable by name from every host.
//!
//! - [`table`]: the names on the Flatnet and who owns a bare name (pure);
//! - [`answer`]: DNS answers from the table, via hickory-proto (pure);
//! - [`lan`]: the gateway's zone for the office LAN (pure);
//! - [`batch`]: `recvmmsg`/`sendmmsg` for the UDP hot path;
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
pub mod batch;
pub mod lan;
pub mod server;
pub mod sync;
pub mod table;
pub mod upstream;

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
    path::PathBuf,
    sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use flatnet_wire::Lease;

use crate::config::Config;
use answer::{Outcome, Scope, Transport, Zone};
use table::{Entry, NameTable, Policy};

/// The live name table and zone facts, shared by the server, the peer sync
/// and the lease code that feeds in this host's own names.
pub struct Dns {
    /// Read by every answer, written only when names change.
    inner: RwLock<Inner>,
}

struct Inner {
    table: NameTable,
    zone: Zone,
    /// When this host first saw each peer name, from before a restart:
    /// (node, name, ip) → unix seconds. Keeps the first-come rule stable
    /// across flatnetd restarts.
    earlier: HashMap<(String, String, Ipv4Addr), u64>,
    /// Where those times are kept (`<state_dir>/dns-seen.json`).
    path: Option<PathBuf>,
}

/// File name of the first-seen times in the state dir.
pub const SEEN_FILE: &str = "dns-seen.json";

fn load_seen(path: &std::path::Path) -> HashMap<(String, String, Ipv4Addr), u64> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    let rows: Vec<(String, String, Ipv4Addr, u64)> =
        serde_json::from_str(&text).unwrap_or_default();
    rows.into_iter()
        .map(|(node, name, ip, t)| ((node, name, ip), t))
        .collect()
}

/// Write atomically: a crash leaves the old file.
fn save_seen(
    path: &std::path::Path,
    rows: &[(String, String, Ipv4Addr, u64)],
) -> std::io::Result<()> {
    let body = serde_json::to_vec(rows).map_err(std::io::Error::other)?;
    flatnet_wire::fs::write_atomic(path, &body, 0o600)
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
        let lan = match &config.dns.lan {
            Some(l) => Some(lan::LanZone {
                domain: answer::domain_name(&l.domain)
                    .map_err(|e| format!("[dns.lan] domain {:?}: {e}", l.domain))?,
                address: l.address,
                names: l.names.iter().cloned().collect(),
            }),
            None => None,
        };
        Ok(Self {
            inner: RwLock::new(Inner {
                table: NameTable::new(policy),
                zone: Zone {
                    domain,
                    cidr: config.cidr,
                    node: config.node_name.clone(),
                    serial: now as u32,
                    lan,
                },
                earlier: HashMap::new(),
                path: None,
            }),
        })
    }

    /// Keep first-seen times in `path` across restarts (loaded now).
    pub fn with_state_file(self, path: PathBuf) -> Self {
        {
            let mut g = self.lock();
            g.earlier = load_seen(&path);
            g.path = Some(path);
        }
        self
    }

    fn lock(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
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
        let g = &mut *g;
        let earlier = &g.earlier;
        let changed = g.table.set_node(node, entries, |e| {
            table::label(&e.name)
                .and_then(|n| earlier.get(&(node.to_string(), n, e.ip)).copied())
                .map_or(now, |t| t.min(now))
        });
        if changed {
            if let Some(path) = &g.path {
                let own = &g.zone.node;
                let rows: Vec<_> = g
                    .table
                    .seen_times()
                    .into_iter()
                    .filter(|r| &r.0 != own)
                    .collect();
                if let Err(e) = save_seen(path, &rows) {
                    // Names keep working; only the first-come order may
                    // shift after a restart.
                    tracing::warn!(
                        "DNS: saving first-seen times to {}: {}; name ownership may change \
                         at the next restart",
                        path.display(),
                        flatnet_wire::plain_error(&e)
                    );
                }
            }
        }
        changed
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
        self.answer_scoped(packet, transport, Scope::All)
    }

    /// Answer an asker in `scope` (outside the Flatnet: only the LAN zone).
    pub fn answer_scoped(&self, packet: &[u8], transport: Transport, scope: Scope) -> Outcome {
        let g = self.read();
        answer::answer_scoped(packet, &g.table, &g.zone, transport, scope)
    }

    /// Whether `ip` owns the bare name `name` (the ownership rule of
    /// [`table`]); the gateway follows it for `<name>.<domain>`.
    pub fn owns(&self, name: &str, ip: Ipv4Addr) -> bool {
        table::label(name).is_some_and(|n| self.read().table.bare(&n).contains(&ip))
    }

    /// `(node, name, ip, owns the bare name)` for every name served.
    pub fn list(&self) -> Vec<(String, String, Ipv4Addr, bool)> {
        self.read().table.list()
    }

    pub fn domain(&self) -> hickory_proto::rr::Name {
        self.read().zone.domain.clone()
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

    #[test]
    fn first_seen_times_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SEEN_FILE);
        let cfg = Config::parse("node_name = \"h3\"").unwrap();
        let e = |ip: &str| Entry {
            name: "web".into(),
            ip: ip.parse().unwrap(),
            primary: true,
        };
        let dns = Dns::new(&cfg, 0).unwrap().with_state_file(path.clone());
        dns.set_peer("h2", &[e("10.87.2.2")], 10);
        dns.set_peer("h1", &[e("10.87.1.2")], 20);
        // After a restart both arrive again, h1's first this time: h2 still
        // owns the name, as on every other host.
        let dns = Dns::new(&cfg, 0).unwrap().with_state_file(path);
        dns.set_peer("h1", &[e("10.87.1.2")], 100);
        dns.set_peer("h2", &[e("10.87.2.2")], 101);
        let owner: Vec<String> = dns
            .list()
            .into_iter()
            .filter(|r| r.3)
            .map(|r| r.0)
            .collect();
        assert_eq!(owner, ["h2"]);
    }
}
