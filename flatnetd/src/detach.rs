//! `flatnetd --detach`: start without a supervisor (WSL2's `[boot]
//! command=`, a shell, an init without systemd) and still know whether the
//! start worked.
//!
//! The process forks before it starts any thread; the parent waits on a
//! pipe until the child says it is ready (the same moment systemd's
//! `READY=1` goes out) or why it could not start, then exits 0 or 1 with
//! that message, so `flatnetd --detach && podman start …` does what it says.
//! The child leaves the terminal's session, reads nothing, and writes its
//! log (stdout and stderr, panics included) to the log file, appended.
//! One flatnetd per state dir still holds ([`crate::pidfile`]): a second
//! detached start reports the running one's pid and exits 1.

use std::{
    fs::File,
    io::{Read, Write},
    os::fd::OwnedFd,
    path::Path,
    sync::Mutex,
};

use nix::unistd::{fork, setsid, ForkResult};

/// Where the log goes when `--detach` is given without `--log-file`.
pub const DEFAULT_LOG_FILE: &str = "/var/log/flatnet/flatnetd.log";

/// The write end of the readiness pipe, in a detached child until it has
/// reported.
static REPORT: Mutex<Option<File>> = Mutex::new(None);

const READY: &[u8] = b"ready\n";

/// Fork into the background. Returns in the child (with stdio redirected);
/// the parent never returns: it exits with the child's verdict.
///
/// Must run before any thread is started (no tokio runtime yet).
pub fn detach(log_file: &Path) -> std::io::Result<()> {
    let log = open_log(log_file)?;
    let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe()?;
    // SAFETY: no other thread exists yet; the child only continues this
    // single-threaded program.
    match unsafe { fork() }? {
        ForkResult::Parent { child } => {
            drop(w);
            let mut said = Vec::new();
            let _ = File::from(r).read_to_end(&mut said);
            if said == READY {
                println!(
                    "flatnetd started (pid {child}); its log is {}",
                    log_file.display()
                );
                std::process::exit(0);
            }
            let text = String::from_utf8_lossy(&said);
            let text = text.trim();
            if text.is_empty() {
                eprintln!(
                    "flatnetd: the daemon exited while starting; see its log {}",
                    log_file.display()
                );
            } else {
                eprintln!("{text}");
            }
            std::process::exit(1);
        }
        ForkResult::Child => {
            drop(r);
            setsid()?;
            let null = File::open("/dev/null")?;
            nix::unistd::dup2_stdin(&null)?;
            nix::unistd::dup2_stdout(&log)?;
            nix::unistd::dup2_stderr(&log)?;
            if let Ok(mut g) = REPORT.lock() {
                *g = Some(File::from(w));
            }
            Ok(())
        }
    }
}

/// The log file, for appending (its directory made if missing).
pub fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// The daemon is serving: let a waiting parent exit 0.
pub fn ready() {
    if let Some(mut f) = REPORT.lock().ok().and_then(|mut g| g.take()) {
        let _ = f.write_all(READY);
    }
}

/// The daemon could not start: the parent prints `line` and exits 1.
/// Returns whether a parent was waiting.
pub fn failed(line: &str) -> bool {
    match REPORT.lock().ok().and_then(|mut g| g.take()) {
        Some(mut f) => {
            let _ = writeln!(f, "{line}");
            true
        }
        None => false,
    }
}
