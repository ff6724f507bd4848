//! Remote members: people off the LAN who reach the Flatnet with the stock
//! WireGuard app, through a hub node, limited by a named policy
//! (docs/members.md).
//!
//! A member is a [`NodeRecord`] with a [`MemberRecord`]: one registry, one
//! id space, one delta-sync log, and one way to announce, remove and
//! replicate (redb or etcd) for nodes and members alike. Its subnet is a
//! /32 from the members' range, the last host subnet of the Flatnet's
//! CIDR, which nodes never get. Policies are their own records; a member
//! is announced with its policy's rules resolved, and again whenever the
//! policy changes.

use flatnet_wire::{
    lighthouse::{LhErrorCode, MemberInfo},
    policy::Rule,
};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{err, valid_name, Change, NodeRecord, Registry, RegistryError};

/// The token id member records carry (they joined with no token).
pub const MEMBER_TOKEN: &str = "member";

/// What makes a node record a member's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The node that accepts its WireGuard.
    pub hub: u32,
    /// The policy it is held to (rules resolved at announcement).
    pub policy: String,
    /// Unix time from which it is refused, if it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

/// A named set of allow rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub name: String,
    pub allow: Vec<Rule>,
}

/// How a new member is made.
#[derive(Debug, Clone)]
pub struct NewMember<'a> {
    pub name: &'a str,
    pub public_key: &'a str,
    pub hub: &'a str,
    pub policy: &'a str,
    pub expires: Option<u64>,
}

impl Registry {
    /// The range members' addresses come from: the CIDR's last host
    /// subnet.
    pub fn members_range(&self) -> Option<Ipv4Net> {
        flatnet_wire::policy::members_range(self.cidr, self.host_prefix)
    }

    /// Whether `subnet` is the members' range (never a node's).
    pub(super) fn is_members_range(&self, subnet: &Ipv4Net) -> bool {
        self.members_range().as_ref() == Some(subnet)
    }

    fn free_member_ip(&self) -> Option<Ipv4Net> {
        let range = self.members_range()?;
        range
            .hosts()
            .map(Ipv4Net::from)
            .find(|a| !self.used_subnets.contains(a))
    }

    pub fn policy(&self, name: &str) -> Option<&PolicyRecord> {
        self.policies.get(name)
    }

    pub fn policies(&self) -> impl Iterator<Item = &PolicyRecord> {
        self.policies.values()
    }

    /// Create or replace policy `name`; its members are announced again
    /// with the new rules.
    pub fn set_policy(
        &mut self,
        name: &str,
        allow: Vec<Rule>,
    ) -> Result<Vec<Change>, RegistryError> {
        if !valid_name(name) {
            return Err(err(
                LhErrorCode::Protocol,
                format!("invalid policy name {name:?} (1-63 of letters, digits, '.', '_', '-')"),
            ));
        }
        let rec = PolicyRecord {
            name: name.to_string(),
            allow,
        };
        Ok(self.apply_policy(name, Some(rec)))
    }

    /// Delete policy `name`, refused while members use it.
    pub fn remove_policy(&mut self, name: &str) -> Result<Vec<Change>, RegistryError> {
        if !self.policies.contains_key(name) {
            return Err(err(
                LhErrorCode::Protocol,
                format!("no policy named {name:?}"),
            ));
        }
        let users: Vec<&str> = self
            .members()
            .filter(|(_, m)| m.policy == name)
            .map(|(n, _)| n.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(err(
                LhErrorCode::Protocol,
                format!(
                    "policy {name:?} is held by {}: remove them or give them another policy first",
                    users.join(", ")
                ),
            ));
        }
        Ok(self.apply_policy(name, None))
    }

