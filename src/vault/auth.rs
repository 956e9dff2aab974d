//! Vault's token and JWT auth methods as far as strongroom's credentials
//! go: `auth/token/lookup-self` shows the caller's own credential (never
//! the credential itself), `auth/token/revoke-self` revokes a login token,
//! and `auth/jwt/login` exchanges a workload's JWT for one through a role
//! (DESIGN §11), in the tenant `X-Vault-Namespace` names.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use super::caller::{Anonymous, Vaulted};
use super::error::VaultError;
use super::wire::{self, envelope, go_time, respond};
use crate::api::AppState;
use crate::clock::now_ms;
use crate::ops::Login;

/// Whole seconds from `now` until `at` (0 once past).
fn secs_until(at: i64, now: i64) -> i64 {
    (at - now).max(0) / 1000
}

/// `GET|POST auth/token/lookup-self`: Vault's token lookup of the caller's
/// own API key or login token. Vault puts the token itself in `id`;
/// strongroom never sends a credential back, so `id` holds the key's id or
/// the token's subject.
pub async fn lookup_self(
    State(app): State<Arc<AppState>>,
    Vaulted { principal, call }: Vaulted,
) -> Result<Response, VaultError> {
    let info = app.ops.lookup_self(&call, &principal).await?;
    let now = now_ms();
    let mut meta = Map::new();
    meta.insert("tenant".into(), json!(info.tenant.as_str()));
    if let Some(role) = &info.role {
        meta.insert("role".into(), json!(role));
    }
    meta.insert("scopes".into(), json!(info.scopes.join(" ")));
    let creation_ttl = match (info.issued_at, info.expires_at) {
        (Some(issued), Some(expires)) => secs_until(expires, issued),
        _ => 0,
    };
    let data = json!({
        "accessor": "",
        "creation_time": info.issued_at.map_or(0, |ms| ms / 1000),
        "creation_ttl": creation_ttl,
        "display_name": info.subject,
        "entity_id": "",
        "expire_time": info.expires_at.map(go_time),
        "explicit_max_ttl": 0,
        "id": info.subject,
        "identity_policies": [],
        "issue_time": info.issued_at.map(go_time),
        "meta": meta,
        "num_uses": 0,
        "orphan": true,
        "path": if info.role.is_some() { "auth/jwt/login" } else { "auth/token/create" },
        "policies": info.policies,
        "renewable": false,
        "ttl": info.expires_at.map_or(0, |at| secs_until(at, now)),
        "type": "service",
    });
    Ok(respond(
        StatusCode::OK,
        &envelope(&call.request_id(), "token", data),
    ))
}

/// `POST auth/token/revoke-self`: revokes the caller's login token (an
/// API key is refused, 400: it is revoked through `DELETE /apikeys/{id}`).
pub async fn revoke_self(
    State(app): State<Arc<AppState>>,
    Vaulted { principal, call }: Vaulted,
) -> Result<Response, VaultError> {
    app.ops.revoke_token(&call, &principal).await?;
    Ok(wire::no_content())
}

/// A text field of the login body, taken out of it.
fn take_text(body: &mut Map<String, Value>, name: &str) -> Option<String> {
    match body.remove(name) {
        Some(Value::String(text)) if !text.is_empty() => Some(text),
        _ => None,
    }
}

/// `POST auth/jwt/login` `{"role","jwt"}`: the token (shown once, never
/// cached) in Vault's `auth` block.
pub async fn login(
    State(app): State<Arc<AppState>>,
    Anonymous { call, tenant }: Anonymous,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, VaultError> {
    let mut body = wire::json_object(&app, &headers, body).await?;
    let jwt = Zeroizing::new(
        take_text(&mut body, "jwt").ok_or_else(|| VaultError::bad("missing token"))?,
    );
    let role = take_text(&mut body, "role").ok_or_else(|| VaultError::bad("missing role"))?;
    let login = Login {
        tenant: &tenant,
        role: &role,
        jwt: &jwt,
    };
    let done = app.ops.login_jwt(&call, login).await?;
    let info = done.info;
    let auth = json!({
        "client_token": done.token.as_str(),
        "accessor": "",
        "policies": info.policies,
        "token_policies": info.policies,
        "identity_policies": null,
        "metadata": { "role": info.role, "tenant": info.tenant.as_str() },
        "lease_duration": secs_until(info.expires_at, now_ms()),
        "renewable": false,
        "entity_id": "",
        "token_type": "service",
        "orphan": true,
        "mfa_requirement": null,
        "num_uses": 0,
    });
    let mut answer = envelope(&call.request_id(), "jwt", Value::Null);
    answer["auth"] = auth;
    Ok(respond(StatusCode::OK, &answer))
}
