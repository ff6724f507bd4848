//! flatnetd's configuration file (`/etc/flatnet/flatnetd.toml`).
//!
//! ```toml
//! node_name = "wsl-alice"            # default: the host name
//! cidr = "10.87.0.0/16"              # the whole Flatnet
//! subnet = "10.87.1.0/24"            # this host's share of it
//! mtu = 1420                         # container interface MTU
//! state_dir = "/var/lib/flatnet"
//! socket = "/run/flatnet/flatnetd.sock"
//! socket_group = "flatnet"           # optional; socket is mode 0660
//! masquerade = true                  # NAT container egress leaving the Flatnet
//! catalog_listen = "0.0.0.0:7870"    # optional HTTP service catalog
//! ```

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;
use serde::Deserialize;

pub const DEFAULT_CONFIG: &str = "/etc/flatnet/flatnetd.toml";
pub const DEFAULT_SOCKET: &str = "/run/flatnet/flatnetd.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/flatnet";

/// WireGuard over IPv6 costs 80 bytes (40 IPv6 + 8 UDP + 32 WireGuard);
/// 1500 - 80 leaves 1420, which fits every underlay we target.
pub const DEFAULT_MTU: u32 = 1420;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The file as written; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_name: Option<String>,
    cidr: Option<Ipv4Net>,
    subnet: Option<Ipv4Net>,
    mtu: Option<u32>,
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    socket_group: Option<String>,
    masquerade: Option<bool>,
    catalog_listen: Option<SocketAddr>,
}

/// Validated configuration with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node_name: String,
    pub cidr: Ipv4Net,
    pub subnet: Ipv4Net,
    pub mtu: u32,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    pub masquerade: bool,
    pub catalog_listen: Option<SocketAddr>,
}

impl Config {
    /// Read and validate a config file. A missing file at the default path
    /// means "all defaults"; a missing file named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// Parse and validate TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            source: Box::new(e),
        })?;
        let cidr = raw
            .cidr
            .unwrap_or(Ipv4Net::new(Ipv4Addr::new(10, 87, 0, 0), 16).expect("static"));
        let cidr = cidr.trunc();
        let subnet = match raw.subnet {
            Some(s) => s,
            // The second /24 of the CIDR: x.y.0.0/24 would put the
            // gateway on x.y.0.1, which people mistake for a router.
            None => Ipv4Net::new(
                Ipv4Addr::from(u32::from(cidr.network()).wrapping_add(256)),
                24,
            )
            .map_err(|e| ConfigError::Invalid(e.to_string()))?,
        };
        if subnet != subnet.trunc() {
            return Err(ConfigError::Invalid(format!(
                "subnet {subnet} has host bits set (did you mean {}?)",
                subnet.trunc()
            )));
        }
        if !cidr.contains(&subnet) || subnet.prefix_len() <= cidr.prefix_len() {
            return Err(ConfigError::Invalid(format!(
                "subnet {subnet} must be a strict part of cidr {cidr}"
            )));
        }
        if subnet.prefix_len() > 29 {
            return Err(ConfigError::Invalid(format!(
                "subnet {subnet} is too small: at least a /29 is needed"
            )));
        }
        let mtu = raw.mtu.unwrap_or(DEFAULT_MTU);
        if !(576..=9000).contains(&mtu) {
            return Err(ConfigError::Invalid(format!(
                "mtu {mtu} out of range 576..=9000"
            )));
        }
        let node_name = match raw.node_name {
            Some(n) => n,
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "flatnet-node".into()),
        };
        if node_name.is_empty()
            || node_name.len() > 63
            || !node_name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
        {
            return Err(ConfigError::Invalid(format!(
                "node_name {node_name:?} must be 1-63 of [A-Za-z0-9._-]"
            )));
        }
        Ok(Config {
            node_name,
            cidr,
            subnet,
            mtu,
            state_dir: raw
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            socket: raw.socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            socket_group: raw.socket_group,
            masquerade: raw.masquerade.unwrap_or(true),
            catalog_listen: raw.catalog_listen,
        })
    }

    /// The gateway address of this host's subnet: its first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.network()) + 1)
    }

    pub fn network_info(&self) -> flatnet_wire::NetworkInfo {
        flatnet_wire::NetworkInfo {
            cidr: self.cidr,
            subnet: self.subnet,
            gateway: self.gateway(),
            mtu: self.mtu,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::parse("node_name = \"h1\"").unwrap();
        assert_eq!(c.cidr.to_string(), "10.87.0.0/16");
        assert_eq!(c.subnet.to_string(), "10.87.1.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 87, 1, 1));
        assert_eq!(c.mtu, DEFAULT_MTU);
        assert!(c.masquerade);
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn explicit_values() {
        let c = Config::parse(
            r#"
            node_name = "wsl-alice"
            cidr = "10.90.0.0/16"
            subnet = "10.90.7.0/24"
            mtu = 1380
            state_dir = "/tmp/x"
            socket = "/tmp/x.sock"
            masquerade = false
            catalog_listen = "127.0.0.1:7870"
            "#,
        )
        .unwrap();
        assert_eq!(c.subnet.to_string(), "10.90.7.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 90, 7, 1));
        assert_eq!(c.mtu, 1380);
        assert!(!c.masquerade);
        assert_eq!(c.catalog_listen, Some("127.0.0.1:7870".parse().unwrap()));
    }

    #[test]
    fn rejects_subnet_outside_cidr() {
        let e = Config::parse("node_name=\"a\"\nsubnet = \"10.88.1.0/24\"").unwrap_err();
        assert!(e.to_string().contains("strict part"), "{e}");
    }

    #[test]
    fn rejects_host_bits_tiny_subnets_and_bad_mtu() {
        assert!(Config::parse("node_name=\"a\"\nsubnet = \"10.87.1.5/24\"").is_err());
        assert!(Config::parse("node_name=\"a\"\nsubnet = \"10.87.1.0/30\"").is_err());
        assert!(Config::parse("node_name=\"a\"\nmtu = 100").is_err());
    }

    #[test]
    fn rejects_unknown_keys_and_bad_types() {
        assert!(Config::parse("node_name=\"a\"\nsubnett = \"10.87.1.0/24\"").is_err());
        assert!(Config::parse("node_name=\"a\"\nmtu = \"big\"").is_err());
        assert!(Config::parse("node_name=\"a b\"").is_err());
    }

    #[test]
    fn missing_default_file_means_defaults() {
        let c = Config::load(Path::new("/nonexistent/flatnetd.toml"), false).unwrap();
        assert_eq!(c.subnet.to_string(), "10.87.1.0/24");
        assert!(Config::load(Path::new("/nonexistent/flatnetd.toml"), true).is_err());
    }
}
