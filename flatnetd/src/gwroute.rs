//! `flatnetctl gateway-route`: what a machine outside the Flatnet (the
//! Windows host of a WSL2 VM running the gateway, a LAN router) must run to
//! reach Flatnet IPs through this host.
//!
//! Gathering the facts ([`gather`]: addresses, the default route's
//! interface, WSL, forwarding) is separate from wording them ([`render`]),
//! which is what the tests check.

use std::{fmt::Write, net::Ipv4Addr};

use ipnet::Ipv4Net;

/// One IPv4 address of this host, outside the Flatnet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostAddr {
    pub iface: String,
    pub ip: Ipv4Addr,
    /// On the interface of the default route: what the outside sees.
    pub default_route: bool,
}

/// What [`render`] needs to know about this host (`--json` prints it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Facts {
    pub cidr: Ipv4Net,
    pub addrs: Vec<HostAddr>,
    /// Running in a WSL2 VM.
    pub wsl: bool,
    /// `net.ipv4.ip_forward` is 1.
    pub forwarding: bool,
    /// The default route's gateway: in WSL2, the Windows host.
    pub default_gateway: Option<Ipv4Addr>,
    /// flatnetd's `forward_from`.
    pub forward_from: Vec<Ipv4Net>,
}

/// `GET /v1/route` on the catalog listener: the next hop a gateway host
/// should route the Flatnet through, for the gateway's route keeper
/// (gateway-lua's routekeep.lua; docs/wsl2.md). A WSL2 VM's address
/// changes with every restart; the gateway asks through an address that
/// always reaches the VM (WSL's localhost forwarding) and moves its route.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteAnswer {
    pub cidr: Ipv4Net,
    pub node: String,
    /// Route the Flatnet through this address (absent when `local`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    /// The asker is this host itself (the gateway shares its address, as
    /// in WSL2's mirrored mode): it needs no route.
    pub local: bool,
}

/// The answer for a request from `peer`. A peer on loopback is WSL's
/// localhost relay (the Windows host), not this host's own gateway, so it
/// gets a next hop; a peer with one of this host's other addresses is
/// this host itself.
pub fn route_answer(f: &Facts, node: &str, peer: std::net::IpAddr) -> RouteAnswer {
    let local = match peer {
        std::net::IpAddr::V4(p) => !p.is_loopback() && f.addrs.iter().any(|a| a.ip == p),
        std::net::IpAddr::V6(_) => false,
    };
    let mut addrs = f.addrs.clone();
    addrs.sort_by_key(|a| !a.default_route);
    let best = addrs.first().filter(|_| !local);
    RouteAnswer {
        cidr: f.cidr,
        node: node.to_string(),
        via: best.map(|a| a.ip),
        iface: best.map(|a| a.iface.clone()),
        local,
    }
}

/// The commands, best address first.
pub fn render(f: &Facts) -> String {
    let mut out = String::new();
    let mut addrs = f.addrs.clone();
    addrs.sort_by_key(|a| !a.default_route);
    let Some(best) = addrs.first() else {
        let _ = writeln!(
            out,
            "This host has no IPv4 address outside the Flatnet: nothing can route through it."
        );
        return out;
    };
    let (net, mask) = (f.cidr.network(), f.cidr.netmask());
    let _ = writeln!(
        out,
        "The Flatnet {} is reachable through this host at {} ({}).",
        f.cidr, best.ip, best.iface
    );
    let windows = format!("route add {net} mask {mask} {}", best.ip);
    let linux = format!("ip route add {} via {}", f.cidr, best.ip);
    if f.wsl {
        let _ = writeln!(
            out,
            "\nOn the Windows host of this WSL2 VM (administrator prompt; run it again\nafter WSL restarts, the VM's address changes):\n  {windows}"
        );
        let _ = writeln!(out, "\nOn a Linux machine on the same network:\n  {linux}");
    } else {
        let _ = writeln!(out, "\nOn a Linux machine on the same network:\n  {linux}");
        let _ = writeln!(
            out,
            "\nOn a Windows machine on the same network (administrator prompt):\n  {windows}"
        );
    }
    if addrs.len() > 1 {
        let others: Vec<String> = addrs[1..]
            .iter()
            .map(|a| format!("{} ({})", a.ip, a.iface))
            .collect();
        let _ = writeln!(
            out,
            "\nFrom another network, use this host's address there instead: {}",
            others.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\nflatnetd masquerades such clients into the tunnel, so containers on every\nFlatnet host can answer them."
    );
    let who = if f.wsl {
        "the Windows host (this VM's default gateway)"
    } else {
        "the gateway machine"
    };
    match f.default_gateway {
        Some(gw) if f.forward_from.iter().any(|n| n.contains(&gw)) => {
            let _ = writeln!(
                out,
                "\n{gw} may route into the Flatnet here (forward_from); other machines may not."
            );
        }
        _ => {
            let example = f
                .default_gateway
                .map_or("<its address>".to_string(), |g| g.to_string());
            let _ = writeln!(
                out,
                "\nflatnetd lets only the addresses in forward_from route into the Flatnet.\nFor {who}, in /etc/flatnet/flatnetd.toml (then restart flatnetd):\n  forward_from = [\"{example}/32\"]"
            );
        }
    }
    if !f.forwarding {
        let _ = writeln!(
            out,
            "\nIPv4 forwarding is OFF here; it comes on with the first container, or now:\n  sysctl -w net.ipv4.ip_forward=1"
        );
    }
    out
}

/// The interface of the IPv4 default route, from `/proc/net/route`.
pub fn default_route_iface(route_table: &str) -> Option<String> {
    default_route(route_table).map(|(i, _)| i)
}

/// The IPv4 default route's interface and gateway, from `/proc/net/route`
/// (the gateway is hex in host byte order, little-endian on x86).
pub fn default_route(route_table: &str) -> Option<(String, Option<Ipv4Addr>)> {
    route_table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| {
            let gw = u32::from_str_radix(f[2], 16)
                .ok()
                .filter(|g| *g != 0)
                .map(|g| Ipv4Addr::from(g.to_le_bytes()));
            (f[0].to_string(), gw)
        })
    })
}

