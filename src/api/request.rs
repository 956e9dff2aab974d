//! Request parsing with the compat spec's error texts: JSON content type,
//! body limits, the PUT body, keys taken from the rest of the path
//! (percent-decoded), query parameters and conditional-write headers.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use serde::Deserialize;
use std::borrow::Cow;
use zeroize::Zeroizing;

use super::error::{ApiError, Op};
use crate::ops::{Expiry, Limits};
use crate::store::Precondition;
use crate::types::SecretKey;

/// The PUT body. Unknown fields are ignored.
#[derive(Deserialize)]
pub struct PutBody {
    pub key: String,
    pub value: Zeroizing<String>,
    /// When the version lapses: RFC 3339, in the future (DESIGN §1).
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Or how many seconds from now; never with `expires_at`.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

impl PutBody {
    /// When the written version lapses, as the body says it (the operation
    /// checks it against the clock and the rules).
    pub fn expiry(&self) -> Result<Expiry, ApiError> {
        match (&self.expires_at, self.ttl_seconds) {
            (None, None) => Ok(Expiry::Never),
            (Some(_), Some(_)) => Err(ApiError::bad(
                Op::Put,
                "give expires_at or ttl_seconds, not both",
            )),
            (None, Some(ttl)) => Ok(Expiry::After(ttl)),
            (Some(text), None) => crate::clock::parse_rfc3339(text)
                .map(Expiry::At)
                .ok_or_else(|| {
                    ApiError::bad(
                        Op::Put,
                        "expires_at must be an RFC 3339 time, such as 2030-01-31T12:00:00Z",
                    )
                }),
        }
    }
}

/// 415 unless a body's content type is JSON (`application/json` or a
/// `+json` type, any parameters). A missing content type is read as JSON.
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().map_err(|_| ApiError::UnsupportedMediaType)?;
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Reads the whole body: more than the request limit is 413, a body that
/// does not arrive within the body timeout, or trickles in slower than the
/// body's minimum rate after a grace, 408; a malformed one (a bad chunk
/// size) 400, and a client that goes away before sending it all is
/// recorded as such, not as any of those.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limits: &Limits,
    op: Op,
) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let limit = limits.max_request_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::RequestTooLarge);
    }
    let started = tokio::time::Instant::now();
    let overall = started + limits.body_timeout;
    let mut body = http_body_util::Limited::new(body, limit);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received = 0usize;
    loop {
        // By now at least the minimum rate's worth since the grace ended:
        // a body that trickles in holds its in-flight slot seconds, not
        // the whole body timeout.
        let due = match limits.body_min_rate {
            0 => overall,
            rate => {
                let owed = std::time::Duration::from_secs_f64(received as f64 / f64::from(rate));
                (started + BODY_GRACE + owed).min(overall)
            }
        };
        let frame = tokio::time::timeout_at(due, body.frame())
            .await
            .map_err(|_| ApiError::BodyTimeout)?;
        match frame {
            None => break,
            Some(Err(e)) => return Err(body_error(axum::Error::new(e), op)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    received += data.len();
                    chunks.push(data);
                }
            }
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => chunks.concat().into(),
    })
}

/// How long a body may take before the minimum rate applies to it.
const BODY_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// What went wrong reading a body: 413 only for the length limit, 400 for
/// a body that does not decode (a bad chunk size); anything else is the
/// client going away (a closed connection, a reset HTTP/2 stream).
fn body_error(e: axum::Error, op: Op) -> ApiError {
    let inner = e.into_inner();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*inner);
    while let Some(err) = cause {
        if err.is::<http_body_util::LengthLimitError>() {
            return ApiError::RequestTooLarge;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            ) {
                return ApiError::bad(op, "the request body is malformed");
            }
        }
        cause = err.source();
    }
    ApiError::ClientClosed
}

/// Parses the PUT body. Error details describe the shape of the problem and
/// never echo the input, which may hold the secret value.
pub fn parse_put_body(bytes: &[u8]) -> Result<PutBody, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err(ApiError::bad(Op::Put, "request body is empty")),
        Some(b'{') => {}
        Some(_) => return Err(ApiError::bad(Op::Put, "request body must be a JSON object")),
    }
    match serde_json::from_slice::<PutBody>(bytes) {
        Ok(body) => Ok(body),
        Err(_) => Err(ApiError::bad(Op::Put, describe_put_error(bytes))),
    }
}

