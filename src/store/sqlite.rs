//! The embedded engine: one SQLite file in WAL mode with `synchronous=FULL`.
//!
//! Writes go to a single writer thread that owns the only write connection and
//! practises group commit: it blocks for the first queued job, drains whatever
//! else is queued (up to `MAX_BATCH`), runs each job inside its own SAVEPOINT
//! in one transaction, and COMMITs once. With `synchronous=FULL` the COMMIT
//! returns only after the WAL is fsync'd, and only then is each job's caller
//! answered, so an acknowledged write survives a crash, and N writers waiting
//! together share one fsync. A job that fails (a precondition, say) rolls back
//! to its savepoint without disturbing its batch mates.
//!
//! Reads run inline on the calling task over a small pool of read-only
//! connections: WAL readers never block the writer or each other, and a read
//! of one row takes microseconds, less than a hop to a blocking thread.
//! Reads of secrets keep their connection's read transaction open from one
//! read to the next until a batch commits (`Reader`): beginning and ending a
//! WAL read transaction takes two fcntl(2) locks and cost as much as the
//! lookup itself.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::oneshot;

use super::cache::ReadCache;
use super::{
    ApiKeyRecord, Backend, CommitBarrier, Hook, ListedSecret, Precondition, Sealer, SecretMetadata,
    StoreError, StoredVersion, VersionInfo, WrappedDek,
};
use crate::clock::now_ms;
use crate::types::{SecretKey, TenantId};

