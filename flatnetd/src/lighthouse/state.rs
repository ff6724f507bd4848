//! What a joined node keeps about its Lighthouse in
//! `<state_dir>/lighthouse.json` (mode 0600, replaced atomically):
//! the address and pinned certificate fingerprint from the join token, the
//! node id and subnet the Lighthouse allocated, and the last peer list, so
//! that a restart while the Lighthouse is down keeps the same subnet and
//! the already-known peers. With several Lighthouses, the others too
//! (`also`) and how far each one's delta sync goes. The token itself is
//! never stored.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use flatnet_wire::lighthouse::{lighthouse_id, LighthousePin, PeerInfo, SyncPoint};
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
    /// The other Lighthouses sharing the registry (from the token, then
    /// as the Lighthouses list them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<LighthousePin>,
    /// The sync points of the Lighthouses in `also`, by Lighthouse id
    /// (`sync` is the first Lighthouse's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub syncs: BTreeMap<String, SyncPoint>,
}

impl LhState {
    /// Every Lighthouse, the first one first.
    pub fn lighthouses(&self) -> Vec<LighthousePin> {
        std::iter::once(LighthousePin {
            address: self.address.clone(),
            fingerprint: self.fingerprint.clone(),
        })
        .chain(self.also.iter().cloned())
        .collect()
    }

    /// Lighthouse `id`'s sync point.
    pub fn sync_of(&self, id: &str) -> Option<SyncPoint> {
        if lighthouse_id(&self.fingerprint) == id {
            self.sync
        } else {
            self.syncs.get(id).copied()
        }
    }

    /// Set Lighthouse `id`'s sync point.
    pub fn set_sync(&mut self, id: &str, p: Option<SyncPoint>) {
        if lighthouse_id(&self.fingerprint) == id {
            self.sync = p;
        } else if let Some(p) = p {
            self.syncs.insert(id.to_string(), p);
        } else {
            self.syncs.remove(id);
        }
    }
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
            also: vec![LighthousePin {
                address: "203.0.113.2:7871".into(),
                fingerprint: "cd".repeat(32),
            }],
            syncs: BTreeMap::new(),
        };
        let mut st = st;
        st.set_sync(
            &"cd".repeat(8),
            Some(SyncPoint {
                epoch: 9,
                version: 4,
            }),
        );
        assert_eq!(st.sync_of(&"ab".repeat(8)).unwrap().epoch, 1);
        assert_eq!(st.sync_of(&"cd".repeat(8)).unwrap().epoch, 9);
        assert_eq!(st.lighthouses().len(), 2);
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
