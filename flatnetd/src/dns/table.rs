//! The name table: which names exist on the Flatnet, on which node, and who
//! owns a bare name. Pure: no sockets, no clock (callers pass `now`).
//!
//! The ownership rule (also documented in docs/dns.md):
//! - `<name>.<node>.<domain>` always resolves to that node's container.
//! - A bare `<name>` (and `<name>.<domain>`) belongs to one owner:
//!   1. the node an admin pinned it to (`[dns] pins`), if that node has it;
//!   2. else, for names listed in `[dns] replicas`, every node that has it
//!      (explicit, opt-in balancing);
//!   3. else the node whose record this host saw first. "Seen" is measured
//!      by this host's own clock (for its own containers: the lease's
//!      creation), never taken from what a peer claims, so a hostile member
//!      cannot backdate a name to steal it. Ties go to the node name that
//!      sorts first. Names spread in under 2 s, so hosts agree except for
//!      two containers of the same name started within that window.
//! - A node publishes only addresses inside its own subnet (checked by the
//!   caller that feeds remote records in).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
};

/// One name → address binding on one node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub name: String,
    pub ip: Ipv4Addr,
    /// The container's own name (PTR answers with it), not an alias.
    pub primary: bool,
}

/// An entry as the table keeps it, with when this host first saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub ip: Ipv4Addr,
    pub first_seen: u64,
    pub primary: bool,
}

/// Admin policy for bare names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// name → node that owns the bare name.
    pub pins: HashMap<String, String>,
    /// Names every node may answer for (round-robin across nodes).
    pub replicas: BTreeSet<String>,
}

/// Turn a container name or alias into a DNS label, or `None` when it
/// cannot be one (dots, spaces, too long). Lowercased: DNS is
/// case-insensitive.
pub fn label(name: &str) -> Option<String> {
    let l = name.to_ascii_lowercase();
    let ok = !l.is_empty()
        && l.len() <= 63
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !l.starts_with('-')
        && !l.ends_with('-');
    ok.then_some(l)
}

#[derive(Debug, Clone, Default)]
pub struct NameTable {
    /// node → name → addresses with first-seen times.
    nodes: BTreeMap<String, BTreeMap<String, Vec<Seen>>>,
    policy: Policy,
}

impl NameTable {
    pub fn new(policy: Policy) -> Self {
        Self {
            nodes: BTreeMap::new(),
            policy,
        }
    }

    /// Replace everything `node` publishes with `entries`. An entry that
    /// was already there keeps its first-seen time; a new one gets
    /// `seen_at(entry)`. Returns whether anything changed.
    pub fn set_node(
        &mut self,
        node: &str,
        entries: &[Entry],
        seen_at: impl Fn(&Entry) -> u64,
    ) -> bool {
        let old = self.nodes.remove(node).unwrap_or_default();
        let mut new: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
        for e in entries {
            let Some(name) = label(&e.name) else { continue };
            let first_seen = old
                .get(&name)
                .and_then(|v| v.iter().find(|s| s.ip == e.ip))
                .map_or_else(|| seen_at(e), |s| s.first_seen);
            let slot = new.entry(name).or_default();
            if !slot.iter().any(|s| s.ip == e.ip) {
                slot.push(Seen {
                    ip: e.ip,
                    first_seen,
                    primary: e.primary,
                });
            }
        }
        let changed = new != old;
        if !new.is_empty() {
            self.nodes.insert(node.to_string(), new);
        }
        changed
    }

    /// Forget a node (removed peer).
    pub fn remove_node(&mut self, node: &str) -> bool {
        self.nodes.remove(node).is_some()
    }