    /// A policy written here or at another Lighthouse (`None`: deleted).
    pub fn apply_policy(&mut self, name: &str, rec: Option<PolicyRecord>) -> Vec<Change> {
        if self.policies.get(name) == rec.as_ref() {
            return vec![];
        }
        let mut out = match &rec {
            Some(r) => {
                self.policies.insert(name.to_string(), r.clone());
                vec![Change::PolicySaved(r.clone())]
            }
            None => {
                self.policies.remove(name);
                vec![Change::PolicyRemoved(name.to_string())]
            }
        };
        let holders: Vec<u32> = self
            .members()
            .filter(|(_, m)| m.policy == name)
            .map(|(n, _)| n.id)
            .collect();
        out.extend(self.versioned(holders.into_iter().map(Change::NodeLive).collect()));
        out
    }

    /// Load stored policies (at start, and after a refused change).
    pub fn restore_policies(&mut self, policies: Vec<PolicyRecord>) {
        self.policies = policies.into_iter().map(|p| (p.name.clone(), p)).collect();
    }

    /// Every member record, with its member part.
    pub fn members(&self) -> impl Iterator<Item = (&NodeRecord, &MemberRecord)> {
        self.nodes
            .values()
            .filter_map(|n| n.member.as_ref().map(|m| (n, m)))
    }

    /// Add a member: a /32 from the members' range, held to `policy`,
    /// reached through node `hub`.
    pub fn add_member(
        &mut self,
        m: NewMember<'_>,
        now: u64,
    ) -> Result<(u32, Vec<Change>), RegistryError> {
        let bad = |s: String| err(LhErrorCode::Protocol, s);
        if !valid_name(m.name) {
            return Err(bad(format!("invalid member name {:?}", m.name)));
        }
        if self.by_name.contains_key(m.name) {
            return Err(err(
                LhErrorCode::NameTaken,
                format!("the name {:?} belongs to another node or member", m.name),
            ));
        }
        if self.by_key.contains_key(m.public_key) {
            return Err(err(
                LhErrorCode::NameTaken,
                "this public key belongs to another node or member",
            ));
        }
        let hub = self.hub_id(m.hub)?;
        if !self.policies.contains_key(m.policy) {
            return Err(bad(format!(
                "no policy named {:?}: create it first with `lighthouse policy set {} RULE...`",
                m.policy, m.policy
            )));
        }
        if let Some(t) = m.expires {
            if t <= now {
                return Err(bad("the expiry is in the past".into()));
            }
        }
        let range = self
            .members_range()
            .ok_or_else(|| bad("this Flatnet's CIDR has no room for a members' range".into()))?;
        if let Some(holder) = self.nodes.values().find(|n| n.subnet == range) {
            return Err(bad(format!(
                "the members' range {range} is held by node {:?} (it joined before members existed): \
                 remove it and let it join again",
                holder.name
            )));
        }
        let subnet = self.free_member_ip().ok_or_else(|| {
            err(
                LhErrorCode::Exhausted,
                format!("the members' range {range} is full"),
            )
        })?;
        let id = self.take_id()?;
        let rec = NodeRecord {
            id,
            name: m.name.to_string(),
            public_key: m.public_key.to_string(),
            subnet,
            token_id: MEMBER_TOKEN.to_string(),
            joined: now,
            member: Some(MemberRecord {
                hub,
                policy: m.policy.to_string(),
                expires: m.expires,
            }),
        };
        self.index(&rec);
        self.nodes.insert(id, rec.clone());
        Ok((id, self.versioned(vec![Change::NodeSaved(rec)])))
    }

    /// A member's new key: the old record goes (every host drops the old
    /// key at once) and a new one with the same name, address, hub, policy
    /// and expiry takes its place under a new id.
    pub fn rotate_member(
        &mut self,
        name: &str,
        public_key: &str,
        now: u64,
    ) -> Result<(u32, Vec<Change>), RegistryError> {
        let old = self.member_named(name)?.clone();
        if self.by_key.contains_key(public_key) {
            return Err(err(
                LhErrorCode::NameTaken,
                "this public key belongs to another node or member",
            ));
        }
        let id = self.take_id()?;
        let mut changes = self.remove_id(old.id);
        let rec = NodeRecord {
            id,
            public_key: public_key.to_string(),
            joined: now,
            ..old
        };
        self.index(&rec);
        self.nodes.insert(id, rec.clone());
        changes.extend(self.versioned(vec![Change::NodeSaved(rec)]));
        Ok((id, changes))
    }

