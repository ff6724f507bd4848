//! The netavark plugin front end (`flatnet create|setup|teardown|info`), so
//! `podman network create --driver flatnet` works with Podman >= 4.5 and
//! netavark >= 1.6. It calls the same [`crate::attach`] code as CNI.
//!
//! Errors are printed as `{"error": "..."}` on stdout with exit status 1,
//! which netavark passes on to the Podman user.

pub mod types;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

use flatnet_wire::PortMapping;
use serde_json::Value;

use crate::{
    attach::{self, Spec},
    cni::conf::{RouteMode, DEFAULT_SOCKET},
    netlink::link::parse_mac,
};
use types::{NetAddress, NetInterface, Network, PluginExec, StatusBlock};

/// netavark's plugin API version.
pub const API_VERSION: &str = "1.0.0";

/// Network options (`podman network create -o KEY=VALUE`) we understand.
const OPTIONS: &[&str] = &["socket", "routes", "mtu"];

/// A plugin error: the message netavark shows the user.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PluginError(pub String);

impl From<crate::cni::CniError> for PluginError {
    fn from(e: crate::cni::CniError) -> Self {
        PluginError(format!("{}: {}", e.msg, e.details))
    }
}

fn bad(msg: impl Into<String>) -> PluginError {
    PluginError(msg.into())
}

/// Whether `cmd` is one of the plugin subcommands.
pub fn is_subcommand(cmd: &str) -> bool {
    matches!(cmd, "create" | "setup" | "teardown" | "info")
}

/// Run one subcommand; `Ok(Some(v))` is printed on stdout.
pub fn run(args: &[String], stdin: &[u8]) -> Result<Option<Value>, PluginError> {
    let sub = args.first().map(String::as_str).unwrap_or("info");
    match sub {
        "info" => Ok(Some(serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "api_version": API_VERSION,
            "description": "Flatnet: flat routable container IPs across hosts",
        }))),
        "create" => {
            let net: Network = parse(stdin)?;
            Ok(Some(to_json(&create(net)?)?))
        }
        "setup" | "teardown" => {
            let netns = args.get(1).ok_or_else(|| {
                bad(format!(
                    "{sub}: the network namespace path argument is missing"
                ))
            })?;
            let exec: PluginExec = parse(stdin)?;
            let spec = spec_of(&exec, netns)?;
            if sub == "setup" {
                let a = attach::add(&spec)?;
                Ok(Some(to_json(&status_block(&spec, &a))?))
            } else {
                attach::del(&spec)?;
                Ok(None)
            }
        }
        other => Err(bad(format!(
            "unknown subcommand {other:?}; expected create, setup, teardown or info"
        ))),
    }
}

