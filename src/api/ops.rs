//! Operational endpoints (liveness, readiness, metrics, the OpenAPI document)
//! and the JSON answers for unknown routes and methods.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, AppState};

/// The served OpenAPI 3 document: a superset of the quiva compat spec.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

pub async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if let Some(why) = state.trail.lost() {
        return ApiError::Unavailable(format!("audit trail: {why}")).into_response();
    }
    match state.store.ping().await {
        Ok(()) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(e) => ApiError::Unavailable(e.to_string()).into_response(),
    }
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(state.trail.failures()),
    )
        .into_response()
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

pub async fn not_found() -> Response {
    ApiError::NotFound.into_response()
}

pub async fn method_not_allowed() -> Response {
    let mut r = ApiError::MethodNotAllowed.into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}
