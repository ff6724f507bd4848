//! Backing up and restoring a Lighthouse (docs/operations.md, runbook).
//!
//! `lighthouse backup FILE` asks the running Lighthouse for a consistent
//! snapshot (one read of the registry under its lock: nodes and members,
//! tokens, members' access policies, the next node id) plus its certificate and private key, and writes it as one
//! JSON file, mode 0600. The key must be in it: every node pins the
//! certificate, so a Lighthouse restored with another key would be refused
//! by all of them. Keep backups as secret as the state dir.
//!
//! `lighthouse restore FILE --state-dir DIR` (offline) builds a state dir
//! from it: the key and certificate, and the database with the same nodes,
//! subnets and tokens; `lighthouse serve` on it then takes every node back.
//! It refuses a state dir that already holds a Lighthouse.

use std::path::Path;

use base64::Engine;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{
    cert::{identity_paths, Identity},
    registry::{Change, NodeRecord, PolicyRecord},
    server::Lighthouse,
    store::Store,
    token::TokenRecord,
};

pub const FORMAT: &str = "flatnet-lighthouse-backup";
pub const VERSION: u32 = 1;

/// One backup file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    pub format: String,
    pub version: u32,
    /// Seconds since the epoch.
    pub created: u64,
    /// What `lighthouse serve` must be given again (`--cidr`, `--host-prefix`).
    pub cidr: Ipv4Net,
    pub host_prefix: u8,
    pub nodes: Vec<NodeRecord>,
    pub tokens: Vec<TokenRecord>,
    pub next_node_id: u32,
    /// Members' access policies (absent from backups made before members).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyRecord>,
    /// DER, base64.
    pub certificate: String,
    pub private_key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} is not a Lighthouse backup (expected format {FORMAT} version {VERSION})")]
    Format(String),
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    #[error(
        "{0} already holds a Lighthouse (lighthouse.redb or its key); restore into an empty \
         directory, or move that one away first"
    )]
    Occupied(String),
    #[error("writing {0}: {1}")]
    Io(String, std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// A snapshot of a running Lighthouse.
pub fn snapshot(lh: &Lighthouse, now: u64) -> Backup {
    let (cidr, host_prefix, mut nodes, mut tokens, next, policies) = lh.view(|r| {
        (
            r.cidr(),
            r.host_prefix(),
            r.nodes().cloned().collect::<Vec<_>>(),
            r.tokens().cloned().collect::<Vec<_>>(),
            r.next_id(),
            r.policies().cloned().collect::<Vec<_>>(),
        )
    });
    nodes.sort_by_key(|n| n.id);
    tokens.sort_by(|a, b| a.id.cmp(&b.id));
    Backup {
        format: FORMAT.into(),
        version: VERSION,
        created: now,
        cidr,
        host_prefix,
        nodes,
        tokens,
        next_node_id: next,
        policies,
        certificate: b64().encode(lh.identity.cert.as_ref()),
        private_key: b64().encode(lh.identity.key.secret_pkcs8_der()),
    }
}

/// Parse and check a backup file's text.
pub fn parse(text: &str, name: &str) -> Result<Backup, BackupError> {
    let b: Backup =
        serde_json::from_str(text).map_err(|_| BackupError::Format(name.to_string()))?;
    if b.format != FORMAT || b.version != VERSION {
        return Err(BackupError::Format(name.to_string()));
    }
    for n in &b.nodes {
        if !b.cidr.contains(&n.subnet.network()) || n.id >= b.next_node_id {
            return Err(BackupError::Damaged(format!(
                "node {} ({}) does not fit the backup's cidr or node ids",
                n.id, n.name
            )));
        }
    }
    Ok(b)
}

/// Build a state dir from a backup.
pub fn restore(b: &Backup, dir: &Path) -> Result<(), BackupError> {
    let shown = dir.display().to_string();
    let db = dir.join("lighthouse.redb");
    let (cp, kp) = identity_paths(dir);
    if db.exists() || cp.exists() || kp.exists() {
        return Err(BackupError::Occupied(shown));
    }
    let cert = b64()
        .decode(&b.certificate)
        .map_err(|e| BackupError::Damaged(format!("certificate: {e}")))?;
    let key = b64()
        .decode(&b.private_key)
        .map_err(|e| BackupError::Damaged(format!("private key: {e}")))?;
    flatnet_wire::fs::create_private_dir(dir).map_err(|e| BackupError::Io(shown.clone(), e))?;
    let store = Store::open(&db)?;
    let changes: Vec<Change> = b
        .tokens
        .iter()
        .cloned()
        .map(Change::TokenSaved)
        .chain(b.nodes.iter().cloned().map(Change::NodeSaved))
        .chain(b.policies.iter().cloned().map(Change::PolicySaved))
        .collect();
    let log = store.load_sync()?.log;
    store.commit(&changes, b.next_node_id, &log)?;
    drop(store);
    Identity::install(dir, &cert, &key).map_err(|e| BackupError::Io(shown, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_restored_lighthouse_has_the_same_nodes_tokens_and_key() {
        let a = tempfile::tempdir().unwrap();
        let lh =
            Lighthouse::open(a.path(), "10.87.0.0/16".parse().unwrap(), 24, "x:1".into()).unwrap();
        let t = crate::token::Token::generate("x:1", &lh.identity.fingerprint());
        lh.mutate(|r| ((), r.add_token(&t, 1, None, true))).unwrap();
        let b = snapshot(&lh, 7);
        let text = serde_json::to_string(&b).unwrap();
        let b2 = parse(&text, "f").unwrap();
        assert_eq!(b, b2);
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("lh");
        restore(&b2, &target).unwrap();
        let again = restore(&b2, &target).unwrap_err().to_string();
        assert!(again.contains("already holds a Lighthouse"), "{again}");
        let lh2 = Lighthouse::open(&target, b.cidr, b.host_prefix, "x:1".into()).unwrap();
        assert_eq!(lh2.identity.fingerprint(), lh.identity.fingerprint());
        assert_eq!(snapshot(&lh2, 7), b);
        for bad in ["{}", "not json", &text.replace(FORMAT, "other")] {
            assert!(parse(bad, "f").is_err(), "{bad}");
        }
    }
}
