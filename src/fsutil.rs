//! Owner-only files and directories, for everything strongroom keeps on disk.

use std::io::Write;
use std::path::Path;

/// Creates `dir` (and parents) with mode 0700; an existing one is left as is.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates `path` with mode 0600, empty, never overwriting a file.
pub fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Creates `path` with mode 0600 (never overwriting) and makes it durable.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = create_private_file(path)?;
    file.write_all(contents)?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Opens `path` (a file or a directory) and takes an exclusive advisory lock
/// on it, held until the returned file is dropped or the process ends
/// (also by SIGKILL). `Ok(None)` when another process holds it.
pub fn lock_exclusive(path: &Path) -> std::io::Result<Option<std::fs::File>> {
    // A directory opens read-only; flock works on any open file.
    let file = std::fs::File::open(path)?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Ok(None),
                _ => Err(err),
            };
        }
    }
    Ok(Some(file))
}

/// Space below which a data dir counts as full: a batch of changes and its
/// audit lines need room, and SQLite needs some to roll back.
const MIN_FREE_BYTES: u64 = 1024 * 1024;

/// An error naming the problem when the file system holding `dir` has less
/// than a megabyte free (or cannot say).
pub fn check_free_space(dir: &Path) -> Result<(), String> {
    let free = statvfs_free(dir).map_err(|e| match e {
        None => format!("{} is not a usable path", dir.display()),
        Some(e) => format!("cannot read the free space of {}: {e}", dir.display()),
    })?;
    if free < MIN_FREE_BYTES {
        return Err(format!("{} has {free} bytes free", dir.display()));
    }
    Ok(())
}

/// Bytes free to an unprivileged writer on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    statvfs_free(dir).ok()
}

/// `free_bytes`, or why not: `None` for a path with a NUL byte, else the
/// error statvfs gave.
fn statvfs_free(dir: &Path) -> Result<u64, Option<std::io::Error>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| None)?;
    // SAFETY: statvfs writes only into `stat`, and `path` is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(Some(std::io::Error::last_os_error()));
    }
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Logs a warning while the file system holding `dir` has fewer than
/// `warn_below` bytes free: at the first check that finds it low, then
/// every ten minutes while it stays low.
pub fn watch_free_space(dir: std::path::PathBuf, warn_below: u64, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        let mut warned: Option<std::time::Instant> = None;
        loop {
            ticks.tick().await;
            match free_bytes(&dir) {
                Some(free) if free < warn_below => {
                    if warned.is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(600)) {
                        tracing::warn!(
                            dir = %dir.display(),
                            free,
                            warn_below,
                            "the data dir is running out of room: a full disk stops every change and read (503)"
                        );
                        warned = Some(std::time::Instant::now());
                    }
                }
                _ => warned = None,
            }
        }
    });
}

/// Refuses `path` as a place to write (a backup, a restore's input, a
/// migration's target) when it is inside `data_dir` or is one of its files.
/// Compared by device and inode, so `..`, a symbolic link, a hard link or a
/// bind mount is seen through; an operator's typo must never put a file
/// over a live store.
pub fn refuse_in_data_dir(path: &Path, data_dir: &Path, what: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let refused = || {
        Err(format!(
            "{what} {} is inside the store's data directory {}: choose a path outside it",
            path.display(),
            data_dir.display()
        ))
    };
    // Resolved as far as they exist, so neither a data dir not made yet nor
    // a path whose last directories are still to be made slips through.
    if let (Some(path), Some(dir)) = (resolve(path), resolve(data_dir)) {
        if path.starts_with(&dir) {
            return refused();
        }
    }
    // What exists, by device and inode: a hard link, a bind mount.
    let Ok(dir) = std::fs::metadata(data_dir) else {
        return Ok(());
    };
    let id = |m: &std::fs::Metadata| (m.dev(), m.ino());
    if let Ok(meta) = std::fs::metadata(path) {
        if id(&meta) == id(&dir) || store_files(data_dir, 3).contains(&id(&meta)) {
            return refused();
        }
    }
    if let Some(resolved) = resolve(path) {
        for ancestor in resolved.ancestors() {
            if std::fs::metadata(ancestor).is_ok_and(|m| id(&m) == id(&dir)) {
                return refused();
            }
        }
    }
    Ok(())
}

/// `path` made absolute with every part that exists resolved (links and
/// `..` as the file system sees them) and the rest taken as written.
fn resolve(path: &Path) -> Option<std::path::PathBuf> {
    use std::path::Component;
    let absolute = std::path::absolute(path).ok()?;
    let mut at = std::path::PathBuf::from("/");
    for part in absolute.components() {
        match part {
            Component::RootDir | Component::Prefix(_) => at = std::path::PathBuf::from("/"),
            Component::CurDir => {}
            Component::ParentDir => {
                at.pop();
            }
            Component::Normal(name) => {
                let next = at.join(name);
                at = std::fs::canonicalize(&next).unwrap_or(next);
            }
        }
    }
    Some(at)
}

/// Device and inode of every file under `dir`, to `depth` levels.
fn store_files(dir: &Path, depth: u32) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() && depth > 1 {
            found.extend(store_files(&entry.path(), depth - 1));
        } else if meta.is_file() {
            found.push((meta.dev(), meta.ino()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_path_into_the_data_dir_is_refused_however_it_is_spelled() {
        let temp = tempfile::tempdir().unwrap();
        let data = temp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("strongroom.db"), b"live").unwrap();
        let elsewhere = temp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&data, temp.path().join("alias")).unwrap();
        std::fs::hard_link(data.join("strongroom.db"), elsewhere.join("linked.db")).unwrap();
        let refused = |p: PathBuf| refuse_in_data_dir(&p, &data, "--out").is_err();
        assert!(refused(data.join("strongroom.db")));
        assert!(refused(data.join("new.backup")));
        assert!(refused(data.clone()));
        assert!(refused(temp.path().join("alias/new.backup")));
        assert!(refused(elsewhere.join("../data/x.backup")));
        assert!(refused(elsewhere.join("linked.db")));
        assert!(!refused(elsewhere.join("x.backup")));
        assert!(!refused(data.join("../elsewhere/x.backup")));
        assert!(!refused(temp.path().join("missing/x.backup")));
        // Directories still to be made, inside it or inside one to be made.
        assert!(refused(data.join("a/b/x.backup")));
        assert!(refused(temp.path().join("alias/a/../b/x.backup")));
        let later = temp.path().join("later");
        assert!(refuse_in_data_dir(&later.join("backups"), &later, "--backup-dir").is_err());
        assert!(
            refuse_in_data_dir(&temp.path().join("later-backups"), &later, "--backup-dir").is_ok()
        );
    }
}
