//! The embedded engine's schema, its migration, and how every connection is
//! opened.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::unavailable;
use crate::store::model::ApiKeyRecord;
use crate::store::records;
use crate::store::StoreError;
use crate::types::TenantId;

/// Current schema, kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 4;
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS secrets (
    tenant          TEXT NOT NULL,
    key             TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    deleted         INTEGER NOT NULL DEFAULT 0,
    expires_at      INTEGER,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS versions (
    tenant     TEXT NOT NULL,
    key        TEXT NOT NULL,
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0,
    sealed     BLOB NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (tenant, key, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deks (
    tenant     TEXT NOT NULL,
    id         INTEGER NOT NULL,
    wrapped    BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS apikeys (
    id           TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    name         TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    hash         BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS apikeys_by_tenant ON apikeys (tenant, created_at);
";

/// What schema 2 added to schema 1: per-version expiry (DESIGN §1).
const TO_2: &str = "
ALTER TABLE secrets ADD COLUMN expires_at INTEGER;
ALTER TABLE versions ADD COLUMN expires_at INTEGER;
";

/// What schema 4 added (Vault's KV v2 model, DESIGN §12): a key's settings
/// (JSON `KeySettings`, NULL: none), when each version was deleted, and
/// whether it is KV data. A destroyed version (and a key whose current
/// version is destroyed) has `deleted = 2` and no value.
const TO_4: &str = "
ALTER TABLE secrets ADD COLUMN settings BLOB;
ALTER TABLE versions ADD COLUMN deleted_at INTEGER;
ALTER TABLE versions ADD COLUMN kv INTEGER NOT NULL DEFAULT 0;
";

/// Tables and indexes of every schema from 2 on: the change stream's
/// events and the sweep's index of live keys that can lapse. An event is
/// one append to the rowid B-tree and nothing else (no AUTOINCREMENT, no
/// index: each cost a PUT about a tenth); ids never repeat because pruning
/// always keeps the newest (`events.rs`).
const INDEXES: &str = "
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY,
    tenant  TEXT NOT NULL,
    key     TEXT NOT NULL,
    version INTEGER NOT NULL,
    action  TEXT NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS secrets_lapsing ON secrets (expires_at)
    WHERE expires_at IS NOT NULL AND deleted = 0;
";

/// What schema 3 made of the `meta`, `deks` and `apikeys` tables: one table
/// of records, whatever their kind (`store::records`), which
/// `move_to_records` fills from them.
const RECORDS: &str = "
CREATE TABLE IF NOT EXISTS records (
    kind     TEXT NOT NULL,
    id       TEXT NOT NULL,
    value    BLOB NOT NULL,
    revision INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
";

pub(super) fn open_connection(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(unavailable)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(unavailable)?;
    conn.set_prepared_statement_cache_capacity(64);
    // The query-planner stability guarantee: a cached statement keeps its
    // plan when new values are bound. Without it, this build's STAT4 support
    // re-prepares (re-parses and re-plans) the statement on every bind.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(unavailable)?;
    // Memory-mapped reads skip a pread() per page and share the OS page
    // cache between connections; the page cache per connection stays modest.
    conn.execute_batch("PRAGMA mmap_size = 1073741824; PRAGMA cache_size = -16384;")
        .map_err(unavailable)?;
    Ok(conn)
}

/// Whether the database at `path` exists and records a master key's check
/// value: a store a master key was bound to. (`apikey create` before the
/// first `serve` makes a database that records none.)
pub fn bound_to_a_master_key(path: &Path) -> Result<bool, StoreError> {
    if !path.exists() {
        return Ok(false);
    }
    let conn = open_connection(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    // Schema 3 keeps it in `records`; a database not yet migrated, in `meta`.
    let query = if table_exists(&conn, "records").map_err(unavailable)? {
        "SELECT EXISTS (SELECT 1 FROM records WHERE kind = 'meta' AND id = 'master_key_check')"
    } else if table_exists(&conn, "meta").map_err(unavailable)? {
        "SELECT EXISTS (SELECT 1 FROM meta WHERE name = 'master_key_check')"
    } else {
        return Ok(false);
    };
    conn.query_row(query, [], |r| r.get(0)).map_err(unavailable)
}

/// Opens the write connection. WAL: readers never block the writer; FULL:
/// COMMIT fsyncs the WAL, so a committed transaction survives power loss.
/// secure_delete zeroes freed pages so destroyed versions leave no bytes
/// behind. The writer's page cache stays small (2 MB): every COMMIT that
/// followed a B-tree rebalance walks the whole cache (SQLite parks a page
/// under the lock-byte page number while it rebalances, and the end of the
/// transaction then truncates the cache above the file's size).
pub(super) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let conn = open_connection(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;
         PRAGMA cache_size = -2048;",
    )
    .map_err(unavailable)?;
    migrate(&conn)?;
    Ok(conn)
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(unavailable)?;
    if version == SCHEMA_VERSION {
        // Nothing to do, and nothing written: a start that goes on to refuse
        // (a wrong master key, say) must leave the file as it was.
        return Ok(());
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "database schema {version} is newer than this strongroom understands ({SCHEMA_VERSION})"
        )));
    }
    let steps = match version {
        0 => format!("{SCHEMA} {TO_4}"),
        1 => format!("{TO_2} {TO_4}"),
        _ => TO_4.to_owned(),
    };
    conn.execute_batch("BEGIN IMMEDIATE").map_err(unavailable)?;
    let migrated = conn
        .execute_batch(&format!("{steps} {INDEXES} {RECORDS}"))
        .and_then(|()| move_to_records(conn))
        .and_then(|()| conn.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}")));
    match migrated {
        Ok(()) => conn.execute_batch("COMMIT").map_err(unavailable),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(unavailable(e))
        }
    }
}

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1)",
        [name],
        |r| r.get(0),
    )
}

