//! Private on-disk state, shared by flatnetd and the Lighthouse: both keep
//! small files (keys, certificates, state) that must never be seen half
//! written or wider open than meant.

use std::{
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

/// Write `bytes` to `path` atomically with `mode`: a temporary file next to
/// it (`.<name>.tmp`), fsync, rename, fsync of the directory. A crash
/// leaves the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} is not a file path", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed `mode`, and an old temporary file
        // keeps its own: set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `dir` (and its parents), mode 0700; an existing one is narrowed to 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Run `f` on a directory that may not exist yet; when `f` fails and the
/// directory did not exist before, remove it again, so a failed first start
/// or join (a full disk) leaves nothing behind.
pub fn or_remove_new_dir<T, E>(dir: &Path, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let made = !dir.exists();
    let r = f();
    if r.is_err() && made {
        let _ = std::fs::remove_dir_all(dir);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_dir_goes_again_when_the_work_in_it_fails_an_old_one_stays() {
        let d = std::env::temp_dir().join(format!("flatnet-fs-new-{}", std::process::id()));
        let r: Result<(), &str> = or_remove_new_dir(&d, || {
            create_private_dir(&d).unwrap();
            Err("full")
        });
        assert!(r.is_err() && !d.exists());
        create_private_dir(&d).unwrap();
        let r: Result<(), &str> = or_remove_new_dir(&d, || Err("full"));
        assert!(r.is_err() && d.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn atomic_writes_replace_whole_files_with_the_mode_asked() {
        let d = std::env::temp_dir().join(format!("flatnet-fs-{}", std::process::id()));
        create_private_dir(&d.join("a/b")).unwrap();
        assert_eq!(
            std::fs::metadata(d.join("a/b"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let p = d.join("a/b/state.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o640).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let left: Vec<_> = std::fs::read_dir(d.join("a/b")).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
