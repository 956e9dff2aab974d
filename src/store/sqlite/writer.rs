//! The writer thread and its group commit. One thread owns the only write
//! connection: it blocks for the first queued job, drains whatever else is
//! queued (up to `MAX_BATCH`), runs each job inside its own SAVEPOINT in one
//! transaction, writes the batch's audit lines with one write(2), and
//! COMMITs once. With `synchronous=FULL` the COMMIT returns only after the
//! WAL is fsync'd, and only then is each job's caller answered, so an
//! acknowledged write survives a crash and N writers waiting together share
//! one fsync. A job that fails (a precondition, say) rolls back to its
//! savepoint without disturbing its batch mates, and leaves no line.
//!
//! Jobs arrive ready to apply: values are sealed and lines rendered on the
//! request's own thread, so the writer only runs SQL, chains lines and
//! commits.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::reads::Readers;
use super::trail::FileTrail;
use super::{exec_cached, unavailable};
use crate::store::cache::ReadCache;
use crate::store::chain::ChainHead;
use crate::store::events::Hub;
use crate::store::lines::{LineBody, AUDIT_HEAD};
use crate::store::StoreError;

/// Most jobs committed by one fsync.
const MAX_BATCH: usize = 512;

/// Most jobs waiting for the writer; beyond it a write is refused at once
/// (503 with Retry-After) rather than queued without bound.
pub(super) const MAX_QUEUED: usize = 8 * MAX_BATCH;

/// What readers know of the writer's batches.
#[derive(Default)]
pub(super) struct Batches {
    /// Batches committed, counted after COMMIT and before answering.
    pub committed: AtomicU64,
    /// Whether a batch is under way: a read then ends its transaction at
    /// once, as the batch's checkpoint cannot pass a reader's snapshot.
    pub writing: AtomicBool,
}

/// A unit of work: `apply` runs inside the batch's transaction (under a
/// savepoint), `finish` answers the caller once the batch's COMMIT returned.
trait Job: Send {
    /// Runs the work; true when it succeeded (the savepoint is kept).
    fn apply(&mut self, conn: &Connection) -> bool;
    /// The audit line of a job that succeeded, for the batch's write.
    fn take_line(&mut self) -> Option<LineBody>;
    /// The secret `(tenant, key)` this job may change, for the read cache.
    fn secret(&self) -> Option<&(String, String)>;
    fn finish(self: Box<Self>, commit: Result<(), StoreError>);
}

struct Pending<T, E, F> {
    work: Option<F>,
    line: Option<LineBody>,
    result: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
    secret: Option<(String, String)>,
}

impl<T, E, F> Job for Pending<T, E, F>
where
    T: Send,
    E: From<StoreError> + Send,
    F: FnOnce(&Connection) -> Result<T, E> + Send,
{
    fn apply(&mut self, conn: &Connection) -> bool {
        let work = self.work.take().expect("a job is applied once");
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(StoreError::Unavailable("write job panicked".into()).into()));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn take_line(&mut self) -> Option<LineBody> {
        self.line.take()
    }

    fn secret(&self) -> Option<&(String, String)> {
        self.secret.as_ref()
    }

    fn finish(self: Box<Self>, commit: Result<(), StoreError>) {
        let outcome = match commit {
            Err(e) => Err(e.into()),
            Ok(()) => self.result.unwrap_or_else(|| {
                Err(StoreError::Unavailable("write was not applied".into()).into())
            }),
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

/// The request side of the writer thread.
pub(super) struct Writer {
    queue: mpsc::Sender<Message>,
    /// Jobs sent and not yet taken by the writer thread.
    queued: Arc<AtomicUsize>,
}

/// What the writer thread shares with the readers.
pub(super) struct Shared {
    pub cache: Arc<ReadCache>,
    pub readers: Arc<Readers>,
    pub batches: Arc<Batches>,
    pub trail: Option<Arc<FileTrail>>,
    /// Where the batch's events are staged, and published once committed.
    pub events: Arc<Hub>,
}

/// What one job needs besides its work.
pub(super) struct JobSpec {
    /// The secret it may change, dropped from the read cache after COMMIT.
    pub secret: Option<(String, String)>,
    /// Its audit line, written with the batch when the job succeeds.
    pub line: Option<LineBody>,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("writer thread has stopped".into())
}

impl Writer {
    pub(super) fn start(conn: Connection, shared: Shared) -> Result<Writer, StoreError> {
        let (queue, messages) = mpsc::channel::<Message>();
        let queued = Arc::new(AtomicUsize::new(0));
        let taken = queued.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, messages, &taken, &shared))
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer thread: {e}")))?;
        Ok(Writer { queue, queued })
    }

    /// Queues `work` and waits until its batch is durable.
    pub(super) async fn run<T, E>(
        &self,
        spec: JobSpec,
        work: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(E::from(StoreError::Busy));
        }
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            work: Some(work),
            line: spec.line,
            result: None,
            reply,
            secret: spec.secret,
        });
        if self.queue.send(Message::Job(job)).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(E::from(stopped()));
        }
        answer.await.map_err(|_| E::from(stopped()))?
    }

    /// Jobs waiting for the writer thread.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Commits what is queued, checkpoints, and stops the thread.
    pub(super) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.queue.send(Message::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }
}

