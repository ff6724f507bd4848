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
//! forward_from = ["172.22.48.1/32"]  # who may route into the Flatnet through
//!                                    # this host (the gateway); nobody else
//! catalog_listen = "0.0.0.0:7870"    # optional HTTP service catalog
//! log_format = "text"                # or "json", one object per line
//! log_level = "info"                 # a tracing filter; FLATNET_LOG overrides
//! reconcile_secs = 10                # how often leases and the nft table are checked
//! lease_grace_secs = 60              # a lease whose host veth is gone is reclaimed
//!                                    # once it is this old (an ADD in flight is younger)
//!
//! [wireguard]                        # the cross-host data plane (optional)
//! listen_port = 51820
//! backend = "userspace"              # or "kernel"
//! keepalive_secs = 25                # 0 disables persistent keepalive
//! underlay_mtu = 1500                # tunnel MTU = underlay_mtu - 80 = mtu
//! interface = "flatnet0"
//! offloads = true                    # TUN TSO + UDP GSO/GRO when the kernel has them
//!
//! [metrics]                          # Prometheus /metrics (off unless set)
//! listen = "127.0.0.1:9587"
//!
//! [dns]                              # Flatnet DNS on the gateway address, port 53
//! enabled = true
//! domain = "flatnet"                 # <name>, <name>.flatnet, <name>.<node>.flatnet
//! pins = { forgejo-db = "h1" }       # a bare name always means that node's container
//! replicas = ["web"]                 # bare names answered by every node that has them
//! resolv_conf = "/etc/resolv.conf"   # where the upstream resolvers are read
//! allow = ["192.168.1.10/32"]        # besides the Flatnet and this host (e.g. the gateway)
//!
//! [dns.lan]                          # optional: the gateway's zone for the office LAN
//! domain = "flatnet.example"         # the gateway's domain (gateway.conf `domain`)
//! address = "192.168.10.5"           # the gateway's LAN address: every answer
//! names = ["wiki"]                   # extra names (the gateway's static routes)
//! port = 5300                        # the zone's own listener, for the gateway's relay
//!
//! [lighthouse]                       # optional: join a Lighthouse at first start
//! token = "flatnet1_…"               # used until the first successful join
//! tcp = "lh.example:443"             # where to go when UDP to it is blocked
//!                                    # (default: its host, port 443; "off")
//!
//! [[peers]]                          # static peers (coexist with Lighthouse peers)
//! name = "wsl-bob"
//! public_key = "base64…"
//! endpoint = "192.0.2.7:51820"
//! subnet = "10.87.2.0/24"
//! ```
//!
//! The data plane runs when a `[wireguard]` table or any `[[peers]]` is present.

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

/// Bytes WireGuard adds around a tunnelled packet on an IPv6 underlay.
pub const WG_OVERHEAD: u32 = 80;
pub const DEFAULT_WG_PORT: u16 = 51820;
pub const DEFAULT_KEEPALIVE_SECS: u16 = 25;
pub const DEFAULT_WG_INTERFACE: &str = "flatnet0";
pub const DEFAULT_RECONCILE_SECS: u64 = 10;
/// Longer than any ADD takes, so an ADD in flight (lease granted, veth not
/// yet created) is never mistaken for a leaked lease.
pub const DEFAULT_LEASE_GRACE_SECS: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type: one line
    /// naming where (toml's own message spans several, with a caret).
    #[error("parsing {path} at {location}: {message}")]
    Parse {
        path: PathBuf,
        location: String,
        message: String,
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
    #[serde(default)]
    forward_from: Vec<Ipv4Net>,
    catalog_listen: Option<SocketAddr>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    metrics: Option<RawMetrics>,
    reconcile_secs: Option<u64>,
    lease_grace_secs: Option<u64>,
    wireguard: Option<RawWireguard>,
    lighthouse: Option<RawLighthouse>,
    dns: Option<RawDns>,
    #[serde(default)]
    peers: Vec<RawPeer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<SocketAddr>,
}

pub use flatnet_wire::logging::LogFormat;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    enabled: Option<bool>,
    domain: Option<String>,
    #[serde(default)]
    pins: std::collections::HashMap<String, String>,
    #[serde(default)]
    replicas: Vec<String>,
    resolv_conf: Option<PathBuf>,
    #[serde(default)]
    allow: Vec<Ipv4Net>,
    lan: Option<RawLan>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLan {
    domain: String,
    address: Ipv4Addr,
    #[serde(default)]
    names: Vec<String>,
    port: Option<u16>,
}

