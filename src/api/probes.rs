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

/// Ready when the audit trail can append, the store can take a change (a
/// probe write: a read-only or full data dir fails it) and the shared state
/// (the master key's check value) reads back, all within 2 s. The probe runs
/// at most once a second; probes meanwhile get its answer.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if let Some(why) = state.ops.trail.lost() {
        return ApiError::Unavailable(format!("audit trail: {why}")).into_response();
    }
    let mut last = state.readiness.lock().await;
    let fresh = last
        .as_ref()
        .is_some_and(|(at, _)| at.elapsed() < std::time::Duration::from_secs(1));
    if !fresh {
        let probe = async {
            state.ops.store.ready().await.map_err(|e| e.to_string())?;
            state.ops.keyring.check().await.map_err(|e| e.to_string())
        };
        // A store that hangs is not ready either, and probes must not pile up.
        let probed = tokio::time::timeout(std::time::Duration::from_secs(2), probe)
            .await
            .unwrap_or_else(|_| Err("the probe took over 2 s".into()));
        *last = Some((std::time::Instant::now(), probed));
    }
    match last.as_ref().map(|(_, probed)| probed) {
        Some(Ok(())) => {
            let warnings = warnings(&state);
            if warnings.is_empty() {
                Json(serde_json::json!({ "status": "ready" })).into_response()
            } else {
                Json(serde_json::json!({ "status": "ready", "warnings": warnings })).into_response()
            }
        }
        Some(Err(why)) => ApiError::Unavailable(format!("not ready: {why}")).into_response(),
        None => ApiError::Unavailable("not ready: no probe ran".into()).into_response(),
    }
}

/// What a ready server still wants an operator to know: a data dir
/// running out of room, scheduled backups that failed or made room.
pub fn warnings(state: &AppState) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(free) = crate::fsutil::free_bytes(&state.data_dir) {
        if free < state.ops.limits.disk_warn_bytes {
            warnings.push(format!(
                "the data dir has {free} bytes free, below --disk-warn-bytes {}",
                state.ops.limits.disk_warn_bytes
            ));
        }
    }
    warnings.extend(crate::backup::schedule::warning());
    warnings.extend(state.ops.auth.providers.warnings());
    warnings
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = state.ops.metrics.render(
                state.ops.trail.failures(),
                crate::fsutil::free_bytes(&state.data_dir),
                state.ops.limits.disk_warn_bytes,
            );
            state.ops.auth.providers.render_metrics(&mut text);
            text
        },
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
