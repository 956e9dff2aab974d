//! The SQL of secrets: reading a key's head, its versions and listings, and
//! writing the `Effect` the model decided. Every change keeps `secrets` (one
//! row per key) and `versions` (one row per retained version) in step, so
//! the newest `versions` row is always the current version and its
//! `deleted` mirrors the key's: 0 live, 1 deleted, 2 destroyed (its value
//! gone). A key's settings are JSON in `secrets.settings`.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::store::model::{
    Effect, Head, KeySettings, Lapsed, ListFilter, ListedSecret, Mark, StoredVersion, VersionInfo,
};
use crate::types::TenantId;

/// A version from `SELECT version, created_at, sealed, expires_at, kv`.
fn stored(r: &Row<'_>) -> rusqlite::Result<StoredVersion> {
    Ok(StoredVersion {
        version: r.get::<_, i64>(0)? as u64,
        created_at: r.get(1)?,
        sealed: r.get(2)?,
        expires_at: r.get(3)?,
        kv: r.get(4)?,
        settings: None,
    })
}

/// `deleted` as stored: 0 live, 1 deleted, 2 destroyed.
const DESTROYED: i64 = 2;

fn deleted_code(mark: &Mark) -> i64 {
    match (mark.destroyed, mark.deleted_at) {
        (true, _) => DESTROYED,
        (false, Some(_)) => 1,
        (false, None) => 0,
    }
}

/// A key's settings column: NULL for none.
pub(super) fn settings_from(blob: Option<Vec<u8>>) -> rusqlite::Result<KeySettings> {
    blob.map_or(Ok(KeySettings::default()), |b| {
        serde_json::from_slice(&b).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, e.into())
        })
    })
}

pub(super) fn settings_blob(settings: &KeySettings) -> Option<Vec<u8>> {
    (!settings.is_default()).then(|| serde_json::to_vec(settings).expect("settings encode"))
}