/// Moves the rows of schema 2's `meta`, `deks` and `apikeys` into
/// `records`, each in the model's encoding, and drops those tables.
fn move_to_records(conn: &Connection) -> rusqlite::Result<()> {
    if table_exists(conn, "meta")? {
        conn.execute_batch(
            "INSERT INTO records (kind, id, value, revision) SELECT 'meta', name, value, 1 FROM meta;
             DROP TABLE meta;",
        )?;
    }
    if table_exists(conn, "deks")? {
        conn.execute_batch(
            "INSERT INTO records (kind, id, value, revision)
                 SELECT 'dek', tenant || '/' || printf('%010d', id), wrapped, 1 FROM deks;
             DROP TABLE deks;",
        )?;
    }
    if table_exists(conn, "apikeys")? {
        let keys: Vec<ApiKeyRecord> = conn
            .prepare(
                "SELECT id, tenant, name, scopes, hash, created_at, expires_at, revoked_at,
                        last_used_at FROM apikeys",
            )?
            .query_map([], |row| {
                // A row that does not read stops the upgrade, naming it.
                let id: String = row.get(0)?;
                apikey_from_row(row).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Text,
                        format!("api key {id} cannot be moved to schema 3: {e}").into(),
                    )
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut insert = conn.prepare(
            "INSERT INTO records (kind, id, value, revision) VALUES ('apikey', ?1, ?2, 1)",
        )?;
        for key in keys {
            insert.execute(rusqlite::params![key.id, records::encode_apikey(&key)])?;
        }
        conn.execute_batch("DROP TABLE apikeys;")?;
    }
    Ok(())
}

/// A row of schema 2's `apikeys` table.
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
        policies: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database of schema 2 (meta, deks and apikeys tables) opens as
    /// schema 3 with every row a record in the model's encoding, and the
    /// old tables gone.
    #[test]
    fn a_schema_2_database_moves_its_meta_keys_and_api_keys_into_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strongroom.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(&format!(
            "{SCHEMA} {INDEXES} PRAGMA user_version = 2;
             INSERT INTO meta VALUES ('master_key_check', x'0102');
             INSERT INTO deks VALUES ('acme', 7, x'aabb', 5);
             INSERT INTO apikeys VALUES ('0123456789abcdef', 'acme', 'ci',
                 'secrets:read:app/ audit:read', zeroblob(32), 1, 2, NULL, 3);"
        ))
        .unwrap();
        drop(old);
        assert!(bound_to_a_master_key(&path).unwrap());
        let conn = open_writer(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        use crate::store::records::Kind;
        let get = |kind, id| {
            super::super::records::get(&conn, kind, id)
                .unwrap()
                .unwrap()
        };
        assert_eq!(get(Kind::Meta, "master_key_check").value, [1, 2]);
        let dek = get(Kind::Dek, "acme/0000000007");
        assert_eq!((dek.value, dek.revision), (vec![0xaa, 0xbb], 1));
        let key = get(Kind::ApiKey, "0123456789abcdef");
        let key = records::decode_apikey(&key.id, &key.value).unwrap();
        assert_eq!(key.tenant.as_str(), "acme");
        assert_eq!(key.scopes, ["secrets:read:app/", "audit:read"]);
        assert_eq!(
            (
                key.hash,
                key.created_at,
                key.expires_at,
                key.revoked_at,
                key.last_used_at
            ),
            ([0; 32], 1, Some(2), None, Some(3))
        );
        for table in ["meta", "deks", "apikeys"] {
            assert!(!table_exists(&conn, table).unwrap(), "{table}");
        }
        drop(conn);
        assert!(bound_to_a_master_key(&path).unwrap());
    }

    /// A database of schema 1 (before expiry) opens as schema 2 with its
    /// rows intact, and they read as never lapsing.
    #[test]
    fn a_schema_1_database_gains_expiry_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strongroom.db");
        let old = Connection::open(&path).unwrap();
        let schema_1 = SCHEMA
            .replace("    expires_at      INTEGER,\n", "")
            .replace("    expires_at INTEGER,\n", "");
        assert!(!schema_1.contains("expires_at      INTEGER"));
        old.execute_batch(&format!(
            "{schema_1} PRAGMA user_version = 1;
             INSERT INTO secrets VALUES ('t', 'k', 1, 5, 6, 0);
             INSERT INTO versions VALUES ('t', 'k', 1, 5, 0, x'01');"
        ))
        .unwrap();
        drop(old);
        let conn = open_writer(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let head = super::super::secrets::head(&conn, "t", "k")
            .unwrap()
            .unwrap();
        assert_eq!((head.version, head.expires_at), (1, None));
        let current = super::super::secrets::current(&conn, "t", "k")
            .unwrap()
            .unwrap();
        assert_eq!((current.sealed, current.expires_at), (vec![1], None));
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'secrets_lapsing'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 1);
    }
}
