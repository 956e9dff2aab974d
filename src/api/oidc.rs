//! People's logins over HTTP: `POST /auth/oidc/auth_url` and
//! `POST /auth/oidc/callback` (the authorization code flow with PKCE), and
//! `POST /auth/oidc/device` and `POST /auth/oidc/device/token` (the device
//! flow). None takes a credential; each answers a token as
//! `POST /auth/login/jwt` does.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::access::Anonymous;
use super::error::{ApiError, Op};
use super::login::logged_in;
use super::request;
use super::AppState;
use crate::ops::{AuthUrl, Callback};

/// The body as `T`; serde's text could quote a code or nonce, so the
/// detail names the fields only.
async fn body<T: for<'de> Deserialize<'de>>(
    app: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
    fields: &str,
) -> Result<T, ApiError> {
    request::require_json(headers)?;
    let bytes = request::read_body(headers, body, &app.ops.limits, Op::Other).await?;
    serde_json::from_slice(&bytes).map_err(|_| {
        ApiError::bad(
            Op::Other,
            format!(
                "request body must be a JSON object with string fields {fields}, and no others"
            ),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthUrlBody {
    tenant: String,
    role: String,
    redirect_uri: String,
    client_nonce: zeroize::Zeroizing<String>,
}

pub async fn auth_url(
    State(app): State<Arc<AppState>>,
    Anonymous { call }: Anonymous,
    headers: HeaderMap,
    raw: axum::body::Body,
) -> Result<Response, ApiError> {
    let b: AuthUrlBody = body(
        &app,
        &headers,
        raw,
        "tenant, role, redirect_uri and client_nonce",
    )
    .await?;
    let req = AuthUrl {
        tenant: &b.tenant,
        role: &b.role,
        redirect_uri: &b.redirect_uri,
        client_nonce: &b.client_nonce,
    };
    let url = app.ops.oidc_auth_url(&call, req).await?;
    Ok(Json(serde_json::json!({ "auth_url": url })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackBody {
    state: zeroize::Zeroizing<String>,
    code: zeroize::Zeroizing<String>,
    client_nonce: zeroize::Zeroizing<String>,
}

pub async fn callback(
    State(app): State<Arc<AppState>>,
    Anonymous { call }: Anonymous,
    headers: HeaderMap,
    raw: axum::body::Body,
) -> Result<Response, ApiError> {
    let b: CallbackBody = body(&app, &headers, raw, "state, code and client_nonce").await?;
    let req = Callback {
        state: &b.state,
        code: &b.code,
        client_nonce: &b.client_nonce,
    };
    Ok(logged_in(app.ops.oidc_callback(&call, req).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceBody {
    tenant: String,
    role: String,
}

pub async fn device(
    State(app): State<Arc<AppState>>,
    Anonymous { call }: Anonymous,
    headers: HeaderMap,
    raw: axum::body::Body,
) -> Result<Response, ApiError> {
    let b: DeviceBody = body(&app, &headers, raw, "tenant and role").await?;
    let d = app.ops.oidc_device(&call, &b.tenant, &b.role).await?;
    let mut response = Json(serde_json::json!({
        "device_code": d.device_code.as_str(),
        "user_code": d.user_code,
        "verification_uri": d.verification_uri,
        "verification_uri_complete": d.verification_uri_complete,
        "interval": d.interval,
        "expires_in": d.expires_in,
    }))
    .into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceTokenBody {
    device_code: zeroize::Zeroizing<String>,
}

pub async fn device_token(
    State(app): State<Arc<AppState>>,
    Anonymous { call }: Anonymous,
    headers: HeaderMap,
    raw: axum::body::Body,
) -> Result<Response, ApiError> {
    let b: DeviceTokenBody = body(&app, &headers, raw, "device_code").await?;
    Ok(logged_in(
        app.ops.oidc_device_token(&call, &b.device_code).await?,
    ))
}