/// Most jobs committed by one fsync.
const MAX_BATCH: usize = 512;
/// Current schema, kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;
/// Read connections: one per core (reads run inline on the request's
/// worker thread, so more could never be busy at once), at least two.
fn reader_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
}
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
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS versions (
    tenant     TEXT NOT NULL,
    key        TEXT NOT NULL,
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0,
    sealed     BLOB NOT NULL,
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

/// A unit of work for the writer thread: `apply` runs inside the batch's
/// transaction (under a savepoint), `finish` answers the caller once the
/// batch's COMMIT has returned.
trait Job: Send {
    fn apply(&mut self, conn: &Connection) -> bool;
    /// The secret `(tenant, key)` this job may change, for the read cache.
    fn secret(&self) -> Option<&(String, String)>;
    fn finish(self: Box<Self>, commit: Result<(), StoreError>);
}

struct Pending<T, F> {
    work: Option<F>,
    /// Runs after `work` succeeds, inside the transaction; an `Err` rolls
    /// the job back (see `Hook`).
    hook: Option<Hook>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    secret: Option<(String, String)>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn apply(&mut self, conn: &Connection) -> bool {
        let work = self.work.take().expect("a job is applied once");
        let hook = self.hook.take();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let value = work(conn)?;
            if let Some(hook) = hook {
                futures_util::FutureExt::now_or_never(hook()).unwrap_or_else(|| {
                    Err(StoreError::Unavailable(
                        "a store hook waited on the sqlite writer".into(),
                    ))
                })?;
            }
            Ok(value)
        }))
        .unwrap_or_else(|_| Err(StoreError::Unavailable("write job panicked".into())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn secret(&self) -> Option<&(String, String)> {
        self.secret.as_ref()
    }

    fn finish(self: Box<Self>, commit: Result<(), StoreError>) {
        let outcome = match commit {
            Err(e) => Err(e),
            Ok(()) => self
                .result
                .unwrap_or_else(|| Err(StoreError::Unavailable("write was not applied".into()))),
        };
        // The caller may have gone away (client disconnected); the write
        // stands either way.
        let _ = self.reply.send(outcome);
    }
}

/// What the writer thread receives.
enum Message {
    Job(Box<dyn Job>),
    /// Commit what is queued, checkpoint the WAL into the database file and
    /// stop; answered when done.
    Close(oneshot::Sender<()>),
}

/// What readers know of the writer's batches.
#[derive(Default)]
struct Batches {
    /// Batches committed, counted after COMMIT and before answering.
    committed: AtomicU64,
    /// Whether a batch is under way: a read then ends its transaction
    /// at once, as the batch's checkpoint cannot pass a reader's snapshot.
    writing: AtomicBool,
}

/// A read-only connection, and the read transaction it may keep open.
///
/// A read of secrets (`SqliteBackend::read_secrets`) reuses the open
/// transaction while no batch has committed since it began, and starts a
/// new one otherwise, so it sees every change acknowledged before it
/// started: the writer counts a batch (`Batches::committed`) after its
/// COMMIT and before answering, and a transaction's count is read before it
/// begins.
/// Other reads (API keys, which other processes may add, and the rest)
/// always run in a transaction of their own. The writer ends idle readers'
/// transactions before and after each batch, and a read made while a batch
/// is under way ends its own, so a snapshot stays open only while no writes
/// come and does not keep checkpoints from emptying the WAL.
struct Reader {
    conn: Connection,
    /// `Batches::committed` when the open read transaction began; `None` when the
    /// connection holds none.
    snapshot: Option<u64>,
}

impl Reader {
    /// Ends the open read transaction, if any.
    fn end(&mut self) {
        self.snapshot = None;
        if !self.conn.is_autocommit() && exec_cached(&self.conn, "COMMIT").is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

pub struct SqliteBackend {
    readers: Arc<[Mutex<Reader>]>,
    next_reader: AtomicUsize,
    /// The writer's progress (see `Reader`).
    batches: Arc<Batches>,
    writer: mpsc::Sender<Message>,
    max_versions: u64,
    cache: Arc<ReadCache>,
    barrier: Arc<OnceLock<Arc<dyn CommitBarrier>>>,
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn open_connection(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
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

impl SqliteBackend {
    pub fn open(path: &Path, max_versions: u32) -> Result<Self, StoreError> {
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
        let writer = open_connection(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        // WAL: readers never block the writer; FULL: COMMIT fsyncs the WAL, so
        // a committed transaction survives power loss. secure_delete zeroes
        // freed pages so destroyed versions leave no bytes behind. The
        // writer's page cache stays small (2 MB): every COMMIT that followed
        // a B-tree rebalance walks the whole cache (SQLite parks a page under
        // the lock-byte page number while it rebalances, and the end of the
        // transaction then truncates the cache above the file's size), which
        // with 16 MB cost a tenth of the writer's time.
        writer
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;
                 PRAGMA cache_size = -2048;",
            )
            .map_err(unavailable)?;
        migrate(&writer)?;
        let mut readers = Vec::with_capacity(reader_count());
        for _ in 0..reader_count() {
            let conn = open_connection(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            readers.push(Mutex::new(Reader {
                conn,
                snapshot: None,
            }));
        }
        let readers: Arc<[Mutex<Reader>]> = readers.into();
        let batches = Arc::new(Batches::default());
        let (tx, rx) = mpsc::channel::<Message>();
        let cache = Arc::new(ReadCache::default());
        let barrier: Arc<OnceLock<Arc<dyn CommitBarrier>>> = Arc::default();
        let shared = Shared {
            cache: cache.clone(),
            barrier: barrier.clone(),
            readers: readers.clone(),
            batches: batches.clone(),
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx, &shared))
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer thread: {e}")))?;
        Ok(SqliteBackend {
            readers,
            next_reader: AtomicUsize::new(0),
            batches,
            writer: tx,
            max_versions: u64::from(max_versions.max(1)),
            cache,
            barrier,
        })
    }

    /// See `Store::set_commit_barrier`.
    pub fn set_commit_barrier(&self, barrier: Arc<dyn CommitBarrier>) -> bool {
        self.barrier.set(barrier).is_ok()
    }

    /// Runs `f` on a reader connection in a read transaction of its own.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        self.with_reader(|reader| {
            reader.end();
            f(&reader.conn)
        })
    }

    /// Runs `f` on a reader connection in the read transaction it holds
    /// open, unless a batch has committed since that began (see `Reader`).
    /// Only for reads of secrets, which no other process writes.
    fn read_secrets<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.with_reader(|reader| {
            let committed = self.batches.committed.load(Ordering::SeqCst);
            if reader.snapshot != Some(committed) {
                reader.end();
                exec_cached(&reader.conn, "BEGIN")?;
                reader.snapshot = Some(committed);
            }
            let out = f(&reader.conn);
            if out.is_err() || self.batches.writing.load(Ordering::SeqCst) {
                reader.end();
            }
            out
        })
    }

    /// Runs `f` on the first reader nobody holds, so a lightly loaded
    /// server keeps reading through the same connection (each connection
    /// has its own memory map of the file and its own statements, which
    /// stay warm that way); only when all are busy does it wait, on one
    /// chosen in turn.
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&mut Reader) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        for reader in self.readers.iter() {
            if let Ok(mut reader) = reader.try_lock() {
                return f(&mut reader).map_err(unavailable);
            }
        }
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let mut reader = self.readers[start % self.readers.len()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut reader).map_err(unavailable)
    }

    /// Queues `work` for the writer and waits until its batch is durable.
    async fn write<T: Send + 'static>(
        &self,
        hook: Option<Hook>,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_job(None, hook, work).await
    }

    /// `write` for a job that may change the secret `(tenant, key)`: the
    /// writer drops it from the read cache after COMMIT, before answering.
    async fn write_secret<T: Send + 'static>(
        &self,
        secret: (String, String),
        hook: Hook,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_job(Some(secret), Some(hook), work).await
    }

    async fn write_job<T: Send + 'static>(
        &self,
        secret: Option<(String, String)>,
        hook: Option<Hook>,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            work: Some(work),
            hook,
            result: None,
            reply,
            secret,
        });
        self.writer
            .send(Message::Job(job))
            .map_err(|_| StoreError::Unavailable("writer thread has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("writer thread has stopped".into()))?
    }
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
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
    ))
    .map_err(unavailable)
}

