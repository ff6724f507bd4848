//! The subset of netavark's plugin types we read and write. Fields we do not
//! interpret are kept (`extra`) so `create` returns the network unchanged
//! apart from what it means to change.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A network definition (`create` input and output; part of setup's input).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub id: String,
    pub driver: String,
    #[serde(default)]
    pub ipv6_enabled: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub dns_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<HashMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_options: Option<HashMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<Vec<Value>>,
    #[serde(flatten)]
    pub extra: HashMap<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PortMapping {
    pub container_port: u16,
    #[serde(default)]
    pub host_port: u16,
    /// `""` (every address) or one host address.
    #[serde(default)]
    pub host_ip: String,
    /// Consecutive ports from `host_port` / `container_port`; 0 means 1.
    #[serde(default)]
    pub range: u16,
    /// `tcp`, `udp`, `sctp`, or several joined by commas.
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PerNetworkOptions {
    pub interface_name: String,
    /// `--ip`, and on `podman network reload` the current address.
    #[serde(default)]
    pub static_ips: Option<Vec<String>>,
    /// `--mac-address`, and on reload the current MAC.
    #[serde(default)]
    pub static_mac: Option<String>,
    /// `--network-alias`, and the names Podman adds (a pod's name).
    #[serde(default)]
    pub aliases: Option<Vec<String>>,
}

/// `setup`/`teardown` input.
#[derive(Debug, Clone, Deserialize)]
pub struct PluginExec {
    pub container_id: String,
    #[serde(default)]
    pub container_name: String,
    #[serde(default)]
    pub port_mappings: Option<Vec<PortMapping>>,
    pub network: Network,
    pub network_options: PerNetworkOptions,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetAddress {
    pub gateway: Option<String>,
    pub ipnet: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetInterface {
    pub mac_address: String,
    pub subnets: Option<Vec<NetAddress>>,
}

/// `setup` output.
#[derive(Debug, Clone, Serialize)]
pub struct StatusBlock {
    pub dns_search_domains: Option<Vec<String>>,
    pub dns_server_ips: Option<Vec<String>>,
    pub interfaces: Option<HashMap<String, NetInterface>>,
}
