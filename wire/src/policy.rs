//! Access rules for remote members: what a member (or a group of members
//! sharing one named policy) may reach on the Flatnet. Default-deny: a
//! packet from a member address passes only when one rule allows it.
//!
//! A rule is written as text, on the command line and in every record
//! that carries it (`lighthouse policy set`, the peer records pushed to
//! hosts):
//!
//! | rule | allows |
//! | --- | --- |
//! | `forgejo` | every port of every container named (or aliased) `forgejo` |
//! | `forgejo:80,22` | TCP and UDP ports 80 and 22 of those containers |
//! | `forgejo.h2:3000-3010/tcp` | TCP 3000..=3010 of `forgejo` on node `h2` only |
//! | `node:h2` / `node:h2:443` | the containers on node `h2` (not the host's own address) |
//! | `10.87.5.0/24:443` / `10.87.5.9` | addresses by CIDR (any address, hosts' included) |
//!
//! A rule without ports also allows ICMP (ping); one with ports allows only
//! TCP and UDP (or the one protocol named by `/tcp`, `/udp`).
//! Pure: parsing and matching, no sockets (the data plane's
//! `flatnetd::policy` compiles rules against its name table).

use std::{fmt, net::Ipv4Addr, str::FromStr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Most rules one policy may hold.
pub const MAX_RULES: usize = 64;
/// Most port ranges one rule may list.
pub const MAX_PORTS: usize = 16;

/// IP protocol numbers a rule can name.
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

/// What a rule points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A container name or alias, on any node, or on one node
    /// (`name.node`).
    Service { name: String, node: Option<String> },
    /// Every container on a node (its subnet minus the host's address).
    Node(String),
    /// Any address in a CIDR.
    Cidr(Ipv4Net),
}

/// A port range, for TCP, UDP or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ports {
    pub lo: u16,
    pub hi: u16,
    /// [`TCP`], [`UDP`], or `None` for both.
    pub proto: Option<u8>,
}

impl Ports {
    pub fn matches(&self, proto: u8, port: u16) -> bool {
        (proto == TCP || proto == UDP)
            && self.proto.is_none_or(|p| p == proto)
            && (self.lo..=self.hi).contains(&port)
    }
}

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub target: Target,
    /// Empty: every port, and ICMP.
    pub ports: Vec<Ports>,
}

impl Rule {
    /// Whether this rule's ports allow a packet of `proto` to `port`
    /// (`None` for protocols without ports and for non-first fragments).
    pub fn allows_port(&self, proto: u8, port: Option<u16>) -> bool {
        if self.ports.is_empty() {
            return true;
        }
        match port {
            Some(port) => self.ports.iter().any(|p| p.matches(proto, port)),
            // A later fragment carries no ports: its first fragment was
            // checked, and without it the datagram never reassembles.
            None => {
                proto != ICMP
                    && self
                        .ports
                        .iter()
                        .any(|p| p.proto.is_none_or(|x| x == proto))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad access rule {rule:?}: {why}")]
pub struct RuleError {
    pub rule: String,
    pub why: String,
}

fn label_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn node_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

fn parse_ports(s: &str) -> Result<Vec<Ports>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (range, proto) = match part.split_once('/') {
            Some((r, "tcp")) => (r, Some(TCP)),
            Some((r, "udp")) => (r, Some(UDP)),
            Some((_, p)) => return Err(format!("unknown protocol {p:?} (tcp or udp)")),
            None => (part, None),
        };
        let num = |x: &str| -> Result<u16, String> {
            match x.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{x:?} is not a port (1-65535)")),
            }
        };
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(range)?, num(range)?),
        };
        if lo > hi {
            return Err(format!("the range {range} runs backwards"));
        }
        out.push(Ports { lo, hi, proto });
    }
    if out.len() > MAX_PORTS {
        return Err(format!("more than {MAX_PORTS} port ranges"));
    }
    Ok(out)
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| RuleError {
            rule: s.to_string(),
            why,
        };
        let s = s.trim();
        let (target, ports) = if let Some(rest) = s.strip_prefix("node:") {
            let (node, ports) = match rest.split_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (rest, None),
            };
            if !node_ok(node) {
                return Err(bad(format!("{node:?} is not a node name")));
            }
            (Target::Node(node.to_string()), ports)
        } else {
            let (t, ports) = match s.split_once(':') {
                Some((t, p)) => (t, Some(p)),
                None => (s, None),
            };
            let target = if t.contains('/') || t.parse::<Ipv4Addr>().is_ok() {
                let net = match t.parse::<Ipv4Addr>() {
                    Ok(ip) => Ipv4Net::from(ip),
                    Err(_) => t
                        .parse::<Ipv4Net>()
                        .map_err(|_| bad(format!("{t:?} is not an IPv4 address or CIDR")))?,
                };
                Target::Cidr(net.trunc())
            } else {
                let lower = t.to_ascii_lowercase();
                let (name, node) = match lower.split_once('.') {
                    Some((n, node)) => (n.to_string(), Some(node.to_string())),
                    None => (lower, None),
                };
                if !label_ok(&name) {
                    return Err(bad(format!(
                        "{t:?} is not a container name (letters, digits, - and _), node:NAME or a CIDR"
                    )));
                }
                if let Some(n) = &node {
                    if !node_ok(n) {
                        return Err(bad(format!("{n:?} is not a node name")));
                    }
                }
                Target::Service { name, node }
            };
            (target, ports)
        };
        let ports = match ports {
            Some(p) => parse_ports(p).map_err(bad)?,
            None => Vec::new(),
        };
        Ok(Rule { target, ports })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Service { name, node: None } => write!(f, "{name}")?,
            Target::Service {
                name,
                node: Some(n),
            } => write!(f, "{name}.{n}")?,
            Target::Node(n) => write!(f, "node:{n}")?,
            Target::Cidr(c) if c.prefix_len() == 32 => write!(f, "{}", c.addr())?,
            Target::Cidr(c) => write!(f, "{c}")?,
        }
        for (i, p) in self.ports.iter().enumerate() {
            f.write_str(if i == 0 { ":" } else { "," })?;
            if p.lo == p.hi {
                write!(f, "{}", p.lo)?;
            } else {
                write!(f, "{}-{}", p.lo, p.hi)?;
            }
            match p.proto {
                Some(TCP) => f.write_str("/tcp")?,
                Some(UDP) => f.write_str("/udp")?,
                _ => {}
            }
        }
        Ok(())
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The members' range of a Flatnet: its last host subnet. The Lighthouse
/// gives members addresses from it and never gives it to a node; hosts
/// treat every source in it as a member's.
pub fn members_range(cidr: Ipv4Net, host_prefix: u8) -> Option<Ipv4Net> {
    let size = 1u32.checked_shl(32 - u32::from(host_prefix))?;
    let last = u32::from(cidr.broadcast());
    Ipv4Net::new(Ipv4Addr::from(last - (size - 1)), host_prefix).ok()
}