    /// The nodes that publish anything.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    pub fn has_node(&self, node: &str) -> bool {
        self.nodes.contains_key(&node.to_ascii_lowercase()) || self.nodes.contains_key(node)
    }

    /// `<name>.<node>`: that node's addresses for `name`.
    pub fn on_node(&self, name: &str, node: &str) -> Vec<Ipv4Addr> {
        let node = self
            .nodes
            .keys()
            .find(|n| n.eq_ignore_ascii_case(node))
            .and_then(|n| self.nodes.get(n));
        node.and_then(|m| m.get(&name.to_ascii_lowercase()))
            .map(|v| v.iter().map(|s| s.ip).collect())
            .unwrap_or_default()
    }

    /// A bare name, by the ownership rule. Empty when nobody has it.
    pub fn bare(&self, name: &str) -> Vec<Ipv4Addr> {
        let name = name.to_ascii_lowercase();
        let holders: Vec<(&str, &Vec<Seen>)> = self
            .nodes
            .iter()
            .filter_map(|(node, m)| m.get(&name).map(|v| (node.as_str(), v)))
            .collect();
        if holders.is_empty() {
            return vec![];
        }
        if let Some(pinned) = self.policy.pins.get(&name) {
            if let Some((_, v)) = holders.iter().find(|(n, _)| n.eq_ignore_ascii_case(pinned)) {
                return v.iter().map(|s| s.ip).collect();
            }
        }
        if self.policy.replicas.contains(&name) {
            return holders
                .iter()
                .flat_map(|(_, v)| v.iter().map(|s| s.ip))
                .collect();
        }
        let owner = holders
            .iter()
            .min_by_key(|(node, v)| (v.iter().map(|s| s.first_seen).min().unwrap_or(0), *node))
            .map(|(_, v)| *v);
        owner
            .map(|v| v.iter().map(|s| s.ip).collect())
            .unwrap_or_default()
    }

    /// Reverse lookup: the `(name, node)` of an address: the container's
    /// own name when known, else its first alias in name order.
    pub fn reverse(&self, ip: Ipv4Addr) -> Option<(&str, &str)> {
        let hit = |primary: bool| {
            self.nodes.iter().find_map(|(node, m)| {
                m.iter()
                    .find(|(_, v)| v.iter().any(|s| s.ip == ip && (s.primary || !primary)))
                    .map(|(name, _)| (name.as_str(), node.as_str()))
            })
        };
        hit(true).or_else(|| hit(false))
    }

    /// Every binding, as `(node, name, ip, owns the bare name)`, for
    /// `flatnetctl names`.
    pub fn list(&self) -> Vec<(String, String, Ipv4Addr, bool)> {
        let mut out = Vec::new();
        for (node, m) in &self.nodes {
            for (name, v) in m {
                let bare = self.bare(name);
                for s in v {
                    out.push((node.clone(), name.clone(), s.ip, bare.contains(&s.ip)));
                }
            }
        }
        out
    }

    /// What `node` publishes (to serve to peers): each container's own
    /// name before its aliases, which is how a peer tells them apart.
    pub fn entries_of(&self, node: &str) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .nodes
            .get(node)
            .map(|m| {
                m.iter()
                    .flat_map(|(name, v)| {
                        v.iter().map(move |s| Entry {
                            name: name.clone(),
                            ip: s.ip,
                            primary: s.primary,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|e| !e.primary);
        out
    }

    /// First-seen times, to persist across restarts: (node, name, ip) → t.
    pub fn seen_times(&self) -> Vec<(String, String, Ipv4Addr, u64)> {
        self.nodes
            .iter()
            .flat_map(|(node, m)| {
                m.iter().flat_map(move |(name, v)| {
                    v.iter()
                        .map(move |s| (node.clone(), name.clone(), s.ip, s.first_seen))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, ip: &str) -> Entry {
        Entry {
            name: name.into(),
            ip: ip.parse().unwrap(),
            primary: true,
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn add_remove_and_per_node_names() {
        let mut t = NameTable::default();
        assert!(t.set_node("h1", &[e("web", "10.87.1.2"), e("db", "10.87.1.3")], |_| 10));
        assert!(!t.set_node("h1", &[e("web", "10.87.1.2"), e("db", "10.87.1.3")], |_| 99));
        assert_eq!(t.bare("WEB"), vec![ip("10.87.1.2")]);
        assert_eq!(t.on_node("db", "H1"), vec![ip("10.87.1.3")]);
        assert!(t.on_node("db", "h2").is_empty());
        assert!(t.set_node("h1", &[e("web", "10.87.1.2")], |_| 20));
        assert!(t.bare("db").is_empty());
        assert_eq!(t.reverse(ip("10.87.1.2")), Some(("web", "h1")));
        assert!(t.set_node("h1", &[], |_| 0));
        assert_eq!(t.nodes().count(), 0);
    }

    #[test]
    fn first_seen_owns_the_bare_name_and_ownership_passes_on() {
        let mut t = NameTable::default();
        t.set_node("h2", &[e("web", "10.87.2.5")], |_| 100);
        t.set_node("h1", &[e("web", "10.87.1.5")], |_| 200);
        assert_eq!(t.bare("web"), vec![ip("10.87.2.5")]);
        // Both stay reachable by node.
        assert_eq!(t.on_node("web", "h1"), vec![ip("10.87.1.5")]);
        // A later update of h1 cannot backdate its record: times are ours.
        t.set_node("h1", &[e("web", "10.87.1.5")], |_| 1);
        assert_eq!(t.bare("web"), vec![ip("10.87.2.5")]);
        // The owner's container goes: the other one takes the name.
        t.set_node("h2", &[], |_| 300);
        assert_eq!(t.bare("web"), vec![ip("10.87.1.5")]);
        // Ties go to the node name that sorts first.
        let mut t = NameTable::default();
        t.set_node("zz", &[e("x", "10.87.9.2")], |_| 5);
        t.set_node("aa", &[e("x", "10.87.8.2")], |_| 5);
        assert_eq!(t.bare("x"), vec![ip("10.87.8.2")]);
    }

    #[test]
    fn pins_and_opted_in_replicas() {
        let policy = Policy {
            pins: HashMap::from([("db".to_string(), "h2".to_string())]),
            replicas: BTreeSet::from(["web".to_string()]),
        };
        let mut t = NameTable::new(policy);
        t.set_node("h1", &[e("db", "10.87.1.3"), e("web", "10.87.1.2")], |_| 1);
        t.set_node("h2", &[e("db", "10.87.2.3"), e("web", "10.87.2.2")], |_| 2);
        assert_eq!(t.bare("db"), vec![ip("10.87.2.3")]);
        let mut web = t.bare("web");
        web.sort();
        assert_eq!(web, vec![ip("10.87.1.2"), ip("10.87.2.2")]);
        // A pin to a node that lacks the name falls back to first-seen.
        t.set_node("h2", &[e("web", "10.87.2.2")], |_| 2);
        assert_eq!(t.bare("db"), vec![ip("10.87.1.3")]);
        let owned: Vec<bool> = t.list().iter().map(|r| r.3).collect();
        assert_eq!(owned, vec![true, true, true]);
    }

    #[test]
    fn aliases_and_labels() {
        assert_eq!(label("Forgejo_DB"), Some("forgejo_db".into()));
        for bad in ["", "a.b", "has space", "-x", "x-", &"y".repeat(64)] {
            assert_eq!(label(bad), None, "{bad}");
        }
        let mut t = NameTable::default();
        t.set_node(
            "h1",
            &[
                e("web", "10.87.1.2"),
                e("www", "10.87.1.2"),
                e("bad.name", "10.87.1.2"),
            ],
            |_| 1,
        );
        assert_eq!(t.bare("www"), t.bare("web"));
        assert_eq!(t.list().len(), 2);
        assert_eq!(t.entries_of("h1").len(), 2);
        // PTR prefers the container's own name over an alias that sorts first.
        let alias = Entry {
            primary: false,
            ..e("abc123", "10.87.1.9")
        };
        t.set_node("h1", &[alias, e("zeta", "10.87.1.9")], |_| 1);
        assert_eq!(t.reverse(ip("10.87.1.9")), Some(("zeta", "h1")));
        assert!(t.entries_of("h1")[0].primary);
    }
}
