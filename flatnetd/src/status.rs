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
    let _ = writeln!(out);
    let _ = writeln!(out, "Containers ({}):", st.leases.len());
    if st.leases.is_empty() {
        out.push_str("  none\n");
        return out;
    }
    let rows: Vec<Vec<String>> = st
        .leases
        .iter()
        .map(|l| {
            let ports = l
                .ports
                .iter()
                .map(|p| format!("{}/{}", p.container_port, p.protocol.to_ascii_lowercase()))
                .collect::<Vec<_>>()
                .join(",");
            vec![
                l.container_name.clone().unwrap_or_else(|| "-".into()),
                l.ip.to_string(),
                short_id(&l.key.container_id).to_string(),
                l.key.ifname.clone(),
                l.key.network.clone(),
                if ports.is_empty() { "-".into() } else { ports },
            ]
        })
        .collect();
    out.push_str(&table(
        &["NAME", "IP", "CONTAINER", "IFNAME", "NETWORK", "PORTS"],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use flatnet_wire::{AttachmentKey, Lease, NetworkInfo};

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
            },
            leases: vec![Lease {
                key: AttachmentKey {
                    network: "flatnet".into(),
                    container_id: "0123456789abcdef".into(),
                    ifname: "eth0".into(),
                },
                ip: "10.87.1.2".parse().unwrap(),
                netns: None,
                container_name: Some("web".into()),
                ports: vec![],
                created: 0,
            }],
        };
        let s = render(&st);
        assert!(s.contains("Node:     host1"));
        assert!(s.contains("Subnet:   10.87.1.0/24  gateway 10.87.1.1  mtu 1420"));
        assert!(s.contains("Containers (1):"));
        let row = s.lines().find(|l| l.contains("10.87.1.2")).unwrap();
        assert!(row.contains("web") && row.contains("0123456789ab") && !row.contains("cdef"));
    }
}
