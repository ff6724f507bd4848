//! Wiring one container attachment to Flatnet. Both front ends (CNI and
//! netavark) call these three functions; there is no second implementation.
//!
//! The layout, ptp-style (iproute2 terms):
//! ```text
//! host:       ip link add fnXXXXXXXX type veth peer name fcXXXXXXXX
//!             ip link set fcXXXXXXXX netns <container>
//!             ip addr add <gateway>/32 dev fnXXXXXXXX
//!             ip route add <container ip>/32 dev fnXXXXXXXX scope link
//! container:  ip link set fcXXXXXXXX name eth0 mtu <mtu> up
//!             ip addr add <ip>/<subnet len> dev eth0 noprefixroute
//!             ip route add <gateway> dev eth0 scope link
//!             ip route add default via <gateway>      (or <cidr> via <gateway>)
//! ```
//! Every container reaches everything, including its same-host neighbours,
//! through the host, so the host's routing table (and later the WireGuard
//! data plane) sees all Flatnet traffic.

use std::{
    fs::File,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use flatnet_wire::{
    api::AllocateRequest, client::Client, AttachmentKey, Lease, NetworkInfo, PortMapping, Reply,
    Request,
};
use ipnet::Ipv4Net;

use crate::{
    cni::{conf::RouteMode, error::code, CniError},
    netlink::{link::Link, netns, route::Route, Netlink, NlError},
};

/// What to attach.
#[derive(Debug, Clone)]
pub struct Spec {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: Option<PathBuf>,
    pub container_name: Option<String>,
    pub ports: Vec<PortMapping>,
    pub routes: RouteMode,
    pub mtu: Option<u32>,
    pub socket: PathBuf,
}

/// A finished attachment.
#[derive(Debug, Clone)]
pub struct Attached {
    pub lease: Lease,
    pub network: NetworkInfo,
    pub mtu: u32,
    pub host: Link,
    pub container: Link,
    /// Routes installed in the container besides the link route to the gateway.
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
}

impl Spec {
    fn key(&self) -> AttachmentKey {
        AttachmentKey {
            network: self.network.clone(),
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    /// Host-side veth name: `fn` + 8 hex digits of a hash of the attachment,
    /// so DEL finds it again with no state.
    pub fn host_ifname(&self) -> String {
        format!(
            "fn{:08x}",
            attachment_hash(&self.container_id, &self.ifname)
        )
    }

    /// Temporary name of the container end while it is still on the host.
    fn temp_ifname(&self) -> String {
        format!(
            "fc{:08x}",
            attachment_hash(&self.container_id, &self.ifname)
        )
    }
}

/// FNV-1a over `container_id \0 ifname`, folded to 32 bits.
pub fn attachment_hash(container_id: &str, ifname: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h ^ (h >> 32)) as u32
}

/// Routes for the container given the route mode.
pub fn container_routes(mode: RouteMode, net: &NetworkInfo) -> Vec<(Ipv4Net, Ipv4Addr)> {
    let dst = match mode {
        RouteMode::Default => Ipv4Net::default(),
        RouteMode::Flatnet => net.cidr,
    };
    vec![(dst, net.gateway)]
}

fn open_netns(path: &Path) -> Result<File, CniError> {
    netns::open(path).map_err(|e| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            "container network namespace not found",
            format!("{}: {e}", path.display()),
        )
    })
}

fn netns_path(spec: &Spec) -> Result<&Path, CniError> {
    spec.netns.as_deref().ok_or_else(|| {
        CniError::new(
            code::INVALID_ENV,
            "invalid environment variables",
            "CNI_NETNS is required",
        )
    })
}

/// ADD: lease an address and wire the container. On failure everything
/// this call created is undone and the lease released.
pub fn add(spec: &Spec) -> Result<Attached, CniError> {
    let ns = open_netns(netns_path(spec)?)?;
    let ifname = spec.ifname.clone();
    let exists = netns::run_in(&ns, || Netlink::new()?.link_by_name(&ifname))?;
    if exists.is_some() {
        return Err(CniError::new(
            code::INTERFACE,
            "interface already exists",
            format!("{} already exists in the container namespace", spec.ifname),
        ));
    }
    let reply = spec.client().call(&Request::Allocate(AllocateRequest {
        key: spec.key(),
        netns: spec.netns.as_ref().map(|p| p.display().to_string()),
        container_name: spec.container_name.clone(),
        ports: spec.ports.clone(),
    }))?;
    let Reply::Allocated { lease, network } = reply else {
        return Err(CniError::new(
            code::DAEMON,
            "unexpected reply from flatnetd",
            format!("{reply:?}"),
        ));
    };
    match wire(spec, &ns, &lease, &network) {
        Ok(a) => Ok(a),
        Err(e) => {
            if let Ok(nl) = Netlink::new() {
                let _ = nl.del_link_by_name(&spec.host_ifname());
                let _ = nl.del_link_by_name(&spec.temp_ifname());
            }
            let _ = spec.client().call(&Request::Release(spec.key()));
            Err(e)
        }
    }
}

