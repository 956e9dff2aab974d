//! The audit trail as the store keeps it: a hash-chained sequence of lines,
//! written by each engine inside the same unit of work as the change it
//! records (`sqlite`: the file `audit.log`, with each batch's lines before its
//! COMMIT; `nats`: the stream `<bucket>_audit`, after the change is stored).
//! What a line says is decided above the store (`audit::render`): the store
//! receives a `LineBody` and only chains and writes it.
//!
//! A line is its body followed by `"prev"`, the hash of the previous line
//! (64 zeros for the first), and `"hash"`, the SHA-256 of the line's own text
//! before `,"hash"`, so each hash covers the whole chain before it.

use std::sync::Arc;

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

/// The `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub fn sha256_hex(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    hex::encode(digest.as_ref())
}

/// The text of `body` chained to `prev` (without a newline) and its hash.
pub fn chain(body: &str, prev: &str) -> (String, String) {
    let mut line = String::with_capacity(body.len() + 150);
    line.push_str(body);
    line.push_str("\"prev\":\"");
    line.push_str(prev);
    line.push('"');
    let hash = sha256_hex(line.as_bytes());
    line.push_str(",\"hash\":\"");
    line.push_str(&hash);
    line.push_str("\"}");
    (line, hash)
}

/// The `hash` field of a line and where `,"hash"` begins, if it has one.
pub fn hash_field(line: &str) -> Option<(&str, usize)> {
    let at = line.rfind(",\"hash\":\"")?;
    let hash = line[at..]
        .trim_start_matches(",\"hash\":\"")
        .trim_end_matches("\"}");
    Some((hash, at))
}

/// What the next line's `prev` must be after `line`: its `hash` (or, for a
/// damaged line, the SHA-256 of its text, so the chain still continues and
/// `verify` names the damage).
pub fn chain_hash(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    hash_field(&text)
        .map(|(hash, _)| hash.to_owned())
        .unwrap_or_else(|| sha256_hex(line))
}

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

/// Reads the whole trail of the configured store.
pub async fn read_trail(config: &StoreConfig) -> Result<RecordedTrail, StoreError> {
    match config.engine {
        Engine::Sqlite => {
            let path = config.data_dir.join("audit.log");
            let text = std::fs::read(&path).map_err(|e| {
                StoreError::Unavailable(format!("cannot read {}: {e}", path.display()))
            })?;
            let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            // The file ends with a newline: no line after it.
            if lines.last().is_some_and(Vec::is_empty) {
                lines.pop();
            }
            Ok(RecordedTrail {
                name: path.display().to_string(),
                lines,
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
