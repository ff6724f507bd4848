//! Changes made by the other Lighthouses sharing the registry (etcd),
//! applied to this one's copy. Each returns the [`Change`]s to record and
//! announce, versioned like local ones, so this Lighthouse's nodes get
//! them by delta sync too; a change this Lighthouse already has (its own
//! write coming back from the watch) changes nothing.

use std::collections::{BTreeMap, HashMap};

use super::{Change, Live, NodeRecord, PolicyRecord, Registry};
use crate::token::TokenRecord;

/// Everything the shared registry holds, as read at one revision.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub nodes: Vec<NodeRecord>,
    pub tokens: Vec<TokenRecord>,
    pub next_id: u32,
    pub policies: Vec<PolicyRecord>,
    /// Presence by node and Lighthouse id.
    pub presence: HashMap<u32, BTreeMap<String, Live>>,
}

impl Registry {
    /// A node record written at another Lighthouse.
    pub fn apply_node(&mut self, rec: NodeRecord) -> Vec<Change> {
        if self.nodes.get(&rec.id) == Some(&rec) {
            return vec![];
        }
        if let Some(old) = self.nodes.remove(&rec.id) {
            self.by_key.remove(&old.public_key);
            self.by_name.remove(&old.name);
            self.used_subnets.remove(&old.subnet);
        }
        self.next_id = self.next_id.max(rec.id.saturating_add(1));
        self.index(&rec);
        self.nodes.insert(rec.id, rec.clone());
        self.versioned(vec![Change::NodeSaved(rec)])
    }

    /// A node removed at another Lighthouse.
    pub fn apply_node_removed(&mut self, id: u32) -> Vec<Change> {
        if !self.nodes.contains_key(&id) {
            return vec![];
        }
        self.remove_id(id)
    }

    /// A token written at another Lighthouse (made, used, revoked).
    pub fn apply_token(&mut self, rec: TokenRecord) -> Vec<Change> {
        if self.tokens.get(&rec.id) == Some(&rec) {
            return vec![];
        }
        self.tokens.insert(rec.id.clone(), rec.clone());
        vec![Change::TokenSaved(rec)]
    }

    /// The shared next node id: the one new nodes must take, or the joins
    /// here fail their transaction.
    pub fn apply_next_id(&mut self, next: u32) {
        self.next_id = next;
    }

    /// Node `id`'s presence at Lighthouse `lh` (`None`: gone from there).
    /// This Lighthouse's own presence is its sessions, not the store's.
    pub fn apply_presence(&mut self, id: u32, lh: &str, p: Option<Live>) -> Vec<Change> {
        if lh == self.me || !self.nodes.contains_key(&id) {
            return vec![];
        }
        let before = self.peer_info(id);
        let m = self.remote.entry(id).or_default();
        match p {
            Some(p) => {
                m.insert(lh.to_string(), p);
            }
            None => {
                m.remove(lh);
                if m.is_empty() {
                    self.remote.remove(&id);
                }
            }
        }
        if self.peer_info(id) == before {
            return vec![];
        }
        self.versioned(vec![Change::NodeLive(id)])
    }

