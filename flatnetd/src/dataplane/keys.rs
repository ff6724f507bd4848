//! The node's WireGuard identity: an x25519 key pair generated at first
//! start and kept in `<state_dir>/private.key` (base64, mode 0600), the
//! same format `wg genkey` writes.

use std::{
    io::{Read, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use boringtun::x25519::{PublicKey, StaticSecret};

use crate::config::{decode_key, encode_key};

pub const PRIVATE_KEY_FILE: &str = "private.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("WireGuard key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a WireGuard private key: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// This node's static key pair.
#[derive(Clone)]
pub struct Identity {
    pub secret: StaticSecret,
    pub public: PublicKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.public_base64())
    }
}

impl Identity {
    pub fn from_secret(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// A fresh random key pair (from the kernel's CSPRNG).
    pub fn generate() -> std::io::Result<Self> {
        let mut b = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
        Ok(Self::from_secret(b))
    }

    pub fn public_bytes(&self) -> [u8; 32] {
        *self.public.as_bytes()
    }

    pub fn public_base64(&self) -> String {
        encode_key(self.public.as_bytes())
    }

    /// The key pair saved in `state_dir`, if there is one (a key readable
    /// by others is made private first).
    pub fn load(state_dir: &Path) -> Result<Option<Self>, KeyError> {
        let path = state_dir.join(PRIVATE_KEY_FILE);
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "private key is readable by others; fixing mode to 0600");
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .map_err(io)?;
                }
                let bytes = decode_key(&text).map_err(|reason| KeyError::Invalid {
                    path: path.clone(),
                    reason,
                })?;
                Ok(Some(Self::from_secret(bytes)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// Write this key pair into `state_dir` (mode 0600, atomically: a
    /// temporary file, fsync, rename; the temporary file goes on failure).
    pub fn save(&self, state_dir: &Path) -> Result<(), KeyError> {
        let path = state_dir.join(PRIVATE_KEY_FILE);
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        let tmp = state_dir.join(format!("{PRIVATE_KEY_FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            writeln!(f, "{}", encode_key(&self.secret.to_bytes()))?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })?;
        tracing::info!(path = %path.display(), public_key = %self.public_base64(), "generated WireGuard key pair");
        Ok(())
    }

    /// The saved key pair, or a new one saved now.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, KeyError> {
        if let Some(id) = Self::load(state_dir)? {
            return Ok(id);
        }
        let id = Self::generate().map_err(|source| KeyError::Io {
            path: state_dir.join(PRIVATE_KEY_FILE),
            source,
        })?;
        id.save(state_dir)?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let meta = std::fs::metadata(dir.path().join(PRIVATE_KEY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.public_bytes(), b.public_bytes());
        assert_eq!(a.public_base64().len(), 44);
    }

    #[test]
    fn garbage_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PRIVATE_KEY_FILE), "not a key").unwrap();
        let e = Identity::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not a WireGuard private key"), "{e}");
    }
}
