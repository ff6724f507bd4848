//! Remote members in the peer list (docs/members.md). A member is a peer
//! record with a [`MemberInfo`]: on its hub it becomes a WireGuard peer of
//! its own (a /32, no endpoint until it sends, never dialled); on every
//! other host its address is one more AllowedIP of the hub's peer, so
//! replies go back through the hub and only the hub may send from it.

use std::collections::HashMap;

use flatnet_wire::lighthouse::{MemberInfo, PeerInfo};
use ipnet::Ipv4Net;
use tracing::warn;

use crate::{
    config::{decode_key, PeerConfig},
    policy::{Inputs, MemberInput},
};

/// A member record hosts take: a /32 inside the members' range.
fn plausible(p: &PeerInfo, range: Option<Ipv4Net>) -> bool {
    let ok = p.subnet.prefix_len() == 32 && range.is_some_and(|r| r.contains(&p.subnet.addr()));
    if !ok {
        warn!(
            member = %p.name, address = %p.subnet,
            "a remote member outside the members' range; ignored"
        );
    }
    ok
}

/// Add the members among `peers` to `out` (which holds the node peers):
/// their own peers where `my_id` is the hub, AllowedIPs of the hub's peer
/// elsewhere. Expired members are left out.
pub fn attach<'a>(
    peers: impl Iterator<Item = &'a PeerInfo>,
    my_id: Option<u32>,
    range: Option<Ipv4Net>,
    now: u64,
    out: &mut Vec<PeerConfig>,
) {
    for p in peers {
        let Some(m) = &p.member else { continue };
        if m.expires.is_some_and(|t| t <= now) || !plausible(p, range) {
            continue;
        }
        if Some(m.hub) == my_id {
            let Ok(key) = decode_key(&p.public_key) else {
                warn!(member = %p.name, "remote member with a bad key; ignored");
                continue;
            };
            if out.iter().any(|q| q.public_key == key) {
                continue;
            }
            out.push(PeerConfig {
                name: p.name.clone(),
                public_key: key,
                endpoint: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
                subnet: p.subnet,
                node_id: None,
                member: true,
                also: vec![],
            });
        } else if let Some(hub) = out.iter_mut().find(|q| q.node_id == Some(m.hub)) {
            hub.also.push(p.subnet);
        }
    }
}

/// What the policy is compiled from, as far as the peer list goes: the
/// members and the node subnets (the caller adds names).
pub fn policy_inputs<'a>(
    peers: impl Iterator<Item = &'a PeerInfo> + Clone,
    me: (&str, Ipv4Net),
    range: Option<Ipv4Net>,
    my_id: u32,
) -> Inputs {
    let mut nodes: HashMap<String, Ipv4Net> = HashMap::new();
    let mut by_id: HashMap<u32, Ipv4Net> = HashMap::new();
    nodes.insert(me.0.to_string(), me.1);
    by_id.insert(my_id, me.1);
    for p in peers.clone().filter(|p| p.member.is_none()) {
        nodes.insert(p.name.clone(), p.subnet);
        by_id.insert(p.node_id, p.subnet);
    }
    let members = peers
        .filter_map(|p| p.member.as_ref().map(|m| (p, m)))
        .filter(|(p, _)| range.is_some_and(|r| r.contains(&p.subnet.addr())))
        .map(|(p, m): (&PeerInfo, &MemberInfo)| MemberInput {
            name: p.name.clone(),
            address: p.subnet.addr(),
            hub_subnet: by_id.get(&m.hub).copied(),
            expires: m.expires,
            policy: m.policy.clone(),
            allow: m.allow.clone(),
        })
        .collect();
    Inputs {
        members_range: range,
        members,
        nodes,
        names: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u32, subnet: &str) -> PeerInfo {
        PeerInfo {
            node_id: id,
            name: format!("h{id}"),
            public_key: crate::config::encode_key(&[id as u8; 32]),
            subnet: subnet.parse().unwrap(),
            observed: None,
            local_addrs: vec![],
            online: true,
            via: vec![],
            member: None,
        }
    }

    fn member(id: u32, addr: &str, hub: u32, expires: Option<u64>) -> PeerInfo {
        PeerInfo {
            name: format!("m{id}"),
            online: false,
            member: Some(MemberInfo {
                hub,
                expires,
                policy: "web".into(),
                allow: vec!["forgejo:80".parse().unwrap()],
            }),
            ..node(id, addr)
        }
    }

    fn cfg(p: &PeerInfo) -> PeerConfig {
        PeerConfig {
            name: p.name.clone(),
            public_key: decode_key(&p.public_key).unwrap(),
            endpoint: "192.0.2.1:1".parse().unwrap(),
            subnet: p.subnet,
            node_id: Some(p.node_id),
            member: false,
            also: vec![],
        }
    }

    #[test]
    fn on_the_hub_a_peer_elsewhere_an_address_behind_the_hub() {
        let range = Some("10.87.255.0/24".parse().unwrap());
        let peers = [
            node(2, "10.87.2.0/24"),
            member(10, "10.87.255.1/32", 1, None),
            member(11, "10.87.255.2/32", 2, None),
            member(12, "10.87.255.3/32", 2, Some(50)),
            member(13, "10.87.3.9/32", 2, None), // outside the range: hostile
            member(14, "10.87.255.0/25", 2, None), // not a /32
        ];
        // On node 1, the hub of m10.
        let mut out = vec![cfg(&peers[0])];
        attach(peers.iter(), Some(1), range, 100, &mut out);
        let names: Vec<&str> = out.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["h2", "m10"]);
        assert!(out[1].member && out[1].node_id.is_none());
        assert_eq!(out[1].subnet.to_string(), "10.87.255.1/32");
        // m11 sits behind h2; m12 expired; m13, m14 refused.
        assert_eq!(
            out[0].also,
            vec!["10.87.255.2/32".parse::<Ipv4Net>().unwrap()]
        );
        // Before m12's expiry it is there too.
        let mut out = vec![cfg(&peers[0])];
        attach(peers.iter(), Some(1), range, 10, &mut out);
        assert_eq!(out[0].also.len(), 2);
        // With no members' range (not a Lighthouse Flatnet) nothing is taken.
        let mut out = vec![cfg(&peers[0])];
        attach(peers.iter(), Some(1), None, 10, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].also.is_empty());
    }

    #[test]
    fn policy_inputs_name_hubs_by_subnet() {
        let range = Some("10.87.255.0/24".parse().unwrap());
        let peers = [
            node(2, "10.87.2.0/24"),
            member(10, "10.87.255.1/32", 2, None),
        ];
        let i = policy_inputs(
            peers.iter(),
            ("h1", "10.87.1.0/24".parse().unwrap()),
            range,
            1,
        );
        assert_eq!(i.nodes.len(), 2);
        assert_eq!(i.members.len(), 1);
        assert_eq!(
            i.members[0].hub_subnet,
            Some("10.87.2.0/24".parse().unwrap())
        );
    }
}
