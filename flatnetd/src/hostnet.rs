//! Host-level networking that flatnetd owns for all of its containers:
//! IPv4 forwarding and two masquerade rules in its own nftables table.
//!
//! iproute2/nft equivalents:
//! ```text
//! sysctl -w net.ipv4.ip_forward=1
//! nft -f - <<'EOF'
//!   table ip flatnet { chain postrouting {
//!     type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr <subnet> ip daddr != <cidr> masquerade
//!     oifname "flatnet0" ip saddr != <subnet> masquerade } }
//! EOF
//! ```
//! The first lets containers reach the outside. The second lets machines
//! that route the Flatnet through this host (the Windows side of a WSL2 VM
//! running the gateway, a LAN router) reach containers on *other* hosts:
//! their packets enter the tunnel with this host's Flatnet address as
//! source, which the far side's AllowedIPs accept and can answer, instead
//! of a LAN address nobody else in the Flatnet knows.
//! The table is replaced atomically in one nft transaction, so running this
//! again (restart, subnet change) never leaves a gap or a duplicate rule.

use std::{io::Write, path::Path, process::Command};

use ipnet::Ipv4Net;

use crate::{config::Config, service::HostSetup};

/// nftables table name; nothing else in the host's ruleset is touched.
pub const NFT_TABLE: &str = "flatnet";

/// The nft script that installs (or replaces) Flatnet's table.
/// `tunnel`: the data plane's interface, when it runs.
pub fn nft_script(
    subnet: Ipv4Net,
    cidr: Ipv4Net,
    masquerade: bool,
    tunnel: Option<&str>,
) -> String {
    let mut s = format!(
        "table ip {NFT_TABLE}\n\
         delete table ip {NFT_TABLE}\n\
         table ip {NFT_TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n"
    );
    if masquerade {
        s.push_str(&format!(
            "\t\tip saddr {subnet} ip daddr != {cidr} masquerade comment \"flatnet egress\"\n"
        ));
    }
    if let Some(dev) = tunnel {
        s.push_str(&format!(
            "\t\toifname \"{dev}\" ip saddr != {subnet} masquerade comment \"flatnet: routed clients into the tunnel\"\n"
        ));
    }
    s.push_str("\t}\n}\n");
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

/// The real host setup: forwarding plus the nftables table.
pub struct NftHostSetup;

impl HostSetup for NftHostSetup {
    fn ensure(&self, config: &Config) -> Result<(), String> {
        enable_forwarding()?;
        let tunnel = config
            .wireguard
            .enabled
            .then_some(config.wireguard.interface.as_str());
        nft_apply(&nft_script(
            config.subnet,
            config.cidr,
            config.masquerade,
            tunnel,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_replaces_table_atomically() {
        let s = nft_script(
            "10.87.1.0/24".parse().unwrap(),
            "10.87.0.0/16".parse().unwrap(),
            true,
            None,
        );
        let create = s.find("table ip flatnet\n").unwrap();
        let delete = s.find("delete table ip flatnet").unwrap();
        assert!(create < delete, "table must exist before it is deleted");
        assert!(s.contains("ip saddr 10.87.1.0/24 ip daddr != 10.87.0.0/16 masquerade"));
        assert!(
            !s.contains("oifname"),
            "no tunnel rule without a data plane"
        );
    }

    #[test]
    fn routed_clients_are_masqueraded_into_the_tunnel() {
        let s = nft_script(
            "10.87.1.0/24".parse().unwrap(),
            "10.87.0.0/16".parse().unwrap(),
            false,
            Some("flatnet0"),
        );
        assert!(s.contains("oifname \"flatnet0\" ip saddr != 10.87.1.0/24 masquerade"));
        assert!(!s.contains("flatnet egress"));
    }

    #[test]
    fn no_masquerade_rule_when_disabled() {
        let s = nft_script(
            "10.87.1.0/24".parse().unwrap(),
            "10.87.0.0/16".parse().unwrap(),
            false,
            None,
        );
        assert!(!s.contains("masquerade"));
        assert!(s.contains("chain postrouting"));
    }
}
