//! The expiry sweep: marks each lapsed key soft deleted, with one
//! `secrets.expire` audit line (subject `system`) written in the same unit
//! of work. Reads never wait for it (a lapsed version is not served from the
//! instant it lapses); the sweep makes the lapse visible to the audit trail
//! and the change stream, at start and every `--expiry-sweep-interval`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::audit::AuditEntry;
use crate::auth::Principal;
use crate::store::{Change, Precondition, Store, StoreError};
use crate::types::SecretKey;

/// Keys marked per store query.
const BATCH: usize = 256;

/// A line's request id: `expire-`, a random prefix per process (gateways
/// sweep the same store) and a counter, so no two lines share one.
fn sweep_id() -> String {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| hex::encode(*crate::crypto::seal::random_bytes::<4>()));
    format!(
        "expire-{prefix}-{:x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Marks every key that lapsed by `now`; returns how many it marked. A key
/// rewritten meanwhile (a later expiry, or none), or marked by another
/// gateway first, is left alone.
pub async fn sweep(store: &Store, now: i64) -> Result<u64, StoreError> {
    let mut marked = 0;
    loop {
        let lapsed = store.lapsed(now, BATCH).await?;
        let mut progress = false;
        for l in &lapsed {
            let Ok(key) = SecretKey::parse(&l.key) else {
                continue;
            };
            let line = AuditEntry {
                request_id: sweep_id().into(),
                principal: Some(Arc::new(Principal {
                    tenant: l.tenant.clone(),
                    subject: "system".into(),
                    scopes: Vec::new(),
                    expires_at: None,
                    share_keys: Default::default(),
                    token: None,
                })),
                subject: None,
                action: "secrets.expire",
                key: Some(l.key.clone()),
                status: 200,
                client: None,
            }
            .render();
            let change = Change::Expire { at: l.expires_at };
            match store
                .change(&l.tenant, &key, change, Precondition::None, Some(line))
                .await
            {
                Ok(()) => {
                    marked += 1;
                    progress = true;
                    crate::counters::SECRETS_EXPIRED.add();
                }
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        if lapsed.len() < BATCH || !progress {
            return Ok(marked);
        }
    }
}

/// Sweeps now (keys that lapsed while the server was down) and then every
/// `every`, for as long as the process lives; a failed sweep is logged and
/// tried again at the next tick.
pub fn start(store: Store, every: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = crate::clock::now_ms();
            match sweep(&store, now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "expired secrets marked deleted"),
                Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
            }
            // Expired login tokens go on the same beat, so the store holds
            // at most a sweep interval's worth of them past their expiry.
            match store.tokens_sweep(now).await {
                Ok(0) => {}
                Ok(n) => {
                    crate::counters::TOKENS_SWEPT.add_n(n as u64);
                    tracing::info!(removed = n, "expired login tokens removed")
                }
                Err(e) => tracing::warn!(error = %e, "cannot remove expired login tokens"),
            }
            if let Err(e) = store.login_states_sweep(now).await {
                tracing::warn!(error = %e, "cannot remove stale logins in progress");
            }
            // The change stream's window is kept on the same beat.
            if let Err(e) = store.prune_events(now).await {
                tracing::warn!(error = %e, "cannot prune the change stream's events");
            }
        }
    });
}
