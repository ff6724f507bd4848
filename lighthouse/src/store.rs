//! The Lighthouse's persistent state in redb (`<state_dir>/lighthouse.redb`):
//! nodes and members (id → record), tokens (id → record), members' access
//! policies (name → record), the next node id, and for
//! delta sync the registry's epoch and version, the removals (version →
//! id) and a presence snapshot (id → live state and version). All the
//! changes of one join or admin command are one durable transaction
//! ([`Store::commit`]); see docs/architecture.md for why redb.
//!
//! After an I/O error redb refuses every later write until the database is
//! opened again, so the server calls [`Store::reopen`] after a failed commit.

use std::path::{Path, PathBuf};

use std::collections::{BTreeMap, HashMap};

use rand_core::{OsRng, RngCore};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{
    presence::{Presence, Stored},
    registry::{Change, NodeRecord, PolicyRecord},
    sync::SyncLog,
    token::TokenRecord,
};

const NODES: TableDefinition<u32, &str> = TableDefinition::new("nodes");
const TOKENS: TableDefinition<&str, &str> = TableDefinition::new("tokens");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const TOMBS: TableDefinition<u64, u32> = TableDefinition::new("removed");
const PRESENCE: TableDefinition<u32, &str> = TableDefinition::new("presence");
const POLICIES: TableDefinition<&str, &str> = TableDefinition::new("policies");
/// Node ids are never reused: the next one is stored with every new node.
const NEXT_ID: &str = "next_node_id";
/// Delta sync: the registry's random epoch, its version when last
/// written, and the version up to which removals were forgotten.
const EPOCH: &str = "epoch";
const VERSION: &str = "version";
const FLOOR: &str = "removed_floor";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("lighthouse database: {0}")]
    Db(#[from] redb::Error),
    #[error("corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// Another Lighthouse changed what this change was based on first;
    /// retried once this one has caught up to `revision`.
    #[error("another Lighthouse changed the registry at the same time")]
    Conflict { revision: i64 },
    /// The shared registry (etcd) failed or could not be reached.
    #[error("etcd: {0}")]
    Shared(String),
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.into()) }
        }
    )*};
}
db_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What [`Store::load`] returns: nodes, tokens and the next node id.
pub type Loaded = (Vec<NodeRecord>, Vec<TokenRecord>, Option<u32>);

/// The delta-sync state [`Store::load_sync`] returns.
pub struct LoadedSync {
    pub log: SyncLog,
    pub presence: Vec<(u32, Presence)>,
}

pub struct Store {
    path: PathBuf,
    /// `None` only between a failed reopen's drop and its open.
    db: Option<Database>,
}

