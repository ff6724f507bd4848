//! The Lighthouse's persistent state in redb (`<state_dir>/lighthouse.redb`):
//! nodes (id → record), tokens (id → record) and the next node id. All the
//! changes of one join or admin command are one durable transaction
//! ([`Store::commit`]); see docs/architecture.md for why redb.
//!
//! After an I/O error redb refuses every later write until the database is
//! opened again, so the server calls [`Store::reopen`] after a failed commit.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{
    registry::{Change, NodeRecord},
    token::TokenRecord,
};

const NODES: TableDefinition<u32, &str> = TableDefinition::new("nodes");
const TOKENS: TableDefinition<&str, &str> = TableDefinition::new("tokens");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Node ids are never reused: the next one is stored with every new node.
const NEXT_ID: &str = "next_node_id";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("lighthouse database: {0}")]
    Db(#[from] redb::Error),
    #[error("corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
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
    tx.open_table(META)?;
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

    /// Store every durable change (nodes, tokens, the next node id) in one
    /// transaction: all of them or, on any error, none.
    pub fn commit(&self, changes: &[Change], next_id: u32) -> Result<(), StoreError> {
        let tx = self.db()?.begin_write()?;
        {
            let mut nodes = tx.open_table(NODES)?;
            let mut tokens = tx.open_table(TOKENS)?;
            for c in changes {
                match c {
                    Change::NodeSaved(n) => {
                        nodes.insert(n.id, serde_json::to_string(n)?.as_str())?;
                    }
                    Change::NodeRemoved(id) => {
                        nodes.remove(*id)?;
                    }
                    Change::TokenSaved(t) => {
                        tokens.insert(t.id.as_str(), serde_json::to_string(t)?.as_str())?;
                    }
                    Change::NodeLive(_) => {}
                }
            }
            tx.open_table(META)?.insert(NEXT_ID, u64::from(next_id))?;
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
            )
            .unwrap();
        }
        let mut s = Store::open(&p).unwrap();
        assert_eq!(s.load().unwrap(), (vec![n], vec![t], Some(4)));
        s.reopen().unwrap();
        s.commit(&[Change::NodeRemoved(3)], 4).unwrap();
        let (nodes, _, next) = s.load().unwrap();
        assert!(nodes.is_empty());
        assert_eq!(
            next,
            Some(4),
            "the removed node's id is not handed out again"
        );
    }
}
