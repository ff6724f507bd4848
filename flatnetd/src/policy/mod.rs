//! The access policy the data plane enforces on packets that leave a
//! tunnel (docs/members.md). Sans-IO: [`compile`] turns the members the
//! Lighthouse announced, the node subnets and the name table into a
//! [`PolicyTable`]; [`PolicyTable::check`] judges one packet.
//!
//! The model:
//! - A packet whose source is in the members' range (the Flatnet's last
//!   host subnet) comes from a remote member. It passes only if a rule of
//!   that member's policy allows its destination and port, or it is DNS to
//!   the member's hub (its gateway address, port 53). Everything else from
//!   a member is dropped: default-deny, silently (the sender times out).
//! - Every other packet passes as before (containers and hosts are flat).
//!   Replies to a member come from containers, so they pass too: the
//!   check is on what a member starts, not on connections.
//! - Node and service rules never match a host's own address (a node
//!   subnet's gateway); only a CIDR rule can allow one.
//! - Service rules match the addresses the name table holds for that name
//!   now (recompiled every second by [`run`]).
//!
//! The same table is built for containers later: keying rules by source
//! address is what would let `forgejo` alone reach `forgejo-db:5432`.

pub mod packet;
pub mod run;

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
};

pub use flatnet_wire::policy::{gateway_of, members_range};
use flatnet_wire::policy::{Rule, Target, TCP, UDP};
use ipnet::Ipv4Net;

pub use packet::{flow, Flow};

/// A member as the policy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInput {
    pub name: String,
    pub address: Ipv4Addr,
    /// Its hub's subnet: DNS on the hub's gateway address is always
    /// allowed.
    pub hub_subnet: Option<Ipv4Net>,
    pub expires: Option<u64>,
    pub policy: String,
    pub allow: Vec<Rule>,
}

/// Everything a table is compiled from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The members' range; `None` when this host is not in a Lighthouse
    /// Flatnet (then nothing is a member).
    pub members_range: Option<Ipv4Net>,
    pub members: Vec<MemberInput>,
    /// Node name → subnet, this host included.
    pub nodes: HashMap<String, Ipv4Net>,
    /// (node, name, address) of every container name and alias.
    pub names: Vec<(String, String, Ipv4Addr)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Compiled {
    nets: Vec<Ipv4Net>,
    /// Node and service rules never match a host's own address.
    hosts_excluded: bool,
    rule: Rule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Access {
    name: String,
    policy: String,
    expires: Option<u64>,
    dns: Option<Ipv4Addr>,
    rules: Vec<Compiled>,
}

/// The compiled policy: one lookup by source address per member packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyTable {
    range: Option<Ipv4Net>,
    members: HashMap<Ipv4Addr, Access>,
    /// Every node's gateway (the hosts' own addresses).
    gateways: HashSet<Ipv4Addr>,
}

/// Why a member's packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deny {
    /// From the members' range, but no member has this address.
    UnknownMember,
    Expired,
    /// No rule of the member's policy allows it.
    NoRule,
}

