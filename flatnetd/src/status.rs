//! Human-readable rendering of [`HostStatus`] for `flatnetctl status`.

use std::fmt::Write;

use flatnet_wire::HostStatus;

/// Render rows as left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut s = String::from("  ");
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

pub fn render(st: &HostStatus) -> String {
    let mut out = String::new();
    let n = &st.network;
    let _ = writeln!(out, "Node:     {} (flatnetd {})", st.node, st.version);
    let _ = writeln!(out, "Flatnet:  {}", n.cidr);
    let _ = writeln!(
        out,
        "Subnet:   {}  gateway {}  mtu {}",
        n.subnet, n.gateway, n.mtu
    );
    if let Some(k) = &st.public_key {
        let _ = writeln!(out, "Key:      {k}");
    }
    if let Some(lh) = &st.lighthouse {
        if lh.lighthouses.is_empty() {
            let _ = writeln!(out, "Lighthouse: {}", lighthouse_line(lh));
        } else {
            let _ = writeln!(out, "Lighthouses:");
            for one in &lh.lighthouses {
                let _ = writeln!(out, "  {}", lighthouse_line(one));
            }
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "Containers ({}):", st.leases.len());
    if st.leases.is_empty() {
        out.push_str("  none\n");
    } else {
        containers(st, &mut out);
    }
    if !st.peers.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Peers ({}):", st.peers.len());
        peers(st, &mut out);
    }
    out
}

/// `address state (node, observed, transport, time): last error`.
fn lighthouse_line(lh: &flatnet_wire::LighthouseStatus) -> String {
    let mut extra = Vec::new();
    if let Some(id) = lh.node_id {
        extra.push(format!("node {id}"));
    }
    if let Some(o) = &lh.observed {
        extra.push(format!("observed {o}"));
    }
    if lh.transport.as_deref() == Some("tcp") {
        extra.push("over TCP: UDP is blocked".into());
    }
    extra.push(format!("{}s", lh.since_secs));
    let mut line = format!("{} {} ({})", lh.address, lh.state, extra.join(", "));
    if let (Some(e), true) = (&lh.last_error, lh.state != "connected") {
        line.push_str(&format!(": {e}"));
    }
    line
}

/// Human form of a byte count: `0 B`, `1.5 KiB`, `12.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn peers(st: &HostStatus, out: &mut String) {
    let rows: Vec<Vec<String>> = st
        .peers
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.subnet.to_string(),
                match p.path.as_deref() {
                    None => p.endpoint.clone(),
                    Some("relay") => "relay".into(),
                    Some(path) => format!("{path} {}", p.endpoint),
                },
                p.last_handshake_secs
                    .map(|s| format!("{s}s ago"))
                    .unwrap_or_else(|| "never".into()),
                p.path_mtu
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "-".into()),
                bytes(p.rx_bytes),
                bytes(p.tx_bytes),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "NAME",
            "SUBNET",
            "ENDPOINT",
            "HANDSHAKE",
            "PMTU",
            "RX",
            "TX",
        ],
        &rows,
    ));
    for p in &st.peers {
        if let Some(n) = &p.path_note {
            out.push_str(&format!("  {}: {n}\n", p.name));
        }
    }
}

/// `flatnetctl names`: every name Flatnet DNS serves, and which record a
/// bare name resolves to.
pub fn render_names(
    domain: &str,
    enabled: bool,
    names: &[flatnet_wire::api::NameRecord],
) -> String {
    if !enabled {
        return "Flatnet DNS is off ([dns] enabled = false in flatnetd.toml).\n".into();
    }
    let mut out = format!("Flatnet DNS, domain {domain} ({} names)\n\n", names.len());
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|n| {
            vec![
                if n.owner {
                    n.name.clone()
                } else {
                    format!("({})", n.name)
                },
                format!("{}.{}.{domain}", n.name, n.node),
                n.ip.to_string(),
                n.node.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["NAME", "FULL NAME", "IP", "NODE"], &rows));
    out.push_str("\n(name) in parentheses: another node owns the bare name; use the full name.\n");
    out
}

/// `80/tcp`, or as Podman shows a published port: `[ip:]8080->80/tcp`
/// (`8000-8002->8000-8002/tcp` for a range).
fn port(p: &flatnet_wire::PortMapping, published: bool) -> String {
    let proto = p.protocol.to_ascii_lowercase();
    let span = |start: u16| {
        if p.range > 1 {
            format!("{start}-{}", u32::from(start) + u32::from(p.range) - 1)
        } else {
            start.to_string()
        }
    };
    match p.host_port.filter(|_| published) {
        Some(h) => {
            let ip = p.host_ip.map(|ip| format!("{ip}:")).unwrap_or_default();
            format!("{ip}{}->{}/{proto}", span(h), span(p.container_port))
        }
        None => format!("{}/{proto}", span(p.container_port)),
    }
}

fn containers(st: &HostStatus, out: &mut String) {
    let rows: Vec<Vec<String>> = st
        .leases
        .iter()
        .map(|l| {
            let ports = l
                .ports
                .iter()
                .map(|p| port(p, l.publish))
                .collect::<Vec<_>>()
                .join(",");
            let network = if l.internal {
                format!("{} (internal)", l.key.network)
            } else {
                l.key.network.clone()
            };
            vec![
                l.container_name.clone().unwrap_or_else(|| "-".into()),
                l.ip.to_string(),
                short_id(&l.key.container_id).to_string(),
                l.key.ifname.clone(),
                network,
                if ports.is_empty() { "-".into() } else { ports },
            ]
        })
        .collect();
    out.push_str(&table(
        &["NAME", "IP", "CONTAINER", "IFNAME", "NETWORK", "PORTS"],
        &rows,
    ));
}

