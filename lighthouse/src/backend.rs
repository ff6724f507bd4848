//! Where the registry is stored, behind one trait: redb on the
//! Lighthouse's own disk ([`crate::store::Store`], one Lighthouse, the
//! default), or etcd shared by several Lighthouses
//! ([`crate::etcd::EtcdStore`]), which keeps a redb copy beside it for
//! this Lighthouse's delta-sync log. The server calls these with its
//! registry lock held, so a change is stored before it is answered or
//! announced (docs/lighthouse.md, Several Lighthouses).

use std::time::Duration;

use flatnet_wire::lighthouse::LighthousePin;

use crate::{
    presence::Stored,
    registry::{Change, PolicyRecord, Registry},
    store::{Loaded, LoadedSync, Store, StoreError},
    sync::SyncLog,
};

pub trait Backend: Send {
    /// The registry as this Lighthouse last recorded it.
    fn load(&self) -> Result<Loaded, StoreError>;
    /// The members' access policies as last recorded.
    fn load_policies(&self) -> Result<Vec<PolicyRecord>, StoreError>;
    /// This Lighthouse's delta-sync log and presence snapshot.
    fn load_sync(&self) -> Result<LoadedSync, StoreError>;
    /// Store the changes made here, all or none. With a shared store a
    /// change another Lighthouse made first is [`StoreError::Conflict`].
    fn commit(&mut self, changes: &[Change], next_id: u32, log: &SyncLog)
        -> Result<(), StoreError>;
    /// Write this Lighthouse's presence rows (and the log's version).
    fn save_presence(&mut self, rows: &[(u32, Stored)], log: &SyncLog) -> Result<(), StoreError>;
    /// Open the local database again after an I/O error.
    fn reopen(&mut self) -> Result<(), StoreError>;
    /// How often presence is written.
    fn presence_every(&self) -> Duration;
    /// Every Lighthouse sharing the registry (empty: only this one).
    fn lighthouses(&self) -> Vec<LighthousePin> {
        Vec::new()
    }
    /// Remove Lighthouse `id` from the shared list (it was stopped for
    /// good); only with a shared registry.
    fn retire(&mut self, _id: &str) -> Result<(), StoreError> {
        Err(StoreError::Shared(
            "this Lighthouse is the only one (its registry is not on etcd)".into(),
        ))
    }
    /// Take what the other Lighthouses changed, as far as it has arrived,
    /// into `registry`, and record it; returns the changes to announce.
    fn absorb(&mut self, _registry: &mut Registry) -> Result<Vec<Change>, StoreError> {
        Ok(Vec::new())
    }
    /// The shared registry's revision this copy is complete up to
    /// (always complete without one).
    fn applied(&self) -> i64 {
        i64::MAX
    }
    /// The shared registry's current revision, for [`Backend::applied`] to
    /// reach before an admin command runs (it then sees what every
    /// Lighthouse did); nothing to wait for without one.
    fn freshen(&mut self) -> Result<i64, StoreError> {
        Ok(i64::MIN)
    }
    /// `redb` or `etcd`, for logs and `/metrics`.
    fn kind(&self) -> &'static str;
}

/// How often a single Lighthouse snapshots presence to its own disk.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(5);

impl Backend for Store {
    fn load(&self) -> Result<Loaded, StoreError> {
        Store::load(self)
    }
    fn load_sync(&self) -> Result<LoadedSync, StoreError> {
        Store::load_sync(self)
    }
    fn load_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        Store::load_policies(self)
    }
    fn commit(
        &mut self,
        changes: &[Change],
        next_id: u32,
        log: &SyncLog,
    ) -> Result<(), StoreError> {
        Store::commit(self, changes, next_id, log)
    }
    fn save_presence(&mut self, rows: &[(u32, Stored)], log: &SyncLog) -> Result<(), StoreError> {
        Store::save_presence(self, rows, log)
    }
    fn reopen(&mut self) -> Result<(), StoreError> {
        Store::reopen(self)
    }
    fn presence_every(&self) -> Duration {
        PRESENCE_EVERY
    }
    fn kind(&self) -> &'static str {
        "redb"
    }
}
