//! The node side of the Lighthouse protocol: QUIC client configuration with
//! the pinned certificate, and the join handshake. flatnetd drives the
//! session after [`join`] returns; tests use the same code.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use flatnet_wire::lighthouse::{
    LhErrorCode, LighthouseMsg, NodeMsg, PeerInfo, SyncPoint, PROTOCOL_VERSION, SERVER_NAME,
};
use ipnet::Ipv4Net;
use quinn::Connection;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::{
    cert::{client_tls, CertError},
    link::{ControlRead, ControlWrite, Link},
    proof::{answer, encode_key},
    server::{read_frame, write_frame},
};

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error("connecting to the Lighthouse: {0}")]
    Connect(String),
    #[error("the Lighthouse refused: {message} ({code})")]
    Refused { code: LhErrorCode, message: String },
    #[error("Lighthouse protocol: {0}")]
    Protocol(String),
}

/// QUIC client configuration pinned to `fingerprint`.
pub fn client_config(fingerprint: &str) -> Result<quinn::ClientConfig, JoinError> {
    let tls = client_tls(fingerprint)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| JoinError::Connect(e.to_string()))?;
    let mut c = quinn::ClientConfig::new(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(2)));
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        15_000,
    ))));
    t.datagram_receive_buffer_size(Some(4 << 20));
    c.transport_config(Arc::new(t));
    Ok(c)
}

/// A joined session.
pub struct Joined {
    /// Every Lighthouse of the Flatnet, as this one knows them (empty
    /// with a single Lighthouse).
    pub lighthouses: Vec<flatnet_wire::lighthouse::LighthousePin>,
    /// QUIC or TCP.
    pub conn: Link,
    pub send: ControlWrite,
    pub recv: ControlRead,
    pub node_id: u32,
    pub subnet: Ipv4Net,
    pub cidr: Ipv4Net,
    pub observed: SocketAddr,
    /// The whole peer list, or (`delta`) the records changed since the
    /// point given to [`authenticate`].
    pub peers: Vec<PeerInfo>,
    /// With `delta`: ids removed since that point.
    pub removed: Vec<u32>,
    pub delta: bool,
    /// The point the node is complete up to with this list (none from a
    /// Lighthouse without delta sync).
    pub sync: Option<SyncPoint>,
}

/// Connect and authenticate: [`connect`], then [`authenticate`].
#[allow(clippy::too_many_arguments)]
pub async fn join(
    endpoint: &quinn::Endpoint,
    lighthouse: SocketAddr,
    fingerprint: &str,
    secret: &StaticSecret,
    name: &str,
    token: Option<String>,
    local_addrs: Vec<SocketAddr>,
) -> Result<Joined, JoinError> {
    let conn = connect(endpoint, lighthouse, fingerprint).await?;
    authenticate(Link::Quic(conn), secret, name, token, local_addrs, None).await
}

/// The QUIC handshake with the Lighthouse pinned to `fingerprint`. Nothing
/// is registered until [`authenticate`]: a caller may start several
/// connects and keep only the first to finish.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    lighthouse: SocketAddr,
    fingerprint: &str,
) -> Result<Connection, JoinError> {
    endpoint
        .connect_with(client_config(fingerprint)?, lighthouse, SERVER_NAME)
        .map_err(|e| JoinError::Connect(e.to_string()))?
        .await
        .map_err(|e| JoinError::Connect(e.to_string()))
}

/// Authenticate on a connected session: Hello, answer the key challenge,
/// read Welcome (and the rest of a long peer list). `since`: the peer list
/// this node already has, for a delta instead of the whole list.
pub async fn authenticate(
    conn: Link,
    secret: &StaticSecret,
    name: &str,
    token: Option<String>,
    local_addrs: Vec<SocketAddr>,
    since: Option<SyncPoint>,
) -> Result<Joined, JoinError> {
    let (mut send, mut recv) = conn.open_control().await.map_err(JoinError::Connect)?;
    let proto = JoinError::Protocol;
    write_frame(
        &mut send,
        &NodeMsg::Hello {
            version: PROTOCOL_VERSION,
            name: name.to_string(),
            public_key: encode_key(&PublicKey::from(secret)),
            token,
            local_addrs,
            since,
        },
    )
    .await
    .map_err(proto)?;
    let refused = |m: LighthouseMsg| match m {
        LighthouseMsg::Error { code, message } => JoinError::Refused { code, message },
        other => JoinError::Protocol(format!("unexpected {} message", other.kind())),
    };
    let (nonce, server_key) = match read_frame(&mut recv).await.map_err(proto)? {
        LighthouseMsg::Challenge { nonce, server_key } => (nonce, server_key),
        other => return Err(refused(other)),
    };
    let mac = answer(secret, &nonce, &server_key)
        .ok_or_else(|| JoinError::Protocol("bad challenge".into()))?;
    write_frame(&mut send, &NodeMsg::Proof { mac })
        .await
        .map_err(proto)?;
    match read_frame(&mut recv).await.map_err(proto)? {
        LighthouseMsg::Welcome {
            node_id,
            subnet,
            cidr,
            observed,
            mut peers,
            more,
            sync,
            lighthouses,
            delta,
        } => {
            // A long peer list continues in `more` frames: upserts only,
            // and for a delta removals too.
            let mut removed = Vec::new();
            for _ in 0..more {
                match read_frame(&mut recv).await.map_err(proto)? {
                    LighthouseMsg::Peers { upsert, remove, .. } if delta || remove.is_empty() => {
                        peers.extend(upsert);
                        removed.extend(remove);
                    }
                    other => {
                        return Err(JoinError::Protocol(format!(
                            "expected the rest of the peer list, got a {} message",
                            other.kind()
                        )))
                    }
                }
            }
            Ok(Joined {
                conn,
                send,
                recv,
                node_id,
                subnet,
                cidr,
                observed,
                peers,
                removed,
                delta,
                sync,
                lighthouses,
            })
        }
        other => Err(refused(other)),
    }
}
