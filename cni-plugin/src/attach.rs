//! Wiring one container attachment to Flatnet. Both front ends (CNI and
//! netavark) call these three functions; there is no second implementation.
//!
//! The layout, ptp-style (iproute2 terms):
//! ```text
//! host:       ip link add fnXXXXXXXX mtu <mtu> type veth peer name eth0 mtu <mtu>
//!                 [address <mac>] netns <container>
//!             ip addr add <gateway>/32 dev fnXXXXXXXX
//!             ip route add <container ip>/32 dev fnXXXXXXXX scope link
//! container:  ip link set eth0 up
//!             ip addr add <ip>/<subnet len> dev eth0 noprefixroute
//!             ip route add <gateway> dev eth0 scope link [metric M]
//!             ip route add default via <gateway> [metric M]  (or <cidr> via <gateway>)
//! ```
//! A second Flatnet attachment of the same container (`podman network
//! connect`) shares the gateway, so its routes get the next free metric
//! (100, 200, …) instead of colliding with the first one's.
//! The container end is born in the container's namespace: moving a link
//! between namespaces waits for an RCU grace period (about 30 ms here,
//! most of an ADD), creating it there does not.
//! Every container reaches everything, including its same-host neighbours,
//! through the host, so the host's routing table (and later the WireGuard
//! data plane) sees all Flatnet traffic.

use std::{
    fs::File,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use flatnet_wire::{
    api::AllocateRequest, client::Client, veth, AttachmentKey, Lease, NetworkInfo, PortMapping,
    Reply, Request,
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
    /// A specific address (`--ip`, or Podman's reload passing the current
    /// one back); flatnetd checks it is in this host's pool and free.
    pub ip: Option<Ipv4Addr>,
    /// A specific MAC address for the container's interface.
    pub mac: Option<[u8; 6]>,
    /// Extra DNS names for Flatnet DNS.
    pub aliases: Vec<String>,
    /// flatnetd publishes `ports` on the host (netavark path).
    pub publish: bool,
    /// An internal network: no default route, no egress.
    pub internal: bool,
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

    /// Host-side veth name (see [`flatnet_wire::veth`]), so DEL finds it
    /// again with no state and flatnetd can tell the container is gone.
    pub fn host_ifname(&self) -> String {
        veth::host_ifname(&self.container_id, &self.ifname)
    }

    /// The route mode in force: an internal network never gets a default route.
    fn route_mode(&self) -> RouteMode {
        if self.internal {
            RouteMode::Flatnet
        } else {
            self.routes
        }
    }
}

/// Routes for the container given the route mode.
pub fn container_routes(mode: RouteMode, net: &NetworkInfo) -> Vec<(Ipv4Net, Ipv4Addr)> {
    let dst = match mode {
        RouteMode::Default => Ipv4Net::default(),
        RouteMode::Flatnet => net.cidr,
    };
    vec![(dst, net.gateway)]
}

/// The metric for a new attachment's routes: 0 for the first, else the
/// lowest of 100, 200, … that no other interface's route to the same
/// gateway uses.
pub fn free_metric(existing: &[Route], gateway: Ipv4Addr, oif: u32) -> u32 {
    let used: Vec<u32> = existing
        .iter()
        .filter(|r| r.dst == Ipv4Net::from(gateway) && r.oif != oif)
        .map(|r| r.metric)
        .collect();
    (0..)
        .map(|i: u32| i * 100)
        .find(|m| !used.contains(m))
        .unwrap_or(0)
}

/// What a flatnetd reply that is not the expected one was, in words.
fn unexpected(reply: &Reply) -> CniError {
    let what = match reply {
        Reply::Pong { .. } => "pong",
        Reply::Allocated { .. } => "allocated",
        Reply::Lease { .. } => "lease",
        Reply::Released { .. } => "released",
        Reply::Collected { .. } => "collected",
        Reply::Status(_) => "status",
        Reply::Names { .. } => "names",
        Reply::Probe(_) => "probe",
        Reply::Netcheck(_) => "netcheck",
    };
    CniError::new(
        code::DAEMON,
        "unexpected reply from flatnetd",
        format!("got a \"{what}\" reply; is flatnetd the same version as this plugin?"),
    )
}

/// Refuse to run inside a user namespace (rootless Podman): the host-side
/// veth, routes and flatnetd's socket all belong to the real root.
pub fn require_rootful() -> Result<(), CniError> {
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    if is_user_namespace(&map) {
        return Err(CniError::new(
            code::INVALID_ENV,
            "flatnet needs rootful Podman",
            "this plugin runs inside a user namespace (rootless Podman), which cannot create \
             host routes or reach flatnetd: run the container with `sudo podman …`, or use \
             Podman's own bridge network for rootless containers",
        ));
    }
    Ok(())
}

/// Whether `/proc/self/uid_map` describes a user namespace other than the
/// initial one, whose map is the identity over all 2^32 - 1 ids.
pub fn is_user_namespace(uid_map: &str) -> bool {
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    !uid_map.trim().is_empty() && fields != ["0", "0", "4294967295"]
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
    require_rootful()?;
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
        netns: spec.netns.as_ref().map(|p| p.display().to_string()),
        container_name: spec.container_name.clone(),
        ports: spec.ports.clone(),
        aliases: spec.aliases.clone(),
        ip: spec.ip,
        publish: spec.publish,
        internal: spec.internal,
        ..AllocateRequest::new(spec.key())
    }))?;
    let Reply::Allocated { lease, network } = reply else {
        return Err(unexpected(&reply));
    };
    match wire(spec, &ns, &lease, &network) {
        Ok(a) => Ok(a),
        Err(e) => {
            if let Ok(nl) = Netlink::new() {
                let _ = nl.del_link_by_name(&spec.host_ifname());
            }
            let _ = spec.client().call(&Request::Release(spec.key()));
            Err(e)
        }
    }
}

