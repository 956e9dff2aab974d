//! The secret operations: the three quiva operations (`PUT /secrets`,
//! `GET /secrets/{key}`, `DELETE /secrets/{key}`) and listing.

use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;

use super::audit::AuditRecorder;
use super::error::{ApiError, Op};
use super::request;
use super::AppState;
use crate::auth::{Action, Principal};
use crate::clock::{http_date, rfc3339};
use crate::store::StoreError;
use crate::types::{is_valid_key_prefix, SecretKey};

const SECRETS_PREFIX: &str = "/secrets/";
/// Listing page size when `limit` is not given, and the largest allowed.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// The steps every keyed operation begins with: authenticate, take the key
/// from the path after `prefix` (400 with `op`'s text when it breaks the key
/// rule), record both for the audit line, and require one of `actions` on
/// the key (403).
async fn authorize_key(
    app: &AppState,
    audit: &AuditRecorder,
    headers: &HeaderMap,
    uri: &Uri,
    prefix: &str,
    op: Op,
    actions: &[Action],
) -> Result<(Arc<Principal>, SecretKey), ApiError> {
    let principal = app.principal(headers, audit).await?;
    let key = request::key_from_path(uri.path(), prefix, op)?;
    audit.key(key.as_str());
    if !actions
        .iter()
        .any(|&action| principal.allows(action, key.as_str()))
    {
        return Err(ApiError::Forbidden);
    }
    Ok((principal, key))
}

fn success() -> Response {
    Json(serde_json::json!({ "message": "success" })).into_response()
}

/// `"<version>"`, formatted on the stack: the header value's own copy is
/// its only allocation.
fn etag(version: u64) -> HeaderValue {
    let (digits, at) = crate::json::u64_digits(version);
    let len = digits.len() - at;
    let mut text = [b'"'; 22];
    text[1..=len].copy_from_slice(&digits[at..]);
    HeaderValue::from_bytes(&text[..len + 2]).expect("digits are a valid header")
}

pub async fn put_secret(
    State(app): State<Arc<AppState>>,
    Extension(audit): Extension<AuditRecorder>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = app.principal(&headers, &audit).await?;
    request::require_json(&headers)?;
    let bytes = request::read_body(&headers, body, app.limits.max_request_bytes).await?;
    let put = request::parse_put_body(&bytes)?;
    let key = SecretKey::parse(&put.key).map_err(|e| ApiError::bad(Op::Put, e.to_string()))?;
    audit.key(key.as_str());
    if put.value.len() > app.limits.max_value_bytes {
        return Err(ApiError::ValueTooLarge {
            limit: app.limits.max_value_bytes,
        });
    }
    let precondition = request::precondition(&headers, Op::Put)?;
    if !principal.allows(Action::Write, key.as_str()) {
        return Err(ApiError::Forbidden);
    }
    let sealer = app.keyring.sealer(&principal.tenant).await?;
    let key_text = key.as_str().to_owned();
    let value = put.value;
    let version = app
        .store
        .put(
            &principal.tenant,
            &key,
            precondition,
            Box::new(move |version| {
                sealer
                    .seal(&key_text, version, value.as_bytes())
                    .map_err(|_| StoreError::Seal)
            }),
            audit.hook(200),
        )
        .await?;
    let mut response = success();
    response.headers_mut().insert(header::ETAG, etag(version));
    Ok(response)
}

#[derive(Serialize)]
struct SecretBody<'a> {
    key: &'a str,
    value: &'a str,
}

