//! IPv4 routes in the main table.

use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::{
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope},
    AddressFamily,
};
use rtnetlink::RouteMessageBuilder;

use super::{Ctx, Netlink, NlError};

const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;

/// A route as we install and check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: u32,
}

impl Netlink {
    /// `ip route add DST [via GW] dev OIF [scope link]`: routes without a
    /// gateway get link scope. An identical existing route is not an error.
    pub fn add_route(&self, r: Route) -> Result<(), NlError> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(r.dst.addr(), r.dst.prefix_len())
            .output_interface(r.oif);
        b = match r.gateway {
            Some(gw) => b.gateway(gw),
            None => b.scope(RouteScope::Link),
        };
        match self
            .run(self.handle().route().add(b.build()).execute())
            .ctx(|| format!("adding route {} via {:?} dev {}", r.dst, r.gateway, r.oif))
        {
            Err(e) if e.errno() == Some(EEXIST) => Ok(()),
            res => res,
        }
    }

    /// `ip -4 route show table main`: the routes leaving through `oif`.
    pub fn routes(&self, oif: u32) -> Result<Vec<Route>, NlError> {
        let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let msgs: Vec<RouteMessage> = self
            .run(
                self.handle()
                    .route()
                    .get(filter)
                    .execute()
                    .try_collect::<Vec<_>>(),
            )
            .ctx(|| "listing routes".into())?;
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.address_family == AddressFamily::Inet)
            .filter_map(|m| {
                let mut dst = Ipv4Addr::UNSPECIFIED;
                let mut gateway = None;
                let mut out = None;
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
                        RouteAttribute::Oif(i) => out = Some(*i),
                        _ => {}
                    }
                }
                let dst = Ipv4Net::new(dst, m.header.destination_prefix_length).ok()?;
                (out == Some(oif)).then_some(Route { dst, gateway, oif })
            })
            .collect())
    }
}