fn writer_loop(
    conn: Connection,
    messages: mpsc::Receiver<Message>,
    queued: &AtomicUsize,
    shared: &Shared,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut closing = None;
    let mut head = HeadRecord::default();
    loop {
        let first = match messages.recv_timeout(HEAD_EVERY) {
            Ok(first) => first,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                head.record(&conn, shared.trail.as_deref(), false);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
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
        queued.fetch_sub(batch.len(), Ordering::AcqRel);
        if !batch.is_empty() {
            shared.batches.writing.store(true, Ordering::SeqCst);
            shared.readers.release_idle();
            let commit = commit_batch(&conn, &mut batch, shared.trail.as_deref(), &shared.events);
            // Before any caller hears back, so a read after an acknowledged
            // change cannot be served what the change replaced.
            shared.batches.committed.fetch_add(1, Ordering::SeqCst);
            for (tenant, key) in batch.iter().filter_map(|job| job.secret()) {
                shared.cache.invalidate(tenant, key);
            }
            shared.batches.writing.store(false, Ordering::SeqCst);
            // Readers' open transactions are stale now (a busy reader ends
            // its own at its next read); ended before answering, so an idle
            // reader never holds a snapshot older than an acknowledged change.
            shared.readers.release_idle();
            shared.events.end_batch(commit.is_ok());
            for job in batch.drain(..) {
                job.finish(commit.clone());
            }
            head.record(&conn, shared.trail.as_deref(), false);
        }
        if let Some(done) = closing.take() {
            head.record(&conn, shared.trail.as_deref(), true);
            shared.readers.release_all();
            // Briefly: another process's readers (a server beside a tool,
            // a backup beside a server) can hold the WAL for as long as
            // they like, and the next open replays what is left.
            let _ = conn.busy_timeout(Duration::from_millis(200));
            if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                tracing::warn!(error = %e, "checkpoint at close failed; the WAL is replayed at next open");
            }
            let _ = done.send(());
            return;
        }
    }
}

/// Applies the batch in one transaction, writes its lines, and commits.
/// How often the chain head is recorded at most (and at least, while lines
/// come): what `audit verify` can miss of lines cut off the file's end.
const HEAD_EVERY: Duration = Duration::from_secs(1);

/// The chain head the database last recorded. The head is recorded only
/// after the file is fdatasync'd up to it, so the record never runs ahead of
/// what a power loss leaves of the file.
#[derive(Default)]
struct HeadRecord {
    recorded: Option<ChainHead>,
    at: Option<Instant>,
}

impl HeadRecord {
    fn record(&mut self, conn: &Connection, trail: Option<&FileTrail>, now: bool) {
        let Some(trail) = trail else { return };
        if !now && self.at.is_some_and(|at| at.elapsed() < HEAD_EVERY) {
            return;
        }
        self.at = Some(Instant::now());
        let (head, file) = trail.head();
        if self.recorded.as_ref() == Some(&head) || head.seq == 0 {
            return;
        }
        let synced = file.map_or(Ok(()), |f| f.sync_data());
        let stored = synced.map_err(|e| e.to_string()).and_then(|()| {
            super::records::set_meta(conn, AUDIT_HEAD, head.encode().as_bytes())
                .map_err(|e| e.to_string())
        });
        match stored {
            Ok(_) => self.recorded = Some(head),
            Err(e) => tracing::warn!(error = %e, "audit: cannot record the chain head"),
        }
    }
}

fn commit_batch(
    conn: &Connection,
    batch: &mut [Box<dyn Job>],
    trail: Option<&FileTrail>,
    events: &Hub,
) -> Result<(), StoreError> {
    exec_cached(conn, "BEGIN IMMEDIATE").map_err(unavailable)?;
    let mut lines = Vec::new();
    for job in batch.iter_mut() {
        let staged = events.mark();
        let savepoint = exec_cached(conn, "SAVEPOINT job");
        let ok = savepoint.is_ok() && job.apply(conn);
        if ok {
            let _ = exec_cached(conn, "RELEASE job");
            lines.extend(job.take_line());
        } else {
            events.rewind(staged);
            let _ = exec_cached(conn, "ROLLBACK TO job");
            let _ = exec_cached(conn, "RELEASE job");
        }
    }
    let written = match (lines.is_empty(), trail) {
        (true, _) => Ok(false),
        (false, Some(trail)) => trail
            .write_batch(&lines)
            .map(|()| true)
            .map_err(|e| StoreError::Unavailable(e.to_string())),
        (false, None) => Err(StoreError::Unavailable(
            "a change with an audit line on a store opened without its trail".into(),
        )),
    };
    let commit = written.and_then(|written| {
        exec_cached(conn, "COMMIT")
            .map(|()| written)
            .map_err(unavailable)
    });
    if commit.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    if let (Some(trail), false) = (trail, lines.is_empty()) {
        trail.end_batch(commit.is_ok());
    }
    commit.map(|_| ())
}
