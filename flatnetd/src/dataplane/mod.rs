//! The cross-host data plane: containers on different hosts reach each
//! other by Flatnet IP through WireGuard tunnels run by flatnetd itself.
//!
//! Sans-IO core (unit-tested without root or sockets):
//! - [`classify`]: demultiplexes WireGuard and QUIC on the one UDP socket;
//! - [`router`]: longest-prefix match from destination to peer;
//! - [`peer`]: one peer's WireGuard state machine and counters;
//! - [`peers`]: the set of peers, rebuilt on reload while keeping sessions;
//! - [`pmtu`]: path MTU probing per peer;
//! - [`netwatch`]: notices the host's own addresses changing.
//!
//! I/O edges: [`tun`] (the TUN device), [`link`] (addresses, MTU, routes),
//! [`udp`] (the socket), [`userspace`] (the threads that move packets) and
//! [`kernel`] (the in-kernel alternative). Both backends implement
//! [`Backend`]. See `docs/dataplane.md` for the design.

pub mod classify;
pub mod gate;
pub mod kernel;
pub mod keys;
pub mod link;
pub mod netwatch;
pub mod offload;
pub mod peer;
pub mod peer_routes;
pub mod peers;
pub mod pmtu;
pub mod pmtu_io;
pub mod relayed;
pub mod router;
pub mod tun;
pub mod udp;
pub mod userspace;

use flatnet_wire::PeerStatus;

use crate::config::{Config, PeerConfig, WgBackendKind};
pub use keys::Identity;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(
        "kernel WireGuard backend unavailable: {0}. This kernel has no WireGuard \
         support (CONFIG_WIREGUARD); use backend = \"userspace\" in [wireguard]"
    )]
    KernelUnavailable(String),
    #[error("{0}")]
    Invalid(String),
}

impl DataplaneError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| DataplaneError::Io { what, source }
    }
}

/// A running WireGuard implementation carrying the Flatnet overlay.
pub trait Backend: Send + Sync {
    /// `"userspace"` or `"kernel"`.
    fn kind(&self) -> &'static str;
    /// Replace the peer list. Peers whose key (and keepalive) did not change
    /// keep their session; new peers get a handshake right away.
    fn update_peers(&self, peers: &[PeerConfig], keepalive: u16) -> Result<(), DataplaneError>;
    /// Every peer's state, in configuration order.
    fn peers(&self) -> Vec<PeerStatus>;
    /// What is stuck, if the data plane's own threads stopped turning
    /// (the systemd watchdog stops its keepalives then).
    fn stalled(&self) -> Option<String> {
        None
    }
}

/// Where QUIC datagrams that arrive on the data plane's socket go: the
/// Lighthouse client's socket adapter (`lighthouse::socket`), or
/// [`DropQuic`] when the node has not joined a Lighthouse.
pub trait QuicHandler: Send + Sync {
    fn datagram(&self, from: std::net::SocketAddr, datagram: &[u8]);
}

/// Where WireGuard datagrams for relayed peers go: the Lighthouse client
/// wraps them in QUIC datagrams (`relay_encode`).
pub trait RelaySink: Send + Sync {
    fn send(&self, node_id: u32, datagram: &[u8]);
}

/// The placeholder [`QuicHandler`].
#[derive(Debug, Default)]
pub struct DropQuic {
    pub seen: std::sync::atomic::AtomicU64,
}

impl QuicHandler for DropQuic {
    fn datagram(&self, from: std::net::SocketAddr, _: &[u8]) {
        let n = self.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n == 0 {
            tracing::debug!(%from, "QUIC datagram on the WireGuard port; no handler yet");
        }
    }
}

/// Start the backend the configuration asks for.
pub fn start(config: &Config, identity: &Identity) -> Result<Box<dyn Backend>, DataplaneError> {
    let b: Box<dyn Backend> = match config.wireguard.backend {
        WgBackendKind::Userspace => Box::new(userspace::Userspace::start(
            config,
            identity.clone(),
            Box::new(DropQuic::default()),
        )?),
        WgBackendKind::Kernel => Box::new(kernel::Kernel::start(config, identity)?),
    };
    b.update_peers(&config.peers, config.wireguard.keepalive_secs)?;
    Ok(b)
}