pub(super) fn head(c: &Connection, tenant: &str, key: &str) -> rusqlite::Result<Option<Head>> {
    c.prepare_cached(
        "SELECT current_version, deleted, created_at, updated_at, expires_at, settings FROM secrets WHERE tenant = ?1 AND key = ?2",
    )?
    .query_row(params![tenant, key], |r| {
        let deleted: i64 = r.get(1)?;
        Ok(Head {
            version: r.get::<_, i64>(0)? as u64,
            deleted: deleted != 0,
            destroyed: deleted == DESTROYED,
            key_created_at: r.get(2)?,
            updated_at: r.get(3)?,
            expires_at: r.get(4)?,
            settings: settings_from(r.get(5)?)?,
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
        "SELECT version, created_at, sealed, expires_at, kv, deleted FROM versions
         WHERE tenant = ?1 AND key = ?2 ORDER BY version DESC LIMIT 1",
    )?
    .query_row(params![tenant, key], |r| {
        (!r.get::<_, bool>(5)?).then(|| stored(r)).transpose()
    })
    .optional()
    .map(Option::flatten)
}

/// `current`, with the key's settings (one descent more, into `secrets`).
pub(super) fn current_with_settings(
    c: &Connection,
    tenant: &str,
    key: &str,
) -> rusqlite::Result<Option<StoredVersion>> {
    c.prepare_cached(
        "SELECT v.version, v.created_at, v.sealed, v.expires_at, v.kv, v.deleted, s.settings
         FROM versions v JOIN secrets s ON s.tenant = v.tenant AND s.key = v.key
         WHERE v.tenant = ?1 AND v.key = ?2 ORDER BY v.version DESC LIMIT 1",
    )?
    .query_row(params![tenant, key], |r| {
        if r.get::<_, bool>(5)? {
            return Ok(None);
        }
        let mut found = stored(r)?;
        found.settings = Some(std::sync::Arc::new(settings_from(r.get(6)?)?));
        Ok(Some(found))
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
        "SELECT version, created_at, sealed, expires_at, kv FROM versions
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
        "SELECT version, created_at, deleted, substr(sealed, 1, 5), deleted_at, expires_at, kv
         FROM versions WHERE tenant = ?1 AND key = ?2 ORDER BY version",
    )?
    .query_map(params![tenant, key], |r| {
        let deleted: i64 = r.get(2)?;
        Ok(VersionInfo {
            version: r.get::<_, i64>(0)? as u64,
            created_at: r.get(1)?,
            deleted: deleted != 0,
            // A destroyed version's empty value reads as NULL here.
            dek_id: crate::store::model::sealed_dek_id(
                &r.get::<_, Option<Vec<u8>>>(3)?.unwrap_or_default(),
            ),
            deleted_at: r.get(4)?,
            destroyed: deleted == DESTROYED,
            expires_at: r.get(5)?,
            kv: r.get(6)?,
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
    let sql = match (after.is_none_or(|a| a < prefix), filter.deleted) {
        (true, false) => {
            "SELECT key, current_version, created_at, updated_at, expires_at FROM secrets
         WHERE tenant = ?1 AND key >= ?2 AND key < ?3 AND deleted = 0
           AND (expires_at IS NULL OR expires_at > ?5) AND (?6 IS NULL OR expires_at < ?6)
         ORDER BY key LIMIT ?4"
        }
        (false, false) => {
            "SELECT key, current_version, created_at, updated_at, expires_at FROM secrets
         WHERE tenant = ?1 AND key > ?2 AND key < ?3 AND deleted = 0
           AND (expires_at IS NULL OR expires_at > ?5) AND (?6 IS NULL OR expires_at < ?6)
         ORDER BY key LIMIT ?4"
        }
        // Every key with metadata, deleted or not (Vault's LIST).
        (true, true) => {
            "SELECT key, current_version, created_at, updated_at, expires_at FROM secrets
         WHERE tenant = ?1 AND key >= ?2 AND key < ?3 AND ?5 = ?5 AND ?6 IS ?6
         ORDER BY key LIMIT ?4"
        }
        (false, true) => {
            "SELECT key, current_version, created_at, updated_at, expires_at FROM secrets
         WHERE tenant = ?1 AND key > ?2 AND key < ?3 AND ?5 = ?5 AND ?6 IS ?6
         ORDER BY key LIMIT ?4"
        }
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
            kv,
            // The previous version's row keeps its own state.
            previous: _,
        } => {
            c.prepare_cached(
                "INSERT INTO versions (tenant, key, version, created_at, deleted, sealed, expires_at, kv) VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7)",
            )?
            .execute(params![tenant, key, version as i64, now, sealed, expires_at, kv])?;
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
                "UPDATE versions SET deleted = ?4, expires_at = CASE WHEN ?4 THEN expires_at END,
                     deleted_at = CASE WHEN ?4 THEN ?5 END
                 WHERE tenant = ?1 AND key = ?2 AND version = ?3",
            )?
            .execute(params![tenant, key, version as i64, deleted, now])?;
        }
        Effect::Marks { ref marks, current } => {
            // A destroyed version's bytes are overwritten (secure_delete).
            let mut update = c.prepare_cached(
                "UPDATE versions SET deleted = ?4, deleted_at = ?5,
                     expires_at = CASE WHEN ?4 = 0 THEN NULL ELSE expires_at END,
                     sealed = CASE WHEN ?4 = 2 THEN X'' ELSE sealed END
                 WHERE tenant = ?1 AND key = ?2 AND version = ?3",
            )?;
            let newest = match current {
                Some(_) => head(c, tenant, key)?.map(|h| h.version),
                None => None,
            };
            let mut head_code = None;
            for (version, mark) in marks {
                let code = deleted_code(mark);
                update.execute(params![tenant, key, *version as i64, code, mark.deleted_at])?;
                if newest == Some(*version) {
                    head_code = Some(code);
                }
            }
            if let Some(code) = head_code {
                c.prepare_cached(
                    "UPDATE secrets SET deleted = ?3, updated_at = ?4,
                         expires_at = CASE WHEN ?3 = 0 THEN NULL ELSE expires_at END
                     WHERE tenant = ?1 AND key = ?2",
                )?
                .execute(params![tenant, key, code, now])?;
            }
        }
        Effect::Settings {
            ref settings,
            create,
        } => {
            let blob = settings_blob(settings);
            if create {
                c.prepare_cached(
                    "INSERT INTO secrets (tenant, key, current_version, created_at, updated_at, deleted, settings)
                     VALUES (?1, ?2, 0, ?3, ?3, 1, ?4)",
                )?
                .execute(params![tenant, key, now, blob])?;
            } else {
                c.prepare_cached(
                    "UPDATE secrets SET settings = ?3, updated_at = ?4 WHERE tenant = ?1 AND key = ?2",
                )?
                .execute(params![tenant, key, blob, now])?;
            }
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
