//! `<data-dir>/audit.log`, the embedded engine's trail. Two kinds of lines
//! reach it: a batch's change lines, which the writer thread writes with one
//! write(2) just before the batch's COMMIT (`write_batch`, then
//! `end_batch`), and every other line (reads, refusals), which requests
//! append themselves (`append`).
//!
//! Appends combine: each queues its line, yields once so the other requests
//! its thread has ready queue theirs, and the first one back chains and
//! writes them all with one write(2); the others find their line settled.
//! While a batch's COMMIT is under way its lines are the last in the file and
//! queued lines wait: if the COMMIT fails, the batch's lines are cut off
//! again, so no line claims a change that did not happen.
//!
//! A write is all or nothing: after a failed or short write the file is cut
//! back to its last whole line and the chain continues from there; every
//! append whose line that write held fails.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::files::{self, identity, whole_lines};
use crate::store::chain::{link, AuditKey, ChainHead};
use crate::store::lines::{LineBody, TrailError};

/// How many failed writes' ticket ranges are remembered. An append looks at
/// its outcome within a scheduler tick of queueing; one older than that many
/// failures is taken as dropped.
const DROPPED_KEPT: usize = 64;

pub struct FileTrail {
    sink: Mutex<Sink>,
    /// `Sink::settled` and `failures` as of the last write, so an append
    /// whose line another append wrote returns without the lock.
    settled: AtomicU64,
    failures: AtomicU64,
    /// Woken when queued lines settle after a batch's COMMIT.
    settle: tokio::sync::Notify,
}

struct Sink {
    path: PathBuf,
    file: File,
    /// The file's length: the end of its last whole line.
    len: u64,
    /// The last line written.
    head: ChainHead,
    /// What lines are chained under; `None` until `start`.
    key: Option<AuditKey>,
    /// The file's device and inode, to notice the path naming another file
    /// (`None` for a device, which tests use).
    identity: Option<(u64, u64)>,
    /// Whether the loss of the file was logged (once).
    lost_logged: bool,
    /// The file is rotated once it holds this many bytes.
    max_bytes: u64,
    /// The number of the file's first line (the next line's, when empty).
    first_seq: u64,
    /// Bodies queued by `append`, tickets `settled + 1 ..= issued`.
    queue: Vec<String>,
    issued: u64,
    /// Tickets whose write has been tried (written, or dropped by a failure).
    settled: u64,
    /// Writes that failed; each dropped the tickets it held.
    failures: u64,
    /// Ticket ranges (after, upto] the last failed writes dropped, newest last.
    dropped: VecDeque<(u64, u64)>,
    last_failure: Option<String>,
    /// Where the running batch's lines begin, while its COMMIT is under way.
    committing: Option<(u64, ChainHead)>,
    /// Writes tried, for tests.
    writes: u64,
}

impl Sink {
    /// Whether a failed write dropped `ticket`, issued when `failures`
    /// writes had failed.
    fn was_dropped(&self, ticket: u64, failures: u64) -> bool {
        let since = (self.failures - failures) as usize;
        if since > self.dropped.len() {
            return since > 0;
        }
        self.dropped
            .iter()
            .rev()
            .take(since)
            .any(|&(after, upto)| after < ticket && ticket <= upto)
    }

    fn outcome(&self, ticket: u64, failures: u64) -> Result<(), TrailError> {
        if !self.was_dropped(ticket, failures) {
            return Ok(());
        }
        let cause = self
            .last_failure
            .clone()
            .unwrap_or_else(|| "a write failed".into());
        Err(TrailError(format!("{}: {cause}", self.path.display())))
    }

