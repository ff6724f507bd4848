//! The Lighthouse protocol: messages between a node (flatnetd) and the
//! Lighthouse, carried on one bidirectional QUIC stream as length-prefixed
//! JSON frames, plus the relay datagram header.
//!
//! A session goes:
//! ```text
//! node                                   lighthouse
//!  │ Hello {name, public_key, token?, …} ─▶│
//!  │◀─ Challenge {nonce, server_key}       │  server_key: ephemeral x25519
//!  │ Proof {mac} ────────────────────────▶ │  mac = HMAC(DH(node, eph), …)
//!  │◀─ Welcome {node_id, subnet, peers, observed, sync, delta}
//!  │◀─ Peers {upsert, remove, version}  (whenever the registry changes)
//!  │ Update {local_addrs} / Punch {peer} / Ping ─▶
//!  │◀─ PunchNow {peer, endpoints} / Pong {observed, lighthouses?} / Error {…}
//! ```
//! Delta sync: every change to the registry gets the next *version*; a
//! node that says in its Hello which [`SyncPoint`] it is complete up to gets
//! only the records changed (and the ids removed) since then (`delta:
//! true`), and a full list otherwise (a new node, another epoch, a point
//! too old). The last `Peers` frame of each announcement round carries the
//! version the node is complete up to once it has applied the round.
//!
//! Relay: QUIC datagrams `[u32 BE node id][opaque WireGuard packet]`; the
//! id is the destination going up and the source coming down.

use std::net::{IpAddr, SocketAddr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// ALPN of the Lighthouse protocol.
pub const ALPN: &[u8] = b"flatnet-lh/1";
/// TLS server name the node asks for (the certificate is pinned, not named).
pub const SERVER_NAME: &str = "flatnet-lighthouse";
/// The Lighthouse protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest node protocol a Lighthouse of this build still accepts. The
/// rule (docs/operations.md, Upgrades): a Lighthouse accepts nodes one
/// protocol version older than itself, so it is upgraded first and the
/// hosts after it, in any order and at any pace.
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// Whether a Lighthouse of this build talks to a node speaking `version`;
/// the refusal says which side to upgrade.
pub fn check_version(version: u32) -> Result<(), String> {
    let range = if MIN_PROTOCOL_VERSION == PROTOCOL_VERSION {
        PROTOCOL_VERSION.to_string()
    } else {
        format!("{MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}")
    };
    if version < MIN_PROTOCOL_VERSION {
        Err(format!(
            "this node speaks Lighthouse protocol {version} and the Lighthouse speaks {range}: \
             upgrade flatnetd on this node"
        ))
    } else if version > PROTOCOL_VERSION {
        Err(format!(
            "this node speaks Lighthouse protocol {version}, newer than the Lighthouse ({range}): \
             upgrade the Lighthouse first, then the hosts"
        ))
    } else {
        Ok(())
    }
}
/// Largest control frame either side accepts.
pub const MAX_FRAME: usize = 64 * 1024;
/// Most local addresses a node may report.
pub const MAX_LOCAL_ADDRS: usize = 16;

/// A node as the others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub node_id: u32,
    pub name: String,
    /// WireGuard public key, base64.
    pub public_key: String,
    pub subnet: Ipv4Net,
    /// Its WireGuard socket as the Lighthouse sees it (the NAT mapping).
    pub observed: Option<SocketAddr>,
    /// Addresses it reported for same-LAN peers.
    pub local_addrs: Vec<SocketAddr>,
    /// Connected to the Lighthouse now (relay possible).
    pub online: bool,
    /// The Lighthouses it has a session with now, by [`lighthouse_id`]:
    /// relay and punch requests for it go to one of these. Empty from a
    /// Lighthouse that predates several Lighthouses (then: that one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<String>,
    /// Set for a remote member: no endpoint, no Lighthouse session; it
    /// speaks plain WireGuard to its hub (docs/members.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<MemberInfo>,
}

/// What hosts need to know of a remote member: the hub that accepts its
/// WireGuard, when it stops being accepted, and the rules of its policy
/// (default-deny: only these pass).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Node id of its hub.
    pub hub: u32,
    /// Unix time from which it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// Its policy's name, for status and logs.
    pub policy: String,
    pub allow: Vec<crate::policy::Rule>,
}

/// A Lighthouse's short id: the first 16 hex digits of its certificate's
/// SHA-256 fingerprint (what tokens pin), so a node names the Lighthouses
/// it knows without any other configuration.
pub fn lighthouse_id(fingerprint: &str) -> String {
    fingerprint
        .get(..16)
        .unwrap_or(fingerprint)
        .to_ascii_lowercase()
}