/// Where `[dns.lan]` has a listener of its own on the gateway address: the
/// port the gateway's DNS relay (`dns_upstream`) points at.
pub const DEFAULT_LAN_DNS_PORT: u16 = 5300;

/// `[dns.lan]`: names under the gateway's domain, answered with the
/// gateway's LAN address to anyone (see `dns::lan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanSettings {
    /// Lowercase, without the trailing dot.
    pub domain: String,
    pub address: Ipv4Addr,
    /// Lowercase labels.
    pub names: Vec<String>,
    /// The LAN zone's own listener on the gateway address (UDP and TCP). It
    /// answers the LAN zone and nothing else, whoever asks: through the
    /// gateway's relay every office machine looks like the gateway, which
    /// port 53 may trust.
    pub port: u16,
}

/// The `[dns]` table with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    pub enabled: bool,
    /// Lowercase, without the trailing dot.
    pub domain: String,
    pub pins: std::collections::HashMap<String, String>,
    pub replicas: Vec<String>,
    pub resolv_conf: PathBuf,
    /// Sources besides the Flatnet and this host that may ask.
    pub allow: Vec<Ipv4Net>,
    pub lan: Option<LanSettings>,
}

/// `domain` lowercased, without a trailing dot, if it is dot-separated
/// labels of `[a-z0-9-]`.
fn domain_of(domain: &str) -> Option<String> {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    (d.len() <= 200 && d.split('.').all(label_ok)).then_some(d)
}

/// Whether `a` is `b` or inside it.
fn within(a: &str, b: &str) -> bool {
    a == b || a.ends_with(&format!(".{b}"))
}

impl LanSettings {
    fn from_raw(raw: RawLan, flatnet_domain: &str) -> Result<Self, ConfigError> {
        let domain = domain_of(&raw.domain).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "[dns.lan] domain {:?} must be dot-separated labels of [a-z0-9-]",
                raw.domain
            ))
        })?;
        if within(&domain, flatnet_domain) || within(flatnet_domain, &domain) {
            return Err(ConfigError::Invalid(format!(
                "[dns.lan] domain {domain:?} overlaps the Flatnet domain {flatnet_domain:?}; \
                 use the gateway's own domain (gateway.conf `domain`)"
            )));
        }
        if raw.address.is_unspecified() || raw.address.is_loopback() || raw.address.is_multicast() {
            return Err(ConfigError::Invalid(format!(
                "[dns.lan] address {} must be the gateway's LAN address",
                raw.address
            )));
        }
        let mut names = Vec::new();
        for n in &raw.names {
            names.push(crate::dns::table::label(n).ok_or_else(|| {
                ConfigError::Invalid(format!("[dns.lan] name {n:?} is not a DNS label"))
            })?);
        }
        let port = raw.port.unwrap_or(DEFAULT_LAN_DNS_PORT);
        if port == 0 || port == 53 {
            return Err(ConfigError::Invalid(format!(
                "[dns.lan] port {port}: the LAN zone needs a port of its own (not 53, which \
                 answers the Flatnet); leave it out for {DEFAULT_LAN_DNS_PORT}"
            )));
        }
        Ok(Self {
            domain,
            address: raw.address,
            names,
            port,
        })
    }
}

pub const DEFAULT_DNS_DOMAIN: &str = "flatnet";