    /// Remove member `name` (not a node: `nodes remove` is for those).
    pub fn remove_member(&mut self, name: &str) -> Result<Vec<Change>, RegistryError> {
        let id = self.member_named(name)?.id;
        Ok(self.remove_id(id))
    }

    /// Members whose expiry has come are removed.
    pub fn expire_members(&mut self, now: u64) -> Vec<Change> {
        let due: Vec<u32> = self
            .members()
            .filter(|(_, m)| m.expires.is_some_and(|t| t <= now))
            .map(|(n, _)| n.id)
            .collect();
        due.into_iter().flat_map(|id| self.remove_id(id)).collect()
    }

    /// The member part of a peer record: hub, expiry and resolved rules.
    pub(super) fn member_info(&self, m: &MemberRecord) -> MemberInfo {
        MemberInfo {
            hub: m.hub,
            expires: m.expires,
            policy: m.policy.clone(),
            allow: self
                .policies
                .get(&m.policy)
                .map(|p| p.allow.clone())
                .unwrap_or_default(),
        }
    }

    fn member_named(&self, name: &str) -> Result<&NodeRecord, RegistryError> {
        self.by_name
            .get(name)
            .and_then(|id| self.nodes.get(id))
            .filter(|n| n.member.is_some())
            .ok_or_else(|| err(LhErrorCode::Protocol, format!("no member named {name:?}")))
    }