fn parse<T: serde::de::DeserializeOwned>(stdin: &[u8]) -> Result<T, PluginError> {
    serde_json::from_slice(stdin).map_err(|e| bad(format!("invalid JSON on stdin: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, PluginError> {
    serde_json::to_value(v).map_err(|e| bad(e.to_string()))
}

/// `create`: validate options and make sure Podman leaves IPAM to flatnetd.
/// Name, id and driver are returned unchanged.
pub fn create(mut net: Network) -> Result<Network, PluginError> {
    let opts = net.options.clone().unwrap_or_default();
    for k in opts.keys() {
        if !OPTIONS.contains(&k.as_str()) {
            return Err(bad(format!(
                "unknown option {k:?}; flatnet understands: {}",
                OPTIONS.join(", ")
            )));
        }
    }
    options_of(&opts)?;
    if net.subnets.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(bad(
            "flatnet assigns subnets itself (one per host, from flatnetd); do not pass --subnet",
        ));
    }
    if net.ipv6_enabled {
        return Err(bad("flatnet is IPv4 only for now; do not pass --ipv6"));
    }
    let ipam_driver = net
        .ipam_options
        .as_ref()
        .and_then(|m| m.get("driver"))
        .map(String::as_str);
    if let Some(d) = ipam_driver.filter(|d| *d != "none") {
        return Err(bad(format!(
            "IPAM driver {d:?} is not supported: flatnetd allocates addresses"
        )));
    }
    net.ipam_options = Some(HashMap::from([("driver".to_string(), "none".to_string())]));
    net.subnets = Some(vec![]);
    Ok(net)
}

struct Options {
    socket: PathBuf,
    routes: RouteMode,
    mtu: Option<u32>,
}

fn options_of(opts: &HashMap<String, String>) -> Result<Options, PluginError> {
    let routes = match opts.get("routes").map(String::as_str) {
        None | Some("default") => RouteMode::Default,
        Some("flatnet") => RouteMode::Flatnet,
        Some(o) => {
            return Err(bad(format!(
                "option routes={o:?}: expected \"default\" or \"flatnet\""
            )))
        }
    };
    let mtu = match opts.get("mtu") {
        None => None,
        Some(m) => match m.parse::<u32>() {
            Ok(v) if (576..=9000).contains(&v) => Some(v),
            _ => return Err(bad(format!("option mtu={m:?}: expected 576..=9000"))),
        },
    };
    let socket = PathBuf::from(opts.get("socket").map_or(DEFAULT_SOCKET, String::as_str));
    Ok(Options {
        socket,
        routes,
        mtu,
    })
}

/// `--ip`: at most one IPv4 address per network. Podman's reload passes
/// the current address back here, which flatnetd then hands out again.
fn static_ip(ips: Option<&Vec<String>>) -> Result<Option<Ipv4Addr>, PluginError> {
    let mut v4 = Vec::new();
    for s in ips.into_iter().flatten() {
        match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => v4.push(ip),
            Ok(IpAddr::V6(_)) => {
                return Err(bad(format!(
                    "static IP {s}: flatnet is IPv4 only; drop --ip6"
                )))
            }
            Err(_) => return Err(bad(format!("static IP {s:?} is not an IP address"))),
        }
    }
    match v4.as_slice() {
        [] => Ok(None),
        [ip] => Ok(Some(*ip)),
        _ => Err(bad(
            "more than one static IPv4 address for one flatnet network; give one --ip",
        )),
    }
}

fn port_of(p: &types::PortMapping) -> Result<PortMapping, PluginError> {
    let host_ip = match p.host_ip.as_str() {
        "" | "0.0.0.0" => None,
        s => match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => Some(ip),
            Ok(IpAddr::V6(_)) => {
                return Err(bad(format!(
                    "-p {s}:{}:{}: flatnet publishes ports on IPv4 host addresses only",
                    p.host_port, p.container_port
                )))
            }
            Err(_) => return Err(bad(format!("-p: host address {s:?} is not an IP address"))),
        },
    };
    Ok(PortMapping {
        container_port: p.container_port,
        host_port: (p.host_port != 0).then_some(p.host_port),
        protocol: p.protocol.clone().unwrap_or_else(|| "tcp".into()),
        host_ip,
        range: p.range.max(1),
    })
}

fn spec_of(exec: &PluginExec, netns: &str) -> Result<Spec, PluginError> {
    let o = options_of(&exec.network.options.clone().unwrap_or_default())?;
    let ifname = &exec.network_options.interface_name;
    if ifname.is_empty() || ifname.len() > 15 || ifname.contains('/') {
        return Err(bad(format!("invalid interface name {ifname:?}")));
    }
    if exec.container_id.is_empty() {
        return Err(bad("container_id is empty"));
    }
    Ok(Spec {
        network: exec.network.name.clone(),
        container_id: exec.container_id.clone(),
        ifname: ifname.clone(),
        netns: Some(PathBuf::from(netns)),
        container_name: Some(exec.container_name.clone()).filter(|n| !n.is_empty()),
        ports: exec
            .port_mappings
            .iter()
            .flatten()
            .map(port_of)
            .collect::<Result<_, _>>()?,
        routes: o.routes,
        mtu: o.mtu,
        socket: o.socket,
        ip: static_ip(exec.network_options.static_ips.as_ref())?,
        mac: exec
            .network_options
            .static_mac
            .as_deref()
            .filter(|m| !m.is_empty())
            .map(|m| parse_mac(m).map_err(|e| bad(format!("--mac-address: {e}"))))
            .transpose()?,
        aliases: exec.network_options.aliases.clone().unwrap_or_default(),
        // netavark publishes ports only for its own bridge driver.
        publish: true,
        internal: exec.network.internal,
    })
}

