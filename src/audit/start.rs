//! Starting a server's trail: chain under the store's audit key, and refuse
//! to begin over a head the store recorded but the trail no longer reaches
//! (a file emptied, replaced or cut short; a stream deleted, or lines cut
//! off some gateway's chain), unless the operator says so; then this
//! process's chain begins with a line that names the lost heads.

use crate::store::chain::{AuditKey, ChainHead};
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

/// The recorded heads in words, for a backup: the one head's encoding, or
/// each gateway's.
pub async fn recorded_summary(store: &Store) -> Result<Option<String>, StoreError> {
    let heads = store.audit_heads().await?;
    Ok(match heads.len() {
        0 => None,
        1 if heads.contains_key("") => heads.get("").map(ChainHead::encode),
        _ => Some(
            heads
                .iter()
                .map(|(chain, head)| format!("{chain}:{}", head.encode()))
                .collect::<Vec<_>>()
                .join(","),
        ),
    })
}

fn unavailable(e: impl std::fmt::Display) -> StartError {
    StartError::Store(StoreError::Unavailable(e.to_string()))
}

/// Starts `trail` under `key`, checking every chain still reaches the head
/// the store recorded for it.
pub async fn start(
    trail: &Trail,
    store: &Store,
    key: AuditKey,
    restart_chain: bool,
) -> Result<(), StartError> {
    let head = trail.start(key).await.map_err(unavailable)?;
    let mut lost = Vec::new();
    for (chain, recorded) in store.audit_heads().await? {
        let found = if chain == trail.chain() {
            head.clone()
        } else {
            trail.chain_tail(&chain).await.map_err(unavailable)?
        };
        if recorded.seq > found.seq || (recorded.seq == found.seq && recorded.hash != found.hash) {
            lost.push((chain, recorded, found));
        }
    }
    let Some((chain, recorded, found)) = lost.first() else {
        return Ok(());
    };
    if !restart_chain {
        let which = if chain.is_empty() {
            String::new()
        } else {
            format!(" (the chain of gateway {chain})")
        };
        return Err(StartError::Refused(format!(
            "the audit trail{which} ends at line {} but the store recorded line {}: its end or its file was lost. \
             Restore the file, or start with --audit-restart-chain to begin a new chain whose first line names the old head",
            found.seq, recorded.seq
        )));
    }
    let note = lost
        .iter()
        .map(|(chain, recorded, _)| match chain.as_str() {
            "" => format!("previous head {}", recorded.encode()),
            gateway => format!("previous head of gateway {gateway} {}", recorded.encode()),
        })
        .collect::<Vec<_>>()
        .join("; ");
    let line = AuditEntry {
        request_id: "start".into(),
        principal: None,
        subject: Some("system".into()),
        action: "system.audit_restart",
        key: None,
        status: 200,
        client: None,
    }
    .render_with_note(&note);
    trail.append(line).await.map_err(unavailable)?;
    let others: Vec<String> = lost
        .iter()
        .map(|(chain, _, _)| chain.clone())
        .filter(|chain| chain != trail.chain())
        .collect();
    trail.retire(&others).await.map_err(unavailable)?;
    tracing::warn!(
        previous_seq = recorded.seq,
        "audit: began a new chain over a lost one (--audit-restart-chain)"
    );
    Ok(())
}
