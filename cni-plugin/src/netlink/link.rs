//! Links: lookup, veth creation into a namespace, up, delete.

use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth};

use super::{Ctx, Netlink, NlError};

/// What we need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    pub up: bool,
}

/// Parse `aa:bb:cc:dd:ee:ff` (or with dashes); refuses multicast
/// addresses, which no interface may carry.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!(
            "MAC address {s:?} must be six hex bytes like 02:42:ac:11:00:02"
        ));
    }
    for (b, p) in mac.iter_mut().zip(&parts) {
        *b = u8::from_str_radix(p, 16)
            .ok()
            .filter(|_| p.len() == 2)
            .ok_or_else(|| {
                format!("MAC address {s:?} must be six hex bytes like 02:42:ac:11:00:02")
            })?;
    }
    if mac[0] & 1 == 1 {
        return Err(format!(
            "MAC address {s:?} is a multicast address; use a unicast one (first byte even)"
        ));
    }
    if mac == [0; 6] {
        return Err("MAC address 00:00:00:00:00:00 is not usable".into());
    }
    Ok(mac)
}

fn format_mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl From<LinkMessage> for Link {
    fn from(m: LinkMessage) -> Self {
        let mut l = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            mtu: None,
            up: m
                .header
                .flags
                .contains(netlink_packet_route::link::LinkFlags::Up),
        };
        for a in m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n,
                LinkAttribute::Address(b) if b.len() == 6 => l.mac = Some(format_mac(&b)),
                LinkAttribute::Mtu(v) => l.mtu = Some(v),
                _ => {}
            }
        }
        l
    }
}

const ENODEV: i32 = nix::errno::Errno::ENODEV as i32;

impl Netlink {
    /// `ip link show NAME`; `None` when there is no such link.
    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>, NlError> {
        let res = self.run(async {
            self.handle()
                .link()
                .get()
                .match_name(name.to_string())
                .execute()
                .try_next()
                .await
        });
        match res.ctx(|| format!("looking up link {name}")) {
            Ok(m) => Ok(m.map(Link::from)),
            Err(e) if e.errno() == Some(ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ip link add HOST mtu MTU type veth peer name PEER mtu MTU
    /// [address MAC] netns NSFILE`: the peer end is born inside the
    /// container's namespace under its final name. Creating it on the host
    /// and moving it (`ip link set PEER netns NSFILE`) costs the kernel an
    /// RCU grace period per move, measured at about 30 ms of every ADD.
    pub fn add_veth_into(
        &self,
        host: &str,
        peer: &str,
        mtu: u32,
        mac: Option<[u8; 6]>,
        ns: &std::fs::File,
    ) -> Result<(), NlError> {
        let mut p = LinkUnspec::new_with_name(peer)
            .mtu(mtu)
            .setns_by_fd(ns.as_raw_fd());
        if let Some(mac) = mac {
            p = p.address(mac.to_vec());
        }
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(p.build())))
            .build();
        self.run(self.handle().link().add(msg).execute())
            .ctx(|| format!("creating veth {host} <-> {peer} (in the container namespace)"))
    }

    /// `ip link set dev INDEX up`
    pub fn set_up(&self, index: u32) -> Result<(), NlError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.run(self.handle().link().set(msg).execute())
            .ctx(|| format!("setting link {index} up"))
    }

    /// `ip link del dev INDEX`
    pub fn del_link(&self, index: u32) -> Result<(), NlError> {
        self.run(self.handle().link().del(index).execute())
            .ctx(|| format!("deleting link {index}"))
    }

    /// `ip link del dev NAME`, succeeding when it does not exist.
    pub fn del_link_by_name(&self, name: &str) -> Result<bool, NlError> {
        match self.link_by_name(name)? {
            Some(l) => match self.del_link(l.index) {
                Ok(()) => Ok(true),
                Err(e) if e.errno() == Some(ENODEV) => Ok(false),
                Err(e) => Err(e),
            },
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_mac("02:42:AC:11:00:02").unwrap(),
            [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]
        );
        assert_eq!(parse_mac("02-42-ac-11-00-02").unwrap()[5], 2);
        for bad in [
            "02:42:ac:11:00",
            "zz:42:ac:11:00:02",
            "002:42:ac:11:00:2",
            "",
        ] {
            assert!(
                parse_mac(bad).unwrap_err().contains("six hex bytes"),
                "{bad}"
            );
        }
        assert!(parse_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .contains("multicast"));
        assert!(parse_mac("00:00:00:00:00:00").is_err());
    }
}
