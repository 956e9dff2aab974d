//! Starting a server's trail: chain under the store's audit key, and refuse
//! to begin a new chain over a head the store recorded but the trail no
//! longer reaches (its file was emptied, replaced or cut short), unless the
//! operator says so; then the new chain's first line names the old head.

use crate::store::chain::{AuditKey, ChainHead};
use crate::store::trail::AUDIT_HEAD;
use crate::store::{Store, StoreError, Trail};

use super::AuditEntry;

/// Why the trail could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Refused(String),
}

/// The head the store recorded, if any.
pub async fn recorded_head(store: &Store) -> Result<Option<ChainHead>, StoreError> {
    let stored = store.meta_get(AUDIT_HEAD).await?;
    Ok(stored.and_then(|v| ChainHead::decode(std::str::from_utf8(&v).ok()?)))
}

/// Starts `trail` under `key`, checking it still reaches the recorded head.
pub async fn start(
    trail: &Trail,
    store: &Store,
    key: AuditKey,
    restart_chain: bool,
) -> Result<(), StartError> {
    let head = trail
        .start(key)
        .await
        .map_err(|e| StartError::Store(StoreError::Unavailable(e.to_string())))?;
    let Some(recorded) = recorded_head(store).await? else {
        return Ok(());
    };
    let lost = recorded.seq > head.seq || (recorded.seq == head.seq && recorded.hash != head.hash);
    if !lost {
        return Ok(());
    }
    if !restart_chain {
        return Err(StartError::Refused(format!(
            "the audit trail ends at line {} but the store recorded line {}: its end or its file was lost. \
             Restore the file, or start with --audit-restart-chain to begin a new chain whose first line names the old head",
            head.seq, recorded.seq
        )));
    }
    let line = AuditEntry {
        request_id: "start".into(),
        principal: None,
        subject: Some("system".into()),
        action: "system.audit_restart",
        key: None,
        status: 200,
        client: None,
    }
    .render_with_note(&format!("previous head {}", recorded.encode()));
    trail.restarted();
    trail
        .append(line)
        .await
        .map_err(|e| StartError::Store(StoreError::Unavailable(e.to_string())))?;
    tracing::warn!(
        previous_seq = recorded.seq,
        "audit: began a new chain over a lost one (--audit-restart-chain)"
    );
    Ok(())
}