    /// Chains the queued lines and then `batch`'s and writes them with one
    /// write(2). Returns where `batch`'s lines begin (length, head).
    fn write(&mut self, batch: &[LineBody]) -> Result<(u64, ChainHead), TrailError> {
        let mut text = Vec::with_capacity((self.queue.len() + batch.len()) * 400);
        let mut head = self.head.clone();
        let key = self.key.clone();
        let bodies = std::mem::take(&mut self.queue);
        if let Some(key) = &key {
            for body in &bodies {
                push_line(key, &mut text, &mut head, body);
            }
        }
        let batch_start = (self.len + text.len() as u64, head.clone());
        if let Some(key) = &key {
            for body in batch {
                push_line(key, &mut text, &mut head, &body.text);
            }
        }
        let upto = self.issued;
        let after = std::mem::replace(&mut self.settled, upto);
        if bodies.is_empty() && batch.is_empty() {
            return Ok(batch_start);
        }
        self.writes += 1;
        // The error, and whether a write was tried (and may have landed).
        let written = match (&key, self.replaced()) {
            (None, _) => Err(("the trail is not started".to_owned(), false)),
            (Some(_), Some(why)) => {
                if !std::mem::replace(&mut self.lost_logged, true) {
                    tracing::error!(reason = %why, "audit: the trail's file is gone; changes and reads answer 503 until it is restored or the server restarts");
                }
                Err((why, false))
            }
            (Some(_), None) => self
                .file
                .write_all(&text)
                .map_err(|e| (e.to_string(), true)),
        };
        match written {
            Ok(()) => {
                self.len += text.len() as u64;
                self.head = head;
                Ok(batch_start)
            }
            Err((e, tried)) => {
                // All or nothing: cut off whatever part of the write landed.
                let cut = if tried {
                    self.file.set_len(self.len)
                } else {
                    Ok(())
                };
                self.failures += 1;
                let cause = match cut {
                    Ok(()) => e,
                    Err(c) => format!("{e}; cutting back the partial line also failed: {c}"),
                };
                self.last_failure = Some(cause.clone());
                if self.dropped.len() == DROPPED_KEPT {
                    self.dropped.pop_front();
                }
                self.dropped.push_back((after, upto));
                Err(TrailError(format!("{}: {cause}", self.path.display())))
            }
        }
    }
}

impl FileTrail {
    /// Opens (creating, mode 0600) the trail and finds its last line so the
    /// chain continues across restarts. A partial last line (a write cut
    /// short by a crash) is cut off first. Appends fail until `start`.
    pub fn open(path: &Path, max_bytes: u64) -> Result<FileTrail, TrailError> {
        let io = |e: std::io::Error| TrailError(format!("{}: {e}", path.display()));
        let mut file = files::open_trail_file(path).map_err(io)?;
        let metadata = file.metadata().map_err(io)?;
        let (len, head, identity) = if metadata.is_file() {
            let (len, head) = whole_lines(&mut file).map_err(io)?;
            (len, head, Some(identity(&metadata)))
        } else {
            // A device (tests use /dev/full): nothing to read back.
            (0, ChainHead::genesis(), None)
        };
        // A new file after a rotation goes on from the rotated file's end.
        let head = match (len, files::rotated_head(path).map_err(io)?) {
            (0, Some(rotated)) => rotated,
            _ => head,
        };
        let first_seq = match len {
            0 => head.seq + 1,
            _ => files::first_seq(&mut file).map_err(io)?.unwrap_or(1),
        };
        Ok(FileTrail {
            sink: Mutex::new(Sink {
                path: path.to_owned(),
                file,
                len,
                head,
                key: None,
                identity,
                lost_logged: false,
                max_bytes: max_bytes.max(1),
                first_seq,
                queue: Vec::new(),
                issued: 0,
                settled: 0,
                failures: 0,
                dropped: VecDeque::new(),
                last_failure: None,
                committing: None,
                writes: 0,
            }),
            settled: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            settle: tokio::sync::Notify::new(),
        })
    }

    /// Starts chaining under `key`; returns the head the chain continues.
    pub fn start(&self, key: AuditKey) -> ChainHead {
        let mut sink = lock_briefly(&self.sink);
        sink.key = Some(key);
        sink.head.clone()
    }

    /// The last line written, and the file to fdatasync before recording it.
    pub(super) fn head(&self) -> (ChainHead, Option<File>) {
        let sink = lock_briefly(&self.sink);
        let file = sink.identity.and_then(|_| sink.file.try_clone().ok());
        (sink.head.clone(), file)
    }