/// What the writer thread shares with the readers.
struct Shared {
    cache: Arc<ReadCache>,
    barrier: Arc<OnceLock<Arc<dyn CommitBarrier>>>,
    readers: Arc<[Mutex<Reader>]>,
    batches: Arc<Batches>,
}

/// The writer thread: one transaction and one fsync per batch of jobs.
fn writer_loop(conn: Connection, messages: mpsc::Receiver<Message>, shared: &Shared) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut closing = None;
    while let Ok(first) = messages.recv() {
        match first {
            Message::Job(job) => batch.push(job),
            Message::Close(done) => closing = Some(done),
        }
        while closing.is_none() && batch.len() < MAX_BATCH {
            match messages.try_recv() {
                Ok(Message::Job(job)) => batch.push(job),
                Ok(Message::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            // Around the whole batch, so every way out of it (a failed
            // BEGIN too) clears the flag.
            shared.batches.writing.store(true, Ordering::SeqCst);
            release_idle_readers(shared);
            commit_batch(&conn, &mut batch, shared);
            shared.batches.writing.store(false, Ordering::SeqCst);
        }
        if let Some(done) = closing.take() {
            for reader in shared.readers.iter() {
                reader.lock().unwrap_or_else(|p| p.into_inner()).end();
            }
            if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                tracing::warn!(error = %e, "checkpoint at close failed; the WAL is replayed at next open");
            }
            let _ = done.send(());
            return;
        }
    }
}

/// Runs one statement from the connection's statement cache: the writer
/// issues the same few transaction statements for every job.
fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Ends the read transactions of the readers nobody is using. Before a
/// batch, so that its COMMIT's checkpoint can copy every frame and the WAL
/// can start over from its beginning (neither can pass a reader's
/// snapshot); after it, so that no idle reader keeps a stale one.
fn release_idle_readers(shared: &Shared) {
    for reader in shared.readers.iter() {
        if let Ok(mut reader) = reader.try_lock() {
            reader.end();
        }
    }
}

fn commit_batch(conn: &Connection, batch: &mut Vec<Box<dyn Job>>, shared: &Shared) {
    let barrier = shared.barrier.get().map(|b| (&**b, b.begin()));
    if let Err(e) = exec_cached(conn, "BEGIN IMMEDIATE") {
        let err = unavailable(e);
        for job in batch.drain(..) {
            job.finish(Err(err.clone()));
        }
        return;
    }
    for job in batch.iter_mut() {
        let savepoint = exec_cached(conn, "SAVEPOINT job");
        let ok = savepoint.is_ok() && job.apply(conn);
        if ok {
            let _ = exec_cached(conn, "RELEASE job");
        } else {
            let _ = exec_cached(conn, "ROLLBACK TO job");
            let _ = exec_cached(conn, "RELEASE job");
        }
    }
    let ready = barrier.map_or(Ok(()), |(barrier, token)| {
        barrier
            .before_commit(token)
            .map_err(StoreError::Unavailable)
    });
    let commit = ready.and_then(|()| exec_cached(conn, "COMMIT").map_err(unavailable));
    if commit.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    // Before any caller hears back, so a read after an acknowledged change
    // cannot be served what the change replaced.
    shared.batches.committed.fetch_add(1, Ordering::SeqCst);
    for (tenant, key) in batch.iter().filter_map(|job| job.secret()) {
        shared.cache.invalidate(tenant, key);
    }
    // Readers' open transactions are stale now (a busy reader ends its
    // own at its next read); ended before answering, so an idle reader
    // never holds a snapshot older than an acknowledged change.
    release_idle_readers(shared);
    for job in batch.drain(..) {
        job.finish(commit.clone());
    }
}

