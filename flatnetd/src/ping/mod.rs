//! `flatnetctl ping <node|ip|name>`: real ICMP echoes through the tunnel,
//! one per API request ([`flatnet_wire::Request::Probe`]), each reported with
//! the path the peer is on when its reply arrives (direct endpoint or relay)
//! and the round-trip time. A probe toward a relayed Lighthouse peer also
//! asks for a punch at once, so `--until-direct` does not wait for the next
//! scheduled re-punch.
//!
//! [`resolve`] (which address a target means) is pure; [`icmp`] does the I/O.

pub mod icmp;

use std::net::Ipv4Addr;

use flatnet_wire::PeerStatus;
use ipnet::Ipv4Net;

/// Where a probe goes, and through which peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub ip: Ipv4Addr,
    /// The peer whose subnet holds `ip`; `None` for this host's own subnet.
    pub peer: Option<String>,
}

/// What resolving needs to know.
pub struct Context<'a> {
    pub cidr: Ipv4Net,
    pub subnet: Ipv4Net,
    pub peers: &'a [PeerStatus],
    /// The DNS domain (`flatnet`).
    pub domain: &'a str,
    /// Flatnet DNS names: (node, name, ip, owner).
    pub names: &'a [(String, String, Ipv4Addr, bool)],
}

/// A node's own address: the first of its subnet (its gateway address, on
/// its TUN device).
pub fn node_address(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

fn peer_of(ctx: &Context, ip: Ipv4Addr) -> Option<String> {
    ctx.peers
        .iter()
        .find(|p| p.subnet.contains(&ip))
        .map(|p| p.name.clone())
}

/// Turn `target` into an address: a Flatnet IP, a peer's node name (its
/// gateway address), or a Flatnet DNS name (`web`, `web.h2`, `web.flatnet`,
/// `web.h2.flatnet`).
pub fn resolve(ctx: &Context, target: &str) -> Result<Target, String> {
    let t = target.trim().trim_end_matches('.').to_ascii_lowercase();
    if t.is_empty() {
        return Err("give a node name, a Flatnet IP or a container name".into());
    }
    if let Ok(ip) = t.parse::<Ipv4Addr>() {
        if !ctx.cidr.contains(&ip) {
            return Err(format!(
                "{ip} is outside the Flatnet {}; ping it with the system's ping",
                ctx.cidr
            ));
        }
        if ctx.subnet.contains(&ip) {
            return Ok(Target { ip, peer: None });
        }
        return match peer_of(ctx, ip) {
            Some(peer) => Ok(Target {
                ip,
                peer: Some(peer),
            }),
            None => Err(format!(
                "no peer serves {ip}: `flatnetctl status` lists the peers and their subnets"
            )),
        };
    }
    if let Some(p) = ctx.peers.iter().find(|p| p.name.eq_ignore_ascii_case(&t)) {
        return Ok(Target {
            ip: node_address(p.subnet),
            peer: Some(p.name.clone()),
        });
    }
    let suffix = format!(".{}", ctx.domain);
    let short = t.strip_suffix(suffix.as_str()).unwrap_or(&t);
    let (name, node) = match short.split_once('.') {
        Some((n, node)) => (n, Some(node)),
        None => (short, None),
    };
    let mut found: Vec<&(String, String, Ipv4Addr, bool)> = ctx
        .names
        .iter()
        .filter(|(n_node, n_name, _, _)| {
            n_name.eq_ignore_ascii_case(name)
                && node.is_none_or(|want| n_node.eq_ignore_ascii_case(want))
        })
        .collect();
    // A bare name means its owner, as Flatnet DNS answers it.
    found.sort_by_key(|(_, _, _, owner)| !owner);
    match found.first() {
        Some((_, _, ip, _)) => Ok(Target {
            ip: *ip,
            peer: if ctx.subnet.contains(ip) {
                None
            } else {
                peer_of(ctx, *ip)
            },
        }),
        None => Err(format!(
            "{target} is not a peer, a Flatnet IP or a name Flatnet DNS knows: \
             `flatnetctl status` lists peers, `flatnetctl names` lists names"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_resolve_to_addresses_and_peers() {
        let peers = [
            crate::test_peer("h2", "10.87.2.0/24"),
            crate::test_peer("h3", "10.87.3.0/24"),
        ];
        let names = [
            (
                "h2".to_string(),
                "web".to_string(),
                "10.87.2.5".parse().unwrap(),
                true,
            ),
            (
                "h3".to_string(),
                "web".to_string(),
                "10.87.3.5".parse().unwrap(),
                false,
            ),
            (
                "h1".to_string(),
                "db".to_string(),
                "10.87.1.9".parse().unwrap(),
                true,
            ),
        ];
        let ctx = Context {
            cidr: "10.87.0.0/16".parse().unwrap(),
            subnet: "10.87.1.0/24".parse().unwrap(),
            peers: &peers,
            domain: "flatnet",
            names: &names,
        };
        let t = |ip: &str, peer: Option<&str>| Target {
            ip: ip.parse().unwrap(),
            peer: peer.map(Into::into),
        };
        assert_eq!(resolve(&ctx, "H2"), Ok(t("10.87.2.1", Some("h2"))));
        assert_eq!(resolve(&ctx, "10.87.3.7"), Ok(t("10.87.3.7", Some("h3"))));
        assert_eq!(resolve(&ctx, "10.87.1.9"), Ok(t("10.87.1.9", None)));
        assert_eq!(resolve(&ctx, "web"), Ok(t("10.87.2.5", Some("h2"))));
        assert_eq!(
            resolve(&ctx, "web.h3.flatnet."),
            Ok(t("10.87.3.5", Some("h3")))
        );
        assert_eq!(resolve(&ctx, "db.flatnet"), Ok(t("10.87.1.9", None)));
        for bad in ["", "8.8.8.8", "10.87.9.1", "nosuch", "web.h9"] {
            let e = resolve(&ctx, bad).expect_err(bad);
            assert!(!e.contains("Some("), "{e}");
        }
        assert!(resolve(&ctx, "8.8.8.8")
            .unwrap_err()
            .contains("outside the Flatnet"));
    }
}