/// One Lighthouse of a Flatnet: where to reach it and the certificate to
/// pin. The Welcome lists all of them, so nodes follow when one is added
/// or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LighthousePin {
    /// `host:port` (QUIC).
    pub address: String,
    /// Hex SHA-256 of its certificate (DER).
    pub fingerprint: String,
}

/// How far a node's copy of the peer list goes: every change up to
/// `version` of the registry `epoch`. A Lighthouse whose registry was
/// restored from a backup has another epoch, and a point from the old one
/// gets a full list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPoint {
    pub epoch: u64,
    pub version: u64,
}

/// Node → Lighthouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeMsg {
    Hello {
        version: u32,
        name: String,
        public_key: String,
        /// Required the first time a key joins.
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        local_addrs: Vec<SocketAddr>,
        /// The peer list this node already has (delta sync); none for a
        /// new node or one without a saved list.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<SyncPoint>,
    },
    Proof {
        mac: String,
    },
    Update {
        local_addrs: Vec<SocketAddr>,
    },
    /// Ask the Lighthouse to have both sides punch towards each other now.
    Punch {
        peer: u32,
    },
    Ping,
}

/// Lighthouse → node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LighthouseMsg {
    Challenge {
        nonce: String,
        server_key: String,
    },
    Welcome {
        node_id: u32,
        subnet: Ipv4Net,
        cidr: Ipv4Net,
        observed: SocketAddr,
        /// The first peers; the list is long only with many nodes.
        peers: Vec<PeerInfo>,
        /// How many `Peers` frames (upserts only) follow and complete the
        /// peer list, before any other message.
        #[serde(default)]
        more: u32,
        /// The point the node is complete up to once it has this Welcome
        /// and its `more` frames (absent from Lighthouses without delta
        /// sync).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sync: Option<SyncPoint>,
        /// Every Lighthouse of this Flatnet, this one included (empty from
        /// a Lighthouse that predates several Lighthouses).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lighthouses: Vec<LighthousePin>,
        /// `peers` (with the `more` frames, which may then carry removals
        /// too) are the changes since the node's `since`, to apply to the
        /// list it has; otherwise they replace it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        delta: bool,
    },
    Peers {
        upsert: Vec<PeerInfo>,
        remove: Vec<u32>,
        /// On the last frame of an announcement round: the version the
        /// node is complete up to once it has applied the round.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<u64>,
    },
    PunchNow {
        peer: u32,
        endpoints: Vec<SocketAddr>,
    },
    Pong {
        observed: SocketAddr,
        /// Every Lighthouse of the Flatnet, sent when the list changed
        /// since the Welcome (or the last Pong that carried it): nodes
        /// start sessions with added ones and end them with removed ones.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lighthouses: Vec<LighthousePin>,
    },
    Error {
        code: LhErrorCode,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LhErrorCode {
    /// Malformed, oversized or out-of-order message.
    Protocol,
    /// Unsupported protocol version.
    Version,
    /// Token missing, unknown, expired, used or revoked.
    BadToken,
    /// The key proof did not verify.
    BadProof,
    /// The name belongs to another node.
    NameTaken,
    /// This node was removed by an administrator.
    Removed,
    /// No subnet left in the CIDR.
    Exhausted,
    /// The Lighthouse failed.
    Internal,
}

impl LighthouseMsg {
    /// The message's type as on the wire, for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            LighthouseMsg::Challenge { .. } => "challenge",
            LighthouseMsg::Welcome { .. } => "welcome",
            LighthouseMsg::Peers { .. } => "peers",
            LighthouseMsg::PunchNow { .. } => "punch_now",
            LighthouseMsg::Pong { .. } => "pong",
            LighthouseMsg::Error { .. } => "error",
        }
    }
}

impl LhErrorCode {
    /// The code as on the wire (`bad_token`, ...), for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LhErrorCode::Protocol => "protocol",
            LhErrorCode::Version => "version",
            LhErrorCode::BadToken => "bad_token",
            LhErrorCode::BadProof => "bad_proof",
            LhErrorCode::NameTaken => "name_taken",
            LhErrorCode::Removed => "removed",
            LhErrorCode::Exhausted => "exhausted",
            LhErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for LhErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLong(usize),
    #[error("malformed frame: {0}")]
    Json(#[from] serde_json::Error),
}

/// Encode a frame: 4-byte big-endian length, then JSON.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLong(body.len()));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Validate a frame length prefix before reading the body.
pub fn check_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let n = u32::from_be_bytes(prefix) as usize;
    if n > MAX_FRAME {
        return Err(FrameError::TooLong(n));
    }
    Ok(n)
}

