//! Host-level networking that flatnetd owns for all of its containers:
//! IPv4 forwarding and one nftables table, `ip flatnet`, rebuilt from the
//! lease list whenever it changes.
//!
//! nft equivalent of the table:
//! ```text
//! table ip flatnet {
//!   chain prerouting  { type nat hook prerouting priority dstnat; fib daddr type local jump published }
//!   chain output      { type nat hook output priority -100;      fib daddr type local jump published }
//!   chain published   { tcp dport 8080 dnat to 10.87.1.5:80 … }      # -p, see crate::ports
//!   chain postrouting { type nat hook postrouting priority srcnat;
//!     ip saddr 127.0.0.0/8 ct status dnat masquerade                  # localhost -> -p
//!     ip saddr C ip daddr C ct status dnat masquerade                 # hairpin
//!     ip saddr <subnet> ip daddr != <cidr> masquerade                 # egress
//!     oifname "flatnet0" ip saddr != { <subnet>, <members> } masquerade } # routed clients
//!   chain forward     { type filter hook forward priority filter;
//!     oifname "flatnet0" tcp flags & (syn | rst) == syn tcp option maxseg size set rt mtu
//!     ip saddr <internal> ip daddr != <cidr> reject                  # --internal
//!     ip daddr <internal> ip saddr != <cidr> ct status & dnat == 0 drop }
//! }
//! ```
//! The egress rule lets containers reach the outside. The routed-clients
//! rule lets machines that route the Flatnet through this host (the Windows
//! side of a WSL2 VM running the gateway, a LAN router) reach containers on
//! *other* hosts: their packets enter the tunnel with this host's Flatnet
//! address as source, which the far side's AllowedIPs accept and can
//! answer, instead of a LAN address nobody else in the Flatnet knows.
//! Remote members a hub forwards keep their own address (the members'
//! range, [`crate::policy::members_range`]): the far side's policy judges
//! them by it, and answers them through the hub.
//! The table is replaced atomically in one nft transaction, so applying it
//! again (a lease change, a restart, the periodic repair after someone
//! flushed the ruleset) never leaves a gap or a duplicate rule.

use std::{io::Write, path::Path, process::Command, sync::Mutex};

use flatnet_wire::Lease;
use ipnet::Ipv4Net;

use crate::{config::Config, ports, service::HostSetup};

/// nftables table name; nothing else in the host's ruleset is touched.
pub const NFT_TABLE: &str = "flatnet";

/// What the table is built from.
pub struct TableSpec<'a> {
    pub subnet: Ipv4Net,
    pub cidr: Ipv4Net,
    pub masquerade: bool,
    /// The data plane's interface, when it runs.
    pub tunnel: Option<&'a str>,
    pub leases: &'a [Lease],
    /// Who outside the Flatnet may route into it through this host.
    pub forward_from: &'a [Ipv4Net],
    /// Remote members' addresses, never masqueraded.
    pub members: Option<Ipv4Net>,
}

fn chain(s: &mut String, name: &str, hook: Option<&str>, rules: &[String]) {
    s.push_str(&format!("\tchain {name} {{\n"));
    if let Some(h) = hook {
        s.push_str(&format!("\t\t{h}\n"));
    }
    for r in rules {
        s.push_str(&format!("\t\t{r}\n"));
    }
    s.push_str("\t}\n");
}

