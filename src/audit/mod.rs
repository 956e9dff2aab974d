//! The tamper-evident audit trail: one JSON line per request that reaches a
//! secret or an API key, allowed or refused, appended to
//! `<data-dir>/audit.log` before the response is sent.
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

use crate::clock::{now_ms, rfc3339};

/// What one line records.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub request_id: String,
    pub tenant: Option<String>,
    pub subject: Option<String>,
    pub action: &'static str,
    pub key: Option<String>,
    pub status: u16,
    pub client: Option<String>,
}

/// Appends `"name":<JSON string or null>,` to `out`.
fn push_field(out: &mut String, name: &str, value: Option<&str>) {
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
    match value {
        Some(v) => out.push_str(&serde_json::to_string(v).expect("strings serialise")),
        None => out.push_str("null"),
    }
    out.push(',');
}

impl AuditEntry {
    /// The line up to and including `"prev"`, without the closing brace:
    /// the text its `hash` covers.
    fn head(&self, time: &str, prev: &str) -> String {
        let mut out = String::with_capacity(320);
        out.push('{');
        push_field(&mut out, "time", Some(time));
        push_field(&mut out, "request_id", Some(&self.request_id));
        push_field(&mut out, "tenant", self.tenant.as_deref());
        push_field(&mut out, "subject", self.subject.as_deref());
        push_field(&mut out, "action", Some(self.action));
        push_field(&mut out, "key", self.key.as_deref());
        out.push_str("\"status\":");
        out.push_str(&self.status.to_string());
        out.push(',');
        push_field(&mut out, "client", self.client.as_deref());
        out.push_str("\"prev\":\"");
        out.push_str(prev);
        out.push('"');
        out
    }

    /// The complete line (with newline) chained to `prev`, and its hash.
    pub fn line(&self, prev: &str) -> (String, String) {
        let mut line = self.head(&rfc3339(now_ms()), prev);
        let hash = sha256_hex(line.as_bytes());
        line.push_str(",\"hash\":\"");
        line.push_str(&hash);
        line.push_str("\"}\n");
        (line, hash)
    }
}

struct Sink {
    file: File,
    prev: String,
}

/// The append-only trail. Appends are serialised by a mutex: the chain needs
/// a total order.
pub struct Audit {
    path: PathBuf,
    sink: Mutex<Sink>,
}

/// The `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn sha256_hex(data: &[u8]) -> String {
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
            path: path.to_owned(),
            sink: Mutex::new(Sink { file, prev }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line with one write; the request must fail if this fails.
    pub fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        let (line, hash) = entry.line(&sink.prev);
        sink.file
            .write_all(line.as_bytes())
            .map_err(|source| AuditError::Io {
                path: self.path.display().to_string(),
                source,
            })?;
        sink.prev = hash;
        Ok(())
    }
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

/// The `hash` of the last line of `file`, or the genesis value when empty.
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
    let last =
        String::from_utf8_lossy(text.rsplit(|&b| b == b'\n').next().unwrap_or(text)).into_owned();
    // A damaged last line still gets a well-defined successor; verify will
    // name it.
    Ok(hash_field(&last)
        .map(str::to_owned)
        .unwrap_or_else(|| sha256_hex(last.as_bytes())))
}

/// The outcome of `verify`: the 1-based number of the first bad line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Intact { lines: usize },
    Broken { line: usize, reason: &'static str },
}

/// Checks a chain of lines, in order.
pub fn verify_lines<I: IntoIterator<Item = std::io::Result<Vec<u8>>>>(
    lines: I,
) -> std::io::Result<Verdict> {
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
        let Some(claimed) = hash_field(text) else {
            return Ok(Verdict::Broken {
                line: n,
                reason: "no hash field",
            });
        };
        let head = &text[..text.rfind(",\"hash\":\"").expect("found above")];
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
        prev = claimed.to_owned();
        count = n;
    }
    Ok(Verdict::Intact { lines: count })
}

/// Checks the whole chain of the trail file at `path`.
pub fn verify(path: &Path) -> std::io::Result<Verdict> {
    verify_lines(BufReader::new(File::open(path)?).split(b'\n'))
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
            audit.append(&entry(i)).unwrap();
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