impl Deny {
    pub fn as_str(self) -> &'static str {
        match self {
            Deny::UnknownMember => "unknown member",
            Deny::Expired => "expired",
            Deny::NoRule => "no rule allows it",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not from a member: the policy does not apply.
    NotMember,
    Allow,
    Deny(Deny),
}

/// Build the table.
pub fn compile(i: &Inputs) -> PolicyTable {
    let mut t = PolicyTable {
        range: i.members_range,
        gateways: i.nodes.values().map(|s| gateway_of(*s)).collect(),
        ..PolicyTable::default()
    };
    for m in &i.members {
        if !i.members_range.is_some_and(|r| r.contains(&m.address)) {
            continue;
        }
        let rules = m
            .allow
            .iter()
            .map(|rule| {
                let (nets, hosts_excluded) = match &rule.target {
                    Target::Cidr(c) => (vec![*c], false),
                    Target::Node(n) => (i.nodes.get(n).copied().into_iter().collect(), true),
                    Target::Service { name, node } => (
                        i.names
                            .iter()
                            .filter(|(nd, nm, _)| {
                                nm == name && node.as_ref().is_none_or(|want| want == nd)
                            })
                            .map(|(_, _, ip)| Ipv4Net::from(*ip))
                            .collect(),
                        true,
                    ),
                };
                Compiled {
                    nets,
                    hosts_excluded,
                    rule: rule.clone(),
                }
            })
            .collect();
        t.members.insert(
            m.address,
            Access {
                name: m.name.clone(),
                policy: m.policy.clone(),
                expires: m.expires,
                dns: m.hub_subnet.map(gateway_of),
                rules,
            },
        );
    }
    t
}

impl PolicyTable {
    /// Judge one packet that left a tunnel, at unix time `now`.
    pub fn check(&self, f: &Flow, now: u64) -> Verdict {
        let Some(range) = self.range else {
            return Verdict::NotMember;
        };
        if !range.contains(&f.src) {
            return Verdict::NotMember;
        }
        let Some(a) = self.members.get(&f.src) else {
            return Verdict::Deny(Deny::UnknownMember);
        };
        if a.expires.is_some_and(|t| t <= now) {
            return Verdict::Deny(Deny::Expired);
        }
        if Some(f.dst) == a.dns
            && (f.proto == UDP || f.proto == TCP)
            && f.dport.is_none_or(|p| p == 53)
        {
            return Verdict::Allow;
        }
        let is_host = self.gateways.contains(&f.dst);
        let ok = a.rules.iter().any(|c| {
            !(c.hosts_excluded && is_host)
                && c.nets.iter().any(|n| n.contains(&f.dst))
                && c.rule.allows_port(f.proto, f.dport)
        });
        if ok {
            Verdict::Allow
        } else {
            Verdict::Deny(Deny::NoRule)
        }
    }

