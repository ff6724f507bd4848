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
    /// `metric N`; 0 (the kernel's default) for the first attachment.
    pub metric: u32,
}

impl Route {
    /// Same destination, gateway and interface, whatever the metric.
    pub fn same_path(&self, o: &Route) -> bool {
        (self.dst, self.gateway, self.oif) == (o.dst, o.gateway, o.oif)
    }
}

impl std::fmt::Display for Route {
    /// iproute2's wording: `10.87.0.0/16 via 10.87.5.1 dev #7 metric 100`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        write!(f, " dev #{}", self.oif)?;
        if self.metric != 0 {
            write!(f, " metric {}", self.metric)?;
        }
        Ok(())
    }
}

impl Netlink {
    /// `ip route add DST [via GW] dev OIF [scope link] [metric N]`: routes
    /// without a gateway get link scope. An identical existing route is not
    /// an error.
    pub fn add_route(&self, r: Route) -> Result<(), NlError> {
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(r.dst.addr(), r.dst.prefix_len())
            .output_interface(r.oif);
        if r.metric != 0 {
            b = b.priority(r.metric);
        }
        b = match r.gateway {
            Some(gw) => b.gateway(gw),
            None => b.scope(RouteScope::Link),
        };
        match self
            .run(self.handle().route().add(b.build()).execute())
            .ctx(|| format!("adding route {r}"))
        {
            Err(e) if e.errno() == Some(EEXIST) => Ok(()),
            res => res,
        }
    }

    /// `ip -4 route show table main`: every IPv4 route, any interface.
    pub fn all_routes(&self) -> Result<Vec<Route>, NlError> {
        self.routes_where(|_| true)
    }

    /// `ip -4 route show table main dev OIF`: the routes leaving through `oif`.
    pub fn routes(&self, oif: u32) -> Result<Vec<Route>, NlError> {
        self.routes_where(|o| o == oif)
    }

    fn routes_where(&self, want: impl Fn(u32) -> bool) -> Result<Vec<Route>, NlError> {
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
                let mut metric = 0;
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
                        RouteAttribute::Oif(i) => out = Some(*i),
                        RouteAttribute::Priority(p) => metric = *p,
                        _ => {}
                    }
                }
                let dst = Ipv4Net::new(dst, m.header.destination_prefix_length).ok()?;
                let oif = out.filter(|o| want(*o))?;
                Some(Route {
                    dst,
                    gateway,
                    oif,
                    metric,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_read_like_iproute2() {
        let r = Route {
            dst: "10.87.0.0/16".parse().unwrap(),
            gateway: Some("10.87.5.1".parse().unwrap()),
            oif: 7,
            metric: 100,
        };
        assert_eq!(
            r.to_string(),
            "10.87.0.0/16 via 10.87.5.1 dev #7 metric 100"
        );
        let link = Route {
            gateway: None,
            metric: 0,
            ..r
        };
        assert_eq!(link.to_string(), "10.87.0.0/16 dev #7");
        assert!(r.same_path(&Route { metric: 0, ..r }));
    }
}
