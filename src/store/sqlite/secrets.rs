//! The SQL of secrets: reading a key's head, its versions and listings, and
//! writing the `Effect` the model decided. Every change keeps `secrets` (one
//! row per key) and `versions` (one row per retained version) in step, so
//! the newest `versions` row is always the current version and its
//! `deleted` mirrors the key's.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::store::model::{Effect, Head, ListedSecret, StoredVersion, VersionInfo};

fn stored(r: &Row<'_>) -> rusqlite::Result<StoredVersion> {
    Ok(StoredVersion {
        version: r.get::<_, i64>(0)? as u64,
        created_at: r.get(1)?,
        sealed: r.get(2)?,
    })
}

pub(super) fn head(c: &Connection, tenant: &str, key: &str) -> rusqlite::Result<Option<Head>> {
    c.prepare_cached(
        "SELECT current_version, deleted, created_at, updated_at FROM secrets WHERE tenant = ?1 AND key = ?2",
    )?
    .query_row(params![tenant, key], |r| {
        Ok(Head {
            version: r.get::<_, i64>(0)? as u64,
            deleted: r.get(1)?,
            key_created_at: r.get(2)?,
            updated_at: r.get(3)?,
        })
    })
    .optional()
}

/// The live current version: the key's newest `versions` row, unless it is
/// deleted (one B-tree descent instead of one per table).
pub(super) fn current(
    c: &Connection,
    tenant: &str,
    key: &str,
) -> rusqlite::Result<Option<StoredVersion>> {
    c.prepare_cached(
        "SELECT version, created_at, sealed, deleted FROM versions
         WHERE tenant = ?1 AND key = ?2 ORDER BY version DESC LIMIT 1",
    )?
    .query_row(params![tenant, key], |r| {
        (!r.get::<_, bool>(3)?).then(|| stored(r)).transpose()
    })
    .optional()
    .map(Option::flatten)
}

/// A retained version that is not deleted.
pub(super) fn version(
    c: &Connection,
    tenant: &str,
    key: &str,
    version: u64,
) -> rusqlite::Result<Option<StoredVersion>> {
    c.prepare_cached(
        "SELECT version, created_at, sealed FROM versions
         WHERE tenant = ?1 AND key = ?2 AND version = ?3 AND deleted = 0",
    )?
    .query_row(
        params![tenant, key, version.min(i64::MAX as u64) as i64],
        stored,
    )
    .optional()
}

pub(super) fn versions(
    c: &Connection,
    tenant: &str,
    key: &str,
) -> rusqlite::Result<Vec<VersionInfo>> {
    c.prepare_cached(
        "SELECT version, created_at, deleted, substr(sealed, 1, 5) FROM versions
         WHERE tenant = ?1 AND key = ?2 ORDER BY version",
    )?
    .query_map(params![tenant, key], |r| {
        Ok(VersionInfo {
            version: r.get::<_, i64>(0)? as u64,
            created_at: r.get(1)?,
            deleted: r.get(2)?,
            dek_id: crate::store::model::sealed_dek_id(&r.get::<_, Vec<u8>>(3)?),
        })
    })?
    .collect()
}

/// Live keys under `prefix` strictly after `after`, in byte order.
pub(super) fn list(
    c: &Connection,
    tenant: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<ListedSecret>> {
    // Every key byte sorts below '~', so [prefix, prefix + "~") holds
    // exactly the keys that start with prefix.
    let upper = format!("{prefix}~");
    let lower = after.filter(|a| *a >= prefix).unwrap_or(prefix);
    let sql = if after.is_none_or(|a| a < prefix) {
        "SELECT key, current_version, created_at, updated_at FROM secrets
         WHERE tenant = ?1 AND key >= ?2 AND key < ?3 AND deleted = 0 ORDER BY key LIMIT ?4"
    } else {
        "SELECT key, current_version, created_at, updated_at FROM secrets
         WHERE tenant = ?1 AND key > ?2 AND key < ?3 AND deleted = 0 ORDER BY key LIMIT ?4"
    };
    c.prepare_cached(sql)?
        .query_map(params![tenant, lower, upper, limit as i64], |r| {
            Ok(ListedSecret {
                key: r.get(0)?,
                version: r.get::<_, i64>(1)? as u64,
                created_at: r.get(2)?,
                updated_at: r.get(3)?,
            })
        })?
        .collect()
}

/// Writes what the model decided; `sealed` is the value of a put.
pub(super) fn apply(
    c: &Connection,
    tenant: &str,
    key: &str,
    effect: &Effect,
    sealed: &[u8],
    now: i64,
) -> rusqlite::Result<()> {
    match *effect {
        Effect::Put {
            version,
            key_created_at,
            prune_through,
        } => {
            c.prepare_cached(
                "INSERT INTO versions (tenant, key, version, created_at, deleted, sealed) VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            )?
            .execute(params![tenant, key, version as i64, now, sealed])?;
            c.prepare_cached(
                "INSERT INTO secrets (tenant, key, current_version, created_at, updated_at, deleted)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0)
                 ON CONFLICT (tenant, key) DO UPDATE
                 SET current_version = excluded.current_version, updated_at = excluded.updated_at, deleted = 0",
            )?
            .execute(params![tenant, key, version as i64, key_created_at, now])?;
            if let Some(through) = prune_through {
                c.prepare_cached(
                    "DELETE FROM versions WHERE tenant = ?1 AND key = ?2 AND version <= ?3",
                )?
                .execute(params![tenant, key, through as i64])?;
            }
        }
        Effect::SetDeleted { version, deleted } => {
            c.prepare_cached(
                "UPDATE secrets SET deleted = ?3, updated_at = ?4 WHERE tenant = ?1 AND key = ?2",
            )?
            .execute(params![tenant, key, deleted, now])?;
            c.prepare_cached(
                "UPDATE versions SET deleted = ?4 WHERE tenant = ?1 AND key = ?2 AND version = ?3",
            )?
            .execute(params![tenant, key, version as i64, deleted])?;
        }
        Effect::Destroy => {
            c.execute(
                "DELETE FROM secrets WHERE tenant = ?1 AND key = ?2",
                params![tenant, key],
            )?;
            c.execute(
                "DELETE FROM versions WHERE tenant = ?1 AND key = ?2",
                params![tenant, key],
            )?;
        }
    }
    Ok(())
}