    /// Why appends fail now, if the file was removed or replaced.
    pub fn lost(&self) -> Option<String> {
        lock_briefly(&self.sink).replaced()
    }

    /// Every file of the trail, opened, as it stands between two writes.
    pub fn view(&self) -> std::io::Result<Vec<files::TrailFile>> {
        let sink = lock_briefly(&self.sink);
        let visible = sink.committing.as_ref().map_or(sink.len, |(len, _)| *len);
        files::view(&sink.path, sink.first_seq, visible)
    }

    /// Writes that failed since the trail opened.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Acquire)
    }

    /// Appends a line that records no change.
    pub async fn append(&self, body: LineBody) -> Result<(), TrailError> {
        let (ticket, failures) = {
            let mut sink = lock_briefly(&self.sink);
            sink.queue.push(body.text);
            sink.issued += 1;
            (sink.issued, sink.failures)
        };
        self.settled_through(ticket, failures).await
    }

    /// Appends lines that record no change, in order, as one queued run.
    pub async fn append_all(&self, bodies: Vec<LineBody>) -> Result<(), TrailError> {
        let (ticket, failures) = {
            let mut sink = lock_briefly(&self.sink);
            for body in bodies {
                sink.queue.push(body.text);
                sink.issued += 1;
            }
            (sink.issued, sink.failures)
        };
        self.settled_through(ticket, failures).await
    }

    /// Waits until the lines queued up to `ticket` are written (by this
    /// task or another), or fail.
    async fn settled_through(&self, ticket: u64, failures: u64) -> Result<(), TrailError> {
        tokio::task::yield_now().await;
        loop {
            if self.settled.load(Ordering::Acquire) >= ticket
                && self.failures.load(Ordering::Acquire) == failures
            {
                return Ok(());
            }
            let notified = self.settle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut sink = lock_briefly(&self.sink);
                if sink.settled < ticket && sink.committing.is_none() {
                    // Our write: its error is ours too.
                    let result = sink.write(&[]);
                    sink.maybe_rotate();
                    self.publish(&sink);
                    result?;
                }
                if sink.settled >= ticket {
                    return sink.outcome(ticket, failures);
                }
            }
            // A batch's COMMIT is under way; `end_batch` writes our line.
            notified.await;
        }
    }

    /// Writes a batch's change lines (after whatever is queued) with one
    /// write(2), before the batch's COMMIT. Until `end_batch`, appends wait.
    pub(super) fn write_batch(&self, lines: &[LineBody]) -> Result<(), TrailError> {
        let mut sink = lock_briefly(&self.sink);
        let result = sink.write(lines);
        if let Ok(start) = &result {
            sink.committing = Some(start.clone());
        }
        self.publish(&sink);
        self.settle.notify_waiters();
        result.map(|_| ())
    }

    /// After the COMMIT of a batch whose lines `write_batch` wrote: when it
    /// failed, cuts those lines off again; then writes what queued meanwhile.
    pub(super) fn end_batch(&self, committed: bool) {
        let mut sink = lock_briefly(&self.sink);
        if let Some((len, head)) = sink.committing.take() {
            if !committed {
                if let Err(e) = sink.file.set_len(len) {
                    tracing::error!(error = %e, "audit: cannot cut off the lines of a batch that did not commit");
                }
                sink.len = len;
                sink.head = head;
            }
        }
        if !sink.queue.is_empty() {
            if let Err(e) = sink.write(&[]) {
                tracing::error!(error = %e, "audit: queued lines could not be written");
            }
        }
        sink.maybe_rotate();
        self.publish(&sink);
        self.settle.notify_waiters();
    }

    /// Writes any line still queued, at shutdown.
    pub fn flush(&self) {
        let mut sink = lock_briefly(&self.sink);
        if !sink.queue.is_empty() && sink.committing.is_none() {
            if let Err(e) = sink.write(&[]) {
                tracing::error!(error = %e, "audit: queued lines could not be written");
            }
        }
        self.publish(&sink);
        self.settle.notify_waiters();
    }

    /// Publishes the sink's outcome: `failures` before `settled`, so whoever
    /// sees its line settled also sees whether that write failed.
    fn publish(&self, sink: &Sink) {
        self.failures.store(sink.failures, Ordering::Release);
        self.settled.store(sink.settled, Ordering::Release);
    }
}