/// The slow path, for bad bodies only: says which rule the body broke.
fn describe_put_error(bytes: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return "request body is not valid JSON".into();
    };
    let Some(object) = value.as_object() else {
        return "request body must be a JSON object".into();
    };
    for field in ["key", "value"] {
        match object.get(field) {
            None => return format!("field '{field}' is required"),
            Some(v) if !v.is_string() => return format!("field '{field}' must be a string"),
            Some(_) => {}
        }
    }
    if object
        .get("expires_at")
        .is_some_and(|v| !v.is_string() && !v.is_null())
    {
        return "field 'expires_at' must be an RFC 3339 time as a string".into();
    }
    if object
        .get("ttl_seconds")
        .is_some_and(|v| !v.is_u64() && !v.is_null())
    {
        return "ttl_seconds must be from 1 to 315576000 (ten years)".into();
    }
    "request body has a duplicate field".into()
}

/// The key in the rest of the path after `prefix`, percent-decoded, checked
/// against the key rule.
pub fn key_from_path(path: &str, prefix: &str, op: Op) -> Result<SecretKey, ApiError> {
    let raw = path.strip_prefix(prefix).unwrap_or("");
    let decoded = percent_decode(raw)
        .ok_or_else(|| ApiError::bad(op, "key is not valid percent-encoded UTF-8"))?;
    SecretKey::parse(&decoded).map_err(|e| ApiError::bad(op, e.to_string()))
}

/// Decodes `%XX` escapes; `None` on a bad escape (a `%` not followed by two
/// hex digits, which `percent_encoding` would pass through as text) or a
/// non-UTF-8 result. Text without escapes is borrowed, not copied.
pub fn percent_decode(text: &str) -> Option<Cow<'_, str>> {
    let bytes = text.as_bytes();
    let escapes_ok = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_ok {
        return None;
    }
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
}

/// The query string's parameters, percent-decoded (`+` is a space).
pub fn query_pairs(query: Option<&str>, op: Op) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs = Vec::new();
    for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let decode = |s: &str| {
            percent_decode(&s.replace('+', " "))
                .map(Cow::into_owned)
                .ok_or_else(|| ApiError::bad(op, "query string is not valid percent-encoded UTF-8"))
        };
        pairs.push((decode(name)?, decode(value)?));
    }
    Ok(pairs)
}

/// A listing's query: its decoded parameters, and the page size they ask
/// for (`limit`, 1 to 1000, 100 when absent).
pub struct ListQuery(Vec<(String, String)>);

/// The most a listing returns at once, and what it returns when not told.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

impl ListQuery {
    pub fn parse(query: Option<&str>) -> Result<ListQuery, ApiError> {
        query_pairs(query, Op::Other).map(ListQuery)
    }

    /// The first value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `prefix`: key characters, at most 256 bytes; empty when absent.
    pub fn prefix(&self) -> Result<&str, ApiError> {
        let prefix = self.get("prefix").unwrap_or("");
        if !crate::types::is_valid_key_prefix(prefix) {
            return Err(ApiError::bad(
                Op::Other,
                "prefix may only contain A-Z a-z 0-9 - _ = . / and be at most 256 bytes",
            ));
        }
        Ok(prefix)
    }

    /// `expiring_before`: an RFC 3339 time, if given.
    pub fn expiring_before(&self) -> Result<Option<i64>, ApiError> {
        self.get("expiring_before")
            .map(|text| {
                crate::clock::parse_rfc3339(text).ok_or_else(|| {
                    ApiError::bad(
                        Op::Other,
                        "expiring_before must be an RFC 3339 time, such as 2030-01-31T12:00:00Z",
                    )
                })
            })
            .transpose()
    }

    pub fn limit(&self) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_PAGE),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
                _ => Err(ApiError::bad(
                    Op::Other,
                    format!("limit must be an integer from 1 to {MAX_PAGE}"),
                )),
            },
        }
    }
}

/// `?version=N`: a positive integer, or absent.
pub fn version_param(pairs: &[(String, String)], op: Op) -> Result<Option<u64>, ApiError> {
    match pairs.iter().find(|(name, _)| name == "version") {
        None => Ok(None),
        Some((_, v)) => match v.parse::<u64>() {
            Ok(n) if n >= 1 && n <= i64::MAX as u64 => Ok(Some(n)),
            _ => Err(ApiError::bad(op, "version must be a positive integer")),
        },
    }
}

/// A write's revision, answered where reads can lag (a nats gateway's cache).
pub const REVISION: &str = "x-strongroom-revision";
/// A read that must reflect every change up to a revision a write answered.
pub const MIN_REVISION: &str = "x-strongroom-min-revision";

/// `X-Strongroom-Min-Revision: <revision>`, if sent.
pub fn min_revision(headers: &HeaderMap, op: Op) -> Result<Option<u64>, ApiError> {
    match headers.get(MIN_REVISION) {
        None => Ok(None),
        Some(v) => match v.to_str().map(|t| t.trim().parse::<u64>()) {
            Ok(Ok(n)) => Ok(Some(n)),
            _ => Err(ApiError::bad(
                op,
                "X-Strongroom-Min-Revision must be a revision a write answered, a whole number",
            )),
        },
    }
}