fn wire(spec: &Spec, ns: &File, lease: &Lease, net: &NetworkInfo) -> Result<Attached, CniError> {
    let mtu = spec.mtu.map_or(net.mtu, |m| m.min(net.mtu));
    let host_name = spec.host_ifname();
    let temp_name = spec.temp_ifname();
    let nl = Netlink::new()?;
    // Leftovers of an interrupted earlier ADD of this very attachment.
    nl.del_link_by_name(&host_name)?;
    nl.del_link_by_name(&temp_name)?;

    nl.add_veth(&host_name, &temp_name, mtu)?;
    let peer = nl
        .link_by_name(&temp_name)?
        .ok_or_else(|| NlError::Other(format!("veth peer {temp_name} vanished")))?;
    nl.move_to_netns(peer.index, ns)?;

    let routes = container_routes(spec.routes, net);
    let prefix = net.subnet.prefix_len();
    let container = netns::run_in(ns, || {
        let cnl = Netlink::new()?;
        if let Some(lo) = cnl.link_by_name("lo")? {
            cnl.set_up(lo.index)?;
        }
        let l = cnl
            .link_by_name(&temp_name)?
            .ok_or_else(|| NlError::Other(format!("{temp_name} not found in the container")))?;
        cnl.rename_mtu_up(l.index, &spec.ifname, mtu)?;
        cnl.add_addr(l.index, lease.ip, prefix, true)?;
        cnl.add_route(Route {
            dst: Ipv4Net::from(net.gateway),
            gateway: None,
            oif: l.index,
        })?;
        for (dst, gw) in &routes {
            cnl.add_route(Route {
                dst: *dst,
                gateway: Some(*gw),
                oif: l.index,
            })?;
        }
        cnl.link_by_name(&spec.ifname)?
            .ok_or_else(|| NlError::Other(format!("{} vanished", spec.ifname)))
    })?;

    let host = nl
        .link_by_name(&host_name)?
        .ok_or_else(|| NlError::Other(format!("{host_name} vanished")))?;
    nl.set_up(host.index)?;
    nl.add_addr(host.index, net.gateway, 32, false)?;
    nl.add_route(Route {
        dst: Ipv4Net::from(lease.ip),
        gateway: None,
        oif: host.index,
    })?;
    Ok(Attached {
        lease: lease.clone(),
        network: net.clone(),
        mtu,
        host,
        container,
        routes,
    })
}

/// DEL: remove the veth pair and release the lease. Succeeds when any of
/// it is already gone. If flatnetd is down the interfaces are still removed
/// and the error says to try again, so the lease is released later.
pub fn del(spec: &Spec) -> Result<(), CniError> {
    let nl = Netlink::new()?;
    nl.del_link_by_name(&spec.host_ifname())?;
    if let Some(path) = &spec.netns {
        if let Ok(ns) = netns::open(path) {
            let ifname = spec.ifname.clone();
            netns::run_in(&ns, || Netlink::new()?.del_link_by_name(&ifname))?;
        }
    }
    spec.client().call(&Request::Release(spec.key()))?;
    Ok(())
}

fn check_failed(details: String) -> CniError {
    CniError::new(code::INTERFACE, "check failed", details)
}

