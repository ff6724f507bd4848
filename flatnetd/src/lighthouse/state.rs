//! What a joined node keeps about its Lighthouse in
//! `<state_dir>/lighthouse.json` (mode 0600, replaced atomically):
//! the address and pinned certificate fingerprint from the join token, the
//! node id and subnet the Lighthouse allocated, and the last peer list, so
//! that a restart while the Lighthouse is down keeps the same subnet and
//! the already-known peers. The token itself is never stored.

use std::path::{Path, PathBuf};

use flatnet_wire::lighthouse::{PeerInfo, SyncPoint};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "lighthouse.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LhState {
    /// `host:port` of the Lighthouse.
    pub address: String,
    /// Hex SHA-256 of its certificate.
    pub fingerprint: String,
    pub node_id: u32,
    pub subnet: Ipv4Net,
    pub cidr: Ipv4Net,
    #[serde(default)]
    pub peers: Vec<PeerInfo>,
    /// How far `peers` goes (delta sync): the next session asks only for
    /// what changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncPoint>,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

/// The saved state, if this node has joined.
pub fn load(state_dir: &Path) -> Result<Option<LhState>, StateError> {
    let p = path(state_dir);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path: p, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io { path: p, source }),
    }
}

/// Write the state atomically (temporary file, fsync, rename).
pub fn save(state_dir: &Path, st: &LhState) -> Result<(), StateError> {
    let p = path(state_dir);
    let body = serde_json::to_vec_pretty(st).map_err(|source| StateError::Corrupt {
        path: p.clone(),
        source,
    })?;
    flatnet_wire::fs::write_atomic(&p, &body, 0o600).map_err(|source| StateError::Io {
        path: p.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_and_missing() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(d.path()).unwrap(), None);
        let st = LhState {
            address: "203.0.113.1:7871".into(),
            fingerprint: "ab".repeat(32),
            node_id: 3,
            subnet: "10.87.3.0/24".parse().unwrap(),
            cidr: "10.87.0.0/16".parse().unwrap(),
            peers: vec![],
            sync: Some(SyncPoint {
                epoch: 1,
                version: 2,
            }),
        };
        save(d.path(), &st).unwrap();
        assert_eq!(load(d.path()).unwrap(), Some(st));
        let mode = std::fs::metadata(path(d.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(path(d.path()), "{").unwrap();
        assert!(matches!(load(d.path()), Err(StateError::Corrupt { .. })));
    }
}
