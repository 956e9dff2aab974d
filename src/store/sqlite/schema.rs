//! The embedded engine's schema, its migration, and how every connection is
//! opened.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::unavailable;
use crate::store::StoreError;

/// Current schema, kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 2;
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
    let has_meta: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta')",
            [],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    if !has_meta {
        return Ok(false);
    }
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM meta WHERE name = 'master_key_check')",
        [],
        |r| r.get(0),
    )
    .map_err(unavailable)
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
    let steps = if version == 1 { TO_2 } else { SCHEMA };
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {steps} {INDEXES} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    ))
    .map_err(unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

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