impl DnsSettings {
    fn from_raw(raw: Option<RawDns>) -> Result<Self, ConfigError> {
        let raw = raw.unwrap_or_default();
        let given = raw.domain.unwrap_or_else(|| DEFAULT_DNS_DOMAIN.into());
        let domain = domain_of(&given).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "[dns] domain {given:?} must be dot-separated labels of [a-z0-9-]"
            ))
        })?;
        let lan = raw
            .lan
            .map(|l| LanSettings::from_raw(l, &domain))
            .transpose()?;
        for name in raw.pins.keys().chain(raw.replicas.iter()) {
            if crate::dns::table::label(name).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "[dns] name {name:?} is not a valid container name label"
                )));
            }
        }
        Ok(Self {
            enabled: raw.enabled.unwrap_or(true),
            domain,
            pins: raw
                .pins
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            replicas: raw
                .replicas
                .iter()
                .map(|r| r.to_ascii_lowercase())
                .collect(),
            resolv_conf: raw
                .resolv_conf
                .unwrap_or_else(|| PathBuf::from("/etc/resolv.conf")),
            allow: raw.allow,
            lan,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLighthouse {
    token: Option<String>,
    tcp: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWireguard {
    listen_port: Option<u16>,
    backend: Option<WgBackendKind>,
    keepalive_secs: Option<u16>,
    underlay_mtu: Option<u32>,
    interface: Option<String>,
    offloads: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    public_key: String,
    endpoint: SocketAddr,
    subnet: Ipv4Net,
}

/// Which WireGuard implementation carries the overlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WgBackendKind {
    /// flatnetd's own data plane over a TUN device (the default).
    #[default]
    Userspace,
    /// The kernel's `wireguard` link type, configured over generic netlink.
    Kernel,
}

/// The `[wireguard]` table with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireguardConfig {
    /// Whether the data plane runs at all.
    pub enabled: bool,
    pub listen_port: u16,
    pub backend: WgBackendKind,
    /// Persistent keepalive interval; 0 turns it off.
    pub keepalive_secs: u16,
    pub underlay_mtu: u32,
    pub interface: String,
    /// Use TUN segmentation offload and UDP GSO/GRO where available.
    pub offloads: bool,
}

/// One static peer (`[[peers]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub name: String,
    /// The peer's x25519 public key.
    pub public_key: [u8; 32],
    pub endpoint: SocketAddr,
    /// The peer host's subnet: its AllowedIPs.
    pub subnet: Ipv4Net,
    /// Set for peers learnt from the Lighthouse: their node id. Their
    /// endpoint then belongs to the hole-punching logic, so a peer-list
    /// update does not overwrite it.
    pub node_id: Option<u32>,
    /// A remote member's WireGuard (this host is its hub): its endpoint
    /// is wherever it last sent from, and this host never starts a
    /// handshake with it.
    pub member: bool,
    /// Addresses behind this peer besides its subnet: the remote members
    /// it is the hub of (also AllowedIPs).
    pub also: Vec<Ipv4Net>,
}

/// Decode a base64 WireGuard key.
pub fn decode_key(s: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("a key is 32 bytes, this one is {}", b.len()))
}

/// Encode a WireGuard key as base64 (the `wg` tool's format).
pub fn encode_key(k: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(k)
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
    /// Sources outside the Flatnet that may route into it through this
    /// host (the gateway's address); everyone else is dropped.
    pub forward_from: Vec<Ipv4Net>,
    pub catalog_listen: Option<SocketAddr>,
    /// `[metrics] listen`: where `/metrics` is served; off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// A tracing filter (`info`, `debug`, `info,flatnetd::dns=debug`);
    /// `FLATNET_LOG` overrides it. Changes apply on reload (SIGHUP).
    pub log_level: String,
    /// Period of lease reconciliation and of the nft table repair.
    pub reconcile_secs: u64,
    /// Age (since the last ADD) below which a lease is never reclaimed.
    pub lease_grace_secs: u64,
    pub wireguard: WireguardConfig,
    pub peers: Vec<PeerConfig>,
    /// `[lighthouse] token`: join with it when not joined yet.
    pub lighthouse_token: Option<String>,
    /// `[lighthouse] tcp`: the TCP fallback (`off`, `host:port`; unset:
    /// the Lighthouse's host, port 443).
    pub lighthouse_tcp: Option<String>,
    pub dns: DnsSettings,
}

