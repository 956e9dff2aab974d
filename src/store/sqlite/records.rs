//! The SQL of the records beside secrets (`store::records`): one table,
//! `records (kind, id, value, revision)`, whatever the kind.

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::records::{Kind, Record};
use crate::store::StoreError;

pub(super) fn get(c: &Connection, kind: Kind, id: &str) -> rusqlite::Result<Option<Record>> {
    c.prepare_cached("SELECT value, revision FROM records WHERE kind = ?1 AND id = ?2")?
        .query_row(params![kind.name(), id], |r| {
            Ok(Record {
                id: id.to_owned(),
                value: r.get(0)?,
                revision: r.get::<_, i64>(1)? as u64,
            })
        })
        .optional()
}

/// Records of `kind` whose id starts with `prefix`, in id order: a range
/// of the primary key, from the prefix to the last text that starts with it.
pub(super) fn scan(c: &Connection, kind: Kind, prefix: &str) -> rusqlite::Result<Vec<Record>> {
    // No valid UTF-8 text after the prefix sorts above U+10FFFF's bytes.
    let end = format!("{prefix}\u{10FFFF}");
    c.prepare_cached(
        "SELECT id, value, revision FROM records
         WHERE kind = ?1 AND id >= ?2 AND id < ?3 AND substr(id, 1, length(?2)) = ?2
         ORDER BY id",
    )?
    .query_map(params![kind.name(), prefix, end], |r| {
        Ok(Record {
            id: r.get(0)?,
            value: r.get(1)?,
            revision: r.get::<_, i64>(2)? as u64,
        })
    })?
    .collect()
}

/// One compare-and-set (inside the writer's transaction): the new revision
/// (0 once removed, for `value` `None`), or `VersionMismatch` when the
/// record's revision is not `expected` (0: no record), which the writer
/// undoes without its line.
pub(super) fn put(
    c: &Connection,
    kind: Kind,
    id: &str,
    expected: u64,
    value: Option<&[u8]>,
) -> Result<u64, StoreError> {
    let sql = |e: rusqlite::Error| StoreError::Unavailable(e.to_string());
    let stored = get(c, kind, id).map_err(sql)?.map(|r| r.revision);
    let Some(value) = value else {
        if stored.is_none() || stored != Some(expected) {
            return Err(StoreError::VersionMismatch);
        }
        c.prepare_cached("DELETE FROM records WHERE kind = ?1 AND id = ?2")
            .and_then(|mut s| s.execute(params![kind.name(), id]))
            .map_err(sql)?;
        return Ok(0);
    };
    match stored {
        None if expected == 0 => {
            let revision = first_revision();
            c.prepare_cached(
                "INSERT INTO records (kind, id, value, revision) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![kind.name(), id, value, revision as i64]))
            .map_err(sql)?;
            Ok(revision)
        }
        Some(revision) if revision == expected => {
            c.prepare_cached(
                "UPDATE records SET value = ?3, revision = ?4 WHERE kind = ?1 AND id = ?2",
            )
            .and_then(|mut s| s.execute(params![kind.name(), id, value, (revision + 1) as i64]))
            .map_err(sql)?;
            Ok(revision + 1)
        }
        _ => Err(StoreError::VersionMismatch),
    }
}

/// A new record's first revision: from the clock (microsecond-sized steps
/// of a millisecond clock, and a counter), so a record removed and made
/// again never takes back a revision a reader may still hold (a
/// compare-and-set against it must fail, as on nats, whose revisions are
/// stream sequences).
fn first_revision() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ms = u64::try_from(crate::clock::now_ms()).unwrap_or(0);
    ms * 1000 + COUNTER.fetch_add(1, Ordering::Relaxed) % 1000 + 1
}

/// A meta value the engine keeps for itself (the chain head, the event
/// window's mark, the readiness probe), written whatever it held.
pub(super) fn set_meta(c: &Connection, name: &str, value: &[u8]) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO records (kind, id, value, revision) VALUES ('meta', ?1, ?2, 1)
         ON CONFLICT (kind, id) DO UPDATE SET value = excluded.value, revision = revision + 1",
    )?
    .execute(params![name, value])
    .map(|_| ())
}

pub(super) fn meta(c: &Connection, name: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    Ok(get(c, Kind::Meta, name)?.map(|r| r.value))
}