/// A GET's `X-Strongroom-Min-Revision`, read without copying the headers.
pub struct MinRevision(pub Option<u64>);

impl<S: Sync> axum::extract::FromRequestParts<S> for MinRevision {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        min_revision(&parts.headers, Op::Get).map(MinRevision)
    }
}

/// `If-Match: "<version>"` and (for PUT) `If-None-Match: *`.
pub fn precondition(headers: &HeaderMap, op: Op) -> Result<Precondition, ApiError> {
    let if_match = headers.get(header::IF_MATCH);
    let if_none_match = headers.get(header::IF_NONE_MATCH);
    let version = match if_match {
        None => None,
        Some(v) => {
            let text = v.to_str().unwrap_or("").trim();
            let text = text.strip_prefix("W/").unwrap_or(text);
            let bare = text
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or(text);
            match bare.parse::<u64>() {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    return Err(ApiError::bad(
                        op,
                        "If-Match must be a version, as in If-Match: \"3\"",
                    ))
                }
            }
        }
    };
    let absent = match if_none_match {
        None => false,
        Some(v) if op == Op::Put && v.as_bytes().trim_ascii() == b"*" => true,
        Some(_) => {
            return Err(ApiError::bad(
                op,
                "If-None-Match is only supported as '*' on PUT",
            ))
        }
    };
    match (version, absent) {
        (None, false) => Ok(Precondition::None),
        (Some(n), false) => Ok(Precondition::Version(n)),
        (None, true) => Ok(Precondition::Absent),
        (Some(_), true) => Ok(Precondition::Never),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_body_errors_never_echo_the_input() {
        let canary = "CANARY-4242";
        for body in [
            format!(r#"{{"key":"a","value":{{"x":"{canary}"}}}}"#),
            format!(r#"{{"key":"a","value":"{canary}""#),
            format!(r#"["{canary}","x"]"#),
            format!(r#"{{"key":5,"value":"{canary}"}}"#),
            r#"{"key":"a","value":12345678}"#.to_string(),
        ] {
            let ApiError::BadRequest { detail, .. } =
                parse_put_body(body.as_bytes()).err().unwrap()
            else {
                panic!("expected 400")
            };
            assert!(
                !detail.contains(canary) && !detail.contains("12345678"),
                "{detail}"
            );
        }
    }

    #[test]
    fn put_body_accepts_unknown_fields() {
        let body = parse_put_body(br#"{"key":"a","value":"b","extra":[1,2]}"#).unwrap();
        assert_eq!((body.key.as_str(), body.value.as_str()), ("a", "b"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("team%2Fapp%2Fdb.password").unwrap(),
            "team/app/db.password"
        );
        assert_eq!(percent_decode("plain").unwrap(), "plain");
        assert!(percent_decode("%zz").is_none());
        assert!(percent_decode("%f").is_none());
        assert!(percent_decode("%ff").is_none());
    }

    proptest::proptest! {
        /// No body, however malformed, makes the PUT parser panic, and a
        /// refusal never carries the body's text.
        #[test]
        fn no_body_makes_the_put_parser_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            if let Err(ApiError::BadRequest { detail, .. }) = parse_put_body(&body) {
                let text = String::from_utf8_lossy(&body);
                if text.len() > 12 {
                    proptest::prop_assert!(!detail.contains(text.as_ref()));
                }
            }
        }

        /// Any object with a string key and value parses to exactly them.
        #[test]
        fn a_well_formed_body_parses_to_its_fields(key in ".{0,30}", value in ".{0,60}") {
            let body = serde_json::json!({ "key": key, "value": value }).to_string();
            let put = parse_put_body(body.as_bytes()).unwrap();
            proptest::prop_assert_eq!(put.key, key);
            proptest::prop_assert_eq!(put.value.as_str(), value.as_str());
        }

        /// No query string makes the query or percent decoder panic, and
        /// an encoded pair decodes back.
        #[test]
        fn queries_decode_or_refuse_without_panicking(raw in "(?s).{0,80}", name in "[a-z]{1,8}", value in ".{0,20}") {
            let _ = query_pairs(Some(&raw), Op::Get);
            let _ = percent_decode(&raw);
            let set = percent_encoding::NON_ALPHANUMERIC;
            let encoded = format!(
                "{}={}",
                percent_encoding::utf8_percent_encode(&name, set),
                percent_encoding::utf8_percent_encode(&value, set)
            );
            let pairs = query_pairs(Some(&encoded), Op::Get).unwrap();
            proptest::prop_assert_eq!(pairs, vec![(name, value)]);
        }
    }
}
