//! Links: lookup, veth creation, moving, renaming, MTU, up, delete.

use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{LinkUnspec, LinkVeth};

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

    /// `ip link add HOST mtu MTU type veth peer name PEER`
    pub fn add_veth(&self, host: &str, peer: &str, mtu: u32) -> Result<(), NlError> {
        let msg = LinkVeth::new(host, peer).mtu(mtu).build();
        self.run(self.handle().link().add(msg).execute())
            .ctx(|| format!("creating veth {host} <-> {peer}"))
    }

    /// `ip link set dev INDEX netns NSFILE`
    pub fn move_to_netns(&self, index: u32, ns: &std::fs::File) -> Result<(), NlError> {
        let msg = LinkUnspec::new_with_index(index)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        self.run(self.handle().link().set(msg).execute())
            .ctx(|| format!("moving link {index} into the container namespace"))
    }

    /// `ip link set dev INDEX name NAME mtu MTU up`
    pub fn rename_mtu_up(&self, index: u32, name: &str, mtu: u32) -> Result<(), NlError> {
        let msg = LinkUnspec::new_with_index(index)
            .name(name.to_string())
            .mtu(mtu)
            .build();
        self.run(self.handle().link().set(msg).execute())
            .ctx(|| format!("renaming link {index} to {name}"))?;
        self.set_up(index)
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
