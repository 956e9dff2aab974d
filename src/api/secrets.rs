//! The secret routes: the three quiva operations (`PUT /secrets`,
//! `GET /secrets/{key}`, `DELETE /secrets/{key}`), listing, metadata,
//! undelete and destroy; each parses, calls its operation, and renders.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::access::{Caller, Keyed};
use super::error::{ApiError, Op};
use super::request::{self, MinRevision};
use super::AppState;
use crate::clock::{http_date, rfc3339};
use crate::ops::PutRequest;
use crate::store::{Change, Precondition};
use crate::types::SecretKey;

fn success() -> Response {
    Json(serde_json::json!({ "message": "success" })).into_response()
}

/// `"<version>"`, formatted on the stack: the header value's own copy is
/// its only allocation.
fn etag(version: u64) -> HeaderValue {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(version).as_bytes();
    let mut text = [b'"'; 22];
    text[1..=digits.len()].copy_from_slice(digits);
    HeaderValue::from_bytes(&text[..digits.len() + 2]).expect("digits are a valid header")
}

pub async fn put_secret(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    request::require_json(&headers)?;
    let bytes = request::read_body(&headers, body, &app.ops.limits, Op::Put).await?;
    let put = request::parse_put_body(&bytes)?;
    let key = SecretKey::parse(&put.key).map_err(|e| ApiError::bad(Op::Put, e.to_string()))?;
    call.key(key.as_str());
    let expiry = put.expiry()?;
    let precondition = request::precondition(&headers, Op::Put)?;
    let put = PutRequest {
        key,
        value: put.value,
        expiry,
        precondition,
        kv: false,
    };
    let written = app
        .ops
        .put(&call, &principal, put)
        .await
        .map_err(ApiError::in_op(Op::Put))?;
    let mut response = success();
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag(written.version));
    if let Some(revision) = written.revision {
        headers.insert(request::REVISION, HeaderValue::from(revision));
    }
    Ok(response)
}

#[derive(Serialize)]
struct SecretBody<'a> {
    key: &'a str,
    value: &'a str,
}

pub async fn get_secret(
    State(app): State<Arc<AppState>>,
    Keyed {
        principal,
        key,
        call,
    }: Keyed,
    uri: Uri,
    MinRevision(min_revision): MinRevision,
) -> Result<Response, ApiError> {
    let pairs = request::query_pairs(uri.query(), Op::Get)?;
    let version = request::version_param(&pairs, Op::Get)?;
    let secret = app
        .ops
        .get(&call, &principal, &key, version, min_revision)
        .await
        .map_err(ApiError::in_op(Op::Get))?;
    let body = serde_json::to_vec(&SecretBody {
        key: key.as_str(),
        value: &secret.value,
    })
    .map_err(|e| ApiError::Internal(format!("serialising a secret: {e}")))?;
    let mut response = Response::new(axum::body::Body::from(body));
    // Sized for its six headers (the middleware adds the request id and
    // nosniff): a map that grows, as a default one does at the sixth,
    // costs about 2% of a GET (callgrind).
    *response.headers_mut() = axum::http::HeaderMap::with_capacity(8);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ETAG, etag(secret.version));
    // The date's text is exactly as long as its buffer, so Bytes takes it
    // over without a copy or a second allocation.
    if let Ok(date) = HeaderValue::from_maybe_shared(Bytes::from(http_date(secret.created_at))) {
        headers.insert(header::LAST_MODIFIED, date);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

pub async fn delete_secret(
    State(app): State<Arc<AppState>>,
    keyed: Keyed,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let precondition = request::precondition(&headers, Op::Delete)?;
    change(&app, keyed, Change::Delete, precondition).await
}

#[derive(Serialize)]
struct ListedBody {
    key: String,
    version: u64,
    created_at: String,
    updated_at: String,
    expires_at: Option<String>,
}

#[derive(Serialize)]
struct ListBody {
    secrets: Vec<ListedBody>,
    next_cursor: Option<String>,
}

pub async fn list_secrets(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let query = request::ListQuery::parse(uri.query())?;
    let prefix = query.prefix()?;
    let limit = query.limit()?;
    let expiring_before = query.expiring_before()?;
    // The cursor is the last key of the previous page: keys strictly after
    // it come next. Clients treat it as opaque; any string is a valid bound.
    let after = query.get("cursor").filter(|c| !c.is_empty());
    let listing = app
        .ops
        .list(&call, &principal, prefix, after, limit, expiring_before)
        .await?;
    let secrets = listing
        .secrets
        .into_iter()
        .map(|r| ListedBody {
            key: r.key,
            version: r.version,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
            expires_at: r.expires_at.map(rfc3339),
        })
        .collect();
    Ok(Json(ListBody {
        secrets,
        next_cursor: listing.next_cursor,
    })
    .into_response())
}

#[derive(Serialize)]
struct VersionBody {
    version: u64,
    created_at: String,
    deleted: bool,
    /// Its value is gone for good (Vault's destroy).
    destroyed: bool,
    dek_id: Option<u32>,
}

#[derive(Serialize)]
struct MetadataBody<'a> {
    key: &'a str,
    current_version: u64,
    created_at: String,
    updated_at: String,
    deleted: bool,
    expires_at: Option<String>,
    versions: Vec<VersionBody>,
}

pub async fn get_metadata(
    State(app): State<Arc<AppState>>,
    Keyed {
        principal,
        key,
        call,
    }: Keyed,
) -> Result<Response, ApiError> {
    let meta = app.ops.metadata(&call, &principal, &key).await?;
    Ok(Json(MetadataBody {
        key: key.as_str(),
        current_version: meta.current_version,
        created_at: rfc3339(meta.created_at),
        updated_at: rfc3339(meta.updated_at),
        deleted: meta.deleted,
        expires_at: meta.expires_at.map(rfc3339),
        versions: meta
            .versions
            .into_iter()
            .map(|v| VersionBody {
                version: v.version,
                created_at: rfc3339(v.created_at),
                deleted: v.deleted,
                destroyed: v.destroyed,
                dek_id: v.dek_id,
            })
            .collect(),
    })
    .into_response())
}

pub async fn destroy_secret(
    State(app): State<Arc<AppState>>,
    keyed: Keyed,
) -> Result<Response, ApiError> {
    change(&app, keyed, Change::Destroy, Precondition::None).await
}

pub async fn undelete_secret(
    State(app): State<Arc<AppState>>,
    keyed: Keyed,
) -> Result<Response, ApiError> {
    change(&app, keyed, Change::Undelete, Precondition::None).await
}

/// A change of the key the path names.
async fn change(
    app: &AppState,
    keyed: Keyed,
    change: Change,
    precondition: Precondition,
) -> Result<Response, ApiError> {
    let op = match change {
        Change::Delete => Op::Delete,
        _ => Op::Other,
    };
    app.ops
        .change(
            &keyed.call,
            &keyed.principal,
            &keyed.key,
            change,
            precondition,
        )
        .await
        .map_err(ApiError::in_op(op))?;
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
