//! The in-kernel WireGuard backend: a `wireguard` link configured over
//! generic netlink with the `wireguard-control` crate. Used only when the
//! config says `backend = "kernel"`; on kernels without WireGuard it fails
//! at start with [`DataplaneError::KernelUnavailable`].
//!
//! iproute2/wg equivalent of [`Kernel::start`]:
//! ```text
//! ip link add flatnet0 type wireguard
//! wg set flatnet0 private-key <file> listen-port 51820
//! ip link set flatnet0 mtu <mtu> up; ip addr add <gateway>/32 dev flatnet0
//! ip route add <cidr> dev flatnet0; ip route add unreachable <subnet>
//! ```

use std::{collections::HashMap, sync::Mutex};

use flatnet_wire::PeerStatus;
use wireguard_control::{
    Backend as WgBackend, Device, DeviceUpdate, InterfaceName, Key, PeerConfigBuilder,
};

use super::{keys::Identity, link, Backend, DataplaneError};
use crate::config::{encode_key, Config, PeerConfig};

pub struct Kernel {
    iface: InterfaceName,
    /// Public key -> (name, subnet, configured endpoint), for status.
    names: Mutex<Vec<PeerConfig>>,
}

impl Kernel {
    pub fn start(config: &Config, identity: &Identity) -> Result<Self, DataplaneError> {
        let wg = &config.wireguard;
        let iface: InterfaceName = wg
            .interface
            .parse()
            .map_err(|e| DataplaneError::Invalid(format!("interface {}: {e:?}", wg.interface)))?;
        DeviceUpdate::new()
            .set_private_key(Key(identity.secret.to_bytes()))
            .set_listen_port(wg.listen_port)
            .apply(&iface, WgBackend::Kernel)
            .map_err(|e| {
                DataplaneError::KernelUnavailable(format!(
                    "creating link {} of type wireguard: {e}",
                    wg.interface
                ))
            })?;
        if link::index_of(&wg.interface).is_none() {
            return Err(DataplaneError::KernelUnavailable(format!(
                "link {} did not appear",
                wg.interface
            )));
        }
        let name = wg.interface.as_str();
        link::set_mtu(name, config.mtu).map_err(DataplaneError::io("setting mtu"))?;
        link::set_address(name, config.gateway()).map_err(DataplaneError::io("address"))?;
        link::set_up(name).map_err(DataplaneError::io("link up"))?;
        link::add_route(config.cidr, name).map_err(DataplaneError::io("route"))?;
        link::add_unreachable(config.subnet).map_err(DataplaneError::io("route"))?;
        tracing::info!(interface = name, "kernel WireGuard data plane up");
        Ok(Kernel {
            iface,
            names: Mutex::new(Vec::new()),
        })
    }
}

impl Backend for Kernel {
    fn kind(&self) -> &'static str {
        "kernel"
    }

    fn update_peers(&self, peers: &[PeerConfig], keepalive: u16) -> Result<(), DataplaneError> {
        // The kernel keeps sessions of peers whose key stays: replace_peers
        // plus add_peer for the same key only updates that peer.
        let builders: Vec<PeerConfigBuilder> = peers
            .iter()
            .map(|p| {
                let b = PeerConfigBuilder::new(&Key(p.public_key))
                    .set_endpoint(p.endpoint)
                    .replace_allowed_ips()
                    .add_allowed_ip(p.subnet.network().into(), p.subnet.prefix_len());
                if keepalive > 0 {
                    b.set_persistent_keepalive_interval(keepalive)
                } else {
                    b.unset_persistent_keepalive()
                }
            })
            .collect();
        let current = Device::get(&self.iface, WgBackend::Kernel)
            .map_err(DataplaneError::io("reading wireguard device"))?;
        let mut update = DeviceUpdate::new().add_peers(&builders);
        for old in &current.peers {
            if !peers
                .iter()
                .any(|p| p.public_key == old.config.public_key.0)
            {
                update = update.remove_peer_by_key(&old.config.public_key);
            }
        }
        update
            .apply(&self.iface, WgBackend::Kernel)
            .map_err(DataplaneError::io("configuring wireguard peers"))?;
        *self.names.lock().unwrap_or_else(|e| e.into_inner()) = peers.to_vec();
        Ok(())
    }

    fn peers(&self) -> Vec<PeerStatus> {
        let cfgs = self.names.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let live: HashMap<[u8; 32], _> = Device::get(&self.iface, WgBackend::Kernel)
            .map(|d| {
                d.peers
                    .into_iter()
                    .map(|p| (p.config.public_key.0, p))
                    .collect()
            })
            .unwrap_or_default();
        cfgs.iter()
            .map(|c| {
                let l = live.get(&c.public_key);
                PeerStatus {
                    name: c.name.clone(),
                    public_key: encode_key(&c.public_key),
                    subnet: c.subnet,
                    endpoint: l
                        .and_then(|l| l.config.endpoint)
                        .unwrap_or(c.endpoint)
                        .to_string(),
                    last_handshake_secs: l
                        .and_then(|l| l.stats.last_handshake_time)
                        .and_then(|t| t.elapsed().ok())
                        .map(|d| d.as_secs()),
                    handshakes: 0,
                    rx_bytes: l.map(|l| l.stats.rx_bytes).unwrap_or(0),
                    tx_bytes: l.map(|l| l.stats.tx_bytes).unwrap_or(0),
                    rx_packets: None,
                    tx_packets: None,
                    path: None,
                    path_mtu: None,
                    path_note: None,
                    node_id: None,
                }
            })
            .collect()
    }
}
