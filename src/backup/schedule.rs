//! Backups on a schedule (`serve --backup-dir D --backup-interval 1h
//! --backup-keep 24`): each is written under a temporary name, fsync'd and
//! renamed, so a file named `.backup` is always whole; beyond `keep` the
//! oldest are removed. When a backup cannot be written and older ones are
//! there (a full backup disk), the oldest are removed early, one at a
//! time, and it is tried again, never removing the newest; a backup that
//! still fails is logged and counted, the server goes on serving, and
//! `/readyz`'s detail says so until one succeeds.

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::crypto::MasterKeys;
use crate::store::Store;

/// Free bytes below which a failed backup's disk counts as full.
const FULL_BELOW: u64 = 1024 * 1024;

/// What the last scheduled backup had to say, for `/readyz`: a failure, or
/// older backups removed early to make room; `None` after a plain success.
static NOTE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The scheduled backups' warning for `/readyz`, if any.
pub fn warning() -> Option<String> {
    NOTE.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn note(text: Option<String>) {
    *NOTE.lock().unwrap_or_else(|p| p.into_inner()) = text;
}

/// Where, how often, and how many to keep.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub dir: PathBuf,
    pub every: Duration,
    pub keep: usize,
}

/// Parses `90s`, `5m`, `1h`, `1d` or bare seconds.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not an interval like 90s, 5m, 1h or 1d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "'{text}' is not an interval like 90s, 5m, 1h or 1d"
            ))
        }
    };
    match n.checked_mul(unit) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("'{text}' must be at least one second")),
    }
}

/// What a scheduled backup reads: the store and the master keys of the
/// moment (a rekey may replace them); `None` while the server starts.
pub type Source = Box<dyn Fn() -> Option<(Store, Arc<MasterKeys>)> + Send + Sync>;

/// Runs `schedule` for as long as the process lives, once `source` has a
/// store to back up.
pub fn start(schedule: Schedule, source: Source) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(schedule.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some((store, keks)) = source() else {
                continue;
            };
            match take(&store, &keks, &schedule).await {
                Ok((path, 0)) => {
                    crate::counters::BACKUPS_WRITTEN.add();
                    note(None);
                    tracing::info!(path = %path.display(), "backup written");
                }
                Ok((path, early)) => {
                    crate::counters::BACKUPS_WRITTEN.add();
                    let said = format!(
                        "scheduled backups: {early} older backups removed early to make room"
                    );
                    tracing::warn!(path = %path.display(), "{said}");
                    note(Some(said));
                }
                Err(e) => {
                    crate::counters::BACKUPS_FAILED.add();
                    // /readyz needs no credential: the cause is in the log.
                    note(Some("scheduled backup failed (the log says why)".into()));
                    tracing::error!(dir = %schedule.dir.display(), error = %e, "backup failed");
                }
            }
        }
    });
}

/// One scheduled backup: written, synced, renamed, then the old pruned;
/// with how many older ones were removed early to make room.
async fn take(
    store: &Store,
    keks: &MasterKeys,
    schedule: &Schedule,
) -> Result<(PathBuf, usize), String> {
    let dir = &schedule.dir;
    crate::fsutil::create_private_dir(dir).map_err(|e| format!("cannot create the dir: {e}"))?;
    let stamp: String = crate::clock::rfc3339(crate::clock::now_ms())
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let name = format!("strongroom-{stamp}.backup");
    let temp = dir.join(format!(".{name}.tmp"));
    let mut early = 0;
    loop {
        let written = write_synced(store, keks, &temp).await;
        let Err(e) = written else { break };
        // Only a full backup disk makes room (a store that cannot be read
        // must not cost a backup): told while the partial file still fills it.
        let full = crate::fsutil::free_bytes(dir).is_some_and(|free| free < FULL_BELOW);
        let _ = std::fs::remove_file(&temp);
        // Room by age: the oldest backup goes, never the newest.
        if !full || early >= schedule.keep || !remove_oldest(dir).unwrap_or(false) {
            return Err(e);
        }
        early += 1;
    }
    let path = dir.join(&name);
    std::fs::rename(&temp, &path)
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|e| format!("cannot rename the backup into place: {e}"))?;
    prune(dir, schedule.keep).map_err(|e| format!("cannot remove old backups: {e}"))?;
    Ok((path, early))
}

/// Removes the oldest `strongroom-*.backup` file when there are at least
/// two; whether it did.
fn remove_oldest(dir: &Path) -> std::io::Result<bool> {
    let mut names = backup_names(dir)?;
    if names.len() < 2 {
        return Ok(false);
    }
    names.sort();
    std::fs::remove_file(dir.join(&names[0]))?;
    Ok(true)
}

fn backup_names(dir: &Path) -> std::io::Result<Vec<String>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("strongroom-") && n.ends_with(".backup"))
        .collect())
}

async fn write_synced(store: &Store, keks: &MasterKeys, temp: &Path) -> Result<(), String> {
    let file = crate::fsutil::create_private_file(temp)
        .map_err(|e| format!("cannot create {}: {e}", temp.display()))?;
    let mut out = BufWriter::new(file);
    super::write(store, keks, store.engine_name(), &mut out, &|_| {}).await?;
    let file = out.into_inner().map_err(|e| e.to_string())?;
    file.sync_all()
        .map_err(|e| format!("cannot sync the backup: {e}"))
}

/// Removes the oldest `strongroom-*.backup` files beyond `keep` (their
/// names sort by time).
fn prune(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut names = backup_names(dir)?;
    names.sort();
    let excess = names.len().saturating_sub(keep);
    for name in &names[..excess] {
        std::fs::remove_file(dir.join(name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_take_units_and_refuse_nonsense() {
        assert_eq!(parse_interval("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_interval("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_interval("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_interval("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "0", "1w", "h", "-1s", "99999999999999999999d"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pruning_keeps_the_newest_and_touches_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "strongroom-20260101T000000.000Z.backup",
            "strongroom-20260103T000000.000Z.backup",
            "strongroom-20260102T000000.000Z.backup",
            ".strongroom-20260104T000000.000Z.backup.tmp",
            "notes.txt",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        prune(dir.path(), 2).unwrap();
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".strongroom-20260104T000000.000Z.backup.tmp",
                "notes.txt",
                "strongroom-20260102T000000.000Z.backup",
                "strongroom-20260103T000000.000Z.backup"
            ]
        );
    }
}