/// The nft script that installs (or replaces) Flatnet's table.
pub fn nft_script(t: &TableSpec<'_>) -> String {
    let (subnet, cidr) = (t.subnet, t.cidr);
    let published = ports::rules(t.leases);
    let mut s = format!(
        "table ip {NFT_TABLE}\n\
         delete table ip {NFT_TABLE}\n\
         table ip {NFT_TABLE} {{\n"
    );
    let jump = vec!["fib daddr type local jump published".to_string()];
    chain(&mut s, "published", None, &published.dnat);
    chain(
        &mut s,
        "prerouting",
        Some("type nat hook prerouting priority dstnat; policy accept;"),
        &jump,
    );
    chain(
        &mut s,
        "output",
        Some("type nat hook output priority -100; policy accept;"),
        &jump,
    );
    let mut post = published.masquerade;
    if t.masquerade {
        post.push(format!(
            "ip saddr {subnet} ip daddr != {cidr} masquerade comment \"flatnet egress\""
        ));
    }
    if let Some(dev) = t.tunnel {
        let own = match t.members {
            Some(m) if m != subnet => format!("{{ {subnet}, {m} }}"),
            _ => subnet.to_string(),
        };
        post.push(format!(
            "oifname \"{dev}\" ip saddr != {own} masquerade comment \"flatnet: routed clients into the tunnel\""
        ));
    }
    chain(
        &mut s,
        "postrouting",
        Some("type nat hook postrouting priority srcnat; policy accept;"),
        &post,
    );
    let internal: Vec<String> = t
        .leases
        .iter()
        .filter(|l| l.internal)
        .map(|l| l.ip.to_string())
        .collect();
    let mut fwd = Vec::new();
    // SYNs into the tunnel announce an MSS that fits the route toward the
    // peer, whose mtu is that path's (crate::dataplane::peer_routes).
    if let Some(d) = t.tunnel {
        fwd.push(format!(
            "oifname \"{d}\" tcp flags & (syn | rst) == syn tcp option maxseg size set rt mtu comment \"flatnet: TCP MSS fits the path MTU\""
        ));
    }
    // Into the Flatnet through this host: from its containers, the tunnel,
    // published ports (DNAT) and `forward_from` (the gateway) only. Any
    // other LAN machine with a route is dropped, so it cannot go around
    // the gateway's allow list.
    let tunnel_in = t
        .tunnel
        .map(|d| format!("iifname != \"{d}\" "))
        .unwrap_or_default();
    let allowed = if t.forward_from.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = t.forward_from.iter().map(ToString::to_string).collect();
        format!("ip saddr != {{ {} }} ", list.join(", "))
    };
    fwd.push(format!(
        "ip daddr {cidr} {tunnel_in}iifname != \"fn*\" ct status & dnat == 0 {allowed}drop comment \"flatnet: only forward_from may route into the Flatnet\""
    ));
    if !internal.is_empty() {
        let set = internal.join(", ");
        fwd.push(format!(
            "ip saddr {{ {set} }} ip daddr != {cidr} reject with icmp type admin-prohibited comment \"flatnet: internal network, no egress\""
        ));
        fwd.push(format!(
            "ip daddr {{ {set} }} ip saddr != {cidr} ct status & dnat == 0 drop comment \"flatnet: internal network, no ingress\""
        ));
    }
    chain(
        &mut s,
        "forward",
        Some("type filter hook forward priority filter; policy accept;"),
        &fwd,
    );
    s.push_str("}\n");
    s
}

/// Find the `nft` binary: CNI runtimes do not always pass a useful PATH.
pub fn nft_binary() -> String {
    ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
        .unwrap_or_else(|| "nft".into())
}

