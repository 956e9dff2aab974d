//! The files of an embedded trail: reading back a file's last whole line,
//! telling a file from its replacement, and the set of files the trail
//! spans. `audit.log` is the file being written; at `--audit-max-bytes` it
//! is renamed `audit-<first seq>.log` (the number of its first line, 20
//! digits, so names sort in chain order) and a new `audit.log` begins, whose
//! first line chains to the renamed file's last. Readers take the rotated
//! files in order, then `audit.log`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::store::chain::{v2_fields, ChainHead};

/// The name a full `audit.log` whose first line is `first_seq` is given.
pub fn rotated_path(current: &Path, first_seq: u64) -> PathBuf {
    current.with_file_name(format!("audit-{first_seq:020}.log"))
}

/// The number in a rotated file's name.
fn rotated_seq(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Every file of the trail whose current file is `current`, in chain order:
/// the rotated ones by their number, then `current` if it exists.
pub fn trail_files(current: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = current.parent().unwrap_or(Path::new("."));
    let mut rotated: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(seq) = entry.file_name().to_str().and_then(rotated_seq) {
            rotated.push((seq, entry.path()));
        }
    }
    rotated.sort();
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if current.exists() {
        files.push(current.to_owned());
    }
    Ok(files)
}

/// Renames the full trail file `held` (at `path`, first line `first_seq`)
/// to its rotated name and opens a new one at `path`: the new file and its
/// identity. A rotated file is never replaced, and when the new file cannot
/// be opened the full one gets its name back, so the trail still holds its
/// path and can try again.
pub(super) fn rotate(
    path: &Path,
    held: &File,
    first_seq: u64,
) -> std::io::Result<(File, (u64, u64))> {
    held.sync_data()?;
    let rotated = rotated_path(path, first_seq);
    if rotated.exists() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} exists already", rotated.display()),
        ));
    }
    std::fs::rename(path, &rotated)?;
    let opened = open_trail_file(path).and_then(|file| Ok((identity(&file.metadata()?), file)));
    let (id, file) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            if let Err(back) = std::fs::rename(&rotated, path) {
                tracing::error!(error = %back, "audit: cannot give the full trail file its name back");
            }
            return Err(e);
        }
    };
    // The renames' durability; the lines themselves are synced already.
    if let Err(e) = path
        .parent()
        .map_or(Ok(()), |dir| File::open(dir).and_then(|d| d.sync_all()))
    {
        tracing::warn!(error = %e, "audit: cannot sync the data dir after rotating the trail");
    }
    Ok((file, id))
}

/// One file of a trail as a reader may see it.
pub struct TrailFile {
    pub file: File,
    /// The number of its first line.
    pub first_seq: u64,
    /// How much of it to read: a batch's lines whose COMMIT is under way
    /// are past this, as they may yet be cut off.
    pub len: u64,
}

/// Opens every file of the trail whose current file is `current`, in chain
/// order; the current one's first line is `first_seq`, and `visible` bytes of
/// it are committed. Called under the trail's lock, so no rotation or
/// append moves anything between the listing and the opens.
pub fn view(current: &Path, first_seq: u64, visible: u64) -> std::io::Result<Vec<TrailFile>> {
    let mut view = Vec::new();
    for path in trail_files(current)? {
        let file = File::open(&path)?;
        let (first_seq, len) = if path == current {
            (first_seq, visible)
        } else {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            (rotated_seq(name).unwrap_or(1), file.metadata()?.len())
        };
        view.push(TrailFile {
            file,
            first_seq,
            len,
        });
    }
    Ok(view)
}

/// Opens (creating, mode 0600) a trail file for appending and reading.
pub fn open_trail_file(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// The number of the first line of `file` (read from its start), if it is
/// a keyed line.
pub fn first_seq(file: &mut File) -> std::io::Result<Option<u64>> {
    file.seek(SeekFrom::Start(0))?;
    let mut start = vec![0; 4096];
    let mut filled = 0;
    while filled < start.len() {
        match file.read(&mut start[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    let text = String::from_utf8_lossy(&start[..filled]);
    let line = text.split('\n').next().unwrap_or("");
    Ok(crate::store::chain::leading_seq(line))
}

/// The head of the newest rotated file of the trail, for a start whose
/// `audit.log` is new (a crash between a rotation's rename and the new
/// file): the chain goes on from there.
pub fn rotated_head(current: &Path) -> std::io::Result<Option<ChainHead>> {
    let files = trail_files(current)?;
    let Some(last) = files.iter().rev().find(|p| p.as_path() != current) else {
        return Ok(None);
    };
    last_line_head(last)
}

/// The number and MAC of the last line of the trail file at `path`, when
/// it is a keyed one.
pub fn last_line_head(path: &Path) -> std::io::Result<Option<ChainHead>> {
    let text = std::fs::read(path)?;
    let line = text
        .strip_suffix(b"\n")
        .unwrap_or(&text)
        .rsplit(|&b| b == b'\n')
        .next()
        .unwrap_or(&[]);
    let text = String::from_utf8_lossy(line);
    Ok(v2_fields(&text).map(|(seq, mac)| ChainHead {
        seq,
        hash: mac.to_owned(),
    }))
}

/// The device and inode of a file: what `replaced` compares.
#[cfg(unix)]
pub(super) fn identity(metadata: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

/// The length of the file's whole lines and the head of its chain; a
/// partial last line is cut off.
pub(super) fn whole_lines(file: &mut File) -> std::io::Result<(u64, ChainHead)> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok((0, ChainHead::genesis()));
    }
    // Read back far enough to hold the last line (lines are short).
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let whole = match tail.iter().rposition(|&b| b == b'\n') {
        Some(at) => at + 1,
        None if start == 0 => 0,
        None => tail.len(),
    };
    let whole_len = start + whole as u64;
    if whole_len < len {
        file.set_len(whole_len)?;
    }
    let text = &tail[..whole];
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    if whole_len == 0 {
        return Ok((0, ChainHead::genesis()));
    }
    let last = text.rsplit(|&b| b == b'\n').next().unwrap_or(text);
    // Only a v1 last line needs the count, read once at the first start
    // after the upgrade.
    let mut count = || -> std::io::Result<u64> {
        file.seek(SeekFrom::Start(0))?;
        let mut lines = 0;
        let mut buffer = vec![0; 64 * 1024];
        let mut left = whole_len;
        while left > 0 {
            let n = file.read(&mut buffer[..left.min(64 * 1024) as usize])?;
            if n == 0 {
                break;
            }
            lines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            left -= n as u64;
        }
        Ok(lines)
    };
    let mut counted = Ok(0);
    let head = ChainHead::after(last, || {
        counted = count();
        *counted.as_ref().unwrap_or(&0)
    });
    counted?;
    Ok((whole_len, head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_sort_in_chain_order_and_parse_back() {
        let current = Path::new("/d/audit.log");
        let a = rotated_path(current, 9);
        let b = rotated_path(current, 10);
        assert!(a < b);
        assert_eq!(
            rotated_seq(a.file_name().unwrap().to_str().unwrap()),
            Some(9)
        );
        assert_eq!(rotated_seq("audit-12.log"), None);
        assert_eq!(rotated_seq("audit.log"), None);
    }
}