fn wire(spec: &Spec, ns: &File, lease: &Lease, net: &NetworkInfo) -> Result<Attached, CniError> {
    let mtu = spec.mtu.map_or(net.mtu, |m| m.min(net.mtu));
    let host_name = spec.host_ifname();
    let nl = Netlink::new()?;
    // Leftovers of an interrupted earlier ADD of this very attachment
    // (deleting one end of a veth deletes both).
    nl.del_link_by_name(&host_name)?;

    nl.add_veth_into(&host_name, &spec.ifname, mtu, spec.mac, ns)?;

    let routes = container_routes(spec.route_mode(), net);
    let prefix = net.subnet.prefix_len();
    let container = netns::run_in(ns, || {
        let cnl = Netlink::new()?;
        if let Some(lo) = cnl.link_by_name("lo")? {
            cnl.set_up(lo.index)?;
        }
        let l = cnl
            .link_by_name(&spec.ifname)?
            .ok_or_else(|| NlError::Other(format!("{} not found in the container", spec.ifname)))?;
        cnl.set_up(l.index)?;
        cnl.add_addr(l.index, lease.ip, prefix, true)?;
        let metric = free_metric(&cnl.all_routes()?, net.gateway, l.index);
        cnl.add_route(Route {
            dst: Ipv4Net::from(net.gateway),
            gateway: None,
            oif: l.index,
            metric,
        })?;
        for (dst, gw) in &routes {
            cnl.add_route(Route {
                dst: *dst,
                gateway: Some(*gw),
                oif: l.index,
                metric,
            })?;
        }
        cnl.link_by_name(&spec.ifname)?
            .ok_or_else(|| NlError::Other(format!("{} vanished", spec.ifname)))
    })?;

    let host = nl
        .link_by_name(&host_name)?
        .ok_or_else(|| NlError::Other(format!("{host_name} vanished")))?;
    if spec.publish && !spec.ports.is_empty() {
        // Published ports are reached from the host's own 127.0.0.1: the
        // DNATed packet leaves through this veth with a loopback source.
        route_localnet(&host_name)?;
    }
    nl.set_up(host.index)?;
    nl.add_addr(host.index, net.gateway, 32, false)?;
    nl.add_route(Route {
        dst: Ipv4Net::from(lease.ip),
        gateway: None,
        oif: host.index,
        metric: 0,
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

/// `sysctl -w net.ipv4.conf.IFNAME.route_localnet=1`
fn route_localnet(ifname: &str) -> Result<(), NlError> {
    let path = format!("/proc/sys/net/ipv4/conf/{ifname}/route_localnet");
    std::fs::write(&path, "1").map_err(|source| NlError::Io {
        op: format!("enabling route_localnet on {ifname} (for -p from localhost)"),
        source,
    })
}

/// DEL: remove the veth pair and release the lease. Succeeds when any of
/// it is already gone. If flatnetd is down the interfaces are still removed
/// and the error says to try again, so the lease is released later.
pub fn del(spec: &Spec) -> Result<(), CniError> {
    require_rootful()?;
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
        return Err(unexpected(&reply));
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
        let had: Vec<String> = expected.iter().map(ToString::to_string).collect();
        return Err(check_failed(format!(
            "prevResult has {} but the lease is {want}",
            had.join(", ")
        )));
    }
    let ns = open_netns(netns_path(spec)?)?;
    let routes = container_routes(spec.route_mode(), &network);
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
                metric: 0,
            };
            if !have.iter().any(|h| h.same_path(&r)) {
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
        metric: 0,
    };
    if !nl
        .routes(host.index)?
        .iter()
        .any(|h| h.same_path(&host_route))
    {
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
        return Err(unexpected(&reply));
    };
    let nl = Netlink::new()?;
    let mut errors = Vec::new();
    for l in &released {
        let name = veth::host_ifname(&l.key.container_id, &l.key.ifname);
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
    fn second_attachment_gets_the_next_free_metric() {
        let gw: Ipv4Addr = "10.87.5.1".parse().unwrap();
        let link = |oif, metric| Route {
            dst: Ipv4Net::from(gw),
            gateway: None,
            oif,
            metric,
        };
        assert_eq!(free_metric(&[], gw, 2), 0);
        assert_eq!(free_metric(&[link(2, 0)], gw, 3), 100);
        // Its own routes do not count; a gap left by a disconnect is reused.
        assert_eq!(free_metric(&[link(3, 0)], gw, 3), 0);
        assert_eq!(free_metric(&[link(3, 100)], gw, 4), 0);
        assert_eq!(free_metric(&[link(2, 0), link(3, 200)], gw, 4), 100);
        // Routes to another gateway are someone else's.
        let other = Route {
            dst: "10.0.0.1/32".parse().unwrap(),
            ..link(2, 0)
        };
        assert_eq!(free_metric(&[other], gw, 3), 0);
    }

    #[test]
    fn user_namespaces_are_told_from_the_initial_one() {
        assert!(!is_user_namespace("         0          0 4294967295\n"));
        assert!(is_user_namespace("         0       1000          1\n"));
        assert!(is_user_namespace("0 100000 65536\n"));
        assert!(!is_user_namespace(""), "unreadable: let the kernel decide");
    }

    #[test]
    fn route_modes() {
        let net = NetworkInfo {
            cidr: "10.87.0.0/16".parse().unwrap(),
            subnet: "10.87.1.0/24".parse().unwrap(),
            gateway: "10.87.1.1".parse().unwrap(),
            mtu: 1420,
            dns: None,
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
