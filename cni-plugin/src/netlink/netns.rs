//! Running code inside another network namespace (`ip netns exec`).

use std::{fs::File, path::Path};

use nix::sched::{setns, CloneFlags};

use super::NlError;

/// Open a network namespace file (e.g. `/run/netns/x`, `/proc/PID/ns/net`).
pub fn open(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// Run `f` on a fresh thread that has entered the namespace `ns`; the
/// calling thread's namespace is never changed.
pub fn run_in<T, F>(ns: &File, f: F) -> Result<T, NlError>
where
    T: Send,
    F: FnOnce() -> Result<T, NlError> + Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| NlError::Other(format!("entering network namespace: {e}")))?;
            f()
        })
        .join()
        .map_err(|_| NlError::Other("namespace worker panicked".into()))?
    })
}
