//! The pool of read-only connections. Reads run inline on the calling task:
//! WAL readers never block the writer or each other, and a read of one row
//! takes microseconds, less than a hop to a blocking thread.
//!
//! A read of secrets (`read_secrets`) reuses its connection's open read
//! transaction while no batch has committed since it began, and starts a new
//! one otherwise, so it sees every change acknowledged before it started:
//! the writer counts a batch (`Batches::committed`) after its COMMIT and
//! before answering, and a transaction's count is read before it begins
//! (beginning and ending a WAL read transaction takes two fcntl(2) locks and
//! cost as much as the lookup itself). Other reads (API keys, which other
//! processes may add, and the rest) always run in a transaction of their
//! own. The writer ends idle readers' transactions before and after each
//! batch, and a read made while a batch is under way ends its own, so a
//! snapshot stays open only while no writes come and does not keep
//! checkpoints from emptying the WAL.
//!
//! A write's look at a key's head (`read_heads`) goes through connections of
//! its own that read with pread(2), not a memory map: it always follows
//! another write, and a WAL reader that sees the database changed unmaps the
//! whole file, so a mapped read there paid an munmap (a TLB shootdown on
//! every core) and fresh page faults each time.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

use super::schema::open_connection;
use super::writer::Batches;
use super::{exec_cached, unavailable};
use crate::store::StoreError;

/// A read-only connection, and the read transaction it may keep open.
pub(super) struct Reader {
    pub conn: Connection,
    /// `Batches::committed` when the open read transaction began; `None`
    /// when the connection holds none.
    pub snapshot: Option<u64>,
}

impl Reader {
    /// Ends the open read transaction, if any.
    pub fn end(&mut self) {
        self.snapshot = None;
        if !self.conn.is_autocommit() && exec_cached(&self.conn, "COMMIT").is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

pub(super) struct Readers {
    pub pool: Box<[Mutex<Reader>]>,
    /// Unmapped connections for writes' head reads.
    heads: Box<[Mutex<Reader>]>,
    next: AtomicUsize,
}

/// Read connections: one per core (reads run inline on the request's
/// thread, so more could never be busy at once), at least two.
fn reader_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
}

impl Readers {
    pub(super) fn open(path: &Path) -> Result<Readers, StoreError> {
        let open = |mapped: bool| {
            (0..reader_count())
                .map(|_| {
                    let conn = open_connection(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                    if !mapped {
                        conn.execute_batch("PRAGMA mmap_size = 0")
                            .map_err(unavailable)?;
                    }
                    Ok(Mutex::new(Reader {
                        conn,
                        snapshot: None,
                    }))
                })
                .collect::<Result<Vec<_>, StoreError>>()
                .map(Vec::into_boxed_slice)
        };
        Ok(Readers {
            pool: open(true)?,
            heads: open(false)?,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `f` in a read transaction of its own.
    pub(super) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.with_reader(&self.pool, |reader| {
            reader.end();
            f(&reader.conn)
        })
    }

    /// Runs `f` in the read transaction its connection holds open, unless a
    /// batch has committed since that began. Only for reads of secrets,
    /// which no other process writes.
    pub(super) fn read_secrets<T>(
        &self,
        batches: &Batches,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.read_in(&self.pool, batches, f)
    }

    /// `read_secrets` for a write's look at a key's head.
    pub(super) fn read_heads<T>(
        &self,
        batches: &Batches,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.read_in(&self.heads, batches, f)
    }

    fn read_in<T>(
        &self,
        pool: &[Mutex<Reader>],
        batches: &Batches,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.with_reader(pool, |reader| {
            let committed = batches.committed.load(Ordering::SeqCst);
            if reader.snapshot != Some(committed) {
                reader.end();
                exec_cached(&reader.conn, "BEGIN")?;
                reader.snapshot = Some(committed);
            }
            let out = f(&reader.conn);
            if out.is_err() || batches.writing.load(Ordering::SeqCst) {
                reader.end();
            }
            out
        })
    }

    /// Runs `f` on the first reader nobody holds, so a lightly loaded server
    /// keeps reading through the same connection (each has its own memory
    /// map of the file and its own statements, which stay warm that way);
    /// only when all are busy does it wait, on one chosen in turn.
    fn with_reader<T>(
        &self,
        pool: &[Mutex<Reader>],
        f: impl FnOnce(&mut Reader) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        for reader in pool.iter() {
            if let Ok(mut reader) = reader.try_lock() {
                return f(&mut reader).map_err(unavailable);
            }
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut reader = pool[start % pool.len()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut reader).map_err(unavailable)
    }

    /// Ends the read transactions of the readers nobody is using. Before a
    /// batch, so that its COMMIT's checkpoint can copy every frame and the
    /// WAL can start over (neither can pass a reader's snapshot); after it,
    /// so that no idle reader keeps a stale one.
    pub(super) fn release_idle(&self) {
        for reader in self.pool.iter().chain(self.heads.iter()) {
            if let Ok(mut reader) = reader.try_lock() {
                reader.end();
            }
        }
    }

    /// Ends every reader's transaction, waiting for busy ones (at close).
    pub(super) fn release_all(&self) {
        for reader in self.pool.iter().chain(self.heads.iter()) {
            reader.lock().unwrap_or_else(|p| p.into_inner()).end();
        }
    }
}