// Not an async fn, on purpose: see the comment in the body.
#[allow(clippy::manual_async_fn)]
pub fn get_secret(
    State(app): State<Arc<AppState>>,
    Extension(audit): Extension<AuditRecorder>,
    req: Request,
) -> impl Future<Output = Result<Response, ApiError>> {
    // An async block holds the request once; an async fn's future holds it
    // twice (argument and local), which is 240 bytes more to allocate and
    // move on every read.
    async move {
        let (uri, headers) = (req.uri(), req.headers());
        let (principal, key) = authorize_key(
            &app,
            &audit,
            headers,
            uri,
            SECRETS_PREFIX,
            Op::Get,
            &[Action::Read],
        )
        .await?;
        let pairs = request::query_pairs(uri.query(), Op::Get)?;
        let version = request::version_param(&pairs, Op::Get)?;
        let stored = app
            .store
            .get(&principal.tenant, &key, version)
            .await?
            .ok_or(ApiError::NotFound)?;
        let plaintext = app
            .keyring
            .open_value(
                &principal.tenant,
                key.as_str(),
                stored.version,
                &stored.sealed,
            )
            .await?;
        let value = std::str::from_utf8(&plaintext)
            .map_err(|_| ApiError::Internal("stored value is not UTF-8".into()))?;
        let body = serde_json::to_vec(&SecretBody {
            key: key.as_str(),
            value,
        })
        .map_err(|e| ApiError::Internal(format!("serialising a secret: {e}")))?;
        let mut response = (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(header::ETAG, etag(stored.version));
        // The date's text is exactly as long as its buffer, so Bytes takes
        // it over without a copy or a second allocation.
        if let Ok(date) = HeaderValue::from_maybe_shared(Bytes::from(http_date(stored.created_at)))
        {
            headers.insert(header::LAST_MODIFIED, date);
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }
}

pub async fn delete_secret(
    State(app): State<Arc<AppState>>,
    Extension(audit): Extension<AuditRecorder>,
    req: Request,
) -> Result<Response, ApiError> {
    let (uri, headers) = (req.uri(), req.headers());
    let (principal, key) = authorize_key(
        &app,
        &audit,
        headers,
        uri,
        SECRETS_PREFIX,
        Op::Delete,
        &[Action::Delete],
    )
    .await?;
    let precondition = request::precondition(headers, Op::Delete)?;
    app.store
        .delete(&principal.tenant, &key, precondition, audit.hook(200))
        .await?;
    Ok(success())
}

#[derive(Serialize)]
struct ListedBody {
    key: String,
    version: u64,
    created_at: String,
    updated_at: String,
}

#[derive(Serialize)]
struct ListBody {
    secrets: Vec<ListedBody>,
    next_cursor: Option<String>,
}

pub async fn list_secrets(
    State(app): State<Arc<AppState>>,
    Extension(audit): Extension<AuditRecorder>,
    req: Request,
) -> Result<Response, ApiError> {
    let (uri, headers) = (req.uri(), req.headers());
    let principal = app.principal(headers, &audit).await?;
    let pairs = request::query_pairs(uri.query(), Op::Other)?;
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let prefix = param("prefix").unwrap_or("");
    if !is_valid_key_prefix(prefix) {
        return Err(ApiError::bad(
            Op::Other,
            "prefix may only contain A-Z a-z 0-9 - _ = . / and be at most 256 bytes",
        ));
    }
    let limit = match param("limit") {
        None => DEFAULT_PAGE,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::bad(
                    Op::Other,
                    format!("limit must be an integer from 1 to {MAX_PAGE}"),
                ))
            }
        },
    };
    // The cursor is the last key of the previous page: keys strictly after
    // it come next. Clients treat it as opaque; any string is a valid bound.
    let after = param("cursor").filter(|c| !c.is_empty());
    if !principal.allows(Action::List, prefix) {
        return Err(ApiError::Forbidden);
    }
    // One extra row tells whether another page exists.
    let mut rows = app
        .store
        .list(&principal.tenant, prefix, after, limit + 1)
        .await?;
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| r.key.clone())
    } else {
        None
    };
    let secrets = rows
        .into_iter()
        .map(|r| ListedBody {
            key: r.key,
            version: r.version,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
        })
        .collect();
    Ok(Json(ListBody {
        secrets,
        next_cursor,
    })
    .into_response())
}

const METADATA_PREFIX: &str = "/metadata/";
const UNDELETE_PREFIX: &str = "/undelete/";

#[derive(Serialize)]
struct VersionBody {
    version: u64,
    created_at: String,
    deleted: bool,
}

#[derive(Serialize)]
struct MetadataBody<'a> {
    key: &'a str,
    current_version: u64,
    created_at: String,
    updated_at: String,
    deleted: bool,
    versions: Vec<VersionBody>,
}

pub async fn get_metadata(
    State(app): State<Arc<AppState>>,
    Extension(audit): Extension<AuditRecorder>,
    req: Request,
) -> Result<Response, ApiError> {
    let (uri, headers) = (req.uri(), req.headers());
    let (principal, key) = authorize_key(
        &app,
        &audit,
        headers,
        uri,
        METADATA_PREFIX,
        Op::Other,
        &[Action::Read, Action::List],
    )
    .await?;
    let meta = app
        .store
        .metadata(&principal.tenant, &key)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(MetadataBody {
        key: key.as_str(),
        current_version: meta.current_version,
        created_at: rfc3339(meta.created_at),
        updated_at: rfc3339(meta.updated_at),
        deleted: meta.deleted,
        versions: meta
            .versions
            .into_iter()
            .map(|v| VersionBody {
                version: v.version,
                created_at: rfc3339(v.created_at),
                deleted: v.deleted,
            })
            .collect(),
    })
    .into_response())
}

pub async fn destroy_secret(
    State(app): State<Arc<AppState>>,
    Extension(audit): Extension<AuditRecorder>,
    req: Request,
) -> Result<Response, ApiError> {
    let (uri, headers) = (req.uri(), req.headers());
    let (principal, key) = authorize_key(
        &app,
        &audit,
        headers,
        uri,
        METADATA_PREFIX,
        Op::Other,
        &[Action::Delete],
    )
    .await?;
    app.store
        .destroy(&principal.tenant, &key, audit.hook(200))
        .await?;
    Ok(success())
}

pub async fn undelete_secret(
    State(app): State<Arc<AppState>>,
    Extension(audit): Extension<AuditRecorder>,
    req: Request,
) -> Result<Response, ApiError> {
    let (uri, headers) = (req.uri(), req.headers());
    let (principal, key) = authorize_key(
        &app,
        &audit,
        headers,
        uri,
        UNDELETE_PREFIX,
        Op::Other,
        &[Action::Write],
    )
    .await?;
    app.store
        .undelete(&principal.tenant, &key, audit.hook(200))
        .await?;
    Ok(success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_etag_is_the_version_in_quotes() {
        for version in [0, 1, 9, 10, 1_234_567, u64::MAX] {
            assert_eq!(etag(version), format!("\"{version}\"").as_str());
        }
    }
}