/// Decode a frame body.
pub fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLong(body.len()));
    }
    Ok(serde_json::from_slice(body)?)
}

/// Relay datagram: prefix a WireGuard packet with a node id.
pub fn relay_encode(node_id: u32, packet: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + packet.len());
    v.extend_from_slice(&node_id.to_be_bytes());
    v.extend_from_slice(packet);
    v
}

/// Split a relay datagram into (node id, packet).
pub fn relay_decode(d: &[u8]) -> Option<(u32, &[u8])> {
    let (id, rest) = d.split_first_chunk::<4>()?;
    (!rest.is_empty()).then(|| (u32::from_be_bytes(*id), rest))
}

/// The TCP transport, for networks that block UDP: TLS (the same pinned
/// certificate) on [`TCP_DEFAULT_PORT`], an HTTP/1.1 `GET` [`TCP_PATH`] with
/// `Upgrade:` [`TCP_UPGRADE`] answered `101 Switching Protocols`, then
/// frames `[kind u8][length u32 BE][payload]`: kind [`TCP_CONTROL`] carries
/// bytes of the control stream, kind [`TCP_DATAGRAM`] one relay datagram
/// (the same `[node id][WireGuard packet]` as over QUIC).
pub const TCP_UPGRADE: &str = "flatnet-lh/1";
pub const TCP_PATH: &str = "/flatnet/lighthouse";
pub const TCP_DEFAULT_PORT: u16 = 443;
pub const TCP_CONTROL: u8 = 0;
pub const TCP_DATAGRAM: u8 = 1;
/// The largest relay datagram over TCP (no path MTU to respect).
pub const TCP_MAX_DATAGRAM: usize = 65_535;
/// The largest TCP frame payload either side accepts.
pub const TCP_MAX_PAYLOAD: usize = TCP_MAX_DATAGRAM + 4;

/// A TCP frame's header.
pub fn tcp_header(kind: u8, len: usize) -> [u8; 5] {
    let mut h = [0u8; 5];
    h[0] = kind;
    h[1..].copy_from_slice(&(len as u32).to_be_bytes());
    h
}

/// Parse a TCP frame header: (kind, payload length), refusing unknown kinds
/// and oversized payloads before any of it is read.
pub fn tcp_parse_header(h: [u8; 5]) -> Result<(u8, usize), String> {
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if h[0] != TCP_CONTROL && h[0] != TCP_DATAGRAM {
        return Err(format!("unknown TCP frame kind {}", h[0]));
    }
    if len > TCP_MAX_PAYLOAD {
        return Err(format!(
            "TCP frame of {len} bytes exceeds the {TCP_MAX_PAYLOAD}-byte limit"
        ));
    }
    Ok((h[0], len))
}