fn open_db(path: &Path) -> Result<Database, StoreError> {
    let db = Database::create(path)?;
    let tx = db.begin_write()?;
    tx.open_table(NODES)?;
    tx.open_table(TOKENS)?;
    tx.open_table(TOMBS)?;
    tx.open_table(PRESENCE)?;
    tx.open_table(POLICIES)?;
    {
        let mut meta = tx.open_table(META)?;
        if meta.get(EPOCH)?.is_none() {
            // A new registry (or one restored from a backup): a new epoch,
            // so no node's sync point from another registry is trusted.
            meta.insert(EPOCH, OsRng.next_u64())?;
        }
    }
    tx.commit()?;
    Ok(db)
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            path: path.to_path_buf(),
            db: Some(open_db(path)?),
        })
    }

    fn db(&self) -> Result<&Database, StoreError> {
        self.db.as_ref().ok_or_else(|| {
            StoreError::Db(redb::Error::Io(std::io::Error::other(
                "the database is closed after a failed reopen",
            )))
        })
    }

    /// Close and open the database again (after an I/O error).
    pub fn reopen(&mut self) -> Result<(), StoreError> {
        self.db = None;
        self.db = Some(open_db(&self.path)?);
        Ok(())
    }

    pub fn load(&self) -> Result<Loaded, StoreError> {
        let tx = self.db()?.begin_read()?;
        let mut nodes = Vec::new();
        for row in tx.open_table(NODES)?.iter()? {
            let (_, v) = row?;
            nodes.push(serde_json::from_str(v.value())?);
        }
        let mut tokens = Vec::new();
        for row in tx.open_table(TOKENS)?.iter()? {
            let (_, v) = row?;
            tokens.push(serde_json::from_str(v.value())?);
        }
        let next = tx
            .open_table(META)?
            .get(NEXT_ID)?
            .and_then(|v| u32::try_from(v.value()).ok());
        Ok((nodes, tokens, next))
    }

    /// The members' access policies.
    pub fn load_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let mut out = Vec::new();
        for row in tx.open_table(POLICIES)?.iter()? {
            let (_, v) = row?;
            out.push(serde_json::from_str(v.value())?);
        }
        Ok(out)
    }

    /// The delta-sync log and presence snapshot. The counter resumes above
    /// the stored version ([`SyncLog::resume`]).
    pub fn load_sync(&self) -> Result<LoadedSync, StoreError> {
        let tx = self.db()?.begin_read()?;
        let meta = tx.open_table(META)?;
        let get = |k: &str| -> Result<u64, StoreError> {
            Ok(meta.get(k)?.map(|v| v.value()).unwrap_or(0))
        };
        let (epoch, version, floor) = (get(EPOCH)?, get(VERSION)?, get(FLOOR)?);
        let mut tombs = BTreeMap::new();
        for row in tx.open_table(TOMBS)?.iter()? {
            let (v, id) = row?;
            tombs.insert(v.value(), id.value());
        }
        let mut changed = HashMap::new();
        let mut presence = Vec::new();
        for row in tx.open_table(PRESENCE)?.iter()? {
            let (id, v) = row?;
            let st: Stored = serde_json::from_str(v.value())?;
            changed.insert(id.value(), st.changed);
            presence.push((id.value(), st.presence));
        }
        Ok(LoadedSync {
            log: SyncLog::resume(epoch, version, floor, changed, tombs),
            presence,
        })
    }

    /// Write presence rows and the log's version (one transaction).
    pub fn save_presence(&self, rows: &[(u32, Stored)], log: &SyncLog) -> Result<(), StoreError> {
        let tx = self.db()?.begin_write()?;
        {
            let mut p = tx.open_table(PRESENCE)?;
            for (id, st) in rows {
                p.insert(*id, serde_json::to_string(st)?.as_str())?;
            }
            tx.open_table(META)?.insert(VERSION, log.version())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Store every durable change (nodes, tokens, the next node id, the
    /// removals with their versions) in one transaction: all of them or,
    /// on any error, none.
    pub fn commit(
        &self,
        changes: &[Change],
        next_id: u32,
        log: &SyncLog,
    ) -> Result<(), StoreError> {
        let tx = self.db()?.begin_write()?;
        {
            let mut nodes = tx.open_table(NODES)?;
            let mut tokens = tx.open_table(TOKENS)?;
            let mut tombs = tx.open_table(TOMBS)?;
            let mut presence = tx.open_table(PRESENCE)?;
            let mut policies = tx.open_table(POLICIES)?;
            for c in changes {
                match c {
                    Change::NodeSaved(n) => {
                        nodes.insert(n.id, serde_json::to_string(n)?.as_str())?;
                    }
                    Change::NodeRemoved(id) => {
                        nodes.remove(*id)?;
                        presence.remove(*id)?;
                        let at = log.removed_at(*id).unwrap_or(log.version());
                        tombs.insert(at, *id)?;
                    }
                    Change::TokenSaved(t) => {
                        tokens.insert(t.id.as_str(), serde_json::to_string(t)?.as_str())?;
                    }
                    Change::PolicySaved(p) => {
                        policies.insert(p.name.as_str(), serde_json::to_string(p)?.as_str())?;
                    }
                    Change::PolicyRemoved(name) => {
                        policies.remove(name.as_str())?;
                    }
                    Change::NodeLive(_) => {}
                }
            }
            if log.floor() > 0 {
                tombs.retain_in(..=log.floor(), |_, _| false)?;
            }
            let mut meta = tx.open_table(META)?;
            meta.insert(NEXT_ID, u64::from(next_id))?;
            meta.insert(VERSION, log.version())?;
            meta.insert(FLOOR, log.floor())?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lh.redb");
        let n = NodeRecord {
            id: 3,
            name: "a".into(),
            public_key: "K".into(),
            subnet: "10.87.3.0/24".parse().unwrap(),
            token_id: "t".into(),
            joined: 1,
            member: None,
        };
        let t = TokenRecord {
            id: "t".into(),
            created: 1,
            expires: None,
            reusable: false,
            revoked: false,
            uses: 1,
        };
        {
            let s = Store::open(&p).unwrap();
            s.commit(
                &[Change::TokenSaved(t.clone()), Change::NodeSaved(n.clone())],
                4,
                &SyncLog::new(1),
            )
            .unwrap();
        }
        let mut s = Store::open(&p).unwrap();
        assert_eq!(s.load().unwrap(), (vec![n], vec![t], Some(4)));
        s.reopen().unwrap();
        let epoch = s.load_sync().unwrap().log.epoch();
        let mut log = SyncLog::new(epoch);
        log.touch(3);
        log.remove(3);
        s.commit(&[Change::NodeRemoved(3)], 4, &log).unwrap();
        let (nodes, _, next) = s.load().unwrap();
        assert!(nodes.is_empty());
        assert_eq!(
            next,
            Some(4),
            "the removed node's id is not handed out again"
        );
        let again = s.load_sync().unwrap().log;
        assert_eq!(again.epoch(), epoch, "the epoch is kept");
        assert_eq!(again.removed_at(3), Some(2), "the removal is remembered");
        assert!(
            again.version() > 2,
            "the counter resumes above the stored one"
        );
    }

    #[test]
    fn a_new_database_gets_a_new_epoch_and_presence_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(&dir.path().join("a.redb")).unwrap();
        let b = Store::open(&dir.path().join("b.redb")).unwrap();
        let ea = a.load_sync().unwrap().log.epoch();
        assert_ne!(ea, b.load_sync().unwrap().log.epoch());
        let mut log = SyncLog::new(ea);
        log.touch(5);
        let row = Stored {
            presence: Presence {
                online: true,
                observed: Some("198.51.100.7:4000".parse().unwrap()),
                local_addrs: vec!["192.168.1.2:51820".parse().unwrap()],
            },
            changed: 1,
        };
        a.save_presence(&[(5, row.clone())], &log).unwrap();
        let got = a.load_sync().unwrap();
        assert_eq!(got.presence, vec![(5, row.presence)]);
        assert_eq!(got.log.changed_at(5), 1);
    }
}
