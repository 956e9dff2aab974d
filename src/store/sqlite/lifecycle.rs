//! The SQL of reseal and of backup and restore: compare-and-set updates of
//! sealed versions; a dump in one read transaction; a load in one job of
//! the writer (so one transaction, undone whole when the backup fails its
//! check).

use rusqlite::{params, Connection};

use crate::store::dump::{is_local_meta, not_empty, Dumped, DumpedVersion, LoadCounts, SecretDump};
use crate::store::model::{Head, SealedVersion};
use crate::store::records::{self, Kind};
use crate::store::StoreError;
use crate::types::TenantId;

pub(super) fn sealed_versions(
    c: &Connection,
    tenant: &str,
    after: Option<(String, u64)>,
    limit: usize,
) -> rusqlite::Result<Vec<SealedVersion>> {
    let (key, version) = after.unwrap_or_default();
    c.prepare_cached(
        "SELECT key, version, sealed FROM versions WHERE tenant = ?1 AND (key, version) > (?2, ?3)
             AND deleted <> 2
         ORDER BY key, version LIMIT ?4",
    )?
    .query_map(params![tenant, key, version as i64, limit as i64], |r| {
        Ok(SealedVersion {
            key: r.get(0)?,
            version: r.get::<_, i64>(1)? as u64,
            sealed: r.get(2)?,
        })
    })?
    .collect()
}

pub(super) fn replace_sealed(
    c: &Connection,
    tenant: &str,
    key: &str,
    version: u64,
    old: &[u8],
    new: &[u8],
) -> rusqlite::Result<bool> {
    c.execute(
        "UPDATE versions SET sealed = ?5
         WHERE tenant = ?1 AND key = ?2 AND version = ?3 AND sealed = ?4",
        params![tenant, key, version as i64, old, new],
    )
    .map(|n| n == 1)
}

fn bad_tenant(column: usize) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        "bad tenant".into(),
    )
}

/// Hands every record to `sink` inside one read transaction of `c`, so
/// the records are one instant of the store.
pub(super) fn dump(
    c: &Connection,
    sink: &mut dyn FnMut(Dumped) -> Result<(), String>,
) -> Result<(), StoreError> {
    let sql = |e: rusqlite::Error| StoreError::Unavailable(e.to_string());
    c.execute_batch("BEGIN DEFERRED").map_err(sql)?;
    let dumped = dump_in(c, sink);
    let _ = c.execute_batch("COMMIT");
    dumped
}

fn dump_in(
    c: &Connection,
    sink: &mut dyn FnMut(Dumped) -> Result<(), String>,
) -> Result<(), StoreError> {
    let sql = |e: rusqlite::Error| StoreError::Unavailable(e.to_string());
    let mut emit = |record| sink(record).map_err(StoreError::Refused);
    // Meta values, data keys and API keys, as the model reads them.
    for kind in Kind::ALL {
        for r in super::records::scan(c, kind, "").map_err(sql)? {
            if let Some(record) = records::to_dumped(kind, &r.id, r.value)? {
                emit(record)?;
            }
        }
    }
    let mut versions = c
        .prepare(
            "SELECT s.tenant, s.key, s.current_version, s.created_at, s.updated_at, s.deleted,
                    v.version, v.created_at, v.deleted, v.sealed, s.expires_at, v.expires_at,
                    s.settings, v.deleted_at, v.kv
             FROM secrets s LEFT JOIN versions v ON v.tenant = s.tenant AND v.key = s.key
             ORDER BY s.tenant, s.key, v.version",
        )
        .map_err(sql)?;
    let mut rows = versions.query([]).map_err(sql)?;
    let mut current: Option<SecretDump> = None;
    while let Some(r) = rows.next().map_err(sql)? {
        let (tenant, key): (String, String) = (r.get(0).map_err(sql)?, r.get(1).map_err(sql)?);
        let same = current
            .as_ref()
            .is_some_and(|s| s.tenant.as_str() == tenant && s.key == key);
        if !same {
            if let Some(done) = current.take() {
                emit(Dumped::Secret(done))?;
            }
            current = Some(SecretDump {
                tenant: TenantId::parse(&tenant).map_err(|_| sql(bad_tenant(0)))?,
                key,
                head: Head {
                    version: r.get::<_, i64>(2).map_err(sql)? as u64,
                    key_created_at: r.get(3).map_err(sql)?,
                    updated_at: r.get(4).map_err(sql)?,
                    deleted: r.get::<_, i64>(5).map_err(sql)? != 0,
                    destroyed: r.get::<_, i64>(5).map_err(sql)? == 2,
                    expires_at: r.get(10).map_err(sql)?,
                    settings: super::secrets::settings_from(r.get(12).map_err(sql)?)
                        .map_err(sql)?,
                },
                versions: Vec::new(),
            });
        }
        let secret = current.as_mut().expect("set above");
        // A key whose settings came before any value has no version row.
        let Some(version) = r.get::<_, Option<i64>>(6).map_err(sql)? else {
            continue;
        };
        let version = version as u64;
        let code: i64 = r.get(8).map_err(sql)?;
        // The head's flag wins for the current version (as in metadata).
        let deleted = if version == secret.head.version {
            secret.head.deleted
        } else {
            code != 0
        };
        secret.versions.push(DumpedVersion {
            version,
            created_at: r.get(7).map_err(sql)?,
            deleted,
            sealed: r.get(9).map_err(sql)?,
            expires_at: r.get(11).map_err(sql)?,
            deleted_at: r.get(13).map_err(sql)?,
            destroyed: code == 2,
            kv: r.get(14).map_err(sql)?,
        });
    }
    if let Some(done) = current {
        emit(Dumped::Secret(done))?;
    }
    Ok(())
}