    /// The member at `addr` and its policy's name, for logs and status.
    pub fn member(&self, addr: Ipv4Addr) -> Option<(&str, &str)> {
        self.members
            .get(&addr)
            .map(|a| (a.name.as_str(), a.policy.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::{packet::build, *};
    use flatnet_wire::policy::parse_rules;

    fn inputs() -> Inputs {
        let cidr: Ipv4Net = "10.87.0.0/16".parse().unwrap();
        let member = |name: &str, addr: &str, rules: &[&str]| MemberInput {
            name: name.into(),
            address: addr.parse().unwrap(),
            hub_subnet: Some("10.87.1.0/24".parse().unwrap()),
            expires: Some(1000),
            policy: format!("{name}-policy"),
            allow: parse_rules(rules.iter().copied()).unwrap(),
        };
        Inputs {
            members_range: members_range(cidr, 24),
            members: vec![
                member("alice", "10.87.255.1", &["forgejo:80,22/tcp"]),
                member(
                    "bob",
                    "10.87.255.2",
                    &["node:h2", "forgejo-db.h2:5432", "10.87.255.1:9"],
                ),
            ],
            nodes: [("h1", "10.87.1.0/24"), ("h2", "10.87.2.0/24")]
                .into_iter()
                .map(|(n, s)| (n.to_string(), s.parse().unwrap()))
                .collect(),
            names: vec![
                ("h2".into(), "forgejo".into(), "10.87.2.5".parse().unwrap()),
                ("h1".into(), "forgejo".into(), "10.87.1.7".parse().unwrap()),
                (
                    "h2".into(),
                    "forgejo-db".into(),
                    "10.87.2.6".parse().unwrap(),
                ),
            ],
        }
    }

    fn judge(t: &PolicyTable, src: &str, dst: &str, proto: u8, port: u16, now: u64) -> Verdict {
        t.check(&flow(&build(src, dst, proto, port, 0)).unwrap(), now)
    }

    #[test]
    fn default_deny_for_members_and_flat_for_everyone_else() {
        let t = compile(&inputs());
        let j = |src, dst, proto, port| judge(&t, src, dst, proto, port, 10);
        // alice: forgejo's web (TCP or UDP) and SSH (TCP only), on any node.
        assert_eq!(j("10.87.255.1", "10.87.2.5", 6, 80), Verdict::Allow);
        assert_eq!(j("10.87.255.1", "10.87.1.7", 6, 22), Verdict::Allow);
        assert_eq!(
            j("10.87.255.1", "10.87.2.5", 17, 22),
            Verdict::Deny(Deny::NoRule)
        );
        assert_eq!(
            j("10.87.255.1", "10.87.2.6", 6, 5432),
            Verdict::Deny(Deny::NoRule),
            "the db"
        );
        assert_eq!(
            j("10.87.255.1", "10.87.2.5", 1, 0),
            Verdict::Deny(Deny::NoRule),
            "no ping with ports"
        );
        assert_eq!(
            j("10.87.255.1", "10.87.2.1", 6, 80),
            Verdict::Deny(Deny::NoRule),
            "a host"
        );
        assert_eq!(
            j("10.87.255.1", "10.87.255.2", 6, 80),
            Verdict::Deny(Deny::NoRule),
            "a member"
        );
        assert_eq!(
            j("10.87.255.1", "192.168.1.1", 6, 80),
            Verdict::Deny(Deny::NoRule),
            "outside"
        );
        // DNS on the hub, nothing else there.
        assert_eq!(j("10.87.255.1", "10.87.1.1", 17, 53), Verdict::Allow);
        assert_eq!(j("10.87.255.1", "10.87.1.1", 6, 53), Verdict::Allow);
        assert_eq!(
            j("10.87.255.1", "10.87.1.1", 6, 22),
            Verdict::Deny(Deny::NoRule)
        );
        // bob: every container of h2 (not its host), the db by name.node,
        // and one port of alice by CIDR.
        assert_eq!(j("10.87.255.2", "10.87.2.200", 1, 0), Verdict::Allow);
        assert_eq!(
            j("10.87.255.2", "10.87.2.1", 6, 22),
            Verdict::Deny(Deny::NoRule)
        );
        assert_eq!(
            j("10.87.255.2", "10.87.1.7", 6, 80),
            Verdict::Deny(Deny::NoRule)
        );
        assert_eq!(j("10.87.255.2", "10.87.255.1", 17, 9), Verdict::Allow);
        // Not members: flat.
        assert_eq!(j("10.87.1.7", "10.87.2.6", 6, 5432), Verdict::NotMember);
        assert_eq!(
            j("10.87.2.6", "10.87.255.1", 6, 40000),
            Verdict::NotMember,
            "a reply"
        );
        // Unknown member, expiry.
        assert_eq!(
            j("10.87.255.9", "10.87.2.5", 6, 80),
            Verdict::Deny(Deny::UnknownMember)
        );
        assert_eq!(
            judge(&t, "10.87.255.1", "10.87.2.5", 6, 80, 1000),
            Verdict::Deny(Deny::Expired)
        );
        assert_eq!(
            t.member("10.87.255.2".parse().unwrap()),
            Some(("bob", "bob-policy"))
        );
    }

    #[test]
    fn names_follow_the_table_and_no_range_means_no_members() {
        let mut i = inputs();
        i.names.retain(|(_, n, _)| n != "forgejo");
        i.names
            .push(("h2".into(), "forgejo".into(), "10.87.2.9".parse().unwrap()));
        let t = compile(&i);
        assert_eq!(
            judge(&t, "10.87.255.1", "10.87.2.5", 6, 80, 10),
            Verdict::Deny(Deny::NoRule)
        );
        assert_eq!(
            judge(&t, "10.87.255.1", "10.87.2.9", 6, 80, 10),
            Verdict::Allow
        );
        assert_ne!(t, compile(&inputs()));
        i.members_range = None;
        let none = compile(&i);
        assert_eq!(
            judge(&none, "10.87.255.1", "10.87.2.6", 6, 5432, 10),
            Verdict::NotMember
        );
        // A member outside the range is not taken (a hostile record).
        let mut i = inputs();
        i.members[0].address = "10.87.2.50".parse().unwrap();
        let t = compile(&i);
        assert_eq!(t.member("10.87.2.50".parse().unwrap()), None);
        assert_eq!(
            members_range("10.87.0.0/16".parse().unwrap(), 24)
                .unwrap()
                .to_string(),
            "10.87.255.0/24"
        );
    }

    #[test]
    fn later_fragments_pass_only_where_the_protocol_may() {
        let t = compile(&inputs());
        let frag = |src: &str, dst: &str, proto| {
            t.check(&flow(&build(src, dst, proto, 0, 100)).unwrap(), 10)
        };
        assert_eq!(frag("10.87.255.1", "10.87.2.5", 6), Verdict::Allow);
        assert_eq!(
            frag("10.87.255.1", "10.87.2.6", 6),
            Verdict::Deny(Deny::NoRule)
        );
    }
}
