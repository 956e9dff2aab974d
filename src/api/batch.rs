//! `POST /batch/get`: up to 100 keys read in one request (`Ops::batch_get`
//! authorizes and audits each). The answer's `missing` holds keys that do
//! not exist and keys the caller may not read alike, so it never tells the
//! two apart.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::access::Caller;
use super::error::{ApiError, Op};
use super::{request, AppState};
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
    Caller { principal, call }: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    request::require_json(&headers)?;
    let bytes = request::read_body(&headers, body, &app.ops.limits, Op::Get).await?;
    let keys = parse(&bytes)?;
    let min_revision = request::min_revision(&headers, Op::Get)?;
    let batch = app
        .ops
        .batch_get(&call, &principal, keys, min_revision)
        .await
        .map_err(ApiError::in_op(Op::Get))?;
    let secrets = batch
        .found
        .iter()
        .map(|(key, version, value)| Found {
            key: key.as_str(),
            value,
            version: *version,
        })
        .collect();
    let body = serde_json::to_vec(&Answer {
        secrets,
        missing: batch.missing.iter().map(SecretKey::as_str).collect(),
        damaged: batch.damaged.iter().map(SecretKey::as_str).collect(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