    fn hub_id(&self, hub: &str) -> Result<u32, RegistryError> {
        match self.by_name.get(hub).and_then(|id| self.nodes.get(id)) {
            Some(n) if n.member.is_none() => Ok(n.id),
            Some(_) => Err(err(
                LhErrorCode::Protocol,
                format!("{hub:?} is a member; the hub must be a node"),
            )),
            None => Err(err(
                LhErrorCode::Protocol,
                format!("no node named {hub:?} to be the hub"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::tests::{join, reg};

    fn rules(r: &[&str]) -> Vec<Rule> {
        flatnet_wire::policy::parse_rules(r.iter().copied()).unwrap()
    }

    fn alice<'a>(hub: &'a str) -> NewMember<'a> {
        NewMember {
            name: "alice",
            public_key: "ALICEKEY",
            hub,
            policy: "web",
            expires: None,
        }
    }

    #[test]
    fn members_get_addresses_from_the_last_subnet_and_carry_resolved_rules() {
        let mut r = reg();
        let h1 = join(&mut r, "h1", "K1");
        let h2 = join(&mut r, "h2", "K2");
        assert!(r.add_member(alice("h1"), 10).is_err(), "no policy yet");
        r.set_policy("web", rules(&["forgejo:80,22"])).unwrap();
        let (id, ch) = r.add_member(alice("h1"), 10).unwrap();
        assert!(matches!(&ch[..], [Change::NodeSaved(n)] if n.id == id));
        let p = r.peer_info(id).unwrap();
        assert_eq!(p.subnet.to_string(), "10.87.255.1/32");
        let m = p.member.unwrap();
        assert_eq!((m.hub, m.policy.as_str()), (h1, "web"));
        assert_eq!(m.allow, rules(&["forgejo:80,22"]));
        // Everyone hears of it, hub or not.
        assert!(r.peers_of(h2).iter().any(|p| p.node_id == id));
        // A second member gets the next address; names and keys are unique.
        let (bob, _) = r
            .add_member(
                NewMember {
                    name: "bob",
                    public_key: "BOBKEY",
                    ..alice("h2")
                },
                10,
            )
            .unwrap();
        assert_eq!(r.node(bob).unwrap().subnet.to_string(), "10.87.255.2/32");
        assert_eq!(
            r.add_member(alice("h1"), 10).unwrap_err().code,
            LhErrorCode::NameTaken
        );
        let dup = NewMember {
            name: "carol",
            public_key: "BOBKEY",
            ..alice("h1")
        };
        assert_eq!(
            r.add_member(dup, 10).unwrap_err().code,
            LhErrorCode::NameTaken
        );
        let to_member = NewMember {
            name: "carol",
            public_key: "C",
            ..alice("bob")
        };
        assert!(r
            .add_member(to_member, 10)
            .unwrap_err()
            .message
            .contains("is a member"));
    }

    #[test]
    fn a_policy_change_reannounces_its_members_and_a_held_policy_stays() {
        let mut r = reg();
        join(&mut r, "h1", "K1");
        r.set_policy("web", rules(&["forgejo:80"])).unwrap();
        let (id, _) = r.add_member(alice("h1"), 10).unwrap();
        let v = r.log().version();
        let ch = r
            .set_policy("web", rules(&["forgejo:80", "node:h1"]))
            .unwrap();
        assert!(ch.contains(&Change::NodeLive(id)), "{ch:?}");
        assert!(r.log().version() > v);
        assert_eq!(r.peer_info(id).unwrap().member.unwrap().allow.len(), 2);
        assert!(r
            .set_policy("web", rules(&["forgejo:80", "node:h1"]))
            .unwrap()
            .is_empty());
        let e = r.remove_policy("web").unwrap_err();
        assert!(e.message.contains("alice"), "{}", e.message);
        r.remove_member("alice").unwrap();
        assert_eq!(
            r.remove_policy("web").unwrap(),
            vec![Change::PolicyRemoved("web".into())]
        );
    }

    #[test]
    fn expiry_rotation_and_the_members_range_is_never_a_nodes() {
        let mut r = reg();
        join(&mut r, "h1", "K1");
        r.set_policy("web", rules(&["forgejo"])).unwrap();
        let m = NewMember {
            expires: Some(100),
            ..alice("h1")
        };
        assert!(r
            .add_member(
                NewMember {
                    expires: Some(5),
                    ..m.clone()
                },
                10
            )
            .is_err());
        let (id, _) = r.add_member(m, 10).unwrap();
        let (id2, ch) = r.rotate_member("alice", "NEWKEY", 20).unwrap();
        assert!(ch.contains(&Change::NodeRemoved(id)) && id2 > id);
        let n = r.node(id2).unwrap();
        assert_eq!(
            (n.public_key.as_str(), n.subnet.to_string()),
            ("NEWKEY", "10.87.255.1/32".into())
        );
        assert!(r.expire_members(99).is_empty());
        assert_eq!(r.expire_members(100), vec![Change::NodeRemoved(id2)]);
        assert!(r.remove_member("h1").is_err(), "a node is not a member");
        // Nodes never get the members' range, even when it is all that is left.
        let mut small = Registry::new("10.9.0.0/22".parse().unwrap(), 24);
        join(&mut small, "a", "KA");
        join(&mut small, "b", "KB");
        let t = crate::registry::tests::token(&mut small);
        let e = small.admit("c", "KC", Some(&t), 1).unwrap_err();
        assert_eq!(e.code, LhErrorCode::Exhausted);
        assert_eq!(small.members_range().unwrap().to_string(), "10.9.3.0/24");
    }

    #[test]
    fn a_members_key_cannot_join_as_a_node() {
        let mut r = reg();
        join(&mut r, "h1", "K1");
        r.set_policy("web", rules(&["forgejo"])).unwrap();
        r.add_member(alice("h1"), 10).unwrap();
        let e = r.admit("alice", "ALICEKEY", None, 11).unwrap_err();
        assert_eq!(e.code, LhErrorCode::Removed);
        assert!(e.message.contains("member"), "{}", e.message);
    }
}
