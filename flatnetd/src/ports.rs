//! Published ports (`podman run -p [ip:]host:container[/proto]`) on the
//! netavark path, where netavark publishes ports only for its own bridge
//! driver. Pure: leases in, validated rules and nft rule text out; the
//! table itself is applied by [`crate::hostnet`].
//!
//! What a published port does, as the bridge driver's does (nft terms):
//! ```text
//! prerouting/output:  fib daddr type local [ip daddr HOST_IP] tcp dport H dnat to C:P
//! postrouting:        ip saddr 127.0.0.0/8 ct status dnat masquerade   (host's own localhost)
//!                     ip saddr C ip daddr C ct status dnat masquerade  (hairpin to itself)
//! ```
//! so it is reached from the host's localhost, from the LAN, from other
//! Flatnet hosts (through any local address, the Flatnet gateway included)
//! and from containers.

use std::{fmt, net::Ipv4Addr};

use flatnet_wire::Lease;

/// Most host ports one attachment may publish (ranges expanded).
pub const MAX_PORTS_PER_LEASE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        })
    }
}

/// One host port forwarded to one container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub proto: Proto,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

impl Forward {
    /// Whether two forwards claim the same host socket.
    fn clashes(&self, o: &Forward) -> bool {
        self.proto == o.proto
            && self.host_port == o.host_port
            && (self.host_ip.is_none() || o.host_ip.is_none() || self.host_ip == o.host_ip)
    }

    fn host(&self) -> String {
        match self.host_ip {
            Some(ip) => format!("{ip}:{}/{}", self.host_port, self.proto),
            None => format!("{}/{}", self.host_port, self.proto),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("port mapping {0}: unknown protocol {1:?}; use tcp, udp or sctp")]
    Protocol(String, String),
    #[error("port mapping {0}: the range runs past port 65535")]
    Range(String),
    #[error("port mapping {0}: a range of 0 ports")]
    EmptyRange(String),
    #[error("more than {MAX_PORTS_PER_LEASE} published ports for one container")]
    TooMany,
    #[error("host port {port} is already published by container {owner}; pick another host port or remove that container")]
    Taken { port: String, owner: String },
}

fn describe(p: &flatnet_wire::PortMapping) -> String {
    let host = p.host_port.map_or("-".to_string(), |h| h.to_string());
    format!("{host}:{}/{}", p.container_port, p.protocol)
}

/// The forwards a lease asks for. Mappings without a host port publish
/// nothing (Podman resolves `-p 80` to a concrete host port itself).
pub fn forwards(lease: &Lease) -> Result<Vec<Forward>, PortError> {
    let mut out = Vec::new();
    if !lease.publish {
        return Ok(out);
    }
    for p in &lease.ports {
        let Some(host_port) = p.host_port.filter(|h| *h != 0) else {
            continue;
        };
        if p.range == 0 {
            return Err(PortError::EmptyRange(describe(p)));
        }
        let last = u32::from(host_port.max(p.container_port)) + u32::from(p.range) - 1;
        if last > 65535 {
            return Err(PortError::Range(describe(p)));
        }
        for proto in p.protocol.split(',').map(str::trim) {
            let proto = match proto.to_ascii_lowercase().as_str() {
                "tcp" | "" => Proto::Tcp,
                "udp" => Proto::Udp,
                "sctp" => Proto::Sctp,
                other => return Err(PortError::Protocol(describe(p), other.to_string())),
            };
            for i in 0..p.range {
                if out.len() >= MAX_PORTS_PER_LEASE {
                    return Err(PortError::TooMany);
                }
                out.push(Forward {
                    proto,
                    host_ip: p.host_ip,
                    host_port: host_port + i,
                    container_ip: lease.ip,
                    container_port: p.container_port + i,
                });
            }
        }
    }
    Ok(out)
}

fn owner(l: &Lease) -> String {
    l.container_name
        .clone()
        .unwrap_or_else(|| l.key.container_id.chars().take(12).collect())
}

/// Refuse `new` when one of its host ports is already published by
/// another attachment in `existing` (its own earlier lease is ignored).
pub fn check_free(existing: &[Lease], new: &Lease) -> Result<(), PortError> {
    let mine = forwards(new)?;
    if mine.is_empty() {
        return Ok(());
    }
    for l in existing.iter().filter(|l| l.key != new.key) {
        // A stored lease with bad mappings publishes nothing (see `rules`).
        for f in forwards(l).unwrap_or_default() {
            if let Some(m) = mine.iter().find(|m| m.clashes(&f)) {
                return Err(PortError::Taken {
                    port: m.host(),
                    owner: owner(l),
                });
            }
        }
    }
    Ok(())
}

/// nft rule text for every published port of `leases`: the DNAT rules of
/// the `published` chain and the masquerade rules of `postrouting`.
/// A lease whose mappings are invalid is skipped (they were refused when
/// it was allocated, so this only guards against a hand-edited store).
pub struct Rules {
    pub dnat: Vec<String>,
    pub masquerade: Vec<String>,
}

pub fn rules(leases: &[Lease]) -> Rules {
    let mut dnat = Vec::new();
    let mut hairpin = Vec::new();
    for l in leases {
        let fw = forwards(l).unwrap_or_default();
        if fw.is_empty() {
            continue;
        }
        hairpin.push(format!(
            "ip saddr {ip} ip daddr {ip} ct status dnat masquerade comment \"flatnet: hairpin\"",
            ip = l.ip
        ));
        for f in fw {
            let daddr = f
                .host_ip
                .map(|ip| format!("ip daddr {ip} "))
                .unwrap_or_default();
            dnat.push(format!(
                "{daddr}{p} dport {hp} dnat to {cip}:{cp} comment \"{name}\"",
                p = f.proto,
                hp = f.host_port,
                cip = f.container_ip,
                cp = f.container_port,
                name = owner(l).replace(['"', '\\'], "")
            ));
        }
    }
    let mut masquerade = Vec::new();
    if !dnat.is_empty() {
        masquerade.push(
            "ip saddr 127.0.0.0/8 ct status dnat masquerade comment \"flatnet: localhost to published ports\""
                .to_string(),
        );
        masquerade.extend(hairpin);
    }
    Rules { dnat, masquerade }
}

#[cfg(test)]
mod tests {
    use flatnet_wire::{AttachmentKey, PortMapping};