/// `line L, column C (`the line`)` for a byte span of `text`, as toml's
/// multi-line excerpt says it, on one line.
fn toml_location(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(start) = span.map(|s| s.start.min(text.len())) else {
        return "an unknown place".into();
    };
    let before = text.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let shown: String = text[line_start..]
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .take(60)
        .collect();
    if shown.is_empty() {
        format!("line {line}, column {column}")
    } else {
        format!("line {line}, column {column} (`{shown}`)")
    }
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
            ConfigError::Parse {
                location, message, ..
            } => ConfigError::Parse {
                path: path.to_owned(),
                location,
                message,
            },
            other => other,
        })
    }

    /// Parse and validate TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            location: toml_location(text, e.span()),
            message: e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
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
        let rwg = raw.wireguard.as_ref();
        let underlay = rwg.and_then(|w| w.underlay_mtu);
        let mtu = match (raw.mtu, underlay) {
            (Some(m), Some(u)) if m + WG_OVERHEAD != u => {
                return Err(ConfigError::Invalid(format!(
                    "mtu {m} contradicts [wireguard] underlay_mtu {u}: \
                     the container MTU must be underlay_mtu - {WG_OVERHEAD}; set only one"
                )))
            }
            (Some(m), _) => m,
            (None, Some(u)) => u.saturating_sub(WG_OVERHEAD),
            (None, None) => DEFAULT_MTU,
        };
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
        let wireguard = WireguardConfig {
            enabled: rwg.is_some() || !raw.peers.is_empty(),
            listen_port: rwg.and_then(|w| w.listen_port).unwrap_or(DEFAULT_WG_PORT),
            backend: rwg.and_then(|w| w.backend).unwrap_or_default(),
            keepalive_secs: rwg
                .and_then(|w| w.keepalive_secs)
                .unwrap_or(DEFAULT_KEEPALIVE_SECS),
            underlay_mtu: mtu + WG_OVERHEAD,
            interface: rwg
                .and_then(|w| w.interface.clone())
                .unwrap_or_else(|| DEFAULT_WG_INTERFACE.into()),
            offloads: rwg.and_then(|w| w.offloads).unwrap_or(true),
        };
        if wireguard.interface.is_empty()
            || wireguard.interface.len() > 15
            || !wireguard
                .interface
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(ConfigError::Invalid(format!(
                "[wireguard] interface {:?} must be 1-15 of [A-Za-z0-9_-]",
                wireguard.interface
            )));
        }
        let peers = validate_peers(raw.peers, cidr, subnet)?;
        let reconcile_secs = raw.reconcile_secs.unwrap_or(DEFAULT_RECONCILE_SECS);
        if !(1..=3600).contains(&reconcile_secs) {
            return Err(ConfigError::Invalid(format!(
                "reconcile_secs {reconcile_secs} out of range 1..=3600"
            )));
        }
        let lease_grace_secs = raw.lease_grace_secs.unwrap_or(DEFAULT_LEASE_GRACE_SECS);
        if !(1..=86400).contains(&lease_grace_secs) {
            return Err(ConfigError::Invalid(format!(
                "lease_grace_secs {lease_grace_secs} out of range 1..=86400"
            )));
        }
        let dns = DnsSettings::from_raw(raw.dns)?;
        let log_level = raw.log_level.unwrap_or_else(|| "info".into());
        if log_level.trim().is_empty() || log_level.chars().any(char::is_control) {
            return Err(ConfigError::Invalid(format!(
                "log_level {log_level:?} is not a log filter; use e.g. \"info\" or \"debug\""
            )));
        }
        Ok(Config {
            dns,
            reconcile_secs,
            lease_grace_secs,
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
            forward_from: raw.forward_from,
            catalog_listen: raw.catalog_listen,
            metrics_listen: raw.metrics.and_then(|m| m.listen),
            log_format: raw.log_format.unwrap_or_default(),
            log_level,
            wireguard,
            peers,
            lighthouse_tcp: raw.lighthouse.as_ref().and_then(|l| l.tcp.clone()),
            lighthouse_token: match raw.lighthouse.and_then(|l| l.token) {
                Some(t) if !t.trim().is_empty() => {
                    // Checked here, before flatnetd makes a key or a state
                    // dir for a join that cannot work.
                    flatnet_lighthouse::token::Token::decode(t.trim())
                        .map_err(|e| ConfigError::Invalid(format!("[lighthouse] token: {e}")))?;
                    Some(t)
                }
                _ => None,
            },
        })
    }

    /// Take the subnet (and CIDR) the Lighthouse allocated, replacing the
    /// configured fallback, and re-check the static peers against it.
    pub fn with_lighthouse_subnet(
        mut self,
        cidr: Ipv4Net,
        subnet: Ipv4Net,
    ) -> Result<Self, ConfigError> {
        if !cidr.contains(&subnet) || subnet.prefix_len() > 29 {
            return Err(ConfigError::Invalid(format!(
                "the Lighthouse gave subnet {subnet}, which does not fit cidr {cidr}"
            )));
        }
        self.cidr = cidr;
        self.subnet = subnet;
        // Joined hosts always run the data plane.
        self.wireguard.enabled = true;
        for p in &self.peers {
            if p.subnet.contains(&subnet) || subnet.contains(&p.subnet) || !cidr.contains(&p.subnet)
            {
                return Err(ConfigError::Invalid(format!(
                    "static peer {:?} (subnet {}) conflicts with the subnet {subnet} in {cidr} the Lighthouse allocated",
                    p.name, p.subnet
                )));
            }
        }
        Ok(self)
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
            // Containers resolve through flatnetd's DNS on their gateway.
            dns: self.dns.enabled.then(|| flatnet_wire::DnsConfig {
                nameservers: vec![self.gateway()],
                search: vec![self.dns.domain.clone()],
                options: vec![],
            }),
        }
    }
}

