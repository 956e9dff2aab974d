//! API-key management over HTTP (`apikeys:admin`): create (the key text is
//! shown once), list the caller's tenant's keys, revoke.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::access::Caller;
use super::error::{ApiError, Op};
use super::request;
use super::AppState;
use crate::auth::{apikeys, parse_scopes, Scope};
use crate::clock::rfc3339;
use crate::ops::CreateApiKey;
use crate::store::ApiKeyRecord;

#[derive(Serialize)]
struct KeyInfo {
    id: String,
    name: String,
    scopes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    policies: Vec<String>,
    created_at: String,
    expires_at: Option<String>,
    last_used_at: Option<String>,
}

fn info(r: ApiKeyRecord) -> KeyInfo {
    let scopes = if r.scopes.is_empty() && r.policies.is_empty() {
        Scope::all_secrets().iter().map(Scope::to_string).collect()
    } else {
        r.scopes
    };
    KeyInfo {
        id: r.id,
        name: r.name,
        scopes,
        policies: r.policies,
        created_at: rfc3339(r.created_at),
        expires_at: r.expires_at.map(rfc3339),
        last_used_at: r.last_used_at.map(rfc3339),
    }
}

/// The body of `POST /apikeys`; unknown fields are ignored.
struct CreateBody {
    name: String,
    scopes: Option<Vec<String>>,
    policies: Vec<String>,
    expires_in_days: Option<u32>,
}

fn parse_create(bytes: &[u8]) -> Result<CreateBody, ApiError> {
    let bad = |detail: &str| ApiError::bad(Op::Other, detail);
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| bad("request body is not valid JSON"))?;
    let object = value
        .as_object()
        .ok_or_else(|| bad("request body must be a JSON object"))?;
    let name = match object.get("name") {
        Some(serde_json::Value::String(n)) if apikeys::valid_name(n) => n.clone(),
        Some(serde_json::Value::String(_)) => {
            return Err(bad(&format!("field 'name' {}", apikeys::NAME_RULE)))
        }
        Some(_) => return Err(bad("field 'name' must be a string")),
        None => return Err(bad("field 'name' is required")),
    };
    let scopes = match object.get("scopes") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Array(items)) => Some(
            items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad("field 'scopes' must be an array of strings"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(bad("field 'scopes' must be an array of strings")),
    };
    let policies = match object.get("policies") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad("field 'policies' must be an array of strings"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(bad("field 'policies' must be an array of strings")),
    };
    let expires_in_days = match object.get("expires_in_days") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(d) if (1..=36_500).contains(&d) => Some(d as u32),
            _ => {
                return Err(bad(
                    "field 'expires_in_days' must be an integer from 1 to 36500",
                ))
            }
        },
    };
    Ok(CreateBody {
        name,
        scopes,
        policies,
        expires_in_days,
    })
}

#[derive(Serialize)]
struct Created {
    id: String,
    key: String,
    name: String,
    scopes: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    policies: Vec<String>,
    created_at: String,
    expires_at: Option<String>,
}

pub async fn create(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    request::require_json(&headers)?;
    let bytes = request::read_body(&headers, body, &app.ops.limits, Op::Other).await?;
    let wanted = parse_create(&bytes)?;
    let scopes = match &wanted.scopes {
        // A key naming policies holds what they hold, and no more.
        None if !wanted.policies.is_empty() => Vec::new(),
        None => Scope::all_secrets(),
        Some(texts) if texts.is_empty() => {
            return Err(ApiError::bad(Op::Other, "field 'scopes' must not be empty"))
        }
        Some(texts) => parse_scopes(texts).map_err(|e| ApiError::bad(Op::Other, e))?,
    };
    let wanted = CreateApiKey {
        name: wanted.name,
        scopes,
        policies: wanted.policies,
        expires_in_days: wanted.expires_in_days,
    };
    let new = app.ops.create_apikey(&call, &principal, wanted).await?;
    let r = new.record;
    let body = Created {
        id: r.id,
        key: new.text.as_str().to_owned(),
        name: r.name,
        scopes: r.scopes,
        policies: r.policies,
        created_at: rfc3339(r.created_at),
        expires_at: r.expires_at.map(rfc3339),
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        "no-store".parse().expect("static"),
    );
    Ok(response)
}

/// One page of the tenant's keys in id order: `limit` (1 to 1000, 100
/// when absent) after the id `cursor`, and the cursor of the next page.
pub async fn list(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let query = request::ListQuery::parse(uri.query())?;
    let limit = query.limit()?;
    let cursor = query.get("cursor").unwrap_or("");
    let page = app
        .ops
        .list_apikeys(&call, &principal, cursor, limit)
        .await?;
    let apikeys: Vec<KeyInfo> = page.keys.into_iter().map(info).collect();
    Ok(
        Json(serde_json::json!({ "apikeys": apikeys, "next_cursor": page.next_cursor }))
            .into_response(),
    )
}

pub async fn revoke(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let raw = uri.path().strip_prefix("/apikeys/").unwrap_or("");
    let id = request::percent_decode(raw).unwrap_or_default();
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad(
            Op::Other,
            "an api key id is 16 hex characters",
        ));
    }
    call.key(&id);
    app.ops.revoke_apikey(&call, &principal, &id).await?;
    Ok(Json(serde_json::json!({ "message": "success" })).into_response())
}
