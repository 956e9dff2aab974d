//! Policies and login roles over HTTP (`auth:admin`): `PUT`/`GET`/`DELETE
//! /policies/{name}`, `GET /policies`, and the same under `/auth/roles`.
//! Bodies are JSON objects; an unknown field is refused, so a misspelt
//! binding cannot silently leave a role open.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::access::Caller;
use super::error::{ApiError, Op};
use super::request;
use super::AppState;
use crate::clock::rfc3339;
use crate::store::identity::{PolicyRecord, RoleRecord};

/// The name after `prefix` in the request's path, percent-decoded.
fn name_in(uri: &Uri, prefix: &str) -> String {
    let raw = uri.path().strip_prefix(prefix).unwrap_or("");
    request::percent_decode(raw)
        .map(|n| n.into_owned())
        .unwrap_or_default()
}

async fn json_body<T: for<'de> Deserialize<'de>>(
    app: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<T, ApiError> {
    request::require_json(headers)?;
    let bytes = request::read_body(headers, body, &app.ops.limits, Op::Other).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        // serde's text names the field and what it expected; bodies here
        // hold no secret.
        ApiError::bad(Op::Other, format!("request body: {e}"))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    scopes: Vec<String>,
    /// What `GET` shows besides, so its answer can be put back: `name`
    /// must be the path's, `updated_at` is the server's to set.
    name: Option<String>,
    #[serde(default)]
    updated_at: serde::de::IgnoredAny,
}

/// A body's `name`, when given, must be the one the path names.
fn same_name(given: Option<&str>, path: &str) -> Result<(), ApiError> {
    match given {
        Some(name) if name != path => Err(ApiError::bad(
            Op::Other,
            "field 'name' differs from the name in the path",
        )),
        _ => Ok(()),
    }
}

#[derive(Serialize)]
struct PolicyView {
    name: String,
    scopes: Vec<String>,
    updated_at: String,
}

fn policy_view(p: PolicyRecord) -> PolicyView {
    PolicyView {
        name: p.name,
        scopes: p.scopes,
        updated_at: rfc3339(p.updated_at),
    }
}

pub async fn put_policy(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let name = name_in(&uri, "/policies/");
    let body: PolicyBody = json_body(&app, &headers, body).await?;
    same_name(body.name.as_deref(), &name)?;
    let _ = body.updated_at;
    let written = app
        .ops
        .put_policy(&call, &principal, &name, body.scopes)
        .await?;
    Ok(Json(policy_view(written.record)).into_response())
}

pub async fn get_policy(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let name = name_in(&uri, "/policies/");
    let policy = app.ops.get_policy(&call, &principal, &name).await?;
    Ok(Json(policy_view(policy)).into_response())
}

pub async fn list_policies(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
) -> Result<Response, ApiError> {
    let policies = app.ops.list_policies(&call, &principal).await?;
    let views: Vec<PolicyView> = policies.into_iter().map(policy_view).collect();
    Ok(Json(serde_json::json!({ "policies": views })).into_response())
}

pub async fn delete_policy(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let name = name_in(&uri, "/policies/");
    app.ops.delete_policy(&call, &principal, &name).await?;
    Ok(Json(serde_json::json!({ "message": "success" })).into_response())
}

/// A role as `PUT /auth/roles/{name}` takes it (DESIGN section 11).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    provider: String,
    bound_audiences: Vec<String>,
    #[serde(default)]
    bound_subject: Option<String>,
    #[serde(default)]
    bound_claims: BTreeMap<String, OneOrMany>,
    #[serde(default = "default_user_claim")]
    user_claim: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default = "default_ttl")]
    token_ttl_seconds: u32,
    #[serde(default)]
    allowed_redirect_uris: Vec<String>,
    /// As in `PolicyBody`: what `GET` shows besides.
    name: Option<String>,
    #[serde(default)]
    updated_at: serde::de::IgnoredAny,
}

/// A bound claim's allowed values: a list, or (as Vault takes it) one.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn default_user_claim() -> String {
    "sub".into()
}

fn default_ttl() -> u32 {
    900
}

#[derive(Serialize)]
struct RoleView {
    name: String,
    provider: String,
    bound_audiences: Vec<String>,
    bound_subject: Option<String>,
    bound_claims: BTreeMap<String, Vec<String>>,
    user_claim: String,
    scopes: Vec<String>,
    policies: Vec<String>,
    token_ttl_seconds: u32,
    allowed_redirect_uris: Vec<String>,
    updated_at: String,
}

fn role_view(r: RoleRecord) -> RoleView {
    RoleView {
        name: r.name,
        provider: r.provider,
        bound_audiences: r.bound_audiences,
        bound_subject: r.bound_subject,
        bound_claims: r.bound_claims,
        user_claim: r.user_claim,
        scopes: r.scopes,
        policies: r.policies,
        token_ttl_seconds: r.token_ttl_seconds,
        allowed_redirect_uris: r.allowed_redirect_uris,
        updated_at: rfc3339(r.updated_at),
    }
}

pub async fn put_role(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let name = name_in(&uri, "/auth/roles/");
    let body: RoleBody = json_body(&app, &headers, body).await?;
    same_name(body.name.as_deref(), &name)?;
    let _ = body.updated_at;
    let role = RoleRecord {
        name,
        provider: body.provider,
        bound_audiences: body.bound_audiences,
        bound_subject: body.bound_subject,
        bound_claims: body
            .bound_claims
            .into_iter()
            .map(|(claim, values)| {
                let values = match values {
                    OneOrMany::One(v) => vec![v],
                    OneOrMany::Many(vs) => vs,
                };
                (claim, values)
            })
            .collect(),
        user_claim: body.user_claim,
        scopes: body.scopes,
        policies: body.policies,
        token_ttl_seconds: body.token_ttl_seconds,
        allowed_redirect_uris: body.allowed_redirect_uris,
        uid: String::new(),
        updated_at: 0,
    };
    let written = app.ops.put_role(&call, &principal, role).await?;
    Ok(Json(role_view(written.record)).into_response())
}

pub async fn get_role(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let name = name_in(&uri, "/auth/roles/");
    let role = app.ops.get_role(&call, &principal, &name).await?;
    Ok(Json(role_view(role)).into_response())
}

pub async fn list_roles(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
) -> Result<Response, ApiError> {
    let roles = app.ops.list_roles(&call, &principal).await?;
    let views: Vec<RoleView> = roles.into_iter().map(role_view).collect();
    Ok(Json(serde_json::json!({ "roles": views })).into_response())
}

pub async fn delete_role(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let name = name_in(&uri, "/auth/roles/");
    app.ops.delete_role(&call, &principal, &name).await?;
    Ok(Json(serde_json::json!({ "message": "success" })).into_response())
}