fn validate_peers(
    raw: Vec<RawPeer>,
    cidr: Ipv4Net,
    subnet: Ipv4Net,
) -> Result<Vec<PeerConfig>, ConfigError> {
    let mut peers: Vec<PeerConfig> = Vec::with_capacity(raw.len());
    for p in raw {
        let bad = |m: String| ConfigError::Invalid(format!("peer {:?}: {m}", p.name));
        if p.name.is_empty() || p.name.len() > 63 || p.name.chars().any(char::is_control) {
            return Err(bad("name must be 1-63 printable characters".into()));
        }
        let public_key = decode_key(&p.public_key).map_err(|e| bad(format!("public_key {e}")))?;
        if p.subnet != p.subnet.trunc() || !cidr.contains(&p.subnet) {
            return Err(bad(format!(
                "subnet {} must be a network inside cidr {cidr}",
                p.subnet
            )));
        }
        if p.subnet.contains(&subnet) || subnet.contains(&p.subnet) {
            return Err(bad(format!(
                "subnet {} overlaps this host's subnet {subnet}",
                p.subnet
            )));
        }
        for q in &peers {
            if q.name == p.name || q.public_key == public_key {
                return Err(bad(format!("same name or key as peer {:?}", q.name)));
            }
            if q.subnet.contains(&p.subnet) || p.subnet.contains(&q.subnet) {
                return Err(bad(format!("subnet overlaps peer {:?}", q.name)));
            }
        }
        peers.push(PeerConfig {
            name: p.name,
            public_key,
            endpoint: p.endpoint,
            subnet: p.subnet,
            node_id: None,
            member: false,
            also: vec![],
        });
    }
    Ok(peers)
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
        assert_eq!((c.reconcile_secs, c.lease_grace_secs), (10, 60));
        assert!(Config::parse("reconcile_secs = 0").is_err());
        assert!(Config::parse("lease_grace_secs = 0").is_err());
        assert!(c.dns.enabled);
        assert_eq!(c.dns.domain, "flatnet");
        let info = c.network_info().dns.unwrap();
        assert_eq!(info.nameservers, vec![c.gateway()]);
        assert_eq!(info.search, vec!["flatnet".to_string()]);
    }

    #[test]
    fn metrics_and_logs() {
        let c = Config::parse("node_name = \"h1\"").unwrap();
        assert_eq!(c.metrics_listen, None, "metrics are off by default");
        assert_eq!(
            (c.log_format, c.log_level.as_str()),
            (LogFormat::Text, "info")
        );
        let c = Config::parse(
            "log_format = \"json\"\nlog_level = \"debug\"\n[metrics]\nlisten = \"127.0.0.1:9587\"",
        )
        .unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9587".parse().unwrap()));
        assert_eq!(
            (c.log_format, c.log_level.as_str()),
            (LogFormat::Json, "debug")
        );
        for bad in [
            "log_format = \"xml\"",
            "log_level = \"\"",
            "[metrics]\nlisten = \"localhost\"",
            "[metrics]\nport = 1",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn dns_table_validates() {
        let c = Config::parse(
            "[dns]\ndomain = \"Corp.Flat.\"\npins = { Forgejo-DB = \"h1\" }\nreplicas = [\"web\"]",
        )
        .unwrap();
        assert_eq!(c.dns.domain, "corp.flat");
        assert_eq!(c.dns.pins["forgejo-db"], "h1");
        assert!(Config::parse("[dns]\ndomain = \"a..b\"").is_err());
        assert!(Config::parse("[dns]\nreplicas = [\"a.b\"]").is_err());
        let lan = Config::parse(
            "[dns.lan]\ndomain = \"Flatnet.Example.\"\naddress = \"192.168.10.5\"\nnames = [\"Wiki\"]",
        )
        .unwrap();
        let lan = lan.dns.lan.unwrap();
        assert_eq!(lan.domain, "flatnet.example");
        assert_eq!(lan.names, ["wiki"]);
        assert_eq!(lan.port, DEFAULT_LAN_DNS_PORT);
        for bad in [
            "domain = \"gw.example\"\naddress = \"192.168.10.5\"\nport = 53",
            "domain = \"gw.example\"\naddress = \"192.168.10.5\"\nport = 0",
            "domain = \"flatnet\"\naddress = \"192.168.10.5\"",
            "domain = \"x.flatnet\"\naddress = \"192.168.10.5\"",
            "domain = \"a..b\"\naddress = \"192.168.10.5\"",
            "domain = \"gw.example\"\naddress = \"127.0.0.1\"",
            "domain = \"gw.example\"\naddress = \"192.168.10.5\"\nnames = [\"a.b\"]",
            "domain = \"gw.example\"",
        ] {
            assert!(
                Config::parse(&format!("[dns.lan]\n{bad}")).is_err(),
                "{bad}"
            );
        }
        let off = Config::parse("[dns]\nenabled = false").unwrap();
        assert!(off.network_info().dns.is_none());
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

    const KEY_B: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

    #[test]
    fn wireguard_defaults_and_disabled_without_section() {
        let c = Config::parse("node_name = \"h1\"").unwrap();
        assert!(!c.wireguard.enabled);
        assert_eq!(c.wireguard.listen_port, 51820);
        assert_eq!(c.wireguard.underlay_mtu, 1500);
        assert_eq!(c.wireguard.backend, WgBackendKind::Userspace);
        let c = Config::parse("node_name = \"h1\"\n[wireguard]\nunderlay_mtu = 9000").unwrap();
        assert!(c.wireguard.enabled);
        assert_eq!(c.mtu, 8920);
        assert_eq!(c.network_info().mtu, 8920);
    }

    #[test]
    fn peers_parse_and_validate() {
        let text = format!(
            r#"
            node_name = "h1"
            subnet = "10.87.1.0/24"
            [wireguard]
            backend = "kernel"
            keepalive_secs = 0
            [[peers]]
            name = "h2"
            public_key = "{KEY_B}"
            endpoint = "192.168.77.2:51820"
            subnet = "10.87.2.0/24"
            "#
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.wireguard.backend, WgBackendKind::Kernel);
        assert_eq!(c.wireguard.keepalive_secs, 0);
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.peers[0].public_key[0], 1);
        assert_eq!(encode_key(&c.peers[0].public_key), KEY_B);
        for (from, to) in [
            ("10.87.2.0/24", "10.87.1.0/24"),
            ("10.87.2.0/24", "10.88.2.0/24"),
            ("10.87.2.0/24", "10.87.2.1/24"),
            (KEY_B, "AQID"),
            ("192.168.77.2:51820", "nowhere"),
        ] {
            assert!(Config::parse(&text.replace(from, to)).is_err(), "{to}");
        }
        let twice = format!("{text}\n[[peers]]\nname=\"h3\"\npublic_key=\"{KEY_B}\"\nendpoint=\"1.2.3.4:1\"\nsubnet=\"10.87.3.0/24\"");
        assert!(Config::parse(&twice).is_err());
        assert!(Config::parse(&text.replace("keepalive_secs", "keepalive")).is_err());
        assert!(Config::parse(&format!("mtu = 1400\n{text}")).is_ok());
        let clash = text.replace("keepalive_secs = 0", "underlay_mtu = 1500");
        assert!(Config::parse(&format!("mtu = 1400\n{clash}")).is_err());
    }

    #[test]
    fn missing_default_file_means_defaults() {
        let c = Config::load(Path::new("/nonexistent/flatnetd.toml"), false).unwrap();
        assert_eq!(c.subnet.to_string(), "10.87.1.0/24");
        assert!(Config::load(Path::new("/nonexistent/flatnetd.toml"), true).is_err());
    }
}
