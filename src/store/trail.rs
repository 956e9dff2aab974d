//! The audit trail as the store keeps it: a hash-chained sequence of lines,
//! written by each engine inside the same unit of work as the change it
//! records (`sqlite`: the file `audit.log`, with each batch's lines before its
//! COMMIT; `nats`: the stream `<bucket>_audit`, after the change is stored).
//! What a line says is decided above the store (`audit::render`): the store
//! receives a `LineBody` and only chains and writes it.
//!
//! `chain.rs` is the line format: each line carries its number, the MAC of
//! the line before it and its own MAC under the audit key.

use std::path::Path;
use std::sync::Arc;

pub use super::chain::{AuditKey, ChainHead};
use super::engine::Backend;
pub use super::lines::{
    chain_name, chain_named, file_lines, LineBody, Page, RecordedTrail, TrailError, Unfinished,
    AUDIT_HEAD,
};
use super::{nats, sqlite, Engine, StoreConfig, StoreError};

/// Appends the lines that record no change (reads, refusals). Cheap to clone.
#[derive(Clone)]
pub struct Trail(Kind);

#[derive(Clone)]
enum Kind {
    File(Arc<sqlite::FileTrail>),
    Stream(Arc<nats::StreamTrail>),
}

impl Trail {
    pub(super) fn file(trail: Arc<sqlite::FileTrail>) -> Trail {
        Trail(Kind::File(trail))
    }

    pub(super) fn stream(trail: Arc<nats::StreamTrail>) -> Trail {
        Trail(Kind::Stream(trail))
    }

    /// Starts the trail with the key its lines are chained under; until
    /// then every append fails. Returns where the chain stands.
    pub async fn start(&self, key: AuditKey) -> Result<ChainHead, TrailError> {
        match &self.0 {
            Kind::File(file) => Ok(file.start(key)),
            Kind::Stream(stream) => Box::pin(stream.start(key)).await,
        }
    }

    /// Appends one line; returns once it is written (file) or acknowledged
    /// (stream). A request must not be answered if this fails.
    pub async fn append(&self, body: LineBody) -> Result<(), TrailError> {
        match &self.0 {
            Kind::File(file) => file.append(body).await,
            // Boxed: the stream append's future is large, and inline it
            // would size every request's future.
            Kind::Stream(stream) => Box::pin(stream.append(body)).await,
        }
    }

    /// Appends lines in order; returns once all are written (file) or
    /// acknowledged (stream). A request must not be answered if this fails.
    pub async fn append_all(&self, bodies: Vec<LineBody>) -> Result<(), TrailError> {
        match &self.0 {
            Kind::File(file) => file.append_all(bodies).await,
            // Appended together, so the publisher takes them in its batches;
            // one that fails fails the request, whatever the others did.
            Kind::Stream(stream) => {
                let appends = bodies.into_iter().map(|body| Box::pin(stream.append(body)));
                futures_util::future::try_join_all(appends)
                    .await
                    .map(|_| ())
            }
        }
    }

    /// The chain this process appends to: "" for the file trail's one
    /// chain, the gateway's own on a stream.
    pub fn chain(&self) -> &str {
        match &self.0 {
            Kind::File(_) => "",
            Kind::Stream(stream) => stream.chain(),
        }
    }

    /// Where another chain of the trail ends (streams; a file has one).
    pub async fn chain_tail(&self, chain: &str) -> Result<ChainHead, TrailError> {
        match &self.0 {
            Kind::File(_) => Err(TrailError(format!("a file trail has no chain {chain:?}"))),
            Kind::Stream(stream) => Box::pin(stream.chain_tail(chain)).await,
        }
    }

    /// Forgets the recorded heads of other chains, lost and superseded by
    /// this process's chain (`--audit-restart-chain`). The file trail's one
    /// record is replaced by its next line's head anyway.
    pub async fn retire(&self, chains: &[String]) -> Result<(), TrailError> {
        match &self.0 {
            Kind::File(_) => Ok(()),
            Kind::Stream(stream) => stream.retire(chains).await,
        }
    }

    /// Why the trail cannot take lines now, if its file was removed or
    /// replaced under it (file trails; a stream reports through its appends).
    pub fn lost(&self) -> Option<String> {
        match &self.0 {
            Kind::File(file) => file.lost(),
            Kind::Stream(_) => None,
        }
    }

    /// Appends that failed since the trail opened (file trails).
    pub fn failures(&self) -> u64 {
        match &self.0 {
            Kind::File(file) => file.failures(),
            Kind::Stream(_) => 0,
        }
    }