    /// Bring this copy to `snap` (at start-up, or after the watch was
    /// lost): what differs becomes versioned changes; nodes gone from it
    /// are removed.
    pub fn sync_to(&mut self, snap: Snapshot) -> Vec<Change> {
        let mut out = Vec::new();
        let keep: std::collections::HashSet<u32> = snap.nodes.iter().map(|n| n.id).collect();
        let gone: Vec<u32> = self
            .nodes
            .keys()
            .copied()
            .filter(|id| !keep.contains(id))
            .collect();
        for id in gone {
            out.extend(self.remove_id(id));
        }
        for n in snap.nodes {
            out.extend(self.apply_node(n));
        }
        for t in snap.tokens {
            out.extend(self.apply_token(t));
        }
        // Policies first gone, then written: members are announced once
        // with the rules they end up with.
        let keep: std::collections::HashSet<String> =
            snap.policies.iter().map(|p| p.name.clone()).collect();
        let gone: Vec<String> = self
            .policies
            .keys()
            .filter(|n| !keep.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            out.extend(self.apply_policy(&name, None));
        }
        for p in snap.policies {
            let name = p.name.clone();
            out.extend(self.apply_policy(&name, Some(p)));
        }
        self.apply_next_id(snap.next_id.max(1));
        let mut ids: Vec<u32> = self.remote.keys().copied().collect();
        ids.extend(snap.presence.keys().copied());
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let before = self.peer_info(id);
            match snap.presence.get(&id) {
                Some(m) => {
                    let mut m = m.clone();
                    m.remove(&self.me);
                    self.remote.insert(id, m);
                }
                None => {
                    self.remote.remove(&id);
                }
            }
            if self.nodes.contains_key(&id) && self.peer_info(id) != before {
                out.extend(self.versioned(vec![Change::NodeLive(id)]));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Token;

    const FP: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn two() -> (Registry, Registry, String) {
        let cidr = "10.87.0.0/16".parse().unwrap();
        let (mut a, mut b) = (Registry::new(cidr, 24), Registry::new(cidr, 24));
        a.set_me("aaaa");
        b.set_me("bbbb");
        let t = Token::generate("lh:1", FP);
        for (i, ch) in a.add_token(&t, 1, None, true).into_iter().enumerate() {
            assert_eq!(i, 0);
            if let Change::TokenSaved(r) = ch {
                b.apply_token(r);
            }
        }
        (a, b, t.encode())
    }

    /// Carry `a`'s changes to `b` the way the etcd watch does.
    fn carry(changes: &[Change], a: &Registry, b: &mut Registry) -> Vec<Change> {
        let mut out = Vec::new();
        for c in changes {
            out.extend(match c {
                Change::NodeSaved(n) => b.apply_node(n.clone()),
                Change::NodeRemoved(id) => b.apply_node_removed(*id),
                Change::TokenSaved(t) => b.apply_token(t.clone()),
                Change::PolicySaved(p) => b.apply_policy(&p.name, Some(p.clone())),
                Change::PolicyRemoved(n) => b.apply_policy(n, None),
                Change::NodeLive(_) => vec![],
            });
        }
        b.apply_next_id(a.next_id());
        out
    }

    #[test]
    fn a_join_elsewhere_is_versioned_here_and_its_own_echo_changes_nothing() {
        let (mut a, mut b, t) = two();
        let (id, ch) = a.admit("n1", "K1", Some(&t), 10).unwrap();
        let v = b.log().version();
        let got = carry(&ch, &a, &mut b);
        assert!(got.contains(&Change::NodeSaved(a.node(id).unwrap().clone())));
        assert!(b.log().version() > v);
        assert_eq!(b.next_id(), a.next_id());
        // The same records again (the watch echoing): nothing.
        assert!(carry(&ch, &a, &mut b).is_empty());
        // b's next join takes the next id and another subnet.
        let (id2, _) = b.admit("n2", "K2", Some(&t), 11).unwrap();
        assert_ne!(id2, id);
        assert_ne!(b.node(id2).unwrap().subnet, a.node(id).unwrap().subnet);
    }

    #[test]
    fn presence_elsewhere_makes_a_node_online_via_that_lighthouse() {
        let (mut a, mut b, t) = two();
        let (id, ch) = a.admit("n1", "K1", Some(&t), 10).unwrap();
        carry(&ch, &a, &mut b);
        let live = Live {
            online: true,
            observed: Some("192.0.2.1:51820".parse().unwrap()),
            local_addrs: vec![],
        };
        assert_eq!(
            b.apply_presence(id, "aaaa", Some(live.clone())),
            vec![Change::NodeLive(id)]
        );
        let p = b.peer_info(id).unwrap();
        assert!(p.online && p.via == vec!["aaaa".to_string()]);
        // Connected to b as well: both, sorted.
        b.connected(id, "192.0.2.1:51820".parse().unwrap(), vec![]);
        assert_eq!(b.peer_info(id).unwrap().via, vec!["aaaa", "bbbb"]);
        // b's own presence is never taken from the store.
        assert!(b.apply_presence(id, "bbbb", None).is_empty());
        // Gone from a: only b is left.
        assert_eq!(b.apply_presence(id, "aaaa", None).len(), 1);
        assert_eq!(b.peer_info(id).unwrap().via, vec!["bbbb"]);
        // The same presence twice changes nothing.
        b.apply_presence(id, "aaaa", Some(live.clone()));
        assert!(b.apply_presence(id, "aaaa", Some(live)).is_empty());
    }

    #[test]
    fn sync_to_a_snapshot_removes_what_is_gone_and_versions_the_rest() {
        let (mut a, mut b, t) = two();
        let (x, ch1) = a.admit("x", "KX", Some(&t), 10).unwrap();
        let (y, ch2) = a.admit("y", "KY", Some(&t), 10).unwrap();
        carry(&ch1, &a, &mut b);
        carry(&ch2, &a, &mut b);
        a.remove_node("x").unwrap();
        let (z, _) = a.admit("z", "KZ", Some(&t), 10).unwrap();
        let snap = Snapshot {
            nodes: a.nodes().cloned().collect(),
            tokens: a.tokens().cloned().collect(),
            next_id: a.next_id(),
            presence: HashMap::new(),
            policies: vec![],
        };
        let ch = b.sync_to(snap.clone());
        assert!(ch.contains(&Change::NodeRemoved(x)));
        assert!(ch
            .iter()
            .any(|c| matches!(c, Change::NodeSaved(n) if n.id == z)));
        assert!(b.node(y).is_some() && b.node(x).is_none());
        assert_eq!(b.next_id(), a.next_id());
        assert!(b.sync_to(snap).is_empty());
    }
}
