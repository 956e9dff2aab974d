//! Retention of an embedded trail's rotated files (`--audit-keep-files`):
//! beyond the newest N, the oldest rotated files are removed, but only
//! those whose every line the store's recorded head covers, and only after
//! a chained `system.audit_prune` line has named the pruned prefix (its
//! last number and MAC). `audit verify` finds that line and checks the rest
//! from there, so a pruned prefix is told from lines an intruder removed.
//! Ship the rotated files elsewhere before they are pruned.

use std::path::{Path, PathBuf};

use crate::store::sqlite::trail_files;
use crate::store::{Store, Trail};

/// The note of the line recording that lines `1..=through` were pruned,
/// the last of them with MAC `last_mac`: `verify` looks for exactly this.
pub fn note(through: u64, last_mac: &str) -> String {
    format!("pruned lines 1 to {through}, the last with mac {last_mac}")
}

/// What one pass removed.
#[derive(Debug, PartialEq, Eq)]
pub struct Pruned {
    pub files: usize,
    pub through: u64,
}

/// Removes the oldest rotated files of the trail at `current` (its
/// `audit.log`) beyond the newest `keep`, once a line records it.
pub async fn prune(
    store: &Store,
    trail: &Trail,
    current: &Path,
    keep: usize,
) -> Result<Option<Pruned>, String> {
    let failed = |e: std::io::Error| format!("cannot list the audit files: {e}");
    let rotated: Vec<PathBuf> = trail_files(current)
        .map_err(failed)?
        .into_iter()
        .filter(|p| p.as_path() != current)
        .collect();
    if rotated.len() <= keep {
        return Ok(None);
    }
    let victims = &rotated[..rotated.len() - keep];
    let last = victims.last().expect("at least one");
    let Some(head) = crate::store::sqlite::last_line_head(last).map_err(failed)? else {
        return Err(format!(
            "{} ends in no numbered line: not pruned",
            last.display()
        ));
    };
    // Only what the store's recorded head vouches for.
    let recorded = store.audit_heads().await.map_err(|e| e.to_string())?;
    if recorded.get("").is_none_or(|r| r.seq < head.seq) {
        return Ok(None);
    }
    let line = crate::audit::AuditEntry {
        request_id: "prune".into(),
        principal: None,
        subject: Some("system".into()),
        action: "system.audit_prune",
        key: None,
        status: 200,
        client: None,
    }
    .render_with_note(&note(head.seq, &head.hash));
    trail.append(line).await.map_err(|e| e.to_string())?;
    for victim in victims {
        std::fs::remove_file(victim)
            .map_err(|e| format!("cannot remove {}: {e}", victim.display()))?;
    }
    if let Some(dir) = current.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(Some(Pruned {
        files: victims.len(),
        through: head.seq,
    }))
}

/// Prunes every `every` for as long as the process lives.
pub fn start(
    store: Store,
    trail: Trail,
    current: PathBuf,
    keep: usize,
    every: std::time::Duration,
) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match prune(&store, &trail, &current, keep).await {
                Ok(None) => {}
                Ok(Some(pruned)) => tracing::info!(
                    files = pruned.files,
                    through = pruned.through,
                    "audit: pruned rotated trail files"
                ),
                Err(e) => tracing::warn!(error = %e, "audit: cannot prune rotated trail files"),
            }
        }
    });
}
