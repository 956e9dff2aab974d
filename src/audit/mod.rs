//! The tamper-evident audit trail: one JSON line per request that reaches a
//! secret or an API key, allowed or refused, appended to
//! `<data-dir>/audit.log` (or, with the nats store, to a JetStream stream:
//! see `nats.rs`) before the response is sent.
//!
//! Each line ends with `"prev"`, the SHA-256 of the previous line (64 zeros
//! for the first), and `"hash"`, the SHA-256 of the line's own text before
//! `,"hash"`. `verify` recomputes both, so an edited line is named by its
//! own hash, and a removed or reordered line by the first `prev` that no
//! longer matches. Lines never hold values or credentials: the subject of a
//! refused API key is at most the key's public id.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use crate::clock::{now_ms, rfc3339};

pub mod nats;

/// What one line records.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub request_id: String,
    pub tenant: Option<String>,
    pub subject: Option<String>,
    pub action: &'static str,
    pub key: Option<String>,
    pub status: u16,
    pub client: Option<String>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    entry: &'a AuditEntry,
    prev: &'a str,
}

/// The text of one line chained to `prev`, without the newline: the body,
/// then `"hash"` over everything before it.
pub(crate) fn render(entry: &AuditEntry, prev: &str) -> String {
    let body = serde_json::to_string(&Line {
        time: rfc3339(now_ms()),
        entry,
        prev,
    })
    .expect("audit lines serialise");
    // `body` ends with '}'; the hash covers everything before it.
    let head = &body[..body.len() - 1];
    let hash = sha256_hex(head.as_bytes());
    format!("{head},\"hash\":\"{hash}\"}}")
}

struct FileSink {
    path: PathBuf,
    file: File,
    prev: String,
}

enum Sink {
    /// `<data-dir>/audit.log`; appends are serialised by the mutex (the
    /// chain needs a total order).
    File(Mutex<FileSink>),
    /// A JetStream stream (nats store), shared by every gateway.
    Nats(Box<nats::NatsSink>),
}

/// The append-only trail: a file, or a JetStream stream with the nats store.
/// Both hold the same lines.
pub struct Audit {
    sink: Sink,
}

pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
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
            sink: Sink::File(Mutex::new(FileSink {
                path: path.to_owned(),
                file,
                prev,
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

    /// Appends one line; the request must fail if this fails.
    pub async fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        match &self.sink {
            Sink::File(sink) => {
                let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
                let line = render(entry, &sink.prev);
                let sink = &mut *sink;
                sink.file
                    .write_all(format!("{line}\n").as_bytes())
                    .map_err(|source| AuditError::Io {
                        path: sink.path.display().to_string(),
                        source,
                    })?;
                sink.prev = sha256_hex(line.as_bytes());
                Ok(())
            }
            Sink::Nats(sink) => sink.append(entry).await,
        }
    }
}

/// The SHA-256 of the last line of `file`, or the genesis value when empty.
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
    let last = text.rsplit(|&b| b == b'\n').next().unwrap_or(text);
    Ok(sha256_hex(last))
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
        let Some(at) = text.rfind(",\"hash\":\"") else {
            return Ok(Verdict::Broken {
                line: n,
                reason: "no hash field",
            });
        };
        let (head, tail) = text.split_at(at);
        let claimed = tail
            .trim_start_matches(",\"hash\":\"")
            .trim_end_matches("\"}");
        if sha256_hex(head.as_bytes()) != claimed {
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
        prev = sha256_hex(&line);
        count = n;
    }
    Ok(Verdict::Intact { lines: count })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u16) -> AuditEntry {
        AuditEntry {
            request_id: format!("r{i}"),
            tenant: Some("t".into()),
            subject: Some("apikey:abc".into()),
            action: "secrets.read",
            key: Some(format!("k{i}")),
            status: 200,
            client: Some("127.0.0.1:1".into()),
        }
    }

    fn write(path: &Path, n: u16) {
        let audit = Audit::open(path).unwrap();
        for i in 0..n {
            futures_util::FutureExt::now_or_never(audit.append(&entry(i)))
                .expect("a file append does not wait")
                .unwrap();
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
}
