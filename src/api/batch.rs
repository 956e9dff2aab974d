//! `POST /batch/get`: up to 100 keys read in one request, each authorized
//! by its own prefix scope and audited with its own line. A key the caller
//! may not read is answered exactly as one that does not exist (`missing`),
//! so the answer never tells the two apart; a caller that may read none of
//! them is refused whole (403, one line), so a credential without a read
//! scope cannot turn one request into a hundred audit lines.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::access::Caller;
use super::error::{ApiError, Op};
use super::{request, secrets, AppState};
use crate::auth::Action;
use crate::types::SecretKey;

/// Most keys one request may name (DESIGN §1).
pub const MAX_KEYS: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    keys: Vec<String>,
}

#[derive(Serialize)]
struct Found<'a> {
    key: &'a str,
    value: &'a str,
    version: u64,
}

#[derive(Serialize)]
struct Answer<'a> {
    secrets: Vec<Found<'a>>,
    missing: Vec<&'a str>,
    /// Keys whose stored value failed its integrity check: named, so one
    /// damaged record does not fail the keys beside it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    damaged: Vec<&'a str>,
}

/// The keys a body names, each once, in the order first named.
fn parse(bytes: &[u8]) -> Result<Vec<SecretKey>, ApiError> {
    let body: BatchBody = serde_json::from_slice(bytes).map_err(|_| {
        ApiError::bad(
            Op::Get,
            "request body must be a JSON object {\"keys\": [<key>, ...]}",
        )
    })?;
    if body.keys.is_empty() || body.keys.len() > MAX_KEYS {
        return Err(ApiError::bad(
            Op::Get,
            format!("keys must name 1 to {MAX_KEYS} keys"),
        ));
    }
    let mut seen = HashSet::with_capacity(body.keys.len());
    let mut keys = Vec::with_capacity(body.keys.len());
    for (i, text) in body.keys.into_iter().enumerate() {
        let key = SecretKey::parse(&text)
            .map_err(|e| ApiError::bad(Op::Get, format!("keys[{i}]: {e}")))?;
        if seen.insert(text) {
            keys.push(key);
        }
    }
    Ok(keys)
}

pub async fn batch_get(
    State(app): State<Arc<AppState>>,
    Caller { principal, audit }: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    request::require_json(&headers)?;
    let bytes = request::read_body(&headers, body, &app.limits, Op::Get).await?;
    let keys = parse(&bytes)?;
    let min_revision = request::min_revision(&headers, Op::Get)?;
    // A credential that may read none of the keys is refused whole, with
    // the request's one line: not a line per key it names.
    if !keys
        .iter()
        .any(|key| principal.allows(Action::Read, key.as_str()))
    {
        return Err(ApiError::Forbidden);
    }
    let mut values = Vec::with_capacity(keys.len());
    let mut missing = Vec::new();
    let mut damaged = Vec::new();
    let mut lines = Vec::with_capacity(keys.len());
    // What the answer will hold: bounded, so a small request cannot make
    // the server hold (and a client that does not read, keep) megabytes.
    let mut answer_bytes = 0usize;
    for key in &keys {
        if !principal.allows(Action::Read, key.as_str()) {
            lines.push(audit.line_for(key.as_str(), 403));
            missing.push(key.as_str());
            continue;
        }
        match app
            .store
            .get_fresh(&principal.tenant, key, None, min_revision)
            .await?
        {
            None => {
                lines.push(audit.line_for(key.as_str(), 404));
                missing.push(key.as_str());
            }
            Some(stored) => {
                let opened = secrets::open(&app, &principal.tenant, key, &stored, &audit).await;
                let plaintext = match opened {
                    Ok(plaintext) if std::str::from_utf8(&plaintext).is_ok() => plaintext,
                    Ok(_) | Err(ApiError::Integrity(_)) => {
                        // Said in the log (the request id, never the key)
                        // and the metrics, as a lone read's is.
                        let request = audit.request_id();
                        tracing::error!(request = %request, "a batch read a value that failed its integrity check");
                        app.metrics.tally(super::error::Tally::Integrity);
                        lines.push(audit.line_for(key.as_str(), 502));
                        damaged.push(key.as_str());
                        continue;
                    }
                    Err(e) => {
                        audit.key(key.as_str());
                        return Err(e);
                    }
                };
                answer_bytes += key.as_str().len() + json_len(&plaintext);
                if answer_bytes > app.limits.max_batch_response_bytes {
                    // Nothing is sent: the request's one line says 413.
                    return Err(ApiError::ResponseTooLarge {
                        limit: app.limits.max_batch_response_bytes,
                    });
                }
                lines.push(audit.line_for(key.as_str(), 200));
                values.push((key, stored.version, plaintext));
            }
        }
    }
    // Every key's line is written before any value leaves, in one run.
    app.trail
        .append_all(lines)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    audit.written_per_key();
    let mut secrets = Vec::with_capacity(values.len());
    for (key, version, plaintext) in &values {
        let value = std::str::from_utf8(plaintext).expect("checked above");
        secrets.push(Found {
            key: key.as_str(),
            value,
            version: *version,
        });
    }
    let body = serde_json::to_vec(&Answer {
        secrets,
        missing,
        damaged,
    })
    .map_err(|e| ApiError::Internal(format!("serialising secrets: {e}")))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response())
}

/// The length of `text` as a JSON string's contents: a control character
/// is escaped to six bytes, so counting raw bytes would let an answer grow
/// to six times its bound.
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

    #[test]
    fn keys_are_checked_counted_and_answered_once() {
        let keys = parse(br#"{"keys":["a","b/c","a"]}"#).unwrap();
        let names: Vec<_> = keys.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, ["a", "b/c"]);
        let many: Vec<String> = (0..=MAX_KEYS).map(|i| format!("k{i}")).collect();
        let body = serde_json::json!({ "keys": many }).to_string();
        for bad in [
            r#"{"keys":[]}"#,
            r#"{"keys":"a"}"#,
            r#"{"keys":["ok","bad..key"]}"#,
            r#"{"keys":["a"],"other":1}"#,
            r#"[]"#,
            body.as_str(),
        ] {
            match parse(bad.as_bytes()) {
                Err(ApiError::BadRequest { op: Op::Get, .. }) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