fn status_block(spec: &Spec, a: &attach::Attached) -> StatusBlock {
    let ipnet = format!("{}/{}", a.lease.ip, a.network.subnet.prefix_len());
    let dns = a.network.dns.clone().unwrap_or_default();
    StatusBlock {
        dns_search_domains: Some(dns.search),
        dns_server_ips: Some(dns.nameservers.iter().map(ToString::to_string).collect()),
        interfaces: Some(HashMap::from([(
            spec.ifname.clone(),
            NetInterface {
                mac_address: a.container.mac.clone().unwrap_or_default(),
                subnets: Some(vec![NetAddress {
                    gateway: Some(a.network.gateway.to_string()),
                    ipnet,
                }]),
            },
        )])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(json: &str) -> Network {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn create_disables_podman_ipam_and_keeps_identity() {
        let n = create(net(
            r#"{"name":"fl","id":"abc","driver":"flatnet","ipv6_enabled":false,"internal":false,
                "dns_enabled":false,"ipam_options":{"driver":"host-local"},"subnets":[]}"#,
        ));
        assert!(n.is_err(), "host-local IPAM must be refused");
        let n = create(net(
            r#"{"name":"fl","id":"abc","driver":"flatnet","ipv6_enabled":false,"internal":false,
                "dns_enabled":false,"options":{"routes":"flatnet","mtu":"1380"}}"#,
        ))
        .unwrap();
        assert_eq!(
            (n.name.as_str(), n.id.as_str(), n.driver.as_str()),
            ("fl", "abc", "flatnet")
        );
        assert_eq!(n.ipam_options.unwrap()["driver"], "none");
        assert_eq!(n.subnets, Some(vec![]));
    }

    #[test]
    fn create_rejects_bad_options() {
        let base = |opts: &str| {
            net(&format!(
                r#"{{"name":"fl","id":"abc","driver":"flatnet","ipv6_enabled":false,"internal":false,
                    "dns_enabled":false,"options":{opts}}}"#
            ))
        };
        assert!(create(base(r#"{"colour":"blue"}"#))
            .unwrap_err()
            .0
            .contains("unknown option"));
        assert!(create(base(r#"{"routes":"all"}"#)).is_err());
        assert!(create(base(r#"{"mtu":"99999"}"#)).is_err());
        let mut with_subnet = base("{}");
        with_subnet.subnets = Some(vec![serde_json::json!({"subnet":"10.0.0.0/24"})]);
        assert!(create(with_subnet).unwrap_err().0.contains("--subnet"));
    }

    #[test]
    fn setup_needs_netns_and_valid_json() {
        let e = run(&["setup".into()], b"{}").unwrap_err();
        assert!(e.0.contains("namespace path"), "{e}");
        let e = run(&["setup".into(), "/proc/1/ns/net".into()], b"garbage").unwrap_err();
        assert!(e.0.contains("invalid JSON"), "{e}");
        let e = run(&["frob".into()], b"").unwrap_err();
        assert!(e.0.contains("unknown subcommand"), "{e}");
    }

    #[test]
    fn static_ips_and_ports_are_read_as_podman_sends_them() {
        let one = vec!["10.87.1.9".to_string()];
        assert_eq!(
            static_ip(Some(&one)).unwrap(),
            Some("10.87.1.9".parse().unwrap())
        );
        assert_eq!(static_ip(None).unwrap(), None);
        let v6 = vec!["fd00::9".to_string()];
        assert!(static_ip(Some(&v6)).unwrap_err().0.contains("IPv4 only"));
        let two = vec!["10.87.1.9".to_string(), "10.87.1.10".to_string()];
        assert!(static_ip(Some(&two)).unwrap_err().0.contains("one --ip"));
        let junk = vec!["ten".to_string()];
        assert!(static_ip(Some(&junk)).is_err());

        let p: types::PortMapping = serde_json::from_str(
            r#"{"container_port":80,"host_ip":"127.0.0.1","host_port":8080,"range":3,"protocol":"tcp,udp"}"#,
        )
        .unwrap();
        let m = port_of(&p).unwrap();
        assert_eq!(m.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            (m.host_port, m.range, m.protocol.as_str()),
            (Some(8080), 3, "tcp,udp")
        );
        let p: types::PortMapping = serde_json::from_str(
            r#"{"container_port":80,"host_ip":"","host_port":8080,"range":0}"#,
        )
        .unwrap();
        let m = port_of(&p).unwrap();
        assert_eq!((m.host_ip, m.range, m.protocol.as_str()), (None, 1, "tcp"));
        let p: types::PortMapping =
            serde_json::from_str(r#"{"container_port":80,"host_ip":"::1","host_port":8080}"#)
                .unwrap();
        assert!(port_of(&p)
            .unwrap_err()
            .0
            .contains("IPv4 host addresses only"));
    }

    #[test]
    fn info_has_api_version() {
        let v = run(&["info".into()], b"").unwrap().unwrap();
        assert_eq!(v["api_version"], "1.0.0");
    }
}
