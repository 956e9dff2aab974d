//! The change stream's events in the `events` table: written by each change
//! in its own unit of work, read back for a watcher resuming after an id,
//! and pruned to the window.

use rusqlite::{params, Connection};

use crate::store::events::{action_from, Draft, Event, EventWindow, PRUNED_THROUGH};
use crate::types::TenantId;

/// Records `draft` of `tenant`; returns it numbered.
pub(super) fn insert(c: &Connection, tenant: &TenantId, draft: Draft) -> rusqlite::Result<Event> {
    c.prepare_cached(
        "INSERT INTO events (tenant, key, version, action, at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        tenant.as_str(),
        draft.key,
        draft.version as i64,
        draft.action,
        draft.at
    ])?;
    Ok(draft.numbered(c.last_insert_rowid() as u64, tenant.clone()))
}

fn meta_u64(c: &Connection, name: &str) -> rusqlite::Result<u64> {
    let text = super::records::meta(c, name)?;
    Ok(text
        .and_then(|t| String::from_utf8(t).ok()?.parse().ok())
        .unwrap_or(0))
}

/// The newest id given (0 before the first): the newest row is never
/// pruned, so it is the table's largest.
fn last_id(c: &Connection) -> rusqlite::Result<u64> {
    let last: Option<i64> = c.query_row("SELECT max(id) FROM events", [], |r| r.get(0))?;
    Ok(last.unwrap_or(0).max(0) as u64)
}

/// Up to `limit` of `tenant`'s events under `prefix` after id `after`, in
/// order; `None` when events after it were pruned, or `after` is an id this
/// store never gave.
pub(super) fn after(
    c: &Connection,
    tenant: &TenantId,
    prefix: &str,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Option<Vec<Event>>> {
    // One snapshot: a prune between the window check and the read would
    // otherwise skip events without a 410.
    let snapshot = c.unchecked_transaction()?;
    if after < meta_u64(c, PRUNED_THROUGH)? || after > last_id(c)? {
        return Ok(None);
    }
    let events = page(c, tenant, prefix, after, limit)?;
    snapshot.commit()?;
    Ok(Some(events))
}

fn page(
    c: &Connection,
    tenant: &TenantId,
    prefix: &str,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Vec<Event>> {
    let upper = format!("{prefix}~");
    // A walk of the ids after `after` (the window is at most
    // `--events-keep` rows), keeping the tenant's under the prefix.
    c.prepare_cached(
        "SELECT id, key, version, action, at FROM events
         WHERE id > ?2 AND tenant = ?1 AND key >= ?3 AND key < ?4 ORDER BY id LIMIT ?5",
    )?
    .query_map(
        params![tenant.as_str(), after as i64, prefix, upper, limit as i64],
        |r| {
            let action: String = r.get(3)?;
            Ok(Event {
                id: r.get::<_, i64>(0)? as u64,
                tenant: tenant.clone(),
                key: r.get(1)?,
                version: r.get::<_, i64>(2)? as u64,
                action: action_from(&action).unwrap_or("put"),
                at: r.get(4)?,
            })
        },
    )?
    .collect()
}

/// After a forced load: the events before it describe other data, so a
/// watcher resuming from any of them, the newest included, must re-list
/// (410). The newest row stays, so ids go on after it; no resume reads it.
pub(super) fn forget_all(c: &Connection) -> rusqlite::Result<()> {
    let last = last_id(c)?;
    c.execute("DELETE FROM events WHERE id < ?1", [last as i64])?;
    super::records::set_meta(c, PRUNED_THROUGH, (last + 1).to_string().as_bytes())
}

/// Drops events beyond the window, always keeping the newest (whose id the
/// next one follows), and records how far it dropped.
pub(super) fn prune(c: &Connection, window: EventWindow, now: i64) -> rusqlite::Result<()> {
    let last = last_id(c)?;
    let by_count = last.saturating_sub(window.keep);
    let by_age: Option<i64> = c.query_row(
        "SELECT max(id) FROM events WHERE at < ?1",
        [now - window.max_age_ms],
        |r| r.get(0),
    )?;
    let through = by_count
        .max(by_age.unwrap_or(0).max(0) as u64)
        .min(last.saturating_sub(1));
    if through <= meta_u64(c, PRUNED_THROUGH)? {
        return Ok(());
    }
    c.execute("DELETE FROM events WHERE id <= ?1", [through as i64])?;
    super::records::set_meta(c, PRUNED_THROUGH, through.to_string().as_bytes())
}
