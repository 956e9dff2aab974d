//! The tamper-evident audit trail: one JSON line per request that reaches a
//! secret or an API key, allowed or refused, appended to
//! `<data-dir>/audit.log` (or, with the nats store, to a JetStream stream:
//! see `nats.rs`) before the response is sent.
//!
//! Each line ends with `"prev"`, the hash of the previous line (64 zeros for
//! the first), and `"hash"`, the SHA-256 of the line's own text before
//! `,"hash"` (which includes `prev`, so each hash covers the whole chain
//! before it). `verify` recomputes both, so an edited line is named by its
//! own hash, and a removed or reordered line by the first `prev` that no
//! longer matches. Lines never hold values or credentials: the subject of a
//! refused API key is at most the key's public id.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::auth::Principal;
use crate::clock::{now_ms, write_rfc3339};
use crate::json::push_u64;
use crate::store::CommitBarrier;

pub mod nats;

/// What one line records. The principal is shared with the request, not
/// copied, and the request id is copied once.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub request_id: Arc<str>,
    /// Who was authenticated: the line's tenant and subject.
    pub principal: Option<Arc<Principal>>,
    /// The subject of a refused credential (at most an API key's public id),
    /// when there is no principal.
    pub subject: Option<String>,
    pub action: &'static str,
    pub key: Option<String>,
    pub status: u16,
    pub client: Option<SocketAddr>,
}

/// Appends `"name":<JSON string or null>,` to `out`.
fn push_field(out: &mut String, name: &str, value: Option<&str>) {
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
    match value {
        Some(v) => {
            let _ = crate::json::write_str(out, v);
        }
        None => out.push_str("null"),
    }
    out.push(',');
}

/// The line's text up to its chain fields: everything but `prev` and
/// `hash`, which only the append that orders it can fill in.
pub(crate) fn render_body(entry: &AuditEntry) -> String {
    use std::fmt::Write;
    // Room for the chain fields too (`chain` appends about 150 bytes).
    let mut line = String::with_capacity(512);
    line.push_str("{\"time\":\"");
    let _ = write_rfc3339(&mut line, now_ms());
    line.push_str("\",");
    push_field(&mut line, "request_id", Some(&entry.request_id));
    let principal = entry.principal.as_deref();
    push_field(&mut line, "tenant", principal.map(|p| p.tenant.as_str()));
    push_field(
        &mut line,
        "subject",
        principal.map_or(entry.subject.as_deref(), |p| Some(&p.subject)),
    );
    push_field(&mut line, "action", Some(entry.action));
    push_field(&mut line, "key", entry.key.as_deref());
    line.push_str("\"status\":");
    push_u64(&mut line, u64::from(entry.status));
    line.push(',');
    // An address's text needs no JSON escaping.
    match entry.client {
        Some(SocketAddr::V4(addr)) => {
            line.push_str("\"client\":\"");
            for (i, octet) in addr.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    line.push('.');
                }
                push_u64(&mut line, u64::from(octet));
            }
            line.push(':');
            push_u64(&mut line, u64::from(addr.port()));
            line.push_str("\",");
        }
        Some(addr) => {
            let _ = write!(line, "\"client\":\"{addr}\",");
        }
        None => push_field(&mut line, "client", None),
    }
    line
}

/// Chains a `render_body` text to `prev`: appends `prev` and `hash` (the
/// SHA-256 of everything before `,"hash"`) and returns the hash.
pub(crate) fn chain(line: &mut String, prev: &str) -> String {
    line.push_str("\"prev\":\"");
    line.push_str(prev);
    line.push('"');
    let hash = sha256_hex(line.as_bytes());
    line.push_str(",\"hash\":\"");
    line.push_str(&hash);
    line.push_str("\"}");
    hash
}

/// The text of one line chained to `prev` (without the newline) and its
/// hash.
pub(crate) fn render(entry: &AuditEntry, prev: &str) -> (String, String) {
    let mut line = render_body(entry);
    let hash = chain(&mut line, prev);
    (line, hash)
}

/// The `hash` field of a line, if it has one.
fn hash_field(line: &str) -> Option<&str> {
    let at = line.rfind(",\"hash\":\"")?;
    Some(
        line[at..]
            .trim_start_matches(",\"hash\":\"")
            .trim_end_matches("\"}"),
    )
}

