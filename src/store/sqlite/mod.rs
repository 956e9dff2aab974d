//! The embedded engine: one SQLite file in WAL mode with `synchronous=FULL`,
//! its audit trail `audit.log` beside it, and a read cache of hot keys.
//!
//! - `open.rs`: the data dir's lock and opening the engine;
//! - `schema.rs`: tables, migration, how connections are opened;
//! - `writer.rs`: the writer thread and its group commit;
//! - `reads.rs`: the pool of read connections and their snapshots;
//! - `secrets.rs`, `apikeys.rs`: the SQL;
//! - `trail.rs`: the audit file; `files.rs`: reading it back and rotating it.

mod events;
mod files;
mod lifecycle;
mod open;
mod reads;
mod records;
mod schema;
mod secrets;
mod trail;
mod writer;

use std::sync::Arc;

use rusqlite::Connection;

use super::cache::ReadCache;
use super::dump::{LoadCounts, Records, Sink};
use super::engine::{Backend, Observed, SecretWrite, WriteError};
use super::events::{Draft, Event, EventWindow, Hub};
use super::lines::LineBody;
use super::model::{
    self, Change, Lapsed, ListFilter, ListedSecret, Refusal, SealedVersion, SecretMetadata,
    StoredVersion,
};
use super::records::{Kind, Record};
use super::StoreError;
use crate::clock::now_ms;
use crate::types::{SecretKey, TenantId};
pub use files::{last_line_head, trail_files, TrailFile};
pub use open::lock_data_dir;
use reads::Readers;
pub use schema::bound_to_a_master_key;
pub use trail::FileTrail;
use writer::{Batches, JobSpec, Writer};