/// Read the facts off this host; `forward_from` is flatnetd's setting.
pub fn gather(cidr: Ipv4Net, forward_from: Vec<Ipv4Net>) -> Facts {
    let route = std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|t| default_route(&t));
    let (def, default_gateway) = match route {
        Some((i, g)) => (Some(i), g),
        None => (None, None),
    };
    let addrs = crate::ifaddrs::outside(cidr)
        .into_iter()
        .map(|(iface, ip)| HostAddr {
            default_route: def.as_deref() == Some(iface.as_str()),
            iface,
            ip,
        })
        .collect();
    let osrelease = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    Facts {
        cidr,
        addrs,
        wsl: osrelease.to_ascii_lowercase().contains("microsoft"),
        forwarding: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .is_ok_and(|v| v.trim() == "1"),
        default_gateway,
        forward_from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts_with(addrs: &[(&str, &str, bool)]) -> Facts {
        Facts {
            cidr: "10.87.0.0/16".parse().unwrap(),
            addrs: addrs
                .iter()
                .map(|(i, ip, d)| HostAddr {
                    iface: i.to_string(),
                    ip: ip.parse().unwrap(),
                    default_route: *d,
                })
                .collect(),
            wsl: true,
            forwarding: true,
            default_gateway: None,
            forward_from: vec![],
        }
    }

    #[test]
    fn the_route_answer_names_the_default_route_address_unless_the_asker_is_this_host() {
        let f = facts_with(&[
            ("docker0", "172.17.0.1", false),
            ("eth0", "172.22.48.5", true),
        ]);
        // Through WSL's localhost relay: the Windows host, which needs a route.
        let a = route_answer(&f, "wsl", "127.0.0.1".parse().unwrap());
        assert_eq!(a.via, Some("172.22.48.5".parse().unwrap()));
        assert_eq!(a.iface.as_deref(), Some("eth0"));
        assert!(!a.local);
        let j = serde_json::to_value(&a).unwrap();
        assert_eq!(j["cidr"], "10.87.0.0/16");
        assert_eq!(j["via"], "172.22.48.5");
        // A LAN machine.
        assert!(!route_answer(&f, "wsl", "172.22.48.1".parse().unwrap()).local);
        // The host itself, by its own address (mirrored mode): no route.
        let a = route_answer(&f, "wsl", "172.22.48.5".parse().unwrap());
        assert!(a.local);
        assert_eq!(a.via, None);
        assert!(serde_json::to_value(&a).unwrap().get("via").is_none());
        // No address outside the Flatnet: nothing to route through.
        assert_eq!(
            route_answer(&facts_with(&[]), "x", "127.0.0.1".parse().unwrap()).via,
            None
        );
    }

    fn facts(wsl: bool) -> Facts {
        Facts {
            cidr: "10.87.0.0/16".parse().unwrap(),
            addrs: vec![
                HostAddr {
                    iface: "docker0".into(),
                    ip: "172.17.0.1".parse().unwrap(),
                    default_route: false,
                },
                HostAddr {
                    iface: "eth0".into(),
                    ip: "172.22.48.5".parse().unwrap(),
                    default_route: true,
                },
            ],
            wsl,
            forwarding: true,
            default_gateway: Some("172.22.48.1".parse().unwrap()),
            forward_from: vec![],
        }
    }

    #[test]
    fn wsl_gets_the_windows_route_through_the_default_interface() {
        let s = render(&facts(true));
        assert!(s.contains("reachable through this host at 172.22.48.5 (eth0)"));
        let win = s
            .find("route add 10.87.0.0 mask 255.255.0.0 172.22.48.5")
            .unwrap();
        let lin = s.find("ip route add 10.87.0.0/16 via 172.22.48.5").unwrap();
        assert!(win < lin, "Windows first in WSL2:\n{s}");
        assert!(s.contains("172.17.0.1 (docker0)"));
        assert!(!s.contains("forwarding is OFF"));
        assert!(s.contains("For the Windows host"));
        assert!(s.contains("  forward_from = [\"172.22.48.1/32\"]"));
        let mut f = facts(true);
        f.forward_from = vec!["172.22.48.0/20".parse().unwrap()];
        assert!(render(&f).contains("172.22.48.1 may route into the Flatnet here"));
    }

    #[test]
    fn plain_linux_leads_with_ip_route_and_warns_without_forwarding() {
        let mut f = facts(false);
        f.forwarding = false;
        let s = render(&f);
        let win = s.find("route add 10.87.0.0 mask").unwrap();
        let lin = s.find("ip route add 10.87.0.0/16").unwrap();
        assert!(lin < win);
        assert!(s.contains("sysctl -w net.ipv4.ip_forward=1"));
        f.addrs.clear();
        assert!(render(&f).contains("no IPv4 address outside the Flatnet"));
    }

    #[test]
    fn default_route_is_read_from_proc_net_route() {
        let t =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 lan0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                 eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_iface(t).as_deref(), Some("eth0"));
        assert_eq!(
            default_route(t),
            Some(("eth0".to_string(), Some("192.168.1.1".parse().unwrap())))
        );
        assert_eq!(default_route_iface("Iface\n"), None);
    }
}