fn scopes_to_text(scopes: &[String]) -> String {
    scopes.join(" ")
}

fn scopes_from_text(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

fn apikey_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    let tenant: String = row.get(1)?;
    let hash: Vec<u8> = row.get(4)?;
    let scopes: String = row.get(3)?;
    Ok(ApiKeyRecord {
        id: row.get(0)?,
        tenant: TenantId::parse(&tenant).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
        })?,
        name: row.get(2)?,
        scopes: scopes_from_text(&scopes),
        hash: hash.as_slice().try_into().map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                4,
                rusqlite::types::Type::Blob,
                "api key hash is not 32 bytes".into(),
            )
        })?,
        created_at: row.get(5)?,
        expires_at: row.get(6)?,
        revoked_at: row.get(7)?,
        last_used_at: row.get(8)?,
    })
}

const APIKEY_COLUMNS: &str =
    "id, tenant, name, scopes, hash, created_at, expires_at, revoked_at, last_used_at";

/// `(current_version, deleted)` of a key inside a write transaction.
fn current(conn: &Connection, tenant: &str, key: &str) -> Result<Option<(u64, bool)>, StoreError> {
    conn.prepare_cached(
        "SELECT current_version, deleted FROM secrets WHERE tenant = ?1 AND key = ?2",
    )
    .and_then(|mut s| {
        s.query_row(params![tenant, key], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, bool>(1)?))
        })
        .optional()
    })
    .map_err(unavailable)
}

