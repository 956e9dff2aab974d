//! The SQL of everything but secrets: API-key records, wrapped data keys
//! and the `meta` values.

use rusqlite::{params, Connection, OptionalExtension};

use crate::clock::now_ms;
use crate::store::model::{ApiKeyRecord, WrappedDek};
use crate::types::TenantId;

const APIKEY_COLUMNS: &str =
    "id, tenant, name, scopes, hash, created_at, expires_at, revoked_at, last_used_at";

fn apikey_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    let bad = |column, what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            what.to_owned().into(),
        )
    };
    let tenant: String = row.get(1)?;
    let hash: Vec<u8> = row.get(4)?;
    let scopes: String = row.get(3)?;
    Ok(ApiKeyRecord {
        id: row.get(0)?,
        tenant: TenantId::parse(&tenant).map_err(|_| bad(1, "bad tenant"))?,
        name: row.get(2)?,
        scopes: scopes.split_whitespace().map(str::to_owned).collect(),
        hash: hash
            .as_slice()
            .try_into()
            .map_err(|_| bad(4, "api key hash is not 32 bytes"))?,
        created_at: row.get(5)?,
        expires_at: row.get(6)?,
        revoked_at: row.get(7)?,
        last_used_at: row.get(8)?,
    })
}

/// Every record, for a backup.
pub(super) fn all(c: &Connection) -> rusqlite::Result<Vec<ApiKeyRecord>> {
    c.prepare(&format!("SELECT {APIKEY_COLUMNS} FROM apikeys ORDER BY id"))?
        .query_map([], apikey_from_row)?
        .collect()
}

pub(super) fn insert(c: &Connection, r: &ApiKeyRecord) -> rusqlite::Result<()> {
    c.execute(
        &format!(
            "INSERT INTO apikeys ({APIKEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        ),
        params![
            r.id,
            r.tenant.as_str(),
            r.name,
            r.scopes.join(" "),
            r.hash.as_slice(),
            r.created_at,
            r.expires_at,
            r.revoked_at,
            r.last_used_at
        ],
    )
    .map(|_| ())
}

/// Rewrites the mutable fields of a stored record.
pub(super) fn update(c: &Connection, r: &ApiKeyRecord) -> rusqlite::Result<()> {
    c.prepare_cached("UPDATE apikeys SET revoked_at = ?2, last_used_at = ?3 WHERE id = ?1")?
        .execute(params![r.id, r.revoked_at, r.last_used_at])
        .map(|_| ())
}

pub(super) fn get(c: &Connection, id: &str) -> rusqlite::Result<Option<ApiKeyRecord>> {
    c.prepare_cached(&format!(
        "SELECT {APIKEY_COLUMNS} FROM apikeys WHERE id = ?1"
    ))?
    .query_row(params![id], apikey_from_row)
    .optional()
}

pub(super) fn list(c: &Connection, tenant: &str) -> rusqlite::Result<Vec<ApiKeyRecord>> {
    c.prepare_cached(&format!(
        "SELECT {APIKEY_COLUMNS} FROM apikeys WHERE tenant = ?1 AND revoked_at IS NULL ORDER BY created_at, id"
    ))?
    .query_map(params![tenant], apikey_from_row)?
    .collect()
}

pub(super) fn any(c: &Connection) -> rusqlite::Result<bool> {
    c.query_row("SELECT EXISTS (SELECT 1 FROM apikeys)", [], |r| r.get(0))
}

pub(super) fn deks(c: &Connection, tenant: &str) -> rusqlite::Result<Vec<WrappedDek>> {
    c.prepare_cached("SELECT id, wrapped FROM deks WHERE tenant = ?1 ORDER BY id")?
        .query_map(params![tenant], |r| {
            Ok(WrappedDek {
                id: r.get(0)?,
                wrapped: r.get(1)?,
            })
        })?
        .collect()
}

/// Inserts a data key unless one with its id exists; true when inserted.
pub(super) fn add_dek(c: &Connection, tenant: &str, dek: &WrappedDek) -> rusqlite::Result<bool> {
    c.execute(
        "INSERT OR IGNORE INTO deks (tenant, id, wrapped, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![tenant, dek.id, dek.wrapped, now_ms()],
    )
    .map(|n| n == 1)
}

pub(super) fn meta(c: &Connection, name: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    c.query_row(
        "SELECT value FROM meta WHERE name = ?1",
        params![name],
        |r| r.get(0),
    )
    .optional()
}

pub(super) fn meta_insert(c: &Connection, name: &str, value: &[u8]) -> rusqlite::Result<()> {
    c.execute(
        "INSERT OR IGNORE INTO meta (name, value) VALUES (?1, ?2)",
        params![name, value],
    )
    .map(|_| ())
}
