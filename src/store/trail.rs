//! The audit trail as the store keeps it: a hash-chained sequence of lines,
//! written by each engine inside the same unit of work as the change it
//! records (`sqlite`: the file `audit.log`, with each batch's lines before its
//! COMMIT; `nats`: the stream `<bucket>_audit`, after the change is stored).
//! What a line says is decided above the store (`audit::render`): the store
//! receives a `LineBody` and only chains and writes it.
//!
//! `chain.rs` is the line format: each line carries its number, the MAC of
//! the line before it and its own MAC under the audit key.

use std::sync::Arc;

pub use super::chain::{AuditKey, ChainHead};
use super::engine::Backend;
use super::{nats, sqlite, Engine, StoreConfig, StoreError};

/// One audit line as data: the text up to its chain fields (a JSON object's
/// opening and fields, each followed by a comma: `{"time":…,"client":…,`),
/// and the id of the request it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineBody {
    pub text: String,
    pub request_id: Arc<str>,
}

/// The meta name under which an engine records its chain head.
pub const AUDIT_HEAD: &str = "audit_head";

/// Why a line could not be appended: the request must fail (503) and, for a
/// change, the change is not made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("audit trail: {0}")]
pub struct TrailError(pub String);

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

    /// Writes what is still queued (a line whose request was cancelled
    /// while it waited), at shutdown.
    pub fn flush(&self) {
        if let Kind::File(file) = &self.0 {
            file.flush();
        }
    }
}

/// A whole trail as `audit verify` and `audit export` read it.
#[derive(Debug)]
pub struct RecordedTrail {
    /// What to call it in messages: `audit.log`'s path, or the stream.
    pub name: String,
    /// Every line, oldest first, each without its newline.
    pub lines: Vec<Vec<u8>>,
    /// Changes begun with no line of their request (nats; none on sqlite,
    /// whose lines commit with their changes).
    pub unfinished: Vec<Unfinished>,
}

/// An intent no line answers: its gateway stopped between the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    pub request_id: String,
    /// The KV subject it was to change.
    pub subject: String,
    /// Whether the change was made; `None` when pruning took the evidence.
    pub made: Option<bool>,
}

/// The lines of a trail file's text, each without its newline.
pub fn file_lines(text: &[u8]) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    // The file ends with a newline: no line after it.
    if lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    lines
}

/// Reads the whole trail of the configured store.
pub async fn read_trail(config: &StoreConfig) -> Result<RecordedTrail, StoreError> {
    match config.engine {
        Engine::Sqlite => {
            let path = config.data_dir.join("audit.log");
            let text = std::fs::read(&path).map_err(|e| {
                StoreError::Unavailable(format!("cannot read {}: {e}", path.display()))
            })?;
            Ok(RecordedTrail {
                name: path.display().to_string(),
                lines: file_lines(&text),
                unfinished: Vec::new(),
            })
        }
        Engine::Nats => {
            let backend = nats::NatsBackend::open(nats::NatsSettings::from(config), false).await?;
            let read = async {
                let recorded = nats::read_all(backend.client(), &config.nats_bucket).await?;
                let unfinished = nats::unfinished(backend.client(), &recorded).await?;
                Ok::<_, TrailError>(RecordedTrail {
                    name: format!("stream {}_audit", config.nats_bucket),
                    lines: recorded.lines,
                    unfinished,
                })
            };
            let read = read.await;
            backend.close().await;
            read.map_err(|e| StoreError::Unavailable(e.to_string()))
        }
    }
}