fn unavailable(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match e.sqlite_error_code() {
        Some(DatabaseCorrupt | NotADatabase) => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Runs one statement from the connection's statement cache: the same few
/// transaction statements run for every job and read.
fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

pub struct SqliteBackend {
    readers: Arc<Readers>,
    batches: Arc<Batches>,
    writer: Writer,
    max_versions: u64,
    cache: Arc<ReadCache>,
    /// Where committed changes' events go live.
    events: Arc<Hub>,
    window: EventWindow,
    /// The directory holding the database.
    dir: std::path::PathBuf,
    /// The database file, for a backup's own read connection.
    path: std::path::PathBuf,
    /// The data dir's lock, held while a server serves it.
    _lock: Option<std::fs::File>,
}

impl SqliteBackend {
    fn read_secrets<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.readers.read_secrets(&self.batches, f)
    }

    /// A job that changes no secret and writes no line.
    fn plain() -> JobSpec {
        JobSpec {
            secret: None,
            line: None,
        }
    }
}

impl Backend for SqliteBackend {
    async fn close(&self) {
        self.writer.close().await;
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.readers
            .read(|c| c.query_row("SELECT 1", [], |_| Ok(())))
    }

    async fn ready(&self) -> Result<(), StoreError> {
        crate::fsutil::check_free_space(&self.dir).map_err(StoreError::Unavailable)?;
        self.writer
            .run(Self::plain(), |c| {
                let now = crate::clock::now_ms().to_string();
                records::set_meta(c, "ready_probe", now.as_bytes()).map_err(unavailable)
            })
            .await
    }

    async fn head(&self, tenant: &TenantId, key: &SecretKey) -> Result<Observed, StoreError> {
        let head = self.readers.read_heads(&self.batches, |c| {
            secrets::head(c, tenant.as_str(), key.as_str())
        })?;
        Ok(Observed {
            head,
            revision: 0,
            ..Default::default()
        })
    }

    async fn get(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        version: Option<u64>,
        _min_revision: Option<u64>,
        settings: bool,
    ) -> Result<Option<StoredVersion>, StoreError> {
        // Every change goes through this process: reads are always current.
        let (t, k) = (tenant.as_str(), key.as_str());
        if let Some(n) = version {
            return self.read_secrets(|c| secrets::version(c, t, k, n));
        }
        let epoch = match self.cache.get(t, k) {
            Ok(hit) if !settings || hit.settings.is_some() => return Ok(Some(hit)),
            Ok(_) => self.cache.epoch(),
            Err(epoch) => epoch,
        };
        let found = self.read_secrets(|c| match settings {
            true => secrets::current_with_settings(c, t, k),
            false => secrets::current(c, t, k),
        })?;
        if let Some(found) = &found {
            self.cache.fill(epoch, t, k, found);
        }
        Ok(found)
    }

    async fn write(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        write: SecretWrite,
    ) -> Result<Option<u64>, WriteError> {
        let tenant_id = tenant.clone();
        let (tenant, key) = (tenant.as_str().to_owned(), key.as_str().to_owned());
        let spec = JobSpec {
            secret: Some((tenant.clone(), key.clone())),
            line: write.line,
        };
        let (change, precondition, max_versions) =
            (write.change, write.precondition, self.max_versions);
        let hub = self.events.clone();
        self.writer
            .run(spec, move |c| {
                let head = secrets::head(c, &tenant, &key).map_err(unavailable)?;
                let now = now_ms();
                let retained = match &head {
                    Some(h) if change.needs_versions() => {
                        let versions = secrets::versions(c, &tenant, &key).map_err(unavailable)?;
                        SecretMetadata::from_parts(h, versions, now).versions
                    }
                    _ => Vec::new(),
                };
                let effect = match model::decide_in(
                    head.as_ref(),
                    &retained,
                    &change,
                    precondition,
                    max_versions,
                    now,
                ) {
                    Ok(effect) => effect,
                    Err(Refusal::Answer(e)) => return Err(WriteError::Failed(e)),
                    Err(Refusal::Stale) => {
                        return Err(WriteError::Stale(Box::new(Observed {
                            head,
                            revision: 0,
                            ..Default::default()
                        })))
                    }
                };
                let sealed = match &change {
                    Change::Put { sealed, .. } => sealed.as_slice(),
                    _ => &[],
                };
                secrets::apply(c, &tenant, &key, &effect, sealed, now).map_err(unavailable)?;
                let draft = Draft::of(&key, &change, &effect, head.as_ref(), now);
                hub.stage(events::insert(c, &tenant_id, draft).map_err(unavailable)?);
                Ok(())
            })
            .await
            .map(|()| None)
    }

    async fn metadata(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
    ) -> Result<Option<SecretMetadata>, StoreError> {
        let (t, k) = (tenant.as_str(), key.as_str());
        self.read_secrets(|c| {
            let Some(head) = secrets::head(c, t, k)? else {
                return Ok(None);
            };
            let versions = secrets::versions(c, t, k)?;
            Ok(Some(SecretMetadata::from_parts(&head, versions, now_ms())))
        })
    }

    async fn list(
        &self,
        tenant: &TenantId,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        filter: ListFilter,
    ) -> Result<Vec<ListedSecret>, StoreError> {
        self.read_secrets(|c| secrets::list(c, tenant.as_str(), prefix, after, limit, filter))
    }

    async fn lapsed(&self, now: i64, limit: usize) -> Result<Vec<Lapsed>, StoreError> {
        self.readers.read(|c| secrets::lapsed(c, now, limit))
    }

    fn hub(&self) -> &Hub {
        &self.events
    }

    async fn events_after(
        &self,
        tenant: &TenantId,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.readers
            .read(|c| events::after(c, tenant, prefix, after, limit))?
            .ok_or(StoreError::Gone)
    }

    async fn prune_events(&self, now: i64) -> Result<(), StoreError> {
        let window = self.window;
        self.writer
            .run(Self::plain(), move |c| {
                events::prune(c, window, now).map_err(unavailable)
            })
            .await
    }

    async fn record_get(&self, kind: Kind, id: &str) -> Result<Option<Record>, StoreError> {
        self.readers.read(|c| records::get(c, kind, id))
    }

    async fn record_scan(&self, kind: Kind, prefix: &str) -> Result<Vec<Record>, StoreError> {
        self.readers.read(|c| records::scan(c, kind, prefix))
    }

    async fn record_put(
        &self,
        kind: Kind,
        id: &str,
        expected: u64,
        value: Option<Vec<u8>>,
        line: Option<LineBody>,
    ) -> Result<u64, WriteError> {
        let id = id.to_owned();
        let spec = JobSpec { secret: None, line };
        let put = self
            .writer
            .run(spec, move |c| {
                records::put(c, kind, &id, expected, value.as_deref())
            })
            .await;
        match put {
            Ok(revision) => Ok(revision),
            // Another write came first; the writer undid this one and its
            // line.
            Err(StoreError::VersionMismatch) => Err(WriteError::Conflict),
            Err(e) => Err(WriteError::Failed(e)),
        }
    }

    async fn sealed_versions(
        &self,
        tenant: &TenantId,
        after: Option<(String, u64)>,
        limit: usize,
    ) -> Result<Vec<SealedVersion>, StoreError> {
        self.readers
            .read(|c| lifecycle::sealed_versions(c, tenant.as_str(), after, limit))
    }

    async fn replace_sealed(
        &self,
        tenant: &TenantId,
        key: &str,
        version: u64,
        old: &[u8],
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let spec = JobSpec {
            secret: Some((tenant.as_str().to_owned(), key.to_owned())),
            line: None,
        };
        let (tenant, key, old) = (tenant.as_str().to_owned(), key.to_owned(), old.to_vec());
        self.writer
            .run(spec, move |c| {
                lifecycle::replace_sealed(c, &tenant, &key, version, &old, &new)
                    .map_err(unavailable)
            })
            .await
    }

    async fn dump(&self, sink: Sink<'_>) -> Result<(), StoreError> {
        // Its own connection: the read transaction lasts the whole dump.
        let conn = schema::open_connection(&self.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        // Off the runtime's worker where it can be (a long read); a
        // single-threaded runtime has no other worker to hand off to.
        match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| lifecycle::dump(&conn, sink))
            }
            _ => lifecycle::dump(&conn, sink),
        }
    }

    async fn load(
        &self,
        records: Records,
        force: bool,
        line: Option<LineBody>,
    ) -> Result<LoadCounts, StoreError> {
        let spec = JobSpec { secret: None, line };
        self.writer
            .run(spec, move |c| lifecycle::load(c, records, force))
            .await
    }
}

#[cfg(test)]
mod tests;
