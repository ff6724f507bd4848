//! The Lighthouse's persistent state in redb (`<state_dir>/lighthouse.redb`):
//! nodes (id → record) and tokens (id → record). Each change is one durable
//! transaction; see docs/architecture.md for why redb.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{registry::NodeRecord, token::TokenRecord};

const NODES: TableDefinition<u32, &str> = TableDefinition::new("nodes");
const TOKENS: TableDefinition<&str, &str> = TableDefinition::new("tokens");

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

pub struct Store {
    db: Database,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(NODES)?;
        tx.open_table(TOKENS)?;
        tx.commit()?;
        Ok(Self { db })
    }

    pub fn load(&self) -> Result<(Vec<NodeRecord>, Vec<TokenRecord>), StoreError> {
        let tx = self.db.begin_read()?;
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
        Ok((nodes, tokens))
    }

    pub fn save_node(&self, n: &NodeRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(n)?;
        let tx = self.db.begin_write()?;
        tx.open_table(NODES)?.insert(n.id, json.as_str())?;
        tx.commit()?;
        Ok(())
    }

    pub fn remove_node(&self, id: u32) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(NODES)?.remove(id)?;
        tx.commit()?;
        Ok(())
    }

    pub fn save_token(&self, t: &TokenRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(t)?;
        let tx = self.db.begin_write()?;
        tx.open_table(TOKENS)?
            .insert(t.id.as_str(), json.as_str())?;
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
            s.save_node(&n).unwrap();
            s.save_token(&t).unwrap();
        }
        let s = Store::open(&p).unwrap();
        assert_eq!(s.load().unwrap(), (vec![n], vec![t]));
        s.remove_node(3).unwrap();
        assert!(s.load().unwrap().0.is_empty());
    }
}
