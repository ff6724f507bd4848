//! Requests and replies of flatnetd's local API.
//!
//! The transport is a unix stream socket (default `/run/flatnet/flatnetd.sock`).
//! A client writes one [`Request`] as a single JSON line and reads one
//! [`Response`] line back; see [`crate::framing`].

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Version of the local API; bumped on incompatible changes.
pub const API_VERSION: u32 = 1;

/// Identifies one container attachment: the CNI tuple
/// `(network name, CNI_CONTAINERID, CNI_IFNAME)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttachmentKey {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

/// An attachment known to the runtime, as listed in a CNI `GC` request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttachmentId {
    pub container_id: String,
    pub ifname: String,
}

/// A port the container publishes (`podman run -p [ip:]host:container[/proto]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Only this host address accepts the port (`-p 127.0.0.1:8080:80`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
    /// Number of consecutive ports from `host_port`/`container_port`
    /// (`-p 8000-8009:8000-8009` is one mapping with range 10).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub range: u16,
}

fn one() -> u16 {
    1
}

fn is_one(v: &u16) -> bool {
    *v == 1
}

fn is_false(v: &bool) -> bool {
    !*v
}

impl PortMapping {
    /// A single TCP or UDP port, published on every host address.
    pub fn simple(container_port: u16, host_port: Option<u16>, protocol: &str) -> Self {
        Self {
            container_port,
            host_port,
            protocol: protocol.into(),
            host_ip: None,
            range: 1,
        }
    }
}

/// A persistent address lease held by one attachment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    #[serde(flatten)]
    pub key: AttachmentKey,
    pub ip: Ipv4Addr,
    /// Network namespace path given at ADD time (informational).
    #[serde(default)]
    pub netns: Option<String>,
    /// Container name (Podman passes it as `K8S_POD_NAME` in `CNI_ARGS`).
    #[serde(default)]
    pub container_name: Option<String>,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Extra DNS names (`--network-alias`, a pod's name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// flatnetd itself publishes `ports` on the host (netavark path); on
    /// the CNI path the `portmap` plugin does.
    #[serde(default, skip_serializing_if = "is_false")]
    pub publish: bool,
    /// The network is `--internal`: no default route, no egress.
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
    /// Unix seconds at allocation.
    pub created: u64,
    /// Unix seconds of the last allocation request for this key (a repeated
    /// ADD); 0 when there was none. Lease reconciliation waits a grace
    /// period after the later of `created` and this.
    #[serde(default)]
    pub refreshed: u64,
}

impl Lease {
    /// When the runtime last asked for this lease.
    pub fn touched(&self) -> u64 {
        self.created.max(self.refreshed)
    }
}

/// How containers on this host are addressed and routed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// The whole Flatnet CIDR, e.g. `10.87.0.0/16`.
    pub cidr: Ipv4Net,
    /// This host's subnet, e.g. `10.87.1.0/24`.
    pub subnet: Ipv4Net,
    /// Gateway address (first host of `subnet`), owned by the host side of every veth.
    pub gateway: Ipv4Addr,
    /// MTU for container interfaces, chosen so that tunnelled packets fit.
    pub mtu: u32,
    /// Resolver settings for containers (`/etc/resolv.conf`); absent when
    /// flatnetd serves no DNS, so the runtime's defaults apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,
}

/// What a container's resolver should use; the CNI result's `dns` and
/// netavark's `dns_server_ips` / `dns_search_domains` carry it. Serialised
/// with CNI's field names, so the CNI result's `dns` is this struct as is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    pub nameservers: Vec<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// Parameters of an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocateRequest {
    #[serde(flatten)]
    pub key: AttachmentKey,
    #[serde(default)]
    pub netns: Option<String>,
    #[serde(default)]
    pub container_name: Option<String>,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Extra DNS names (`--network-alias`, a pod's name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// A specific address (`--ip`, or Podman's reload passing the current
    /// one back); it must lie in this host's pool and be free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// flatnetd publishes `ports` itself (see [`Lease::publish`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub publish: bool,
    /// The network is internal (see [`Lease::internal`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
}

impl AllocateRequest {
    /// A plain request: a dynamic address, no ports, not internal.
    pub fn new(key: AttachmentKey) -> Self {
        Self {
            key,
            netns: None,
            container_name: None,
            ports: vec![],
            aliases: vec![],
            ip: None,
            publish: false,
            internal: false,
        }
    }
}