/// A node subnet's gateway: the host's own address there, where Flatnet
/// DNS listens.
pub fn gateway_of(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

/// Parse a list of rules, refusing more than [`MAX_RULES`].
pub fn parse_rules<'a>(rules: impl IntoIterator<Item = &'a str>) -> Result<Vec<Rule>, RuleError> {
    let mut out = Vec::new();
    for r in rules {
        let r: Rule = r.parse()?;
        if !out.contains(&r) {
            out.push(r);
        }
    }
    if out.len() > MAX_RULES {
        return Err(RuleError {
            rule: format!("{} rules", out.len()),
            why: format!("a policy holds at most {MAX_RULES}"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Rule {
        s.parse().unwrap()
    }

    #[test]
    fn rules_parse_and_print_back() {
        for s in [
            "forgejo",
            "forgejo:80,22",
            "forgejo.h2:3000-3010/tcp",
            "node:h2",
            "node:h2:443",
            "10.87.5.0/24:443",
            "10.87.5.9",
            "dns:53/udp,53/tcp",
        ] {
            assert_eq!(r(s).to_string(), s);
        }
        assert_eq!(r("Forgejo").to_string(), "forgejo");
        assert_eq!(r("10.87.5.9/24").to_string(), "10.87.5.0/24");
        assert_eq!(
            r("forgejo.h2:22").target,
            Target::Service {
                name: "forgejo".into(),
                node: Some("h2".into())
            }
        );
        let json = serde_json::to_string(&vec![r("node:h2:443")]).unwrap();
        assert_eq!(json, r#"["node:h2:443"]"#);
        let back: Vec<Rule> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![r("node:h2:443")]);
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (s, want) in [
            ("", "not a container name"),
            ("forgejo:0", "not a port"),
            ("forgejo:80-22", "runs backwards"),
            ("forgejo:80/sctp", "unknown protocol"),
            ("forgejo:http", "not a port"),
            ("node:", "not a node name"),
            ("10.87.0.0/33", "not an IPv4 address or CIDR"),
            ("for gejo", "not a container name"),
            ("a.b c", "not a node name"),
        ] {
            let e = s.parse::<Rule>().unwrap_err();
            assert!(e.to_string().contains(want), "{s:?}: {e}");
        }
        assert!(serde_json::from_str::<Vec<Rule>>(r#"["x:99999"]"#).is_err());
        let many: Vec<String> = (1..=65).map(|i| format!("10.0.0.{i}")).collect();
        assert!(parse_rules(many.iter().map(|s| s.as_str())).is_err());
    }

    #[test]
    fn ports_and_protocols() {
        let web = r("forgejo:80,22/tcp");
        assert!(web.allows_port(TCP, Some(80)));
        assert!(web.allows_port(UDP, Some(80)));
        assert!(web.allows_port(TCP, Some(22)));
        assert!(!web.allows_port(UDP, Some(22)));
        assert!(!web.allows_port(TCP, Some(5432)));
        assert!(!web.allows_port(ICMP, None), "ports given: no ping");
        assert!(
            web.allows_port(TCP, None),
            "a later fragment of an allowed protocol"
        );
        let any = r("forgejo");
        assert!(any.allows_port(ICMP, None));
        assert!(any.allows_port(TCP, Some(5432)));
    }
}
