//! The audit trail's vocabulary, shared by the store's handle and both
//! engines: a line as data (`LineBody`), the names of chains and their head
//! records, what a reader gets back, and the trail's error.

use std::sync::Arc;

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

/// How the trail names a chain's subject or head record after `base`:
/// `base` itself for chain "" (the one shared chain), `base.<chain>` for a
/// gateway's.
pub fn chain_name(base: &str, chain: &str) -> String {
    if chain.is_empty() {
        base.to_owned()
    } else {
        format!("{base}.{chain}")
    }
}

/// The chain `name` names after `base` (the inverse of `chain_name`), if it
/// names one.
pub fn chain_named<'a>(base: &str, name: &'a str) -> Option<&'a str> {
    match name.strip_prefix(base)? {
        "" => Some(""),
        rest => rest.strip_prefix('.'),
    }
}

/// Why a line could not be appended: the request must fail (503) and, for a
/// change, the change is not made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("audit trail: {0}")]
pub struct TrailError(pub String);

/// A whole trail as `audit verify` and `audit export` read it.
#[derive(Debug)]
pub struct RecordedTrail {
    /// What to call it in messages: `audit.log`'s path, or the stream.
    /// `line_in_file` names the file of a line when there are several.
    pub name: String,
    /// Every line, oldest first, each without its newline.
    pub lines: Vec<Vec<u8>>,
    /// The files the lines came from, in order, with how many each held
    /// (sqlite: rotated files, then `audit.log`; empty for a stream).
    pub files: Vec<(String, usize)>,
    /// Changes begun with no line of their request (nats; none on sqlite,
    /// whose lines commit with their changes).
    pub unfinished: Vec<Unfinished>,
}

impl RecordedTrail {
    /// Where the trail's `line`th line (1-based) is: its file and its line
    /// there, when the trail spans several files.
    pub fn line_in_file(&self, line: usize) -> Option<(&str, usize)> {
        if self.files.len() < 2 {
            return None;
        }
        let mut before = 0;
        for (name, count) in &self.files {
            if line <= before + count {
                return Some((name, line - before));
            }
            before += count;
        }
        self.files
            .last()
            .map(|(name, count)| (name.as_str(), count + 1))
    }
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

/// A page of lines read from a trail.
#[derive(Debug, Default)]
pub struct Page {
    pub lines: Vec<serde_json::Value>,
    /// The number of the last line returned when more may follow.
    pub next: Option<u64>,
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