/// Chains `body` after `head`, appends the line to `text`, and moves `head`
/// on to it.
fn push_line(key: &AuditKey, text: &mut Vec<u8>, head: &mut ChainHead, body: &str) {
    link(key, head, body, text);
    text.push(b'\n');
}

impl Sink {
    /// Rotates the file once it is full, unless a batch's COMMIT is under
    /// way (its lines may yet be cut off again).
    fn maybe_rotate(&mut self) {
        if self.len < self.max_bytes || self.committing.is_some() || self.identity.is_none() {
            return;
        }
        if let Err(e) = self.rotate() {
            tracing::error!(error = %e, "audit: cannot rotate the trail file");
        }
    }

    /// Renames the full file and opens a new one; on any failure the trail
    /// goes on in the file it holds, under its own name, and tries again
    /// after its next write. A rotated file is never replaced.
    fn rotate(&mut self) -> std::io::Result<()> {
        let (file, id) = files::rotate(&self.path, &self.file, self.first_seq)?;
        self.identity = Some(id);
        self.file = file;
        self.len = 0;
        self.first_seq = self.head.seq + 1;
        Ok(())
    }

    /// Whether the path still names the file this trail holds open: a line
    /// written to a removed or replaced file would be lost.
    fn replaced(&self) -> Option<String> {
        let held = self.identity?;
        match std::fs::metadata(&self.path) {
            Ok(m) if identity(&m) == held => None,
            Ok(_) => Some(format!("{} was replaced", self.path.display())),
            Err(e) => Some(format!("{} was removed: {e}", self.path.display())),
        }
    }
}

