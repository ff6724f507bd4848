//! The network configuration a runtime writes on stdin.
//!
//! ```json
//! {"cniVersion": "1.0.0", "name": "flatnet", "type": "flatnet",
//!  "socket": "/run/flatnet/flatnetd.sock",
//!  "routes": "default",
//!  "capabilities": {"portMappings": true}}
//! ```
//! `routes` is `"default"` (a default route through Flatnet's gateway; the
//! host masquerades egress) or `"flatnet"` (only the Flatnet CIDR, for
//! containers that have another interface for the outside world).

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use super::{
    error::code,
    version::{Version, LATEST},
    CniError,
};

pub const DEFAULT_SOCKET: &str = "/run/flatnet/flatnetd.sock";

/// Which routes go into the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteMode {
    #[default]
    Default,
    Flatnet,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort", default)]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "tcp".into()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RuntimeConfig {
    #[serde(rename = "portMappings", default)]
    pub port_mappings: Vec<PortMapping>,
    /// The `aliases` capability: network name → extra DNS names.
    #[serde(default)]
    pub aliases: std::collections::HashMap<String, Vec<String>>,
}

/// One `{containerID, ifname}` entry of a GC request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub routes: RouteMode,
    /// Overrides flatnetd's MTU for this network (smaller only makes sense).
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: RuntimeConfig,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
    #[serde(rename = "cni.dev/attachments", default)]
    pub attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// Parse and validate stdin. The version check comes first so that an
    /// unsupported version is reported as such (code 1), not as a decode error.
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                code::DECODE_FAILURE,
                "failed to decode network configuration",
                e.to_string(),
            )
        })?;
        let version = raw
            .get("cniVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                CniError::new(
                    code::INVALID_CONFIG,
                    "invalid network configuration",
                    "cniVersion is missing or not a string",
                )
            })?;
        if !Version::supported(version) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!(
                    "cniVersion {version:?} is not supported; supported: {}",
                    super::version::SUPPORTED.join(", ")
                ),
            ));
        }
        let conf: NetConf = serde_json::from_value(raw).map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                e.to_string(),
            )
        })?;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<(), CniError> {
        let bad =
            |d: String| CniError::new(code::INVALID_CONFIG, "invalid network configuration", d);
        if self.name.is_empty()
            || self.name.len() > 128
            || !self
                .name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
        {
            return Err(bad(format!(
                "name {:?} must be 1-128 of [A-Za-z0-9_.-]",
                self.name
            )));
        }
        if let Some(m) = self.mtu {
            if !(576..=9000).contains(&m) {
                return Err(bad(format!("mtu {m} out of range 576..=9000")));
            }
        }
        for p in &self.runtime_config.port_mappings {
            if p.container_port == 0 {
                return Err(bad("portMappings: containerPort 0".into()));
            }
        }
        Ok(())
    }

    pub fn version(&self) -> Version {
        Version::parse(&self.cni_version).unwrap_or(Version(1, 1, 0))
    }

    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }

    /// GC's attachment list under either key (`cni.dev/attachments` was the
    /// name in pre-release 1.1 drafts; some runtimes still send it).
    pub fn gc_attachments(&self) -> Option<&[Attachment]> {
        self.valid_attachments
            .as_deref()
            .or(self.attachments.as_deref())
    }
}

/// The `cniVersion` of stdin if it can be read at all, for error replies.
pub fn sniff_version(bytes: &[u8]) -> String {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(String::from))
        .filter(|v| Version::supported(v))
        .unwrap_or_else(|| LATEST.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_conf() {
        let c =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"flatnet","type":"flatnet"}"#).unwrap();
        assert_eq!(c.routes, RouteMode::Default);
        assert_eq!(c.socket(), PathBuf::from(DEFAULT_SOCKET));
        assert!(c.prev_result.is_none());
    }

    #[test]
    fn full_conf_with_unknown_keys() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"fn","type":"flatnet","routes":"flatnet",
                "socket":"/tmp/s.sock","mtu":1380,"capabilities":{"portMappings":true},
                "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]},
                "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],
                "somethingElse": 1}"#,
        )
        .unwrap();
        assert_eq!(c.routes, RouteMode::Flatnet);
        assert_eq!(c.mtu, Some(1380));
        assert_eq!(c.runtime_config.port_mappings[0].container_port, 80);
        assert_eq!(c.gc_attachments().unwrap()[0].container_id, "a");
    }

    #[test]
    fn old_attachments_key_accepted() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"fn","type":"flatnet",
                "cni.dev/attachments":[{"containerID":"b","ifname":"eth1"}]}"#,
        )
        .unwrap();
        assert_eq!(c.gc_attachments().unwrap()[0].ifname, "eth1");
    }

    #[test]
    fn errors_have_the_right_codes() {
        let e = NetConf::parse(b"{not json").unwrap_err();
        assert_eq!(e.code, code::DECODE_FAILURE);
        let e =
            NetConf::parse(br#"{"cniVersion":"0.3.1","name":"a","type":"flatnet"}"#).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        let e = NetConf::parse(br#"{"name":"a","type":"flatnet"}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        let e =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"a b","type":"flatnet"}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        let e =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"a","type":"flatnet","routes":"all"}"#)
                .unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        let e =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"a","type":"flatnet","mtu":70000}"#)
                .unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff_version(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
        assert_eq!(sniff_version(b"garbage"), LATEST);
        assert_eq!(sniff_version(br#"{"cniVersion":"9.9.9"}"#), LATEST);
    }
}
