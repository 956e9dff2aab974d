//! Workload login and the caller's own token: `POST /auth/login/jwt`
//! `{"tenant","role","jwt"}` answers a token (shown once, never cached);
//! `GET /auth/token` shows the caller's token, `DELETE /auth/token`
//! revokes it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::access::{Anonymous, Caller};
use super::error::{ApiError, Op};
use super::request;
use super::AppState;
use crate::clock::rfc3339;
use crate::ops::{Login, TokenInfo};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    tenant: String,
    role: String,
    jwt: zeroize::Zeroizing<String>,
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub async fn login_jwt(
    State(app): State<Arc<AppState>>,
    Anonymous { call }: Anonymous,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    request::require_json(&headers)?;
    let bytes = request::read_body(&headers, body, &app.ops.limits, Op::Other).await?;
    // serde's own text could quote the JWT: the detail names the shape only.
    let body: LoginBody = serde_json::from_slice(&bytes).map_err(|_| {
        ApiError::bad(
            Op::Other,
            "request body must be a JSON object with string fields tenant, role and jwt, and no others",
        )
    })?;
    let login = Login {
        tenant: &body.tenant,
        role: &body.role,
        jwt: &body.jwt,
    };
    Ok(logged_in(app.ops.login_jwt(&call, login).await?))
}

/// A login's answer: the token (shown once, never cached) and what it is.
pub fn logged_in(done: crate::ops::LoggedIn) -> Response {
    let info = done.info;
    no_store(
        Json(serde_json::json!({
            "token": done.token.as_str(),
            "expires_at": rfc3339(info.expires_at),
            "tenant": info.tenant.as_str(),
            "subject": info.subject,
            "scopes": info.scopes,
        }))
        .into_response(),
    )
}

fn token_view(info: TokenInfo) -> serde_json::Value {
    serde_json::json!({
        "tenant": info.tenant.as_str(),
        "subject": info.subject,
        "role": info.role,
        "scopes": info.scopes,
        "policies": info.policies,
        "expires_at": rfc3339(info.expires_at),
    })
}

pub async fn lookup(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
) -> Result<Response, ApiError> {
    let info = app.ops.lookup_token(&call, &principal).await?;
    Ok(no_store(Json(token_view(info)).into_response()))
}

pub async fn revoke(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
) -> Result<Response, ApiError> {
    app.ops.revoke_token(&call, &principal).await?;
    Ok(Json(serde_json::json!({ "message": "success" })).into_response())
}