    /// Up to `limit` lines numbered after `after` that `keep` accepts,
    /// oldest first, parsed, with whether more may follow; reads across
    /// rotated files (file) or the whole stream.
    pub async fn read_after(
        &self,
        after: u64,
        limit: usize,
        keep: impl Fn(&serde_json::Value) -> bool + Send + Sync + 'static,
    ) -> Result<Page, TrailError> {
        match &self.0 {
            Kind::File(file) => {
                // Listing the directory and opening the files block too.
                let file = file.clone();
                tokio::task::spawn_blocking(move || {
                    let view = file
                        .view()
                        .map_err(|e| TrailError(format!("reading the audit trail: {e}")))?;
                    read_files(view, Selection::new(after, limit, &keep))
                })
                .await
                .map_err(|_| TrailError("reading the trail failed".into()))?
            }
            Kind::Stream(stream) => {
                // Each gateway numbers its own chain: a line's number here
                // is its place in the stream.
                let mut selection = Selection::new(after, limit, &keep);
                selection.by_place = true;
                let mut offer = |place: u64, line: &[u8]| selection.offer(place, line);
                Box::pin(stream.read_page(after, &mut offer)).await?;
                Ok(selection.page)
            }
        }
    }

    /// Writes what is still queued (a line whose request was cancelled
    /// while it waited), at shutdown.
    pub fn flush(&self) {
        if let Kind::File(file) = &self.0 {
            file.flush();
        }
    }
}

/// Picks a page out of a trail's lines as they are offered, in order: each
/// line's number is its `seq` (keyed lines of a file) or its place (lines
/// written before, and every line of a stream, which holds several chains).
struct Selection<'a> {
    after: u64,
    by_place: bool,
    limit: usize,
    keep: &'a (dyn Fn(&serde_json::Value) -> bool + Sync),
    page: Page,
    last: u64,
}

impl<'a> Selection<'a> {
    fn new(
        after: u64,
        limit: usize,
        keep: &'a (dyn Fn(&serde_json::Value) -> bool + Sync),
    ) -> Self {
        Selection {
            after,
            by_place: false,
            limit,
            keep,
            page: Page::default(),
            last: after,
        }
    }

    /// Takes the line at `place`; false once the page is full.
    fn offer(&mut self, place: u64, line: &[u8]) -> bool {
        let text = String::from_utf8_lossy(line);
        let seq = match super::chain::v2_fields(&text) {
            Some((seq, _)) if !self.by_place => seq,
            _ => place,
        };
        if seq <= self.after {
            return true;
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
            return true;
        };
        if !(self.keep)(&value) {
            return true;
        }
        if self.page.lines.len() == self.limit {
            self.page.next = Some(self.last);
            return false;
        }
        self.page.lines.push(value);
        self.last = seq;
        true
    }
}

/// Reads a file trail's files in order into `selection`, skipping whole
/// files whose lines all come at or before its `after`, and reading the
/// rest a line at a time, only up to what it needs.
fn read_files(view: Vec<sqlite::TrailFile>, mut selection: Selection) -> Result<Page, TrailError> {
    use std::io::{BufRead, Read, Seek};
    let failed = |e: std::io::Error| TrailError(format!("reading the audit trail: {e}"));
    let starts: Vec<u64> = view.iter().map(|f| f.first_seq).collect();
    for (i, mut file) in view.into_iter().enumerate() {
        if starts
            .get(i + 1)
            .is_some_and(|&next| next <= selection.after.saturating_add(1))
        {
            continue;
        }
        // Straight to the first line past `after` (a 100 MiB file holds
        // some 400,000 lines), when the file's lines carry their numbers.
        let (mut offset, mut first) = (0, file.first_seq);
        if selection.after >= file.first_seq {
            if let Some((at, seq)) =
                first_line_after(&file.file, file.len, selection.after).map_err(failed)?
            {
                (offset, first) = (at, seq);
            }
        }
        if offset >= file.len {
            continue;
        }
        file.file
            .seek(std::io::SeekFrom::Start(offset))
            .map_err(failed)?;
        let reader = std::io::BufReader::new(file.file.take(file.len - offset));
        for (place, line) in (first..).zip(reader.split(b'\n')) {
            let line = line.map_err(failed)?;
            if !selection.offer(place, &line) {
                return Ok(selection.page);
            }
        }
    }
    Ok(selection.page)
}