/// Whether `a` may be offered to other members as a way to reach a node
/// that the Lighthouse sees at `observed`: never loopback, multicast,
/// broadcast, link-local, unspecified or a Flatnet address; a private
/// (RFC 1918, CGNAT, IPv6 ULA) address as the node says; any other (public)
/// address only if it is the one the Lighthouse observed. So a member
/// cannot aim other members' probes at a machine of its choosing.
pub fn candidate_ok(a: SocketAddr, observed: Option<SocketAddr>, cidr: Ipv4Net) -> bool {
    if a.port() == 0 {
        return false;
    }
    let ip = match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    let private = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_link_local()
                || o[0] == 0
                || o[0] >= 240
                || cidr.contains(&v4)
            {
                return false;
            }
            v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments()[0];
            if v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || seg & 0xffc0 == 0xfe80
            {
                return false;
            }
            seg & 0xfe00 == 0xfc00
        }
    };
    private || observed.is_some_and(|o| o.ip() == ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_the_lighthouse_accepts() {
        assert!(check_version(PROTOCOL_VERSION).is_ok());
        assert!(check_version(MIN_PROTOCOL_VERSION).is_ok());
        let old = check_version(MIN_PROTOCOL_VERSION - 1).unwrap_err();
        assert!(old.contains("upgrade flatnetd on this node"), "{old}");
        let new = check_version(PROTOCOL_VERSION + 1).unwrap_err();
        assert!(new.contains("upgrade the Lighthouse first"), "{new}");
    }

    #[test]
    fn candidates_are_plausible_and_public_ones_observed() {
        let cidr: Ipv4Net = "10.87.0.0/16".parse().unwrap();
        let seen: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        for ok in [
            "192.168.1.5:51820",
            "10.1.2.3:51820",
            "172.20.0.1:1",
            "100.64.3.4:51820",
            "198.51.100.7:51820",
            "[fd00::5]:51820",
            "[::ffff:192.168.1.5]:51820",
        ] {
            assert!(candidate_ok(ok.parse().unwrap(), Some(seen), cidr), "{ok}");
        }
        for bad in [
            "127.0.0.1:51820",
            "0.0.0.0:51820",
            "224.0.0.1:51820",
            "255.255.255.255:51820",
            "169.254.1.1:51820",
            "10.87.3.4:51820",
            "192.168.1.5:0",
            "203.0.113.99:51820",
            "[::1]:51820",
            "[fe80::1]:51820",
            "[ff02::1]:51820",
            "[2001:db8::1]:51820",
            "[::ffff:127.0.0.1]:51820",
        ] {
            assert!(
                !candidate_ok(bad.parse().unwrap(), Some(seen), cidr),
                "{bad}"
            );
        }
        assert!(!candidate_ok("198.51.100.7:1".parse().unwrap(), None, cidr));
    }

    #[test]
    fn frames_round_trip() {
        let m = NodeMsg::Hello {
            version: 1,
            name: "h1".into(),
            public_key: "k".into(),
            token: None,
            local_addrs: vec!["192.168.1.2:51820".parse().unwrap()],
            since: Some(SyncPoint {
                epoch: u64::MAX,
                version: 7,
            }),
        };
        let f = encode_frame(&m).unwrap();
        let n = check_len(f[..4].try_into().unwrap()).unwrap();
        assert_eq!(n, f.len() - 4);
        assert_eq!(decode_body::<NodeMsg>(&f[4..]).unwrap(), m);
    }

    #[test]
    fn older_peers_interoperate() {
        // A Hello and a Welcome from a build without delta sync parse
        // (no `since`, no `sync`: a full list).
        let hello = br#"{"type":"hello","version":1,"name":"h1","public_key":"k"}"#;
        match decode_body::<NodeMsg>(hello).unwrap() {
            NodeMsg::Hello { since, .. } => assert_eq!(since, None),
            other => panic!("{other:?}"),
        }
        let welcome = br#"{"type":"welcome","node_id":2,"subnet":"10.87.2.0/24","cidr":"10.87.0.0/16","observed":"198.51.100.1:5","peers":[]}"#;
        match decode_body::<LighthouseMsg>(welcome).unwrap() {
            LighthouseMsg::Welcome { sync, delta, .. } => assert_eq!((sync, delta), (None, false)),
            other => panic!("{other:?}"),
        }
        // And what this build sends without delta data carries no new keys.
        let full = LighthouseMsg::Peers {
            upsert: vec![],
            remove: vec![3],
            version: None,
        };
        let f = encode_frame(&full).unwrap();
        assert!(!String::from_utf8_lossy(&f[4..]).contains("version"));
    }

    #[test]
    fn hostile_frames() {
        assert!(matches!(check_len([0xff; 4]), Err(FrameError::TooLong(_))));
        assert!(decode_body::<NodeMsg>(b"{\"type\":\"root_shell\"}").is_err());
        assert!(decode_body::<NodeMsg>(b"\x00\x01").is_err());
        assert!(decode_body::<NodeMsg>(&vec![b' '; MAX_FRAME + 1]).is_err());
    }

    #[test]
    fn tcp_frames() {
        let h = tcp_header(TCP_DATAGRAM, 1420);
        assert_eq!(tcp_parse_header(h), Ok((TCP_DATAGRAM, 1420)));
        assert!(tcp_parse_header(tcp_header(7, 1)).is_err());
        assert!(tcp_parse_header([0, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(tcp_parse_header(tcp_header(TCP_CONTROL, TCP_MAX_PAYLOAD)).is_ok());
    }

    #[test]
    fn relay_header() {
        let d = relay_encode(7, b"wg");
        assert_eq!(relay_decode(&d), Some((7, &b"wg"[..])));
        assert_eq!(relay_decode(&[0, 0, 0, 1]), None);
        assert_eq!(relay_decode(&[1]), None);
    }
}
