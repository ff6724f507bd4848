//! One kernel route per peer subnet, carrying that peer's path MTU:
//!
//! ```text
//! ip route replace 10.87.2.0/24 dev flatnet0 mtu 1220
//! ```
//!
//! The tunnel device's MTU (the configured `mtu`, 1420 by default) fits a
//! 1500-byte underlay. When the path toward one peer is narrower (a
//! 1280-byte VPN underlay, a PPPoE line, a black-holing router found by
//! [`super::pmtu`]), the route toward its subnet says so: the kernel then
//! sizes what it sends there (TCP segments, and the MSS it announces; the
//! `rt mtu` MSS clamp in [`crate::hostnet`] rewrites containers' SYNs to
//! match) and fragments or refuses (ICMP "fragmentation needed", locally,
//! where it is never lost) anything larger. Containers need no change.
//!
//! [`plan`] is the pure diff; [`run`] is the loop that applies it.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use ipnet::Ipv4Net;
use netlink_packet_route::route::{RouteAttribute, RouteMetric, RouteScope};
use rtnetlink::RouteMessageBuilder;
use tracing::{info, warn};

use super::pmtu::OVERHEAD;
use crate::service::SharedService;

/// How often the routes are brought in line with the probed path MTUs.
const EVERY: Duration = Duration::from_secs(1);

/// The inner MTU for a peer whose path carries `path_mtu`-byte packets,
/// never above the tunnel's own.
pub fn inner_mtu(path_mtu: u16, tunnel_mtu: u32) -> u32 {
    u32::from(path_mtu.saturating_sub(OVERHEAD)).clamp(576, tunnel_mtu.max(576))
}

/// What to change to go from the routes `have` to `want` (subnet → mtu):
/// routes to replace (new or changed) and subnets whose route goes.
pub fn plan(
    want: &BTreeMap<Ipv4Net, u32>,
    have: &BTreeMap<Ipv4Net, u32>,
) -> (Vec<(Ipv4Net, u32)>, Vec<Ipv4Net>) {
    let put = want
        .iter()
        .filter(|(n, m)| have.get(n) != Some(m))
        .map(|(n, m)| (*n, *m))
        .collect();
    let del = have
        .keys()
        .filter(|n| !want.contains_key(n))
        .copied()
        .collect();
    (put, del)
}

/// Keep one route per measured peer on `dev` until the process ends.
pub async fn run(service: SharedService, dev: String, tunnel_mtu: u32) {
    let (conn, handle, _) = match rtnetlink::new_connection() {
        Ok(c) => c,
        Err(e) => {
            warn!("per-peer MTU routes disabled: no netlink socket ({e}); every peer keeps the tunnel MTU {tunnel_mtu}");
            return;
        }
    };
    tokio::spawn(conn);
    let mut have: BTreeMap<Ipv4Net, u32> = BTreeMap::new();
    let mut failing = false;
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        let Some(overlay) = service.overlay() else {
            continue;
        };
        let want: BTreeMap<Ipv4Net, u32> = overlay
            .peers()
            .iter()
            .filter_map(|p| Some((p.subnet, inner_mtu(p.path_mtu?, tunnel_mtu))))
            .collect();
        let Some(index) = super::link::index_of(&dev) else {
            // The device is gone (being recreated): its routes went with it.
            have.clear();
            continue;
        };
        let (put, del) = plan(&want, &have);
        let mut errors = Vec::new();
        for (net, mtu) in put {
            let mut msg = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(net.addr(), net.prefix_len())
                .output_interface(index)
                .scope(RouteScope::Link)
                .build();
            msg.attributes
                .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
            match handle.route().add(msg).replace().execute().await {
                Ok(()) => {
                    if have.insert(net, mtu) != Some(mtu) {
                        info!(subnet = %net, mtu, dev = %dev, "route mtu set for the path to this peer");
                    }
                }
                Err(e) => errors.push(format!("ip route replace {net} dev {dev} mtu {mtu}: {e}")),
            }
        }
        for net in del {
            let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(net.addr(), net.prefix_len())
                .output_interface(index)
                .scope(RouteScope::Link)
                .build();
            match handle.route().del(msg).execute().await {
                Ok(()) => {
                    have.remove(&net);
                }
                // Already gone (flushed by hand): nothing left to do.
                Err(rtnetlink::Error::NetlinkError(m))
                    if m.code.map(|c| c.get()) == Some(-libc::ESRCH) =>
                {
                    have.remove(&net);
                }
                Err(e) => errors.push(format!("ip route del {net} dev {dev}: {e}")),
            }
        }
        // Retried every second; said once per failing stretch.
        match (errors.is_empty(), failing) {
            (false, false) => {
                warn!(
                    "cannot set per-peer MTU routes ({}); retrying every second",
                    errors.join("; ")
                );
                failing = true;
            }
            (true, true) => {
                info!("per-peer MTU routes set again");
                failing = false;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn inner_mtu_subtracts_the_tunnel_overhead_and_caps() {
        assert_eq!(inner_mtu(1280, 1420), 1220);
        assert_eq!(inner_mtu(1500, 1420), 1420);
        assert_eq!(inner_mtu(9000, 1420), 1420);
        assert_eq!(inner_mtu(9000, 8920), 8920);
        assert_eq!(inner_mtu(576, 1420), 576);
    }

    #[test]
    fn plan_replaces_changed_and_removes_gone() {
        let have = BTreeMap::from([
            (net("10.87.2.0/24"), 1420),
            (net("10.87.3.0/24"), 1420),
            (net("10.87.4.0/24"), 1340),
        ]);
        let want = BTreeMap::from([
            (net("10.87.2.0/24"), 1420),
            (net("10.87.3.0/24"), 1220),
            (net("10.87.5.0/24"), 1420),
        ]);
        let (put, del) = plan(&want, &have);
        assert_eq!(
            put,
            vec![(net("10.87.3.0/24"), 1220), (net("10.87.5.0/24"), 1420)]
        );
        assert_eq!(del, vec![net("10.87.4.0/24")]);
        let (put, del) = plan(&want, &want);
        assert!(put.is_empty() && del.is_empty());
    }
}