/// A request on the local API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Liveness and version check (CNI `STATUS`).
    Ping,
    /// Lease an address; idempotent for the same key.
    Allocate(AllocateRequest),
    /// Release the lease of a key; succeeds when there is none.
    Release(AttachmentKey),
    /// Look up the lease of a key (CNI `CHECK`).
    Get(AttachmentKey),
    /// Release every lease of `network` whose attachment is not in `valid`.
    Gc {
        network: String,
        valid: Vec<AttachmentId>,
    },
    /// Everything `flatnetctl status` shows.
    Status,
    /// The names Flatnet DNS serves (`flatnetctl names`).
    Names,
    /// One ICMP echo through the tunnel to a node, Flatnet IP or name
    /// (`flatnetctl ping`).
    Probe { target: String, seq: u16 },
    /// What the Lighthouse sees of this host's NAT (`flatnetctl netcheck`).
    Netcheck,
}

impl Request {
    /// The `op` tag of this request (`allocate`, `status`, ...).
    pub fn op(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Allocate(_) => "allocate",
            Request::Release(_) => "release",
            Request::Get(_) => "get",
            Request::Gc { .. } => "gc",
            Request::Status => "status",
            Request::Names => "names",
            Request::Probe { .. } => "probe",
            Request::Netcheck => "netcheck",
        }
    }
}

/// One name Flatnet DNS serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    pub name: String,
    pub node: String,
    pub ip: Ipv4Addr,
    /// Whether this record answers the bare `<name>` (the ownership rule).
    pub owner: bool,
}

/// Host-wide status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    pub node: String,
    pub version: String,
    pub network: NetworkInfo,
    pub leases: Vec<Lease>,
    /// This node's WireGuard public key (base64), once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// The overlay's peers; empty when the data plane is off.
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
    /// The Lighthouse session, when this node has joined one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lighthouse: Option<LighthouseStatus>,
    /// Who outside the Flatnet may route into it through this host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_from: Vec<Ipv4Net>,
}

/// This node's session with the Lighthouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LighthouseStatus {
    /// `host:port` from the join token.
    pub address: String,
    /// `connected`, `connecting`, `reconnecting` or `removed`.
    pub state: String,
    /// This node's id in the Lighthouse registry, once known.
    #[serde(default)]
    pub node_id: Option<u32>,
    /// Our WireGuard socket as the Lighthouse sees it (the NAT mapping).
    #[serde(default)]
    pub observed: Option<String>,
    /// Why the last connection attempt failed or ended.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Seconds in the current state.
    #[serde(default)]
    pub since_secs: u64,
    /// `quic`, or `tcp` where UDP to the Lighthouse is blocked; none when
    /// not connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// With several Lighthouses: each one's session (this object is then
    /// the first connected one's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lighthouses: Vec<LighthouseStatus>,
}

/// One WireGuard peer as the data plane sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    /// The peer's public key (base64).
    pub public_key: String,
    /// The peer host's subnet (its AllowedIPs).
    pub subnet: Ipv4Net,
    /// Where its packets are sent: `ip:port`.
    pub endpoint: String,
    /// Seconds since the current session's handshake; `None` before the first.
    #[serde(default)]
    pub last_handshake_secs: Option<u64>,
    /// Handshakes completed since the peer was configured.
    #[serde(default)]
    pub handshakes: u64,
    /// UDP payload bytes received from / sent to the peer.
    #[serde(default)]
    pub rx_bytes: u64,
    #[serde(default)]
    pub tx_bytes: u64,
    /// Datagrams received (authenticated) and sent; `None` where the
    /// backend does not count them (kernel WireGuard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_packets: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_packets: Option<u64>,
    /// How packets reach the peer: `direct`, `relay` or `connecting`
    /// (Lighthouse peers); `None` for static peers (always direct).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The peer's node id, for peers learnt from the Lighthouse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u32>,
    /// The path MTU toward the peer's endpoint (whole outer IPv4 packets),
    /// as probed; `None` while relayed or not yet measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_mtu: Option<u16>,
    /// Why the path is not direct, in words ("relay: no reply to punching
    /// for 2m 10s (4 tries); next try in 20s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_note: Option<String>,
}