/// What the next line's `prev` must be after `line`: its `hash` (or, for a
/// damaged line, the SHA-256 of its text, so the chain still continues and
/// `verify` names the damage).
pub(crate) fn chain_hash(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    hash_field(&text)
        .map(str::to_owned)
        .unwrap_or_else(|| sha256_hex(line))
}

struct FileSink {
    path: PathBuf,
    file: File,
    /// The hash of the last line chained (written or staged).
    prev: String,
    /// The hash of the last line written.
    written: String,
    /// Lines chained but not written yet: staged by the changes of the
    /// batch the sqlite writer is running, or waiting for the write that
    /// appends combine into. Written ahead of any later line.
    pending: Vec<u8>,
    /// Writes that failed: each dropped the lines pending then.
    failures: u64,
    /// The lines the last failed writes dropped, as sequence ranges
    /// (after, upto], newest last; at most `DROPPED_KEPT`.
    dropped: std::collections::VecDeque<(u64, u64)>,
    /// What the last failed write said, for the appends whose lines it
    /// dropped.
    last_failure: Option<(std::io::ErrorKind, String)>,
    /// Lines chained so far (the sequence number of the last one).
    chained: u64,
    /// Lines whose write has been tried (written, or dropped by a failure).
    settled: u64,
    /// Writes of the pending lines tried (each one `write_all`).
    writes: u64,
}

/// How many failed writes' ranges a `FileSink` remembers. An append checks
/// its line within a scheduler tick of chaining it; one older than that many
/// failures is taken as dropped.
const DROPPED_KEPT: usize = 64;

impl FileSink {
    /// Whether a failed write dropped line `seq`, chained when `failures`
    /// writes had failed.
    fn was_dropped(&self, seq: u64, failures: u64) -> bool {
        let since = (self.failures - failures) as usize;
        if since > self.dropped.len() {
            return since > 0;
        }
        self.dropped
            .iter()
            .rev()
            .take(since)
            .any(|&(after, upto)| after < seq && seq <= upto)
    }

    /// Fails if a failed write dropped line `seq` (see `was_dropped`).
    fn outcome(&self, seq: u64, failures: u64) -> Result<(), AuditError> {
        if !self.was_dropped(seq, failures) {
            return Ok(());
        }
        let (kind, text) = self.last_failure.clone().unwrap_or((
            std::io::ErrorKind::Other,
            "a write of the audit log failed".into(),
        ));
        Err(AuditError::Io {
            path: self.path.display().to_string(),
            source: std::io::Error::new(kind, text),
        })
    }

    /// Chains `line` (a `render_body`) after the last line and queues it.
    fn chain(&mut self, mut line: String) {
        self.prev = chain(&mut line, &self.prev);
        line.push('\n');
        self.pending.extend_from_slice(line.as_bytes());
        self.chained += 1;
    }

    /// Writes the pending lines with one write(2). On failure they are
    /// dropped and the chain continues from the last line written.
    fn write_pending(&mut self) -> Result<(), AuditError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.pending);
        self.pending.clear();
        let after = std::mem::replace(&mut self.settled, self.chained);
        self.writes += 1;
        match result {
            Ok(()) => {
                self.written.clone_from(&self.prev);
                Ok(())
            }
            Err(source) => {
                self.prev.clone_from(&self.written);
                self.failures += 1;
                self.last_failure = Some((source.kind(), source.to_string()));
                if self.dropped.len() == DROPPED_KEPT {
                    self.dropped.pop_front();
                }
                self.dropped.push_back((after, self.chained));
                Err(AuditError::Io {
                    path: self.path.display().to_string(),
                    source,
                })
            }
        }
    }
}

/// `<data-dir>/audit.log`: appends are serialised by the mutex (the chain
/// needs a total order).
struct FileLog {
    sink: Mutex<FileSink>,
    /// Set once the store writes staged lines before each COMMIT
    /// (`CommitBarrier`); until then staging is appending.
    staged: AtomicBool,
    /// `FileSink::settled` and `failures` as of the last write, so an
    /// append whose line another append wrote returns without the lock.
    settled: AtomicU64,
    failures: AtomicU64,
}

