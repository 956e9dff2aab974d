//! Vault's wire formats: the response envelope, times and durations as Go
//! prints and parses them, the loose typing of Vault's request fields
//! (a number may come as a string), and the key a path names.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::error::VaultError;
use crate::api::AppState;
use crate::types::SecretKey;

/// Vault's response envelope around `data`; `mount_type` names the engine
/// that answered, as Vault 1.13 and later do.
pub fn envelope(request_id: &str, mount_type: &str, data: Value) -> Value {
    json!({
        "request_id": request_id,
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
        "mount_type": mount_type,
    })
}

/// A JSON answer that no cache keeps (it may hold a secret).
pub fn respond(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A JSON answer already written out, that no cache keeps.
pub fn respond_json(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Vault's answer to a change that returns nothing.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// An instant as Go's `time.RFC3339Nano` prints it (Vault's timestamps):
/// UTC, the fraction without trailing zeros, none when whole seconds.
/// strongroom keeps milliseconds, so at most three digits show.
pub fn go_time(ms: i64) -> String {
    let text = crate::clock::rfc3339(ms);
    let Some((whole, fraction)) = text.strip_suffix('Z').and_then(|t| t.split_once('.')) else {
        return text;
    };
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{whole}Z")
    } else {
        format!("{whole}.{fraction}Z")
    }
}

/// `go_time`, or Vault's "" for an instant that is not set.
pub fn go_time_or_empty(ms: Option<i64>) -> String {
    ms.map(go_time).unwrap_or_default()
}

/// Whole seconds as Go's `time.Duration` prints them: `0s`, `45s`,
/// `1m30s`, `3h0m0s`.
pub fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// A duration as Vault's `TypeDurationSecond` fields take it: whole
/// seconds as a number or a string, a number with a unit (`90s`, `7d`), or a
/// Go duration (`1h30m`, `1.5h`); cut to whole seconds, possibly negative.
pub fn duration_secs(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(text) => parse_duration(text.trim()),
        _ => None,
    }
}

fn parse_duration(text: &str) -> Option<i64> {
    if text.is_empty() {
        return Some(0);
    }
    if let Ok(secs) = text.parse::<i64>() {
        return Some(secs);
    }
    let (negative, mut rest) = match text.as_bytes()[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if let Some(days) = rest.strip_suffix('d') {
        let days: f64 = days.parse().ok()?;
        let secs = (days * 86_400.0) as i64;
        return Some(if negative { -secs } else { secs });
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&n| n > 0)?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        nanos += number * scale;
        rest = &rest[unit_len..];
    }
    let secs = (nanos / 1e9) as i64;
    Some(if negative { -secs } else { secs })
}

/// A whole number as Vault's weak typing takes it: a number or a string of
/// digits.
pub fn loose_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean as Go's `strconv.ParseBool` reads one, or a JSON boolean.
pub fn loose_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(text) => parse_bool(text),
        _ => None,
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The request's body as a JSON object (an empty body is an empty
/// object, as Vault reads it). The error never quotes the body, which may
/// hold a secret.
pub async fn json_object(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Map<String, Value>, VaultError> {
    let bytes = crate::api::request::read_body(
        headers,
        body,
        &app.ops.limits,
        crate::api::error::Op::Other,
    )
    .await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(VaultError::bad(
            "failed to parse JSON input: the body must be a JSON object",
        )),
        Err(_) => Err(VaultError::bad(
            "failed to parse JSON input: the body is not valid JSON",
        )),
    }
}

/// 415 unless the body is a JSON merge patch, as Vault's PATCH requires;
/// a missing or unreadable content type is 400, as Go's MIME parser has it.
pub fn require_merge_patch(headers: &HeaderMap) -> Result<(), VaultError> {
    const MERGE_PATCH: &str = "application/merge-patch+json";
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|text| {
            text.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if given == MERGE_PATCH {
        return Ok(());
    }
    if given.is_empty() {
        return Err(VaultError::bad("mime: no media type"));
    }
    // A media type is a token/token; anything else is not repeated back.
    let plain = given.len() <= 100
        && given
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/+-.".contains(&b));
    let provided = if plain {
        given.as_str()
    } else {
        "another type"
    };
    Err(VaultError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        vec![format!(
            "PATCH requires Content-Type of {MERGE_PATCH}, provided {provided}"
        )],
    ))
}

/// The query parameter `name`'s first value, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, VaultError> {
    let pairs = crate::api::request::query_pairs(query, crate::api::error::Op::Other)?;
    Ok(pairs.into_iter().find(|(n, _)| n == name).map(|(_, v)| v))
}

