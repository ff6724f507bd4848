//! flatnetd: the per-host Flatnet daemon.
//!
//! Layout, from the inside out:
//! - [`ipam`]: address allocation. [`ipam::pool`] is the pure allocator,
//!   [`ipam::store`] keeps leases in redb, crash-safe and transactional.
//! - [`service`]: answers local API [`flatnet_wire::Request`]s; no I/O of its own
//!   beyond the lease store, so it is tested without sockets.
//! - [`api`]: the unix-socket server and the HTTP catalog endpoint.
//! - [`gwroute`]: what outside machines run to route the Flatnet through this host.
//! - [`hostnet`]: host-level networking flatnetd owns (forwarding, masquerade,
//!   published ports, internal networks) in one nftables table.
//! - [`ports`]: `-p` mappings to DNAT rules, and host-port clash checks (pure).
//! - [`reconcile`]: reclaiming leases of containers that are gone, and the
//!   periodic repair of the nftables table.
//! - [`config`] reads `/etc/flatnet/flatnetd.toml`.
//! - [`lighthouse`]: joining a Lighthouse, peers from it, hole punching, relay.
//! - [`metrics`]: Prometheus counters and the status collector behind `/metrics`.
//! - [`health`]: what the systemd watchdog checks before each keepalive.
//! - [`pidfile`]: one flatnetd per state dir (a locked pid file).
//! - [`detach`]: `--detach`, a start without a supervisor that still
//!   reports whether it worked.
//! - [`ping`]: `flatnetctl ping`, ICMP echoes through the tunnel.
//! - [`netcheck`]: `flatnetctl netcheck`, what the NAT and the path to the
//!   Lighthouse do.

pub mod api;
pub mod config;
pub mod dataplane;
pub mod detach;
pub mod dns;
pub mod gwroute;
pub mod health;
pub mod hostnet;
pub mod ifaddrs;
pub mod ipam;
pub mod lighthouse;
pub mod metrics;
pub mod netcheck;
pub mod pidfile;
pub mod ping;
pub mod policy;
pub mod ports;
pub mod reconcile;
pub mod service;
pub mod status;
pub mod token_file;
pub mod vethname;

/// Seconds since the Unix epoch (0 if the clock is before it): lease
/// times, DNS first-seen times and serials all use it.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A plain lease for unit tests: attachment `id`/eth0 on network `fnet`,
/// address `ip`, nothing else set; tests change what they need with
/// struct-update syntax.
#[cfg(test)]
pub(crate) fn test_lease(id: &str, ip: &str) -> flatnet_wire::Lease {
    flatnet_wire::Lease {
        key: flatnet_wire::AttachmentKey {
            network: "fnet".into(),
            container_id: id.into(),
            ifname: "eth0".into(),
        },
        ip: ip.parse().expect("a test address"),
        netns: None,
        container_name: None,
        ports: vec![],
        aliases: vec![],
        publish: false,
        internal: false,
        created: 0,
        refreshed: 0,
    }
}

/// A plain peer for unit tests: `name` with `subnet`, never handshaken,
/// static (no path); tests change what they need with struct-update syntax.
#[cfg(test)]
pub(crate) fn test_peer(name: &str, subnet: &str) -> flatnet_wire::PeerStatus {
    flatnet_wire::PeerStatus {
        name: name.into(),
        public_key: "K=".into(),
        subnet: subnet.parse().expect("a test subnet"),
        endpoint: "192.0.2.1:51820".into(),
        last_handshake_secs: None,
        handshakes: 0,
        rx_bytes: 0,
        tx_bytes: 0,
        rx_packets: None,
        tx_packets: None,
        path: None,
        node_id: None,
        path_mtu: None,
        path_note: None,
    }
}