/// Writes `records` (inside the writer's transaction: an error undoes it
/// all). A store holding secrets, DEKs or API keys is refused unless
/// `force`, which first removes them and every meta value but the trail's.
pub(super) fn load(
    c: &Connection,
    records: impl Iterator<Item = Result<Dumped, String>>,
    force: bool,
) -> Result<LoadCounts, StoreError> {
    let sql = |e: rusqlite::Error| StoreError::Unavailable(e.to_string());
    let holds: bool = c
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM secrets)
                 OR EXISTS (SELECT 1 FROM records WHERE kind <> 'meta')",
            [],
            |r| r.get(0),
        )
        .map_err(sql)?;
    if holds && !force {
        return Err(not_empty());
    }
    if force {
        c.execute_batch(
            "DELETE FROM secrets; DELETE FROM versions;
             DELETE FROM records WHERE kind <> 'meta';",
        )
        .map_err(sql)?;
        super::events::forget_all(c).map_err(sql)?;
        let mut drop = c
            .prepare("DELETE FROM records WHERE kind = 'meta' AND id = ?1")
            .map_err(sql)?;
        let names: Vec<String> = c
            .prepare("SELECT id FROM records WHERE kind = 'meta'")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(sql)?;
        for name in names.iter().filter(|n| !is_local_meta(n)) {
            drop.execute([name]).map_err(sql)?;
        }
    }
    let mut counts = LoadCounts::default();
    for record in records {
        let record = record.map_err(StoreError::Refused)?;
        counts.count(&record);
        let written = match (&record, records::from_dumped(&record)) {
            (Dumped::Secret(s), _) => insert_secret(c, s),
            // A meta value replaces the target's own; a data key or API
            // key written twice is refused.
            (_, Some((Kind::Meta, name, value))) => super::records::set_meta(c, &name, &value),
            (_, Some((kind, id, value))) => c
                .execute(
                    "INSERT INTO records (kind, id, value, revision) VALUES (?1, ?2, ?3, 1)",
                    params![kind.name(), id, value],
                )
                .map(|_| ()),
            (_, None) => Ok(()),
        };
        written.map_err(|e| StoreError::Refused(format!("cannot load a record: {e}")))?;
    }
    Ok(counts)
}

/// `deleted` as the engine stores it: 0 live, 1 deleted, 2 destroyed.
fn code(deleted: bool, destroyed: bool) -> i64 {
    if destroyed {
        2
    } else {
        i64::from(deleted)
    }
}

fn insert_secret(c: &Connection, s: &SecretDump) -> rusqlite::Result<()> {
    let tenant = s.tenant.as_str();
    c.prepare_cached(
        "INSERT INTO secrets (tenant, key, current_version, created_at, updated_at, deleted, expires_at, settings)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        tenant,
        s.key,
        s.head.version as i64,
        s.head.key_created_at,
        s.head.updated_at,
        code(s.head.deleted, s.head.destroyed),
        s.head.expires_at,
        super::secrets::settings_blob(&s.head.settings),
    ])?;
    let mut insert = c.prepare_cached(
        "INSERT INTO versions (tenant, key, version, created_at, deleted, sealed, expires_at, deleted_at, kv)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for v in &s.versions {
        insert.execute(params![
            tenant,
            s.key,
            v.version as i64,
            v.created_at,
            code(v.deleted, v.destroyed),
            v.sealed,
            v.expires_at,
            v.deleted_at,
            v.kv,
        ])?;
    }
    Ok(())
}
