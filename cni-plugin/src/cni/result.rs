//! Success results, shaped for the requested spec version.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{json, Map, Value};

use super::version::Version;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    /// The netns path for the container-side interface; `None` on the host.
    pub sandbox: Option<String>,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address with the host subnet's prefix length, e.g. `10.87.1.5/24`.
    pub address: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Index into our own `interfaces`.
    pub interface: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOut {
    pub dst: Ipv4Net,
    pub gw: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<RouteOut>,
    /// flatnetd's resolver settings; the runtime writes them into the
    /// container's `/etc/resolv.conf`.
    pub dns: Option<flatnet_wire::DnsConfig>,
}

fn array(v: Option<&Value>) -> Vec<Value> {
    v.and_then(Value::as_array).cloned().unwrap_or_default()
}

impl CniResult {
    /// Serialise for `cni_version`, appended to a `prevResult` from an
    /// earlier plugin in the chain (its interfaces, IPs, routes and DNS are
    /// kept; our interface indices are shifted past its interfaces).
    pub fn to_json(&self, cni_version: &str, prev: Option<&Value>) -> Value {
        let v = Version::parse(cni_version).unwrap_or(Version(1, 1, 0));
        let mut interfaces = array(prev.and_then(|p| p.get("interfaces")));
        let offset = interfaces.len();
        let mut ips = array(prev.and_then(|p| p.get("ips")));
        let mut routes = array(prev.and_then(|p| p.get("routes")));
        for i in &self.interfaces {
            let mut o = Map::new();
            o.insert("name".into(), json!(i.name));
            if let Some(m) = &i.mac {
                o.insert("mac".into(), json!(m));
            }
            if let Some(s) = &i.sandbox {
                o.insert("sandbox".into(), json!(s));
            }
            if let (Some(m), true) = (i.mtu, v.at_least_1_1()) {
                o.insert("mtu".into(), json!(m));
            }
            interfaces.push(Value::Object(o));
        }
        for ip in &self.ips {
            let mut o = Map::new();
            if v.has_ip_version_field() {
                o.insert("version".into(), json!("4"));
            }
            o.insert("address".into(), json!(ip.address.to_string()));
            o.insert("gateway".into(), json!(ip.gateway.to_string()));
            o.insert("interface".into(), json!(ip.interface + offset));
            ips.push(Value::Object(o));
        }
        for r in &self.routes {
            let mut o = Map::new();
            o.insert("dst".into(), json!(r.dst.to_string()));
            if let Some(gw) = r.gw {
                o.insert("gw".into(), json!(gw.to_string()));
            }
            routes.push(Value::Object(o));
        }
        let dns = match &self.dns {
            Some(d) => json!(d),
            None => prev
                .and_then(|p| p.get("dns"))
                .cloned()
                .unwrap_or_else(|| json!({})),
        };
        json!({
            "cniVersion": cni_version,
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": dns,
        })
    }
}

/// The IPv4 addresses a `prevResult` assigns to the interface named
/// `ifname` (used by CHECK).
pub fn prev_addresses(prev: &Value, ifname: &str) -> Vec<Ipv4Net> {
    let ifaces = array(prev.get("interfaces"));
    array(prev.get("ips"))
        .iter()
        .filter(|ip| {
            ip.get("interface")
                .and_then(Value::as_u64)
                .and_then(|i| ifaces.get(i as usize))
                .and_then(|i| i.get("name"))
                .and_then(Value::as_str)
                == Some(ifname)
        })
        .filter_map(|ip| ip.get("address")?.as_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "fn12345678".into(),
                    mac: Some("aa:bb:cc:dd:ee:01".into()),
                    sandbox: None,
                    mtu: Some(1420),
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("aa:bb:cc:dd:ee:02".into()),
                    sandbox: Some("/run/netns/c1".into()),
                    mtu: Some(1420),
                },
            ],
            ips: vec![IpConfig {
                address: "10.87.1.5/24".parse().unwrap(),
                gateway: "10.87.1.1".parse().unwrap(),
                interface: 1,
            }],
            routes: vec![RouteOut {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.87.1.1".parse().unwrap()),
            }],
            dns: None,
        }
    }

    #[test]
    fn flatnet_dns_reaches_the_result() {
        let mut r = sample();
        r.dns = Some(flatnet_wire::DnsConfig {
            nameservers: vec!["10.87.1.1".parse().unwrap()],
            search: vec!["flatnet".into()],
            options: vec![],
        });
        let prev = json!({"dns":{"nameservers":["192.0.2.53"]}});
        let j = r.to_json("1.0.0", Some(&prev));
        assert_eq!(
            j["dns"],
            json!({"nameservers":["10.87.1.1"],"search":["flatnet"]})
        );
        // Without Flatnet DNS the chain's earlier answer is kept.
        assert_eq!(sample().to_json("1.0.0", Some(&prev))["dns"], prev["dns"]);
    }

    #[test]
    fn v1_0_0_shape() {
        let j = sample().to_json("1.0.0", None);
        assert_eq!(j["cniVersion"], "1.0.0");
        assert_eq!(
            j["ips"][0],
            json!({"address":"10.87.1.5/24","gateway":"10.87.1.1","interface":1})
        );
        assert_eq!(j["interfaces"][1]["sandbox"], "/run/netns/c1");
        assert!(j["interfaces"][1].get("mtu").is_none(), "mtu is 1.1.0 only");
        assert_eq!(j["routes"][0], json!({"dst":"0.0.0.0/0","gw":"10.87.1.1"}));
    }

    #[test]
    fn v0_4_0_has_ip_version_and_v1_1_has_mtu() {
        let j = sample().to_json("0.4.0", None);
        assert_eq!(j["ips"][0]["version"], "4");
        let j = sample().to_json("1.1.0", None);
        assert!(j["ips"][0].get("version").is_none());
        assert_eq!(j["interfaces"][1]["mtu"], 1420);
    }

    #[test]
    fn chained_after_prev_result() {
        let prev = json!({"cniVersion":"1.0.0","interfaces":[{"name":"x"}],
            "ips":[{"address":"192.0.2.2/24","interface":0}],"dns":{"nameservers":["192.0.2.53"]}});
        let j = sample().to_json("1.0.0", Some(&prev));
        assert_eq!(j["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(j["ips"][1]["interface"], 2);
        assert_eq!(j["dns"]["nameservers"][0], "192.0.2.53");
    }

    #[test]
    fn prev_addresses_by_ifname() {
        let j = sample().to_json("1.0.0", None);
        assert_eq!(
            prev_addresses(&j, "eth0"),
            vec!["10.87.1.5/24".parse::<Ipv4Net>().unwrap()]
        );
        assert!(prev_addresses(&j, "eth1").is_empty());
        assert!(prev_addresses(&json!("garbage"), "eth0").is_empty());
    }
}