/// The byte offset and number of the first line of `file` (its first `len`
/// bytes) numbered past `after`, found by bisection on the numbers v2 lines
/// begin with: a few dozen reads however long the file. `None` when a line
/// it meets carries no number (an older trail's), to be read in order.
fn first_line_after(
    file: &std::fs::File,
    len: u64,
    after: u64,
) -> std::io::Result<Option<(u64, u64)>> {
    // Numbered lines are past `after` from some byte on: the first byte
    // whose next line start is that line's.
    let (mut lo, mut hi) = (0u64, len);
    let mut found = None;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let Some(start) = line_start_at_or_after(file, len, mid)? else {
            hi = mid;
            continue;
        };
        let Some(seq) = seq_at(file, len, start)? else {
            return Ok(None);
        };
        if seq > after {
            found = Some((start, seq));
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(match found {
        Some(found) => Some(found),
        // Every line is at or before `after`: nothing to read.
        None => Some((len, after.saturating_add(1))),
    })
}

/// The first line start at or after `at` (0, or just past a newline).
fn line_start_at_or_after(file: &std::fs::File, len: u64, at: u64) -> std::io::Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    if at == 0 {
        return Ok(Some(0));
    }
    let mut pos = at - 1;
    let mut buf = [0u8; 4096];
    while pos < len {
        let want = buf.len().min((len - pos) as usize);
        let n = file.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            break;
        }
        if let Some(i) = buf[..n].iter().position(|&b| b == b'\n') {
            let start = pos + i as u64 + 1;
            return Ok((start < len).then_some(start));
        }
        pos += n as u64;
    }
    Ok(None)
}

/// The number a v2 line starting at `start` leads with.
fn seq_at(file: &std::fs::File, len: u64, start: u64) -> std::io::Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 64];
    let want = buf.len().min((len - start) as usize);
    let n = file.read_at(&mut buf[..want], start)?;
    let text = String::from_utf8_lossy(&buf[..n]);
    Ok(super::chain::leading_seq(&text))
}

/// Reads the whole trail of the configured store.
pub async fn read_trail(config: &StoreConfig) -> Result<RecordedTrail, StoreError> {
    match config.engine {
        Engine::Sqlite => {
            let path = config.data_dir.join("audit.log");
            let cannot =
                |p: &Path, e| StoreError::Unavailable(format!("cannot read {}: {e}", p.display()));
            let mut trail = RecordedTrail {
                name: path.display().to_string(),
                lines: Vec::new(),
                files: Vec::new(),
                unfinished: Vec::new(),
            };
            let files = sqlite::trail_files(&path).map_err(|e| cannot(&path, e))?;
            if files.is_empty() {
                return Err(cannot(&path, std::io::ErrorKind::NotFound.into()));
            }
            for file in files {
                let text = std::fs::read(&file).map_err(|e| cannot(&file, e))?;
                let lines = file_lines(&text);
                trail.files.push((file.display().to_string(), lines.len()));
                trail.lines.extend(lines);
            }
            Ok(trail)
        }
        Engine::Nats => {
            let backend = nats::NatsBackend::open(nats::NatsSettings::from(config), false).await?;
            let read = async {
                let recorded = nats::read_all(backend.client(), &config.nats_bucket).await?;
                let unfinished = nats::unfinished(backend.client(), &recorded).await?;
                Ok::<_, TrailError>(RecordedTrail {
                    name: format!("stream {}_audit", config.nats_bucket),
                    lines: recorded.lines.into_iter().map(|(_, line)| line).collect(),
                    files: Vec::new(),
                    unfinished,
                })
            };
            let read = read.await;
            backend.close().await;
            read.map_err(|e| StoreError::Unavailable(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_name_reads_back_as_its_chain_and_nothing_else_does() {
        for chain in ["", "0123456789abcdef"] {
            let name = chain_name(AUDIT_HEAD, chain);
            assert_eq!(chain_named(AUDIT_HEAD, &name), Some(chain));
        }
        assert_eq!(chain_named(AUDIT_HEAD, "audit_headx"), None);
        assert_eq!(chain_named(AUDIT_HEAD, "audit_key"), None);
    }

    /// Lines numbered `first..`, each padded to a different length.
    fn numbered_file(first: u64, n: u64) -> (tempfile::NamedTempFile, u64) {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        for seq in first..first + n {
            let pad = "x".repeat((seq % 7) as usize * 40);
            writeln!(
                file,
                "{{\"v\":2,\"seq\":{seq},\"pad\":\"{pad}\",\"mac\":\"m\"}}"
            )
            .unwrap();
        }
        let len = file.as_file().metadata().unwrap().len();
        (file, len)
    }

    #[test]
    fn bisection_finds_the_first_line_past_any_number() {
        let (file, len) = numbered_file(100, 500);
        let text = std::fs::read_to_string(file.path()).unwrap();
        for after in [0, 99, 100, 101, 350, 598, 599, 600, u64::MAX] {
            let got = first_line_after(file.as_file(), len, after)
                .unwrap()
                .unwrap();
            let want = text
                .lines()
                .scan(0u64, |at, line| {
                    let start = *at;
                    *at += line.len() as u64 + 1;
                    Some((start, crate::store::chain::leading_seq(line).unwrap()))
                })
                .find(|(_, seq)| *seq > after)
                .unwrap_or((len, after.saturating_add(1)));
            assert_eq!(got, want, "after {after}");
        }
        // An older line without a number: read in order instead.
        let mut old = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut old, b"{\"time\":1}\n{\"time\":2}\n").unwrap();
        assert_eq!(first_line_after(old.as_file(), 24, 1).unwrap(), None);
    }
}