    use super::*;

    fn lease(id: &str, ip: &str, ports: Vec<PortMapping>) -> Lease {
        Lease {
            key: AttachmentKey {
                network: "fnet".into(),
                container_id: id.into(),
                ifname: "eth0".into(),
            },
            ip: ip.parse().unwrap(),
            netns: None,
            container_name: Some(format!("c-{id}")),
            ports,
            aliases: vec![],
            publish: true,
            internal: false,
            created: 1,
            refreshed: 0,
        }
    }

    fn pm(host: u16, cont: u16, proto: &str) -> PortMapping {
        PortMapping::simple(cont, Some(host), proto)
    }

    #[test]
    fn ranges_and_protocol_lists_expand_one_to_one() {
        let mut p = pm(8000, 80, "tcp,udp");
        p.range = 3;
        let f = forwards(&lease("a", "10.87.1.5", vec![p])).unwrap();
        assert_eq!(f.len(), 6);
        assert_eq!((f[2].host_port, f[2].container_port), (8002, 82));
        assert_eq!(f[3].proto, Proto::Udp);
        assert_eq!((f[3].host_port, f[3].container_port), (8000, 80));
    }

    #[test]
    fn bad_mappings_are_refused_with_what_to_do() {
        let e = forwards(&lease("a", "10.87.1.5", vec![pm(80, 80, "icmp")])).unwrap_err();
        assert!(e.to_string().contains("use tcp, udp or sctp"), "{e}");
        let mut p = pm(65535, 80, "tcp");
        p.range = 2;
        assert!(matches!(
            forwards(&lease("a", "10.87.1.5", vec![p])),
            Err(PortError::Range(_))
        ));
        let mut p = pm(1, 1, "tcp");
        p.range = 5000;
        assert_eq!(
            forwards(&lease("a", "10.87.1.5", vec![p])),
            Err(PortError::TooMany)
        );
    }

    #[test]
    fn no_publishing_without_host_port_or_publish_flag() {
        let mut l = lease("a", "10.87.1.5", vec![PortMapping::simple(80, None, "tcp")]);
        assert!(forwards(&l).unwrap().is_empty());
        l.ports = vec![pm(8080, 80, "tcp")];
        l.publish = false;
        assert!(forwards(&l).unwrap().is_empty());
        assert!(rules(&[l]).dnat.is_empty());
    }

    #[test]
    fn host_port_clashes_are_found_per_protocol_and_address() {
        let a = lease("a", "10.87.1.5", vec![pm(8080, 80, "tcp")]);
        let b = lease("b", "10.87.1.6", vec![pm(8080, 81, "tcp")]);
        let e = check_free(std::slice::from_ref(&a), &b).unwrap_err();
        assert_eq!(
            e,
            PortError::Taken {
                port: "8080/tcp".into(),
                owner: "c-a".into()
            }
        );
        // Same port, other protocol: fine.
        let u = lease("u", "10.87.1.7", vec![pm(8080, 80, "udp")]);
        check_free(std::slice::from_ref(&a), &u).unwrap();
        // Distinct host addresses do not clash; one on every address does.
        let mut x = pm(9000, 80, "tcp");
        x.host_ip = Some("127.0.0.1".parse().unwrap());
        let mut y = pm(9000, 80, "tcp");
        y.host_ip = Some("192.0.2.1".parse().unwrap());
        let lx = lease("x", "10.87.1.8", vec![x]);
        check_free(std::slice::from_ref(&lx), &lease("y", "10.87.1.9", vec![y])).unwrap();
        assert!(check_free(&[lx], &lease("z", "10.87.1.10", vec![pm(9000, 1, "tcp")])).is_err());
        // Its own earlier lease (a repeated ADD) is not a clash.
        check_free(std::slice::from_ref(&a), &a).unwrap();
    }

    #[test]
    fn rules_dnat_every_local_address_and_masquerade_localhost_and_hairpin() {
        let mut p = pm(8443, 443, "tcp");
        p.host_ip = Some("127.0.0.1".parse().unwrap());
        let r = rules(&[
            lease("a", "10.87.1.5", vec![pm(8080, 80, "tcp"), p]),
            lease("b", "10.87.1.6", vec![]),
        ]);
        assert_eq!(
            r.dnat,
            [
                "tcp dport 8080 dnat to 10.87.1.5:80 comment \"c-a\"",
                "ip daddr 127.0.0.1 tcp dport 8443 dnat to 10.87.1.5:443 comment \"c-a\"",
            ]
        );
        assert_eq!(r.masquerade.len(), 2);
        assert!(r.masquerade[0].starts_with("ip saddr 127.0.0.0/8 ct status dnat masquerade"));
        assert!(r.masquerade[1].starts_with("ip saddr 10.87.1.5 ip daddr 10.87.1.5"));
        assert!(rules(&[]).masquerade.is_empty());
    }
}