/// Apply an nft script atomically.
pub fn nft_apply(script: &str) -> Result<(), String> {
    let mut child = Command::new(nft_binary())
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running nft: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("nft stdin unavailable")?
        .write_all(script.as_bytes())
        .map_err(|e| format!("writing to nft: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Enable IPv4 forwarding in the current network namespace.
pub fn enable_forwarding() -> Result<(), String> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(|e| format!("enabling net.ipv4.ip_forward: {e}"))
}

/// The real host setup: forwarding plus the nftables table. Remembers
/// the last script it applied, so an unchanged table is not re-applied
/// unless asked to (the periodic repair).
#[derive(Default)]
pub struct NftHostSetup {
    applied: Mutex<Option<String>>,
}

impl HostSetup for NftHostSetup {
    fn apply(&self, config: &Config, leases: &[Lease], force: bool) -> Result<(), String> {
        let tunnel = config
            .wireguard
            .enabled
            .then_some(config.wireguard.interface.as_str());
        let script = nft_script(&TableSpec {
            subnet: config.subnet,
            cidr: config.cidr,
            masquerade: config.masquerade,
            tunnel,
            leases,
            forward_from: &config.forward_from,
            members: crate::policy::members_range(config.cidr, config.subnet.prefix_len()),
        });
        let mut applied = self
            .applied
            .lock()
            .map_err(|_| "host setup lock poisoned")?;
        if !force && applied.as_deref() == Some(script.as_str()) {
            return Ok(());
        }
        enable_forwarding()?;
        // Forget the old script first: if this apply fails, the next call
        // must try again even with the same leases.
        *applied = None;
        nft_apply(&script)?;
        *applied = Some(script);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use flatnet_wire::{AttachmentKey, PortMapping};

    use super::*;

    fn spec<'a>(masquerade: bool, tunnel: Option<&'a str>, leases: &'a [Lease]) -> TableSpec<'a> {
        TableSpec {
            subnet: "10.87.1.0/24".parse().unwrap(),
            cidr: "10.87.0.0/16".parse().unwrap(),
            masquerade,
            tunnel,
            leases,
            forward_from: &[],
            members: None,
        }
    }

    fn lease(ip: &str, internal: bool, ports: Vec<PortMapping>) -> Lease {
        Lease {
            key: AttachmentKey {
                network: "fnet".into(),
                container_id: ip.into(),
                ifname: "eth0".into(),
            },
            ip: ip.parse().unwrap(),
            netns: None,
            container_name: None,
            ports,
            aliases: vec![],
            publish: true,
            internal,
            created: 0,
            refreshed: 0,
        }
    }

    #[test]
    fn script_replaces_table_atomically() {
        let s = nft_script(&spec(true, None, &[]));
        let create = s.find("table ip flatnet\n").unwrap();
        let delete = s.find("delete table ip flatnet").unwrap();
        assert!(create < delete, "table must exist before it is deleted");
        assert!(s.contains("ip saddr 10.87.1.0/24 ip daddr != 10.87.0.0/16 masquerade"));
        assert!(
            !s.contains("oifname"),
            "no tunnel rule without a data plane"
        );
        assert!(!s.contains("dnat to"), "nothing published");
        assert!(!s.contains("reject"), "no internal network");
    }

    #[test]
    fn routed_clients_are_masqueraded_into_the_tunnel() {
        let s = nft_script(&spec(false, Some("flatnet0"), &[]));
        assert!(s.contains("oifname \"flatnet0\" ip saddr != 10.87.1.0/24 masquerade"));
        assert!(!s.contains("flatnet egress"));
        // A hub forwards remote members with their own address.
        let mut t = spec(false, Some("flatnet0"), &[]);
        t.members = Some("10.87.255.0/24".parse().unwrap());
        let s = nft_script(&t);
        assert!(
            s.contains(
                "oifname \"flatnet0\" ip saddr != { 10.87.1.0/24, 10.87.255.0/24 } masquerade"
            ),
            "{s}"
        );
    }

    #[test]
    fn syns_into_the_tunnel_get_the_route_mss() {
        let s = nft_script(&spec(true, Some("flatnet0"), &[]));
        let fwd = &s[s.find("chain forward").unwrap()..];
        assert!(fwd.contains(
            "oifname \"flatnet0\" tcp flags & (syn | rst) == syn tcp option maxseg size set rt mtu"
        ));
        // Without a data plane there is no tunnel to clamp for.
        assert!(!nft_script(&spec(true, None, &[])).contains("maxseg"));
    }

    #[test]
    fn only_forward_from_may_route_into_the_flatnet() {
        let s = nft_script(&spec(true, Some("flatnet0"), &[]));
        assert!(s.contains(
            "ip daddr 10.87.0.0/16 iifname != \"flatnet0\" iifname != \"fn*\" ct status & dnat == 0 drop"
        ));
        let gw: Vec<Ipv4Net> = vec![
            "172.22.48.1/32".parse().unwrap(),
            "192.168.5.0/24".parse().unwrap(),
        ];
        let mut t = spec(true, Some("flatnet0"), &[]);
        t.forward_from = &gw;
        let s = nft_script(&t);
        assert!(
            s.contains("ct status & dnat == 0 ip saddr != { 172.22.48.1/32, 192.168.5.0/24 } drop")
        );
        // `ct status != dnat` compares the whole status word (never equal to
        // the one bit on a live connection): it would drop published ports.
        assert!(!s.contains("ct status !="));
    }

    #[test]
    fn no_masquerade_rule_when_disabled() {
        let s = nft_script(&spec(false, None, &[]));
        assert!(!s.contains("masquerade"));
        assert!(s.contains("chain postrouting"));
    }

    #[test]
    fn published_ports_and_internal_leases_get_rules() {
        let leases = [
            lease(
                "10.87.1.5",
                false,
                vec![PortMapping::simple(80, Some(8080), "tcp")],
            ),
            lease("10.87.1.6", true, vec![]),
            lease("10.87.1.7", true, vec![]),
        ];
        let s = nft_script(&spec(true, None, &leases));
        assert!(s.contains("tcp dport 8080 dnat to 10.87.1.5:80"));
        assert!(s.contains("fib daddr type local jump published"));
        assert!(s.contains("ip saddr { 10.87.1.6, 10.87.1.7 } ip daddr != 10.87.0.0/16 reject"));
        // The published chain is defined before the chains that jump to it.
        assert!(s.find("chain published").unwrap() < s.find("chain prerouting").unwrap());
    }
}
