//! Batch get: up to 100 keys read in one request, each authorized by its
//! own prefix scope and audited with its own line. A key the caller may not
//! read is answered exactly as one that does not exist (`missing`), so the
//! answer never tells the two apart; a caller that may read none of them is
//! refused whole (403, one line), so a credential without a read scope
//! cannot turn one request into a hundred audit lines.

use zeroize::Zeroizing;

use super::secrets::into_text;
use super::{Call, OpError, Ops};
use crate::auth::{Action, Principal};
use crate::types::SecretKey;

/// What a batch found: values in the order asked, keys missing (or not
/// the caller's to read), and keys whose stored value failed its check.
pub struct Batch {
    pub found: Vec<(SecretKey, u64, Zeroizing<String>)>,
    pub missing: Vec<SecretKey>,
    pub damaged: Vec<SecretKey>,
}

impl Ops {
    /// Reads `keys` (each once), every key's line written before any value
    /// is given.
    pub async fn batch_get(
        &self,
        call: &Call,
        principal: &Principal,
        keys: Vec<SecretKey>,
        min_revision: Option<u64>,
    ) -> Result<Batch, OpError> {
        let outcome = self.batch_read(call, principal, keys, min_revision).await;
        self.settle(call, outcome).await
    }

    async fn batch_read(
        &self,
        call: &Call,
        principal: &Principal,
        keys: Vec<SecretKey>,
        min_revision: Option<u64>,
    ) -> Result<Batch, OpError> {
        // A credential that may read none of the keys is refused whole,
        // with the request's one line: not a line per key it names.
        if !keys
            .iter()
            .any(|key| principal.allows(Action::Read, key.as_str()))
        {
            return Err(OpError::Forbidden);
        }
        let mut batch = Batch {
            found: Vec::with_capacity(keys.len()),
            missing: Vec::new(),
            damaged: Vec::new(),
        };
        let mut lines = Vec::with_capacity(keys.len());
        // What the answer will hold: bounded, so a small request cannot
        // make the server hold (and a client that does not read, keep)
        // megabytes.
        let mut answer_bytes = 0usize;
        for key in keys {
            if !principal.allows(Action::Read, key.as_str()) {
                lines.push(call.line_for(key.as_str(), 403));
                batch.missing.push(key);
                continue;
            }
            let stored = match self
                .store
                .get_fresh(&principal.tenant, &key, None, min_revision)
                .await?
            {
                Some(stored) => stored,
                None => {
                    lines.push(call.line_for(key.as_str(), 404));
                    batch.missing.push(key);
                    continue;
                }
            };
            let opened = self.open(call, &principal.tenant, &key, &stored).await;
            let text = match opened {
                Ok(plaintext) => into_text(plaintext),
                Err(OpError::Integrity(_)) => None,
                Err(e) => {
                    call.key(key.as_str());
                    return Err(e);
                }
            };
            let Some(text) = text else {
                // Said in the log (the request id, never the key) and the
                // metrics, as a lone read's is.
                let request = call.request_id();
                tracing::error!(request = %request, "a batch read a value that failed its integrity check");
                self.metrics.integrity_failure();
                lines.push(call.line_for(key.as_str(), 502));
                batch.damaged.push(key);
                continue;
            };
            answer_bytes += key.as_str().len() + json_len(text.as_bytes());
            if answer_bytes > self.limits.max_batch_response_bytes {
                // Nothing is given: the request's one line says 413.
                return Err(OpError::ResponseTooLarge {
                    limit: self.limits.max_batch_response_bytes,
                });
            }
            lines.push(call.line_for(key.as_str(), 200));
            batch.found.push((key, stored.version, text));
        }
        // Every key's line is written before any value leaves, in one run
        // (one attempt: if it fails, the request answers 503).
        call.mark_written();
        self.trail
            .append_all(lines)
            .await
            .map_err(|e| OpError::Unavailable(e.to_string()))?;
        Ok(batch)
    }
}

/// The length of `text` as a JSON string's contents: every front-end
/// answers in JSON, and a control character is escaped to six bytes, so
/// counting raw bytes would let an answer grow to six times its bound.
fn json_len(text: &[u8]) -> usize {
    // Most values have nothing to escape: one pass without an early exit,
    // which the compiler vectorises (as `json::Escaped` does); a byte at a
    // time cost 4% of a 100-key batch (callgrind).
    let special = text.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !special {
        return text.len();
    }
    text.iter()
        .map(|&b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_counts_as_long_as_its_json_is() {
        for text in ["plain", "a\"b\\c", "line\nbreak\ttab", "\u{1}\u{1f}", "é"] {
            let json = serde_json::to_string(text).unwrap();
            assert_eq!(json_len(text.as_bytes()), json.len() - 2, "{text:?}");
        }
    }
}
