//! The SQL of secrets: reading a key's head, its versions and listings, and
//! writing the `Effect` the model decided. Every change keeps `secrets` (one
//! row per key) and `versions` (one row per retained version) in step, so
//! the newest `versions` row is always the current version and its
//! `deleted` mirrors the key's.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::store::model::{
    Effect, Head, Lapsed, ListFilter, ListedSecret, StoredVersion, VersionInfo,
};
use crate::types::TenantId;

/// A version from `SELECT version, created_at, sealed, expires_at`.
fn stored(r: &Row<'_>) -> rusqlite::Result<StoredVersion> {
    Ok(StoredVersion {
        version: r.get::<_, i64>(0)? as u64,
        created_at: r.get(1)?,
        sealed: r.get(2)?,
        expires_at: r.get(3)?,
    })
}

pub(super) fn head(c: &Connection, tenant: &str, key: &str) -> rusqlite::Result<Option<Head>> {
    c.prepare_cached(
        "SELECT current_version, deleted, created_at, updated_at, expires_at FROM secrets WHERE tenant = ?1 AND key = ?2",
    )?
    .query_row(params![tenant, key], |r| {
        Ok(Head {
            version: r.get::<_, i64>(0)? as u64,
            deleted: r.get(1)?,
            key_created_at: r.get(2)?,
            updated_at: r.get(3)?,
            expires_at: r.get(4)?,
        })
    })
    .optional()
}

/// The current version: the key's newest `versions` row, unless it is
/// deleted (one B-tree descent instead of one per table).
pub(super) fn current(
    c: &Connection,
    tenant: &str,
    key: &str,
) -> rusqlite::Result<Option<StoredVersion>> {
    c.prepare_cached(
        "SELECT version, created_at, sealed, expires_at, deleted FROM versions
         WHERE tenant = ?1 AND key = ?2 ORDER BY version DESC LIMIT 1",
    )?
    .query_row(params![tenant, key], |r| {
        (!r.get::<_, bool>(4)?).then(|| stored(r)).transpose()
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
        "SELECT version, created_at, sealed, expires_at FROM versions
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

/// Live keys under `prefix` strictly after `after` that `filter` admits,
/// in byte order.
pub(super) fn list(
    c: &Connection,
    tenant: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    filter: ListFilter,
) -> rusqlite::Result<Vec<ListedSecret>> {
    // Every key byte sorts below '~', so [prefix, prefix + "~") holds
    // exactly the keys that start with prefix.
    let upper = format!("{prefix}~");
    let lower = after.filter(|a| *a >= prefix).unwrap_or(prefix);
    // `filter.admits`, in SQL.
    let sql = if after.is_none_or(|a| a < prefix) {
        "SELECT key, current_version, created_at, updated_at, expires_at FROM secrets
         WHERE tenant = ?1 AND key >= ?2 AND key < ?3 AND deleted = 0
           AND (expires_at IS NULL OR expires_at > ?5) AND (?6 IS NULL OR expires_at < ?6)
         ORDER BY key LIMIT ?4"
    } else {
        "SELECT key, current_version, created_at, updated_at, expires_at FROM secrets
         WHERE tenant = ?1 AND key > ?2 AND key < ?3 AND deleted = 0
           AND (expires_at IS NULL OR expires_at > ?5) AND (?6 IS NULL OR expires_at < ?6)
         ORDER BY key LIMIT ?4"
    };
    let args = params![
        tenant,
        lower,
        upper,
        limit as i64,
        filter.now,
        filter.expiring_before
    ];
    c.prepare_cached(sql)?
        .query_map(args, |r| {
            Ok(ListedSecret {
                key: r.get(0)?,
                version: r.get::<_, i64>(1)? as u64,
                created_at: r.get(2)?,
                updated_at: r.get(3)?,
                expires_at: r.get(4)?,
            })
        })?
        .collect()
}

/// Keys not soft deleted whose current version lapsed by `now`, soonest
/// first (through the partial index of keys that can lapse).
pub(super) fn lapsed(c: &Connection, now: i64, limit: usize) -> rusqlite::Result<Vec<Lapsed>> {
    c.prepare_cached(
        "SELECT tenant, key, expires_at FROM secrets
         WHERE expires_at IS NOT NULL AND expires_at <= ?1 AND deleted = 0
         ORDER BY expires_at LIMIT ?2",
    )?
    .query_map(params![now, limit as i64], |r| {
        let tenant: String = r.get(0)?;
        Ok((tenant, r.get(1)?, r.get(2)?))
    })?
    .filter_map(|row| match row {
        Ok((tenant, key, expires_at)) => TenantId::parse(&tenant).ok().map(|tenant| {
            Ok(Lapsed {
                tenant,
                key,
                expires_at,
            })
        }),
        Err(e) => Some(Err(e)),
    })
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
            expires_at,
        } => {
            c.prepare_cached(
                "INSERT INTO versions (tenant, key, version, created_at, deleted, sealed, expires_at) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
            )?
            .execute(params![tenant, key, version as i64, now, sealed, expires_at])?;
            c.prepare_cached(
                "INSERT INTO secrets (tenant, key, current_version, created_at, updated_at, deleted, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)
                 ON CONFLICT (tenant, key) DO UPDATE
                 SET current_version = excluded.current_version, updated_at = excluded.updated_at, deleted = 0,
                     expires_at = excluded.expires_at",
            )?
            .execute(params![tenant, key, version as i64, key_created_at, now, expires_at])?;
            if let Some(through) = prune_through {
                c.prepare_cached(
                    "DELETE FROM versions WHERE tenant = ?1 AND key = ?2 AND version <= ?3",
                )?
                .execute(params![tenant, key, through as i64])?;
            }
        }
        // Brought back, a key keeps no expiry; soft deleted, it keeps the
        // one it lapsed at, for metadata to show.
        Effect::SetDeleted { version, deleted } => {
            c.prepare_cached(
                "UPDATE secrets SET deleted = ?3, updated_at = ?4,
                     expires_at = CASE WHEN ?3 THEN expires_at END
                 WHERE tenant = ?1 AND key = ?2",
            )?
            .execute(params![tenant, key, deleted, now])?;
            c.prepare_cached(
                "UPDATE versions SET deleted = ?4, expires_at = CASE WHEN ?4 THEN expires_at END
                 WHERE tenant = ?1 AND key = ?2 AND version = ?3",
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
