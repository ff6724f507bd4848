//! One flatnetd per state dir: `<state_dir>/flatnetd.pid`, locked with
//! `flock(2)` for the life of the process and holding its pid.
//!
//! The lock, not the file's existence, is what counts: a flatnetd killed
//! with SIGKILL (or a VM that lost power) leaves the file behind, but the
//! kernel dropped its lock, so the next start takes it over at once. A
//! second start while one runs stops before it touches anything (the
//! socket, the lease database, nftables) and names the running one.
//! Supervisor-less starts (WSL2's `[boot] command=`, a shell) rely on
//! this as systemd would on its unit's single instance.

use std::{
    fs::File,
    io::{Read, Seek, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

/// The pid file's name in the state dir.
pub const PID_FILE: &str = "flatnetd.pid";

#[derive(Debug, thiserror::Error)]
pub enum PidError {
    #[error(
        "flatnetd is already running (pid {pid}) on state dir {dir}; stop it first \
         (`systemctl stop flatnetd`, or `kill {pid}`), or give this one its own state_dir"
    )]
    Running { pid: String, dir: PathBuf },
    #[error("pid file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct PidLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl PidLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Take the state dir's lock and write this process's pid, or say which
/// flatnetd holds it.
pub fn acquire(state_dir: &Path) -> Result<PidLock, PidError> {
    let path = state_dir.join(PID_FILE);
    let io = |source| PidError::Io {
        path: path.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .map_err(io)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(PidError::Running {
                pid: if pid.is_empty() { "unknown" } else { pid }.to_string(),
                dir: state_dir.to_owned(),
            });
        }
        Err((_, e)) => return Err(io(e.into())),
    };
    lock.set_len(0).map_err(io)?;
    lock.rewind().map_err(io)?;
    writeln!(lock, "{}", std::process::id()).map_err(io)?;
    Ok(PidLock { _lock: lock, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_naming_the_first_and_a_dead_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(first.path()).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        // flock is per open file description: a second open in this very
        // process conflicts as another process would.
        let e = acquire(dir.path()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("already running (pid {})", std::process::id())),
            "{msg}"
        );
        drop(first);
        // The file stays behind (as after SIGKILL); its lock does not.
        assert!(dir.path().join(PID_FILE).exists());
        let again = acquire(dir.path()).unwrap();
        drop(again);
    }

    #[test]
    fn a_stale_pid_file_is_taken_over_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(PID_FILE), "999999999\nleftover\n").unwrap();
        let l = acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(l.path()).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
    }
}