impl FileLog {
    /// Appends `line` (a `render_body`). Appends combine: each chains its
    /// line, lets the other requests its thread has ready chain theirs,
    /// and the first back writes them all with one write(2).
    async fn append(&self, line: String) -> Result<(), AuditError> {
        let (seq, failures) = {
            let mut sink = lock_briefly(&self.sink);
            sink.chain(line);
            (sink.chained, sink.failures)
        };
        tokio::task::yield_now().await;
        if self.settled.load(Ordering::Acquire) >= seq
            && self.failures.load(Ordering::Acquire) == failures
        {
            return Ok(());
        }
        let mut sink = lock_briefly(&self.sink);
        if sink.settled < seq {
            // Our write: its error is ours too, and every line it held
            // is dropped.
            self.write_pending(&mut sink)?;
        }
        sink.outcome(seq, failures)
    }

    /// Appends `line` with a write of its own, at once (no yield): for a
    /// change's line before the barrier is installed, which the store's
    /// hook needs ready without waiting.
    fn append_now(&self, line: String) -> Result<(), AuditError> {
        let mut sink = lock_briefly(&self.sink);
        sink.chain(line);
        self.write_pending(&mut sink)
    }

    /// Stages `line` for the running batch's COMMIT once the barrier is
    /// installed; appends it until then.
    fn append_in_change(&self, line: String) -> Result<(), AuditError> {
        if self.staged.load(Ordering::Acquire) {
            lock_briefly(&self.sink).chain(line);
            Ok(())
        } else {
            self.append_now(line)
        }
    }

    /// `FileSink::write_pending`, then publishes its outcome: `failures`
    /// before `settled`, so whoever sees its line settled also sees
    /// whether that write failed.
    fn write_pending(&self, sink: &mut FileSink) -> Result<(), AuditError> {
        let result = sink.write_pending();
        self.failures.store(sink.failures, Ordering::Release);
        self.settled.store(sink.settled, Ordering::Release);
        result
    }
}

impl CommitBarrier for FileLog {
    fn begin(&self) -> u64 {
        lock_briefly(&self.sink).failures
    }

    /// Writes what the batch staged (and any line staged meanwhile) in one
    /// write(2); fails if that write, or any since `begin`, failed, since
    /// the batch's lines may then be lost.
    fn before_commit(&self, token: u64) -> Result<(), String> {
        let mut sink = lock_briefly(&self.sink);
        self.write_pending(&mut sink)
            .map_err(|e| format!("audit: {e}"))?;
        if sink.failures != token {
            return Err("audit: a write of the audit log failed".into());
        }
        Ok(())
    }
}

enum Sink {
    File(Arc<FileLog>),
    /// A JetStream stream (nats store), shared by every gateway.
    Nats(Box<nats::NatsSink>),
}

/// A line ready to append: rendered for the file, copied for the stream.
enum Prepared<'a> {
    File(&'a FileLog, String),
    Nats(&'a nats::NatsSink, AuditEntry),
}

/// The append-only trail: a file, or a JetStream stream with the nats store.
/// Both hold the same lines.
pub struct Audit {
    sink: Sink,
}

/// The `prev` of the first line.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    crate::hex::encode(digest.as_ref())
}

/// Why the trail could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("audit stream: {0}")]
    Nats(String),
}

impl Audit {
    /// Opens (creating, mode 0600) the trail and finds the hash of its last
    /// line so the chain continues across restarts.
    pub fn open(path: &Path) -> Result<Audit, AuditError> {
        let io = |source| AuditError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        let prev = if file.metadata().map_err(io)?.is_file() {
            last_line_hash(&mut file).map_err(io)?
        } else {
            GENESIS.to_owned()
        };
        Ok(Audit {
            sink: Sink::File(Arc::new(FileLog {
                sink: Mutex::new(FileSink {
                    path: path.to_owned(),
                    file,
                    written: prev.clone(),
                    prev,
                    pending: Vec::new(),
                    failures: 0,
                    dropped: Default::default(),
                    last_failure: None,
                    chained: 0,
                    settled: 0,
                    writes: 0,
                }),
                staged: AtomicBool::new(false),
                settled: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            })),
        })
    }

    /// The trail in stream `<bucket>_audit` (subject `<bucket>.audit`) over
    /// `client`; the stream is created on first use.
    pub fn nats(client: async_nats::Client, bucket: &str, replicas: usize) -> Audit {
        Audit {
            sink: Sink::Nats(Box::new(nats::NatsSink::new(client, bucket, replicas))),
        }
    }

