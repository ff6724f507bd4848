//! The policy gate on packets that leave a tunnel for the TUN device
//! ([`crate::policy`]). Packets not from the members' range pass after one
//! atomic load and a mask; only a member's packets look the table up.

use std::{
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
};

use tracing::debug;

use crate::{
    metrics::{counters, Drop},
    policy::{flow, PolicyTable, Verdict},
};

/// No members' range: the gate is open.
const OPEN: u64 = u64::MAX;

pub struct Gate {
    /// The members' range as `network << 32 | mask`, or [`OPEN`].
    range: AtomicU64,
    table: RwLock<Arc<PolicyTable>>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            range: AtomicU64::new(OPEN),
            table: RwLock::new(Arc::new(PolicyTable::default())),
        }
    }
}

impl Gate {
    /// Put a new table in force (the same table again changes nothing).
    pub fn set(&self, t: PolicyTable, range: Option<ipnet::Ipv4Net>) {
        let mut g = self.table.write().unwrap_or_else(|e| e.into_inner());
        if **g != t {
            *g = Arc::new(t);
        }
        let packed = range.map_or(OPEN, |r| {
            u64::from(u32::from(r.network())) << 32 | u64::from(u32::from(r.netmask()))
        });
        self.range.store(packed, Ordering::Release);
    }

    #[inline]
    fn sent_by_member(&self, src: Ipv4Addr) -> bool {
        let r = self.range.load(Ordering::Acquire);
        r != OPEN && (u32::from(src) & r as u32) == (r >> 32) as u32
    }

    /// Whether a decrypted packet may go on to the TUN device; a refused
    /// one is counted (`flatnet_dataplane_drops_total{reason="policy"}`).
    #[inline]
    pub fn admits(&self, pkt: &[u8], now: impl FnOnce() -> u64) -> bool {
        let src = match pkt.get(12..16) {
            Some(b) => Ipv4Addr::new(b[0], b[1], b[2], b[3]),
            None => return true,
        };
        if !self.sent_by_member(src) {
            return true;
        }
        let t = self.table.read().unwrap_or_else(|e| e.into_inner()).clone();
        let verdict = match flow(pkt) {
            Some(f) => t.check(&f, now()),
            None => Verdict::Deny(crate::policy::Deny::NoRule),
        };
        match verdict {
            Verdict::Allow | Verdict::NotMember => true,
            Verdict::Deny(why) => {
                counters().drop(Drop::Policy);
                let member = t.member(src).map_or("unknown", |(name, _)| name);
                debug!(%src, member, reason = why.as_str(), "dropped by policy");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{compile, members_range, packet::build, Inputs, MemberInput};

    #[test]
    fn open_until_a_range_then_only_members_are_judged() {
        let g = Gate::default();
        let pkt = build("10.87.255.1", "10.87.2.6", 6, 5432, 0);
        assert!(g.admits(&pkt, || 0), "no table: open");
        let range = members_range("10.87.0.0/16".parse().unwrap(), 24);
        let i = Inputs {
            members_range: range,
            members: vec![MemberInput {
                name: "alice".into(),
                address: "10.87.255.1".parse().unwrap(),
                hub_subnet: None,
                expires: None,
                policy: "web".into(),
                allow: vec!["10.87.2.5:80".parse().unwrap()],
            }],
            ..Inputs::default()
        };
        g.set(compile(&i), range);
        assert!(!g.admits(&pkt, || 0));
        assert!(g.admits(&build("10.87.255.1", "10.87.2.5", 6, 80, 0), || 0));
        assert!(
            g.admits(&build("10.87.1.9", "10.87.2.6", 6, 5432, 0), || 0),
            "not a member"
        );
        assert!(
            !g.admits(&build("10.87.255.7", "10.87.2.5", 6, 80, 0), || 0),
            "unknown member"
        );
    }
}
