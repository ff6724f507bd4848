//! Delta sync, sans I/O: which registry version each node record last
//! changed at, and which ids were removed at which version, so a node that
//! reconnects saying "I have everything up to version V" gets only what
//! changed since (docs/lighthouse.md, Delta sync).
//!
//! Versions only grow. The counter is stored with every durable change
//! and with every presence snapshot; a Lighthouse that starts again
//! continues [`RESTART_GAP`] above the stored value, so a version handed out
//! after the last write and lost in a crash is never handed out again with
//! another meaning. The epoch is random per registry: a registry restored
//! from a backup (or a new one) has another, and points from the old one
//! get a full list.

use std::collections::{BTreeMap, HashMap};

use flatnet_wire::lighthouse::SyncPoint;

/// How far the counter jumps when a Lighthouse starts on a stored registry:
/// more changes than could happen between two writes.
pub const RESTART_GAP: u64 = 1 << 32;
/// Removed ids remembered; a node behind the oldest gets a full list.
pub const MAX_TOMBSTONES: usize = 65_536;

/// What a node that says `since` must be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Catchup {
    /// The whole list (a new node, another epoch, too far behind).
    Full,
    /// Only these records (changed after `since`) and these removals.
    Delta {
        changed: Vec<u32>,
        removed: Vec<u32>,
    },
}

#[derive(Debug, Clone)]
pub struct SyncLog {
    epoch: u64,
    version: u64,
    /// Node id → the version its record (durable or live part) last
    /// changed at.
    changed: HashMap<u32, u64>,
    /// Version → id removed then.
    tombs: BTreeMap<u64, u32>,
    /// Removals at or below this version were forgotten: a node behind it
    /// cannot be brought up to date by a delta.
    floor: u64,
}

impl SyncLog {
    pub fn new(epoch: u64) -> Self {
        Self {
            epoch,
            version: 0,
            changed: HashMap::new(),
            tombs: BTreeMap::new(),
            floor: 0,
        }
    }

    /// Continue a stored log: the counter resumes [`RESTART_GAP`] above
    /// `stored_version`.
    pub fn resume(
        epoch: u64,
        stored_version: u64,
        floor: u64,
        changed: HashMap<u32, u64>,
        tombs: BTreeMap<u64, u32>,
    ) -> Self {
        Self {
            epoch,
            version: stored_version.saturating_add(RESTART_GAP),
            changed,
            tombs,
            floor,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub fn point(&self) -> SyncPoint {
        SyncPoint {
            epoch: self.epoch,
            version: self.version,
        }
    }

    /// The version `id`'s record last changed at (0: never since the log
    /// began).
    pub fn changed_at(&self, id: u32) -> u64 {
        self.changed.get(&id).copied().unwrap_or(0)
    }

    /// Record `id` changed now; returns the new version.
    pub fn touch(&mut self, id: u32) -> u64 {
        self.version += 1;
        self.changed.insert(id, self.version);
        self.version
    }

    /// `id` was removed now. Returns the tombstones forgotten to stay
    /// within [`MAX_TOMBSTONES`] (the store deletes them too).
    pub fn remove(&mut self, id: u32) -> Vec<u64> {
        self.version += 1;
        self.changed.remove(&id);
        self.tombs.insert(self.version, id);
        let mut forgotten = Vec::new();
        while self.tombs.len() > MAX_TOMBSTONES {
            let Some((v, _)) = self.tombs.pop_first() else {
                break;
            };
            self.floor = self.floor.max(v);
            forgotten.push(v);
        }
        forgotten
    }

    /// A removal was undone (the store refused it): forget its tombstone
    /// and mark the record changed, so every node gets it again.
    pub fn revive(&mut self, id: u32) {
        self.tombs.retain(|_, i| *i != id);
        self.touch(id);
    }

    /// The version `id` was removed at, if that is remembered.
    pub fn removed_at(&self, id: u32) -> Option<u64> {
        self.tombs
            .iter()
            .rev()
            .find(|(_, i)| **i == id)
            .map(|(v, _)| *v)
    }

    /// Every remembered removal, oldest first.
    pub fn tombstones(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.tombs.iter().map(|(v, id)| (*v, *id))
    }

    /// What a node complete up to `since` needs. `ids` are the records it
    /// may see (everyone but itself).
    pub fn catchup(&self, since: Option<SyncPoint>, ids: impl Iterator<Item = u32>) -> Catchup {
        let Some(p) = since else {
            return Catchup::Full;
        };
        if p.epoch != self.epoch || p.version > self.version || p.version < self.floor {
            return Catchup::Full;
        }
        let changed = ids.filter(|id| self.changed_at(*id) > p.version).collect();
        let removed = self
            .tombs
            .range(p.version.saturating_add(1)..)
            .map(|(_, id)| *id)
            .collect();
        Catchup::Delta { changed, removed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64, version: u64) -> Option<SyncPoint> {
        Some(SyncPoint { epoch, version })
    }

    #[test]
    fn a_node_gets_what_changed_since_its_point() {
        let mut l = SyncLog::new(9);
        for id in 1..=5 {
            l.touch(id);
        }
        let p = l.point();
        l.touch(3);
        l.remove(5);
        let ids = || [1, 2, 3, 4].into_iter();
        assert_eq!(
            l.catchup(Some(p), ids()),
            Catchup::Delta {
                changed: vec![3],
                removed: vec![5]
            }
        );
        // Up to date: an empty delta, not a full list.
        assert_eq!(
            l.catchup(Some(l.point()), ids()),
            Catchup::Delta {
                changed: vec![],
                removed: vec![]
            }
        );
        assert_eq!(l.catchup(None, ids()), Catchup::Full);
    }

    #[test]
    fn other_epochs_future_points_and_forgotten_removals_get_a_full_list() {
        let mut l = SyncLog::new(9);
        l.touch(1);
        assert_eq!(l.catchup(at(8, 1), [1].into_iter()), Catchup::Full);
        assert_eq!(l.catchup(at(9, 2), [1].into_iter()), Catchup::Full);
        for id in 0..(MAX_TOMBSTONES as u32 + 3) {
            l.touch(id + 10);
            l.remove(id + 10);
        }
        assert_eq!(l.tombstones().count(), MAX_TOMBSTONES);
        assert!(l.floor() > 1);
        assert_eq!(l.catchup(at(9, 1), [1].into_iter()), Catchup::Full);
        assert!(matches!(
            l.catchup(Some(l.point()), [1].into_iter()),
            Catchup::Delta { .. }
        ));
    }

    #[test]
    fn a_resumed_log_never_reuses_a_version() {
        let mut l = SyncLog::new(9);
        l.touch(1);
        let stored = l.version();
        // Changes after the last write, lost in a crash.
        l.touch(2);
        let seen_by_a_node = l.point();
        let changed: HashMap<u32, u64> = [(1, stored)].into();
        let mut again = SyncLog::resume(9, stored, 0, changed, BTreeMap::new());
        assert!(again.version() > seen_by_a_node.version);
        let v = again.touch(2);
        // The node that saw version 2 before the crash still gets node 2's
        // record as it is now.
        assert!(v > seen_by_a_node.version);
        assert_eq!(
            again.catchup(Some(seen_by_a_node), [1, 2].into_iter()),
            Catchup::Delta {
                changed: vec![2],
                removed: vec![]
            }
        );
    }
}