/// The successful payload of a [`Response`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Pong {
        api_version: u32,
        version: String,
    },
    Allocated {
        lease: Lease,
        network: NetworkInfo,
    },
    Lease {
        lease: Option<Lease>,
        network: NetworkInfo,
    },
    Released {
        lease: Option<Lease>,
    },
    Collected {
        released: Vec<Lease>,
    },
    Status(HostStatus),
    Names {
        domain: String,
        enabled: bool,
        names: Vec<NameRecord>,
    },
    Probe(ProbeResult),
    Netcheck(NetcheckReport),
}

/// `flatnetctl netcheck`: how this host reaches the Lighthouse and what its
/// NAT does, measured from the WireGuard port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetcheckReport {
    /// The Lighthouse (`host:port`) and the QUIC session's state.
    pub lighthouse: String,
    pub session: String,
    /// The Lighthouse's netcheck port, and whether it answered over UDP.
    pub netcheck_addr: Option<String>,
    pub udp: bool,
    /// This host's WireGuard port as the Lighthouse sees it: through the
    /// QUIC session, and through the netcheck port (another destination).
    pub observed_session: Option<String>,
    pub observed_probe: Option<String>,
    /// `endpoint-independent`, `varies by destination` or `unknown`.
    pub mapping: String,
    /// `none`, `cone`, `full-cone`, `symmetric` or `unknown`.
    pub nat: String,
    /// Whether a datagram from a port this host never sent to arrived.
    pub port_reachable: Option<bool>,
    /// The underlay MTU toward the Lighthouse (largest probe answered),
    /// and the local route's, the most that was tried.
    pub mtu: Option<u16>,
    pub mtu_route: Option<u16>,
    /// What it means, in sentences.
    pub notes: Vec<String>,
}

/// One probe of `flatnetctl ping`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// What was asked for, and the address it means.
    pub target: String,
    pub ip: Ipv4Addr,
    /// The peer whose subnet holds `ip`; `None` for this host's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    pub seq: u16,
    /// Round-trip time in microseconds; `None`: no reply within the timeout.
    #[serde(default)]
    pub rtt_us: Option<u64>,
    /// The peer's path when the reply came (or the timeout): `direct`,
    /// `relay`, `connecting`; `local` for this host's own subnet.
    pub path: String,
    /// Where the peer's datagrams go (direct paths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Error classes; clients map these to their own protocol's codes
/// (the CNI plugin does so in one place).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request was malformed or had invalid fields.
    InvalidRequest,
    /// No free address is left in the host subnet.
    Exhausted,
    /// The daemon is starting or its state is unavailable; retry later.
    Unavailable,
    /// An unexpected failure inside the daemon.
    Internal,
}

impl ErrorKind {
    /// The kind as it is serialised (`invalid_request`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Exhausted => "exhausted",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An error returned by flatnetd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// One response line: either `{"ok": …}` or `{"error": …}`.
// One short-lived value per request: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(Reply),
    Error(ApiError),
}

impl From<Result<Reply, ApiError>> for Response {
    fn from(r: Result<Reply, ApiError>) -> Self {
        match r {
            Ok(v) => Response::Ok(v),
            Err(e) => Response::Error(e),
        }
    }
}

impl From<Response> for Result<Reply, ApiError> {
    fn from(r: Response) -> Self {
        match r {
            Response::Ok(v) => Ok(v),
            Response::Error(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AttachmentKey {
        AttachmentKey {
            network: "flatnet".into(),
            container_id: "abc".into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn request_is_tagged_by_op() {
        let json = serde_json::to_string(&Request::Release(key())).unwrap();
        assert_eq!(
            json,
            r#"{"op":"release","network":"flatnet","container_id":"abc","ifname":"eth0"}"#
        );
        let back: Request = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Request::Release(key()));
    }

    #[test]
    fn unknown_op_is_rejected() {
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#).is_err());
    }

    #[test]
    fn old_status_without_peers_still_parses() {
        let old = r#"{"node":"h1","version":"0.1.0","network":{"cidr":"10.87.0.0/16",
            "subnet":"10.87.1.0/24","gateway":"10.87.1.1","mtu":1420},"leases":[]}"#;
        let st: HostStatus = serde_json::from_str(old).unwrap();
        assert!(st.peers.is_empty() && st.public_key.is_none());
    }

    #[test]
    fn response_round_trips() {
        let r = Response::Error(ApiError::new(ErrorKind::Exhausted, "full"));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"error":{"kind":"exhausted","message":"full"}}"#);
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), r);
    }
}