/// The strongroom key the rest of `path` after `prefix` names,
/// percent-decoded and checked against the key rule (400 otherwise).
pub fn key_at(path: &str, prefix: &str) -> Result<SecretKey, VaultError> {
    let text = decoded_rest(path, prefix)?;
    if text.is_empty() {
        return Err(VaultError::bad("missing path"));
    }
    SecretKey::parse(&text).map_err(|e| VaultError::bad(e.to_string()))
}

/// The rest of `path` after `prefix`, percent-decoded.
pub fn decoded_rest(path: &str, prefix: &str) -> Result<String, VaultError> {
    let raw = path.strip_prefix(prefix).unwrap_or("");
    crate::api::request::percent_decode(raw)
        .map(|text| text.into_owned())
        .ok_or_else(|| VaultError::bad("path is not valid percent-encoded UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_gos_rfc3339nano() {
        assert_eq!(go_time(1_521_685_446_945), "2018-03-22T02:24:06.945Z");
        assert_eq!(go_time(1_521_685_446_940), "2018-03-22T02:24:06.94Z");
        assert_eq!(go_time(1_521_685_446_000), "2018-03-22T02:24:06Z");
        assert_eq!(go_time_or_empty(None), "");
    }

    #[test]
    fn durations_print_as_gos() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(45), "45s");
        assert_eq!(go_duration(90), "1m30s");
        assert_eq!(go_duration(3600 * 3), "3h0m0s");
        assert_eq!(go_duration(3600 * 30 + 61), "30h1m1s");
    }

    #[test]
    fn durations_parse_as_vaults_duration_fields() {
        let d = |v: Value| duration_secs(&v);
        assert_eq!(d(json!(3600)), Some(3600));
        assert_eq!(d(json!("3600")), Some(3600));
        assert_eq!(d(json!("1h30m")), Some(5400));
        assert_eq!(d(json!("1.5h")), Some(5400));
        assert_eq!(d(json!("90s")), Some(90));
        assert_eq!(d(json!("1500ms")), Some(1));
        assert_eq!(d(json!("2d")), Some(172_800));
        assert_eq!(d(json!("-1h")), Some(-3600));
        assert_eq!(d(json!(-5)), Some(-5));
        assert_eq!(d(json!("")), Some(0));
        for bad in [
            json!("1x"),
            json!("h"),
            json!("1h30"),
            json!(true),
            json!(null),
        ] {
            assert_eq!(d(bad.clone()), None, "{bad}");
        }
    }

    #[test]
    fn loose_fields_take_what_vaults_weak_decoding_takes() {
        assert_eq!(loose_u64(&json!(3)), Some(3));
        assert_eq!(loose_u64(&json!("3")), Some(3));
        assert_eq!(loose_u64(&json!(3.0)), Some(3));
        assert_eq!(loose_u64(&json!(-1)), None);
        assert_eq!(loose_u64(&json!("x")), None);
        assert_eq!(loose_bool(&json!("true")), Some(true));
        assert_eq!(loose_bool(&json!("F")), Some(false));
        assert_eq!(loose_bool(&json!(1)), None);
    }

    #[test]
    fn only_a_merge_patch_is_a_patch() {
        let with = |ct: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(ct) = ct {
                h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            }
            require_merge_patch(&h).map_err(|e| (e.status.as_u16(), e.errors))
        };
        assert!(with(Some("application/merge-patch+json")).is_ok());
        assert!(with(Some("application/merge-patch+json; charset=utf-8")).is_ok());
        assert_eq!(
            with(Some("application/json")),
            Err((
                415,
                vec!["PATCH requires Content-Type of application/merge-patch+json, provided application/json".to_string()]
            ))
        );
        assert_eq!(with(None).unwrap_err().0, 400);
    }
}