/// Takes a lock that is only ever held for a few microseconds (one hash and
/// one write(2)): spins for about that long before sleeping on it, since a
/// thread put to sleep and woken again costs more than the wait.
fn lock_briefly<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    for _ in 0..16 {
        match lock.try_lock() {
            Ok(guard) => return guard,
            Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
            }
        }
    }
    lock.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::verify_lines;
    use crate::store::chain::test_key;
    use std::fs::OpenOptions;

    /// The outcome of `audit verify` on the file, without the head.
    #[derive(Debug, PartialEq)]
    enum Verdict {
        Intact { lines: usize },
        Broken { line: usize },
    }

    fn verify(path: &Path) -> std::io::Result<Verdict> {
        let text = std::fs::read(path)?;
        let lines = text
            .split_inclusive(|&b| b == b'\n')
            .map(|l| Ok::<_, ()>(l.strip_suffix(b"\n").unwrap_or(l).to_vec()));
        Ok(
            match verify_lines(lines, Some(&test_key()), None).unwrap() {
                crate::audit::Verdict::Intact { lines, .. } => Verdict::Intact { lines },
                crate::audit::Verdict::Broken { line, .. } => Verdict::Broken { line },
            },
        )
    }

    /// A trail opened and started, as a server's is.
    fn started(path: &Path) -> FileTrail {
        let trail = FileTrail::open(path, u64::MAX).unwrap();
        trail.start(test_key());
        trail
    }

    fn line(i: u16) -> LineBody {
        LineBody {
            text: format!("{{\"request_id\":\"r{i}\",\"key\":\"k{i}\","),
            request_id: format!("r{i}").into(),
        }
    }

    /// A trail in a fresh temp dir (which lives as long as the guard).
    fn file_trail() -> (tempfile::TempDir, PathBuf, FileTrail) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let trail = started(&path);
        (dir, path, trail)
    }

    /// Puts `file` under the trail in place of its file; returns that one.
    fn swap_file(trail: &FileTrail, file: File) -> File {
        std::mem::replace(&mut trail.sink.lock().unwrap().file, file)
    }

    /// A file whose every write fails with ENOSPC.
    fn full_disk() -> File {
        OpenOptions::new().append(true).open("/dev/full").unwrap()
    }

    /// Runs `f` to the end on a single-threaded runtime, as a shard does.
    fn now<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn keys(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["key"].to_string())
            .collect()
    }

    #[test]
    fn a_rotation_that_cannot_happen_keeps_every_line_in_the_file_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        // Full after every line: each write is followed by a rotation.
        let trail = FileTrail::open(&path, 1).unwrap();
        trail.start(test_key());
        // The name the first rotation would take is taken.
        let taken = files::rotated_path(&path, 1);
        std::fs::write(&taken, b"not the trail's\n").unwrap();
        for i in 0..3 {
            now(trail.append(line(i))).unwrap();
        }
        assert_eq!(std::fs::read(&taken).unwrap(), b"not the trail's\n");
        assert_eq!(keys(&path), ["\"k0\"", "\"k1\"", "\"k2\""]);
        assert_eq!(verify(&path).unwrap(), Verdict::Intact { lines: 3 });
        // Once the name is free the trail rotates after its next line, and
        // the rotated file holds every line so far, on one chain.
        std::fs::remove_file(&taken).unwrap();
        now(trail.append(line(3))).unwrap();
        assert_eq!(keys(&taken).len(), 4);
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        now(trail.append(line(4))).unwrap();
        let rotated = files::rotated_path(&path, 5);
        assert_eq!(keys(&rotated), ["\"k4\""]);
    }

    #[test]
    fn an_intact_chain_verifies_and_continues_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        for round in 0..2 {
            let trail = started(&path);
            for i in 0..3 {
                now(trail.append(line(round * 3 + i))).unwrap();
            }
        }
        assert_eq!(verify(&path).unwrap(), Verdict::Intact { lines: 6 });
    }

    #[test]
    fn edits_removals_and_reorders_name_the_first_bad_line() {
        let (_dir, path, trail) = file_trail();
        for i in 0..5 {
            now(trail.append(line(i))).unwrap();
        }
        let original = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = original.lines().collect();

        let edited = original.replacen("\"k2\"", "\"k9\"", 1);
        std::fs::write(&path, edited).unwrap();
        assert!(matches!(
            verify(&path).unwrap(),
            Verdict::Broken { line: 3, .. }
        ));

        let removed: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| *l)
            .collect();
        std::fs::write(&path, removed.join("\n") + "\n").unwrap();
        assert!(matches!(
            verify(&path).unwrap(),
            Verdict::Broken { line: 2, .. }
        ));

        let mut swapped = lines.clone();
        swapped.swap(2, 3);
        std::fs::write(&path, swapped.join("\n") + "\n").unwrap();
        assert!(matches!(
            verify(&path).unwrap(),
            Verdict::Broken { line: 3, .. }
        ));
    }

    #[test]
    fn a_batch_is_written_before_its_commit_and_appends_wait_for_it() {
        let (_dir, path, trail) = file_trail();
        now(trail.append(line(0))).unwrap();
        let queued = {
            let mut sink = trail.sink.lock().unwrap();
            sink.queue.push(line(1).text);
            sink.issued += 1;
            sink.issued
        };
        // The batch's write takes the queued line first, then its own.
        trail.write_batch(&[line(2), line(3)]).unwrap();
        assert_eq!(trail.settled.load(Ordering::Acquire), queued);
        assert_eq!(keys(&path), ["\"k0\"", "\"k1\"", "\"k2\"", "\"k3\""]);
        // While the COMMIT is under way a read's line waits for it.
        let waiting = std::thread::scope(|scope| {
            let append = scope.spawn(|| now(trail.append(line(4))));
            while trail.sink.lock().unwrap().queue.is_empty() {
                std::thread::yield_now();
            }
            assert_eq!(keys(&path).len(), 4, "a line waits for the COMMIT");
            trail.end_batch(true);
            append.join().unwrap()
        });
        waiting.unwrap();
        assert_eq!(keys(&path).len(), 5);
        assert_eq!(verify(&path).unwrap(), Verdict::Intact { lines: 5 });
    }

    #[test]
    fn a_batch_that_does_not_commit_leaves_no_line() {
        let (_dir, path, trail) = file_trail();
        now(trail.append(line(0))).unwrap();
        trail.write_batch(&[line(1), line(2)]).unwrap();
        trail.end_batch(false);
        now(trail.append(line(3))).unwrap();
        assert_eq!(keys(&path), ["\"k0\"", "\"k3\""]);
        assert_eq!(verify(&path).unwrap(), Verdict::Intact { lines: 2 });
    }

    #[test]
    fn a_failed_write_fails_the_batch_and_the_chain_continues() {
        let (_dir, path, trail) = file_trail();
        now(trail.append(line(0))).unwrap();
        let real = swap_file(&trail, full_disk());
        assert!(trail.write_batch(&[line(1)]).is_err());
        trail.end_batch(false);
        swap_file(&trail, real);
        trail.write_batch(&[line(2)]).unwrap();
        trail.end_batch(true);
        now(trail.append(line(3))).unwrap();
        assert_eq!(keys(&path), ["\"k0\"", "\"k2\"", "\"k3\""]);
        assert_eq!(verify(&path).unwrap(), Verdict::Intact { lines: 3 });
    }

    #[test]
    fn appends_on_one_thread_share_a_write_and_its_outcome() {
        let (_dir, path, trail) = file_trail();
        let trail = &trail;
        let three = |base: u16| async move {
            tokio::join!(
                trail.append(line(base)),
                trail.append(line(base + 1)),
                trail.append(line(base + 2))
            )
        };

        // All three queue before the first writes; one write(2) takes them.
        let (a, b, c) = now(three(0));
        assert!(a.is_ok() && b.is_ok() && c.is_ok());
        assert_eq!(trail.sink.lock().unwrap().writes, 1);
        assert_eq!(keys(&path), ["\"k0\"", "\"k1\"", "\"k2\""]);

        // When that write fails, every append whose line it held fails,
        // also those that did not make the write themselves.
        let real = swap_file(trail, full_disk());
        let (a, b, c) = now(three(3));
        swap_file(trail, real);
        for outcome in [a, b, c] {
            let error = outcome.unwrap_err().to_string();
            assert!(error.contains("No space left"), "{error}");
        }
        now(trail.append(line(6))).unwrap();
        assert_eq!(keys(&path).len(), 4);
        assert_eq!(verify(&path).unwrap(), Verdict::Intact { lines: 4 });
    }

    #[test]
    fn a_failed_write_fails_only_the_appends_whose_lines_it_dropped() {
        let (_dir, path, trail) = file_trail();
        // Polled in order: lines 0 and 1 are queued, line 0's append writes
        // both, then line 2's write fails before line 1's append looks at
        // the outcome.
        let failing = async {
            tokio::task::yield_now().await;
            let real = swap_file(&trail, full_disk());
            let outcome = trail.append(line(2)).await;
            swap_file(&trail, real);
            outcome
        };
        let (a, c, b) = now(futures_util::future::join3(
            trail.append(line(0)),
            failing,
            trail.append(line(1)),
        ));
        assert!(c.is_err(), "the failed write's own line fails");
        assert!(
            a.is_ok() && b.is_ok(),
            "{a:?} {b:?}: their lines were written"
        );
        assert_eq!(keys(&path), ["\"k0\"", "\"k1\""]);
        assert_eq!(verify(&path).unwrap(), Verdict::Intact { lines: 2 });
    }

    #[test]
    fn a_partial_last_line_is_cut_off_at_open() {
        let (_dir, path, trail) = file_trail();
        now(trail.append(line(0))).unwrap();
        drop(trail);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"time\":\"2026").unwrap();
        let trail = started(&path);
        now(trail.append(line(1))).unwrap();
        assert_eq!(keys(&path), ["\"k0\"", "\"k1\""]);
        assert_eq!(verify(&path).unwrap(), Verdict::Intact { lines: 2 });
    }
}