/// CHECK: the lease exists and matches `expected` (from prevResult), and
/// the interfaces, address and routes are all in place.
pub fn check(spec: &Spec, expected: &[Ipv4Net]) -> Result<(), CniError> {
    let reply = spec.client().call(&Request::Get(spec.key()))?;
    let Reply::Lease { lease, network } = reply else {
        return Err(CniError::new(
            code::DAEMON,
            "unexpected reply from flatnetd",
            format!("{reply:?}"),
        ));
    };
    let lease = lease.ok_or_else(|| {
        check_failed(format!(
            "flatnetd holds no lease for {}/{}",
            spec.container_id, spec.ifname
        ))
    })?;
    let want = Ipv4Net::new(lease.ip, network.subnet.prefix_len())
        .map_err(|e| check_failed(e.to_string()))?;
    if !expected.is_empty() && !expected.contains(&want) {
        return Err(check_failed(format!(
            "prevResult has {expected:?} but the lease is {want}"
        )));
    }
    let ns = open_netns(netns_path(spec)?)?;
    let routes = container_routes(spec.routes, &network);
    netns::run_in(&ns, || {
        let nl = Netlink::new()?;
        let l = nl.link_by_name(&spec.ifname)?.ok_or_else(|| {
            NlError::Other(format!("{} is missing in the container", spec.ifname))
        })?;
        if !l.up {
            return Err(NlError::Other(format!("{} is down", spec.ifname)));
        }
        if !nl
            .addrs(l.index)?
            .contains(&(want.addr(), want.prefix_len()))
        {
            return Err(NlError::Other(format!(
                "{want} is missing on {}",
                spec.ifname
            )));
        }
        let have = nl.routes(l.index)?;
        for (dst, gw) in &routes {
            let r = Route {
                dst: *dst,
                gateway: Some(*gw),
                oif: l.index,
            };
            if !have.contains(&r) {
                return Err(NlError::Other(format!(
                    "route {dst} via {gw} is missing in the container"
                )));
            }
        }
        Ok(())
    })
    .map_err(|e| check_failed(e.to_string()))?;
    let nl = Netlink::new()?;
    let host = nl
        .link_by_name(&spec.host_ifname())?
        .ok_or_else(|| check_failed(format!("host veth {} is missing", spec.host_ifname())))?;
    let host_route = Route {
        dst: Ipv4Net::from(lease.ip),
        gateway: None,
        oif: host.index,
    };
    if !nl.routes(host.index)?.contains(&host_route) {
        return Err(check_failed(format!(
            "host route to {} is missing",
            lease.ip
        )));
    }
    Ok(())
}

/// GC: release stale leases of `network` and remove their host veths.
pub fn gc(
    socket: &Path,
    network: &str,
    valid: Vec<flatnet_wire::AttachmentId>,
) -> Result<Vec<Lease>, CniError> {
    let reply = Client::new(socket).call(&Request::Gc {
        network: network.to_string(),
        valid,
    })?;
    let Reply::Collected { released } = reply else {
        return Err(CniError::new(
            code::DAEMON,
            "unexpected reply from flatnetd",
            format!("{reply:?}"),
        ));
    };
    let nl = Netlink::new()?;
    let mut errors = Vec::new();
    for l in &released {
        let name = format!(
            "fn{:08x}",
            attachment_hash(&l.key.container_id, &l.key.ifname)
        );
        if let Err(e) = nl.del_link_by_name(&name) {
            errors.push(e.to_string());
        }
    }
    if !errors.is_empty() {
        return Err(CniError::new(
            code::INTERFACE,
            "GC could not remove some interfaces",
            errors.join("; "),
        ));
    }
    Ok(released)
}

/// STATUS: flatnetd answers.
pub fn status(socket: &Path) -> Result<(), CniError> {
    Client::new(socket)
        .with_timeout(std::time::Duration::from_secs(5))
        .call(&Request::Ping)
        .map(|_| ())
        .map_err(|e| {
            CniError::new(
                code::NOT_AVAILABLE,
                "flatnetd is not available",
                e.to_string(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_stable_short_and_distinct() {
        let a = attachment_hash("c1", "eth0");
        assert_eq!(a, attachment_hash("c1", "eth0"));
        assert_ne!(a, attachment_hash("c1", "eth1"));
        assert_ne!(attachment_hash("c1e", "th0"), attachment_hash("c1", "eth0"));
        assert_eq!(format!("fn{a:08x}").len(), 10);
    }

    #[test]
    fn route_modes() {
        let net = NetworkInfo {
            cidr: "10.87.0.0/16".parse().unwrap(),
            subnet: "10.87.1.0/24".parse().unwrap(),
            gateway: "10.87.1.1".parse().unwrap(),
            mtu: 1420,
        };
        assert_eq!(
            container_routes(RouteMode::Default, &net),
            vec![("0.0.0.0/0".parse().unwrap(), net.gateway)]
        );
        assert_eq!(
            container_routes(RouteMode::Flatnet, &net),
            vec![("10.87.0.0/16".parse().unwrap(), net.gateway)]
        );
    }
}