impl Backend for SqliteBackend {
    async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.writer.send(Message::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())))
    }

    async fn get(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        version: Option<u64>,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let row = |r: &rusqlite::Row<'_>| {
            Ok(StoredVersion {
                version: r.get::<_, i64>(0)? as u64,
                created_at: r.get(1)?,
                sealed: r.get(2)?,
            })
        };
        if let Some(n) = version {
            return self.read_secrets(|c| {
                c.prepare_cached(
                    "SELECT version, created_at, sealed FROM versions
                     WHERE tenant = ?1 AND key = ?2 AND version = ?3 AND deleted = 0",
                )?
                .query_row(
                    params![tenant.as_str(), key.as_str(), n.min(i64::MAX as u64) as i64],
                    row,
                )
                .optional()
            });
        }
        let epoch = match self.cache.get(tenant.as_str(), key.as_str()) {
            Ok(hit) => return Ok(Some(hit)),
            Err(epoch) => epoch,
        };
        // The current version is the key's newest row in `versions`, and
        // its `deleted` mirrors the key's (every change keeps both so): one
        // B-tree descent instead of one per table.
        let found = self.read_secrets(|c| {
            c.prepare_cached(
                "SELECT version, created_at, sealed, deleted FROM versions
                 WHERE tenant = ?1 AND key = ?2 ORDER BY version DESC LIMIT 1",
            )?
            .query_row(params![tenant.as_str(), key.as_str()], |r| {
                (!r.get::<_, bool>(3)?).then(|| row(r)).transpose()
            })
            .optional()
            .map(Option::flatten)
        })?;
        if let Some(found) = &found {
            self.cache.fill(epoch, tenant.as_str(), key.as_str(), found);
        }
        Ok(found)
    }

    async fn put(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        precondition: Precondition,
        sealer: Sealer,
        hook: Hook,
    ) -> Result<u64, StoreError> {
        let (tenant, key) = (tenant.as_str().to_owned(), key.as_str().to_owned());
        let max_versions = self.max_versions;
        let secret = (tenant.clone(), key.clone());
        self.write_secret(secret, hook, move |c| {
            let cur = current(c, &tenant, &key)?;
            let live = cur.filter(|(_, deleted)| !deleted).map(|(v, _)| v);
            precondition.check(live)?;
            let version = cur.map_or(1, |(v, _)| v + 1);
            let sealed = sealer(version)?;
            let now = now_ms();
            c.prepare_cached(
                "INSERT INTO versions (tenant, key, version, created_at, deleted, sealed) VALUES (?1, ?2, ?3, ?4, 0, ?5)",
            )
            .and_then(|mut s| s.execute(params![tenant, key, version as i64, now, sealed]))
            .map_err(unavailable)?;
            c.prepare_cached(
                "INSERT INTO secrets (tenant, key, current_version, created_at, updated_at, deleted)
                 VALUES (?1, ?2, ?3, ?4, ?4, 0)
                 ON CONFLICT (tenant, key) DO UPDATE
                 SET current_version = excluded.current_version, updated_at = excluded.updated_at, deleted = 0",
            )
            .and_then(|mut s| s.execute(params![tenant, key, version as i64, now]))
            .map_err(unavailable)?;
            if version > max_versions {
                c.prepare_cached("DELETE FROM versions WHERE tenant = ?1 AND key = ?2 AND version <= ?3")
                    .and_then(|mut s| s.execute(params![tenant, key, (version - max_versions) as i64]))
                    .map_err(unavailable)?;
            }
            Ok(version)
        })
        .await
    }

    async fn delete(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        precondition: Precondition,
        hook: Hook,
    ) -> Result<(), StoreError> {
        let (tenant, key) = (tenant.as_str().to_owned(), key.as_str().to_owned());
        let secret = (tenant.clone(), key.clone());
        self.write_secret(secret, hook, move |c| {
            let version = match current(c, &tenant, &key)? {
                Some((v, false)) => v,
                _ => return Err(StoreError::NotFound),
            };
            precondition.check(Some(version))?;
            set_deleted(c, &tenant, &key, version, true)
        })
        .await
    }

    async fn undelete(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        hook: Hook,
    ) -> Result<(), StoreError> {
        let (tenant, key) = (tenant.as_str().to_owned(), key.as_str().to_owned());
        let secret = (tenant.clone(), key.clone());
        self.write_secret(secret, hook, move |c| match current(c, &tenant, &key)? {
            Some((version, true)) => set_deleted(c, &tenant, &key, version, false),
            _ => Err(StoreError::NotFound),
        })
        .await
    }

    async fn destroy(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        hook: Hook,
    ) -> Result<(), StoreError> {
        let (tenant, key) = (tenant.as_str().to_owned(), key.as_str().to_owned());
        let secret = (tenant.clone(), key.clone());
        self.write_secret(secret, hook, move |c| {
            let gone = c
                .execute(
                    "DELETE FROM secrets WHERE tenant = ?1 AND key = ?2",
                    params![tenant, key],
                )
                .map_err(unavailable)?;
            c.execute(
                "DELETE FROM versions WHERE tenant = ?1 AND key = ?2",
                params![tenant, key],
            )
            .map_err(unavailable)?;
            if gone == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn metadata(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
    ) -> Result<Option<SecretMetadata>, StoreError> {
        self.read_secrets(|c| {
            let head = c
                .prepare_cached(
                    "SELECT current_version, created_at, updated_at, deleted FROM secrets WHERE tenant = ?1 AND key = ?2",
                )?
                .query_row(params![tenant.as_str(), key.as_str()], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?, r.get::<_, bool>(3)?))
                })
                .optional()?;
            let Some((current_version, created_at, updated_at, deleted)) = head else {
                return Ok(None);
            };
            let versions = c
                .prepare_cached(
                    "SELECT version, created_at, deleted FROM versions WHERE tenant = ?1 AND key = ?2 ORDER BY version",
                )?
                .query_map(params![tenant.as_str(), key.as_str()], |r| {
                    Ok(VersionInfo { version: r.get::<_, i64>(0)? as u64, created_at: r.get(1)?, deleted: r.get(2)? })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(SecretMetadata { current_version, created_at, updated_at, deleted, versions }))
        })
    }

    async fn list(
        &self,
        tenant: &TenantId,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ListedSecret>, StoreError> {
        // Every key byte sorts below '~', so [prefix, prefix + "~") holds
        // exactly the keys that start with prefix.
        let upper = format!("{prefix}~");
        let lower = after.filter(|a| *a >= prefix).unwrap_or(prefix);
        let inclusive = after.is_none_or(|a| a < prefix);
        self.read_secrets(|c| {
            let sql = if inclusive {
                "SELECT key, current_version, created_at, updated_at FROM secrets
                 WHERE tenant = ?1 AND key >= ?2 AND key < ?3 AND deleted = 0 ORDER BY key LIMIT ?4"
            } else {
                "SELECT key, current_version, created_at, updated_at FROM secrets
                 WHERE tenant = ?1 AND key > ?2 AND key < ?3 AND deleted = 0 ORDER BY key LIMIT ?4"
            };
            c.prepare_cached(sql)?
                .query_map(params![tenant.as_str(), lower, upper, limit as i64], |r| {
                    Ok(ListedSecret {
                        key: r.get(0)?,
                        version: r.get::<_, i64>(1)? as u64,
                        created_at: r.get(2)?,
                        updated_at: r.get(3)?,
                    })
                })?
                .collect()
        })
    }

    async fn deks(&self, tenant: &TenantId) -> Result<Vec<WrappedDek>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT id, wrapped FROM deks WHERE tenant = ?1 ORDER BY id")?
                .query_map(params![tenant.as_str()], |r| {
                    Ok(WrappedDek {
                        id: r.get(0)?,
                        wrapped: r.get(1)?,
                    })
                })?
                .collect()
        })
    }

    async fn add_dek(&self, tenant: &TenantId, dek: WrappedDek) -> Result<bool, StoreError> {
        let tenant = tenant.as_str().to_owned();
        self.write(None, move |c| {
            c.execute(
                "INSERT OR IGNORE INTO deks (tenant, id, wrapped, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![tenant, dek.id, dek.wrapped, now_ms()],
            )
            .map(|n| n == 1)
            .map_err(unavailable)
        })
        .await
    }

    async fn apikey_insert(&self, r: ApiKeyRecord, hook: Hook) -> Result<(), StoreError> {
        self.write(Some(hook), move |c| {
            c.execute(
                &format!("INSERT INTO apikeys ({APIKEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    r.id,
                    r.tenant.as_str(),
                    r.name,
                    scopes_to_text(&r.scopes),
                    r.hash.as_slice(),
                    r.created_at,
                    r.expires_at,
                    r.revoked_at,
                    r.last_used_at
                ],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }

    async fn apikey_get(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {APIKEY_COLUMNS} FROM apikeys WHERE id = ?1"
            ))?
            .query_row(params![id], apikey_from_row)
            .optional()
        })
    }

    async fn apikey_list(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {APIKEY_COLUMNS} FROM apikeys WHERE tenant = ?1 AND revoked_at IS NULL ORDER BY created_at, id"
            ))?
            .query_map(params![tenant.as_str()], apikey_from_row)?
            .collect()
        })
    }

    async fn apikey_revoke(
        &self,
        tenant: &TenantId,
        id: &str,
        at: i64,
        hook: Hook,
    ) -> Result<(), StoreError> {
        let (tenant, id) = (tenant.as_str().to_owned(), id.to_owned());
        self.write(Some(hook), move |c| {
            let n = c
                .execute(
                    "UPDATE apikeys SET revoked_at = ?3 WHERE tenant = ?1 AND id = ?2 AND revoked_at IS NULL",
                    params![tenant, id, at],
                )
                .map_err(unavailable)?;
            if n == 0 {
                Err(StoreError::NotFound)
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn apikey_touch(&self, uses: Vec<(String, i64)>) -> Result<(), StoreError> {
        self.write(None, move |c| {
            let mut stmt = c
                .prepare_cached(
                    "UPDATE apikeys SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1",
                )
                .map_err(unavailable)?;
            for (id, at) in &uses {
                stmt.execute(params![id, at]).map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn apikeys_exist(&self) -> Result<bool, StoreError> {
        self.read(|c| c.query_row("SELECT EXISTS (SELECT 1 FROM apikeys)", [], |r| r.get(0)))
    }

    async fn meta_init(&self, name: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let stored = self.read(|c| {
            c.query_row(
                "SELECT value FROM meta WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
        })?;
        if let Some(stored) = stored {
            return Ok(stored);
        }
        let name = name.to_owned();
        self.write(None, move |c| {
            c.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES (?1, ?2)",
                params![name, value],
            )
            .map_err(unavailable)?;
            c.query_row(
                "SELECT value FROM meta WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .map_err(unavailable)
        })
        .await
    }
}

fn set_deleted(
    c: &Connection,
    tenant: &str,
    key: &str,
    version: u64,
    deleted: bool,
) -> Result<(), StoreError> {
    let now = now_ms();
    c.prepare_cached(
        "UPDATE secrets SET deleted = ?3, updated_at = ?4 WHERE tenant = ?1 AND key = ?2",
    )
    .and_then(|mut s| s.execute(params![tenant, key, deleted, now]))
    .map_err(unavailable)?;
    c.prepare_cached(
        "UPDATE versions SET deleted = ?4 WHERE tenant = ?1 AND key = ?2 AND version = ?3",
    )
    .and_then(|mut s| s.execute(params![tenant, key, version as i64, deleted]))
    .map_err(unavailable)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::no_hook;

    fn sealer(text: &'static str) -> super::Sealer {
        Box::new(move |_| Ok(text.as_bytes().to_vec()))
    }

    /// A store in a temp dir holding version 1 ("one") of `t`/`app/one`.
    async fn one_version() -> (tempfile::TempDir, SqliteBackend, TenantId, SecretKey) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteBackend::open(&dir.path().join("s.db"), 10).unwrap();
        let (tenant, key) = (
            TenantId::parse("t").unwrap(),
            SecretKey::parse("app/one").unwrap(),
        );
        store
            .put(&tenant, &key, Precondition::None, sealer("one"), no_hook())
            .await
            .unwrap();
        (dir, store, tenant, key)
    }

    /// A reader busy while a batch commits keeps its (now stale) read
    /// transaction; its next read of secrets must begin a new one and see
    /// the acknowledged change, for the current version (past the read
    /// cache), an older version, the metadata and the listing alike.
    #[tokio::test]
    async fn a_read_after_an_acknowledged_change_never_sees_an_older_snapshot() {
        let (_dir, store, tenant, key) = one_version().await;
        // Every reader opens a read transaction on the first version.
        for reader in store.readers.iter() {
            let mut reader = reader.lock().unwrap();
            let committed = store.batches.committed.load(Ordering::SeqCst);
            exec_cached(&reader.conn, "BEGIN").unwrap();
            reader.snapshot = Some(committed);
            let n: i64 = reader
                .conn
                .query_row("SELECT count(*) FROM versions", [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 1);
        }
        // Busy readers: the writer cannot end their transactions.
        let held: Vec<_> = store.readers.iter().map(|r| r.lock().unwrap()).collect();
        let put = store.put(&tenant, &key, Precondition::None, sealer("two"), no_hook());
        let version = tokio::time::timeout(Duration::from_secs(10), put)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(version, 2);
        assert!(held.iter().all(|r| r.snapshot.is_some()));
        drop(held);

        let current = store.get(&tenant, &key, None).await.unwrap().unwrap();
        assert_eq!(
            (current.version, current.sealed.as_slice()),
            (2, &b"two"[..])
        );
        let by_number = store.get(&tenant, &key, Some(2)).await.unwrap().unwrap();
        assert_eq!(by_number.sealed, b"two");
        let meta = store.metadata(&tenant, &key).await.unwrap().unwrap();
        assert_eq!((meta.current_version, meta.versions.len()), (2, 2));
        let listed = store.list(&tenant, "app/", None, 10).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].version, 2);
        store.close().await;
    }

    /// The writer ends idle readers' transactions after each batch, a read
    /// during a batch ends its own, and the writer ends all of them before
    /// the checkpoint at close, which then empties the WAL.
    #[tokio::test]
    async fn idle_readers_release_their_snapshots() {
        let (dir, store, tenant, key) = one_version().await;
        assert!(store.get(&tenant, &key, Some(1)).await.unwrap().is_some());
        assert!(store
            .readers
            .iter()
            .any(|r| r.lock().unwrap().snapshot.is_some()));
        store
            .put(&tenant, &key, Precondition::None, sealer("two"), no_hook())
            .await
            .unwrap();
        for reader in store.readers.iter() {
            let reader = reader.lock().unwrap();
            assert_eq!(reader.snapshot, None);
            assert!(reader.conn.is_autocommit());
        }
        // A read made while a batch is under way keeps no snapshot: the
        // batch's checkpoint could not pass it.
        store.batches.writing.store(true, Ordering::SeqCst);
        assert!(store.get(&tenant, &key, Some(1)).await.unwrap().is_some());
        assert!(store
            .readers
            .iter()
            .all(|r| r.lock().unwrap().snapshot.is_none()));
        store.batches.writing.store(false, Ordering::SeqCst);
        assert!(store.get(&tenant, &key, Some(1)).await.unwrap().is_some());
        store.close().await;
        let wal = std::fs::metadata(dir.path().join("s.db-wal")).map_or(0, |m| m.len());
        assert_eq!(wal, 0, "the checkpoint at close left the WAL non-empty");
    }
}