    /// Appends the line of the entry a request is filling in, with
    /// `status` set: written, or published and acknowledged, before this
    /// returns; the request must fail if this fails. The file trail renders
    /// it under the entry's lock; only the stream trail, which may retry,
    /// copies it.
    ///
    /// `in_change`: the line of a change, from inside the change's
    /// transaction. With the file trail and the barrier installed
    /// (`commit_barrier`), it is chained now and written with its batch's
    /// other lines just before the COMMIT; otherwise it is appended at once.
    pub async fn record(
        &self,
        entry: &Mutex<AuditEntry>,
        status: u16,
        in_change: bool,
    ) -> Result<(), AuditError> {
        // The entry's lock ends before any await.
        let prepared = {
            let mut entry = entry.lock().unwrap_or_else(|p| p.into_inner());
            entry.status = status;
            match &self.sink {
                Sink::File(log) => Prepared::File(log, render_body(&entry)),
                Sink::Nats(sink) => Prepared::Nats(sink, entry.clone()),
            }
        };
        match prepared {
            Prepared::File(log, line) if in_change => log.append_in_change(line),
            Prepared::File(log, line) => log.append(line).await,
            // Boxed: the stream append's future is large, and inline it
            // would make every request's future (moved into a box by each
            // layer) as large.
            Prepared::Nats(sink, entry) => Box::pin(sink.append(&entry)).await,
        }
    }

    /// Writes any line still pending (one whose request was cancelled
    /// while its append waited), at shutdown.
    pub fn flush(&self) {
        if let Sink::File(log) = &self.sink {
            let mut sink = lock_briefly(&log.sink);
            if let Err(e) = log.write_pending(&mut sink) {
                tracing::error!(error = %e, "audit: pending lines could not be written");
            }
        }
    }

    /// The barrier the embedded store's writer must run around each batch
    /// so changes' lines (`record` with `in_change`) are written before its
    /// COMMIT;
    /// `None` for the stream trail, which appends at once.
    pub fn commit_barrier(&self) -> Option<Arc<dyn CommitBarrier>> {
        match &self.sink {
            Sink::File(log) => Some(log.clone() as Arc<dyn CommitBarrier>),
            Sink::Nats(_) => None,
        }
    }

    /// Called once the store has installed `commit_barrier`: from then on
    /// changes' lines are staged instead of written each at once.
    pub fn stage_changes(&self) {
        if let Sink::File(log) = &self.sink {
            log.staged.store(true, Ordering::Release);
        }
    }
}

/// Takes a lock that is only ever held for a few microseconds (one hash and
/// one write(2)): spins for about that long (512 pause instructions, a few
/// microseconds) before sleeping on it, since a worker put to sleep and
/// woken again costs more than the wait.
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

/// The chain hash of the last line of `file`, or the genesis value when empty.
fn last_line_hash(file: &mut File) -> std::io::Result<String> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(GENESIS.to_owned());
    }
    // Read back far enough to hold the last line (lines are short).
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    let text = tail.strip_suffix(b"\n").unwrap_or(&tail);
    Ok(chain_hash(
        text.rsplit(|&b| b == b'\n').next().unwrap_or(text),
    ))
}

/// The outcome of `verify`: the 1-based number of the first bad line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Intact { lines: usize },
    Broken { line: usize, reason: &'static str },
}

/// Checks the whole chain of the trail at `path`.
pub fn verify(path: &Path) -> std::io::Result<Verdict> {
    let reader = BufReader::new(File::open(path)?);
    verify_lines(reader.split(b'\n'))
}

