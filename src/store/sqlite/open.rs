//! Opening the engine: the data dir's lock, the database file created
//! owner-only, the writer thread and the read connections.

use std::path::Path;
use std::sync::Arc;

use super::reads::Readers;
use super::schema;
use super::writer::{Batches, Shared, Writer};
use super::{FileTrail, SqliteBackend};
use crate::store::cache::ReadCache;
use crate::store::events::{EventWindow, Hub};
use crate::store::StoreError;

/// Locks the data dir itself (its directory, which cannot be removed while
/// it holds the database), refusing when another server holds it.
pub fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    crate::fsutil::create_private_dir(dir)
        .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
    match crate::fsutil::lock_exclusive(dir) {
        Ok(Some(file)) => Ok(file),
        Ok(None) => Err(StoreError::Unavailable(format!(
            "data dir {} is in use by another strongroom server",
            dir.display()
        ))),
        Err(e) => Err(StoreError::Unavailable(format!(
            "cannot lock {}: {e}",
            dir.display()
        ))),
    }
}

impl SqliteBackend {
    /// Opens (creating if needed) the database at `path`; with `trail`,
    /// changes write their lines to it.
    pub fn open(
        path: &Path,
        max_versions: u32,
        trail: Option<Arc<FileTrail>>,
    ) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            crate::fsutil::create_private_dir(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        // Owner-only: created empty with mode 0600 before SQLite opens it
        // (an empty file is a new database), and SQLite gives the -wal and
        // -shm files the same mode as the database.
        if !path.exists() {
            crate::fsutil::write_private_file(path, b"").map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", path.display()))
            })?;
        }
        let conn = schema::open_writer(path)?;
        let readers = Arc::new(Readers::open(path)?);
        let batches = Arc::new(Batches::default());
        let cache = Arc::new(ReadCache::default());
        let events = Arc::new(Hub::default());
        let writer = Writer::start(
            conn,
            Shared {
                cache: cache.clone(),
                readers: readers.clone(),
                batches: batches.clone(),
                trail,
                events: events.clone(),
            },
        )?;
        Ok(SqliteBackend {
            readers,
            batches,
            writer,
            max_versions: u64::from(max_versions.max(1)),
            cache,
            events,
            window: EventWindow::default(),
            dir: path.parent().unwrap_or(Path::new(".")).to_owned(),
            path: path.to_owned(),
            _lock: None,
        })
    }

    /// The engine, keeping events for resuming within `window`.
    pub fn with_event_window(self, window: EventWindow) -> Self {
        SqliteBackend { window, ..self }
    }

    /// The engine, holding `lock` for as long as it lives.
    pub fn holding(self, lock: std::fs::File) -> Self {
        SqliteBackend {
            _lock: Some(lock),
            ..self
        }
    }
}
