//! IPv4 addresses on links.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};

use super::{Ctx, Netlink, NlError};

const EEXIST: i32 = nix::errno::Errno::EEXIST as i32;

impl Netlink {
    /// `ip addr add IP/PREFIX dev INDEX [noprefixroute]`; an address that is
    /// already there is not an error.
    pub fn add_addr(
        &self,
        index: u32,
        ip: Ipv4Addr,
        prefix: u8,
        noprefixroute: bool,
    ) -> Result<(), NlError> {
        let mut req = self.handle().address().add(index, IpAddr::V4(ip), prefix);
        if noprefixroute {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
        }
        match self
            .run(req.execute())
            .ctx(|| format!("adding {ip}/{prefix}"))
        {
            Err(e) if e.errno() == Some(EEXIST) => Ok(()),
            r => r,
        }
    }

    /// `ip -4 addr show dev INDEX`: (address, prefix length) pairs.
    pub fn addrs(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NlError> {
        let msgs: Vec<_> = self
            .run(
                self.handle()
                    .address()
                    .get()
                    .set_link_index_filter(index)
                    .execute()
                    .try_collect::<Vec<_>>(),
            )
            .ctx(|| format!("listing addresses of link {index}"))?;
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.index == index)
            .flat_map(|m| {
                let len = m.header.prefix_len;
                m.attributes.into_iter().filter_map(move |a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some((ip, len)),
                    _ => None,
                })
            })
            .collect())
    }
}