/// Checks the chain of `lines` (each without its newline), in order.
pub fn verify_lines<E>(lines: impl IntoIterator<Item = Result<Vec<u8>, E>>) -> Result<Verdict, E> {
    let mut prev = GENESIS.to_owned();
    let mut count = 0;
    for (i, line) in lines.into_iter().enumerate() {
        let line = line?;
        let n = i + 1;
        let Ok(text) = std::str::from_utf8(&line) else {
            return Ok(Verdict::Broken {
                line: n,
                reason: "not UTF-8",
            });
        };
        let (Some(claimed), Some(at)) = (hash_field(text), text.rfind(",\"hash\":\"")) else {
            return Ok(Verdict::Broken {
                line: n,
                reason: "no hash field",
            });
        };
        if sha256_hex(&text.as_bytes()[..at]) != claimed {
            return Ok(Verdict::Broken {
                line: n,
                reason: "line was edited",
            });
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
            return Ok(Verdict::Broken {
                line: n,
                reason: "not JSON",
            });
        };
        if value.get("prev").and_then(|p| p.as_str()) != Some(prev.as_str()) {
            return Ok(Verdict::Broken {
                line: n,
                reason: "previous line is missing or out of order",
            });
        }
        prev = claimed.to_owned();
        count = n;
    }
    Ok(Verdict::Intact { lines: count })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u16) -> AuditEntry {
        AuditEntry {
            request_id: format!("r{i}").into(),
            principal: Some(Arc::new(Principal {
                tenant: crate::types::TenantId::parse("t").unwrap(),
                subject: "apikey:abc".into(),
                scopes: Vec::new(),
            })),
            subject: None,
            action: "secrets.read",
            key: Some(format!("k{i}")),
            status: 200,
            client: Some("127.0.0.1:1".parse().unwrap()),
        }
    }

    #[test]
    fn a_line_holds_the_status_and_the_client_address_as_text() {
        for (client, text, status) in [
            (Some("10.0.0.255:65535"), Some("10.0.0.255:65535"), 503),
            (Some("0.0.0.0:0"), Some("0.0.0.0:0"), 0),
            (Some("[::1]:8210"), Some("[::1]:8210"), 200),
            (None, None, 65535),
        ] {
            let mut e = entry(1);
            e.client = client.map(|c| c.parse().unwrap());
            e.status = status;
            let (line, hash) = render(&e, &"0".repeat(64));
            let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(parsed["client"].as_str(), text, "{line}");
            assert_eq!(parsed["status"], status, "{line}");
            assert_eq!(parsed["hash"], hash);
            // The hash covers the hand-formatted text before it.
            let covered = &line[..line.rfind(",\"hash\"").unwrap()];
            assert_eq!(hash, sha256_hex(covered.as_bytes()));
        }
    }

    /// A read's line, through `record` as the API layer appends it.
    async fn append(audit: &Audit, entry: &AuditEntry) -> Result<(), AuditError> {
        audit
            .record(&Mutex::new(entry.clone()), entry.status, false)
            .await
    }

    /// A change's line, from inside its transaction.
    async fn append_in_change(audit: &Audit, entry: &AuditEntry) -> Result<(), AuditError> {
        audit
            .record(&Mutex::new(entry.clone()), entry.status, true)
            .await
    }

    fn write(path: &Path, n: u16) {
        let audit = Audit::open(path).unwrap();
        for i in 0..n {
            now(append(&audit, &entry(i))).unwrap();
        }
    }

    #[test]
    fn an_intact_chain_verifies_and_continues_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write(&path, 3);
        write(&path, 2);
        assert_eq!(verify(&path).unwrap(), Verdict::Intact { lines: 5 });
    }

    #[test]
    fn edits_removals_and_reorders_name_the_first_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        write(&path, 5);
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

    /// A file trail in a fresh temp dir (which lives as long as the guard).
    fn file_trail() -> (tempfile::TempDir, PathBuf, Audit) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let audit = Audit::open(&path).unwrap();
        (dir, path, audit)
    }

    fn file_log(audit: &Audit) -> &FileLog {
        let Sink::File(log) = &audit.sink else {
            unreachable!("a file trail")
        };
        log
    }

    /// Puts `file` under the trail in place of its file; returns that one.
    fn swap_file(audit: &Audit, file: File) -> File {
        std::mem::replace(&mut file_log(audit).sink.lock().unwrap().file, file)
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
    fn staged_lines_are_written_before_the_commit_in_chain_order() {
        let (_dir, path, audit) = file_trail();
        let barrier = audit.commit_barrier().unwrap();
        // Before the store installs the barrier, a change's line is written
        // at once.
        now(append_in_change(&audit, &entry(0))).unwrap();
        assert_eq!(keys(&path).len(), 1);
        audit.stage_changes();

        let token = barrier.begin();
        now(append_in_change(&audit, &entry(1))).unwrap();
        assert_eq!(keys(&path).len(), 1, "a staged line waits for the batch");
        // A read's line meanwhile is written at once, after the staged one.
        now(append(&audit, &entry(2))).unwrap();
        now(append_in_change(&audit, &entry(3))).unwrap();
        barrier.before_commit(token).unwrap();
        assert_eq!(keys(&path), ["\"k0\"", "\"k1\"", "\"k2\"", "\"k3\""]);
        assert_eq!(verify(&path).unwrap(), Verdict::Intact { lines: 4 });
    }

    #[test]
    fn a_failed_write_fails_the_batch_and_the_chain_continues() {
        let (_dir, path, audit) = file_trail();
        let barrier = audit.commit_barrier().unwrap();
        audit.stage_changes();
        now(append(&audit, &entry(0))).unwrap();

        // The disk fills while a batch is staged: a read's write fails and
        // drops the staged line with its own, so the batch must fail too.
        let token = barrier.begin();
        now(append_in_change(&audit, &entry(1))).unwrap();
        let real = swap_file(&audit, full_disk());
        assert!(now(append(&audit, &entry(2))).is_err());
        swap_file(&audit, real);
        assert!(barrier.before_commit(token).is_err());

        // Later lines chain on from the last line written.
        let token = barrier.begin();
        now(append_in_change(&audit, &entry(3))).unwrap();
        barrier.before_commit(token).unwrap();
        now(append(&audit, &entry(4))).unwrap();
        assert_eq!(keys(&path), ["\"k0\"", "\"k3\"", "\"k4\""]);
        assert_eq!(verify(&path).unwrap(), Verdict::Intact { lines: 3 });
    }

    #[test]
    fn appends_on_one_thread_share_a_write_and_its_outcome() {
        let (_dir, path, audit) = file_trail();
        let entries = [entry(0), entry(1), entry(2)];
        let three = || async {
            tokio::join!(
                append(&audit, &entries[0]),
                append(&audit, &entries[1]),
                append(&audit, &entries[2])
            )
        };

        // All three chain before the first writes; one write(2) takes them.
        let (a, b, c) = now(three());
        assert!(a.is_ok() && b.is_ok() && c.is_ok());
        assert_eq!(file_log(&audit).sink.lock().unwrap().writes, 1);
        assert_eq!(keys(&path), ["\"k0\"", "\"k1\"", "\"k2\""]);

        // When that write fails, every append whose line it held fails,
        // also those that did not make the write themselves.
        let real = swap_file(&audit, full_disk());
        let (a, b, c) = now(three());
        swap_file(&audit, real);
        for outcome in [a, b, c] {
            let error = outcome.unwrap_err().to_string();
            assert!(error.contains("No space left"), "{error}");
        }
        now(append(&audit, &entry(3))).unwrap();
        assert_eq!(keys(&path).len(), 4);
        assert_eq!(verify(&path).unwrap(), Verdict::Intact { lines: 4 });
    }

    #[test]
    fn a_line_body_is_json_with_its_fields_escaped() {
        let mut e = entry(1);
        e.key = Some("a\"b\u{1}".into());
        let line: serde_json::Value =
            serde_json::from_str(&format!("{}\"x\":0}}", render_body(&e))).unwrap();
        assert_eq!(line["key"], "a\"b\u{1}");
        assert_eq!(line["status"], e.status);
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_failed_write_fails_only_the_appends_whose_lines_it_dropped() {
        let (_dir, path, audit) = file_trail();
        let entries = [entry(0), entry(1), entry(2)];
        // Polled in order: lines 0 and 1 are chained, line 0's append
        // writes both, then line 2's write fails before line 1's append
        // looks at the outcome.
        let failing = async {
            tokio::task::yield_now().await;
            let real = swap_file(&audit, full_disk());
            let outcome = append_in_change(&audit, &entries[2]).await;
            swap_file(&audit, real);
            outcome
        };
        let (a, c, b) = now(futures_util::future::join3(
            append(&audit, &entries[0]),
            failing,
            append(&audit, &entries[1]),
        ));
        assert!(c.is_err(), "the failed write's own line fails");
        assert!(
            a.is_ok() && b.is_ok(),
            "{a:?} {b:?}: their lines were written"
        );
        assert_eq!(keys(&path), ["\"k0\"", "\"k1\""]);
        assert_eq!(verify(&path).unwrap(), Verdict::Intact { lines: 2 });
    }
}