#[cfg(test)]
mod tests {
    use flatnet_wire::{Lease, NetworkInfo, PeerStatus};

    use super::*;

    #[test]
    fn renders_host_and_containers() {
        let st = HostStatus {
            node: "host1".into(),
            version: "0.1.0".into(),
            network: NetworkInfo {
                cidr: "10.87.0.0/16".parse().unwrap(),
                subnet: "10.87.1.0/24".parse().unwrap(),
                gateway: "10.87.1.1".parse().unwrap(),
                mtu: 1420,
                dns: None,
            },
            leases: vec![Lease {
                container_name: Some("web".into()),
                ..crate::test_lease("0123456789abcdef", "10.87.1.2")
            }],
            public_key: None,
            peers: vec![],
            lighthouse: None,
            forward_from: vec![],
        };
        let s = render(&st);
        assert!(s.contains("Node:     host1"));
        assert!(s.contains("Subnet:   10.87.1.0/24  gateway 10.87.1.1  mtu 1420"));
        assert!(s.contains("Containers (1):"));
        let row = s.lines().find(|l| l.contains("10.87.1.2")).unwrap();
        assert!(row.contains("web") && row.contains("0123456789ab") && !row.contains("cdef"));
        assert!(!s.contains("Peers"));
    }

    #[test]
    fn published_ports_read_like_podman() {
        let mut p = flatnet_wire::PortMapping::simple(8000, Some(9000), "tcp");
        p.range = 3;
        p.host_ip = Some("127.0.0.1".parse().unwrap());
        assert_eq!(port(&p, true), "127.0.0.1:9000-9002->8000-8002/tcp");
        assert_eq!(port(&p, false), "8000-8002/tcp");
    }

    #[test]
    fn renders_key_and_peers() {
        let st = HostStatus {
            node: "h1".into(),
            version: "0.1.0".into(),
            network: NetworkInfo {
                cidr: "10.87.0.0/16".parse().unwrap(),
                subnet: "10.87.1.0/24".parse().unwrap(),
                gateway: "10.87.1.1".parse().unwrap(),
                mtu: 1420,
                dns: None,
            },
            leases: vec![],
            public_key: Some("KEY=".into()),
            peers: vec![
                PeerStatus {
                    public_key: "K2=".into(),
                    endpoint: "192.168.77.2:51820".into(),
                    last_handshake_secs: Some(7),
                    handshakes: 1,
                    rx_bytes: 1536,
                    tx_bytes: 10,
                    ..crate::test_peer("h2", "10.87.2.0/24")
                },
                PeerStatus {
                    public_key: "K3=".into(),
                    endpoint: "192.168.77.3:51820".into(),
                    ..crate::test_peer("h3", "10.87.3.0/24")
                },
                PeerStatus {
                    public_key: "K4=".into(),
                    endpoint: "203.0.113.4:40000".into(),
                    last_handshake_secs: Some(1),
                    handshakes: 1,
                    path: Some("direct".into()),
                    node_id: Some(4),
                    path_mtu: Some(1280),
                    ..crate::test_peer("h4", "10.87.4.0/24")
                },
                PeerStatus {
                    public_key: "K5=".into(),
                    endpoint: "203.0.113.5:40000".into(),
                    last_handshake_secs: Some(1),
                    handshakes: 1,
                    path: Some("relay".into()),
                    node_id: Some(5),
                    path_note: Some("relay: no reply to punching for 40s (2 tries)".into()),
                    ..crate::test_peer("h5", "10.87.5.0/24")
                },
            ],
            lighthouse: Some(flatnet_wire::LighthouseStatus {
                address: "203.0.113.1:7871".into(),
                state: "connected".into(),
                node_id: Some(1),
                observed: Some("203.0.113.10:51820".into()),
                last_error: None,
                since_secs: 3,
                transport: Some("tcp".into()),
                lighthouses: vec![],
            }),
            forward_from: vec![],
        };
        let s = render(&st);
        assert!(s.contains("Node:     h1"));
        assert!(s.contains("Key:      KEY="));
        assert!(s.contains("Containers (0):\n  none"));
        assert!(s.contains("Peers (4):"));
        assert!(s.contains(
            "Lighthouse: 203.0.113.1:7871 connected (node 1, observed 203.0.113.10:51820, over TCP: UDP is blocked, 3s)"
        ));
        assert!(s
            .lines()
            .any(|l| l.contains("h4") && l.contains("direct 203.0.113.4:40000")));
        // The path MTU column: probed for h4, unknown for h2 and relayed h5.
        assert!(s.contains("PMTU"));
        assert!(s.lines().any(|l| l.contains("h4") && l.contains(" 1280 ")));
        let h5 = s.lines().find(|l| l.contains("h5")).unwrap();
        assert!(h5.contains("relay") && !h5.contains("203.0.113.5"));
        assert!(s.contains("\n  h5: relay: no reply to punching for 40s (2 tries)\n"));
        let h2 = s.lines().find(|l| l.contains("h2")).unwrap();
        for want in [
            "10.87.2.0/24",
            "192.168.77.2:51820",
            "7s ago",
            "1.5 KiB",
            "10 B",
        ] {
            assert!(h2.contains(want), "{want} in {h2}");
        }
        assert!(s.lines().any(|l| l.contains("h3") && l.contains("never")));
    }
}
