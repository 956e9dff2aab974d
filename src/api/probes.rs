//! Operational endpoints (liveness, readiness, metrics, the OpenAPI document)
//! and the JSON answers for unknown routes and methods.

use std::sync::Arc;

use axum::extract::{Request, State};
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
    match probe(&state).await {
        Ok(()) => {
            let warnings = warnings(&state);
            if warnings.is_empty() {
                Json(serde_json::json!({ "status": "ready" })).into_response()
            } else {
                Json(serde_json::json!({ "status": "ready", "warnings": warnings })).into_response()
            }
        }
        Err(why) => ApiError::Unavailable(why).into_response(),
    }
}

/// Whether the server is ready (`readyz`), or why not: the Vault
/// front-end's `sys/health` asks the same probe.
pub(crate) async fn probe(state: &AppState) -> Result<(), String> {
    if let Some(why) = state.ops.trail.lost() {
        return Err(format!("audit trail: {why}"));
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
        Some(Ok(())) => Ok(()),
        Some(Err(why)) => Err(format!("not ready: {why}")),
        None => Err("not ready: no probe ran".into()),
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

/// An unknown route: the quiva 404, or under `/v1/` the Vault front-end's
/// answer in Vault's shape.
pub async fn not_found(State(state): State<Arc<AppState>>, request: Request) -> Response {
    if crate::vault::is_vault_path(request.uri().path()) {
        return crate::vault::unrouted(&state.vault_mount, &request);
    }
    ApiError::NotFound.into_response()
}

/// A route without the method asked: the quiva 405, or Vault's.
pub async fn method_not_allowed(State(state): State<Arc<AppState>>, request: Request) -> Response {
    if crate::vault::is_vault_path(request.uri().path()) {
        return crate::vault::unsupported_operation(&state.vault_mount, &request);
    }
    let mut r = ApiError::MethodNotAllowed.into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}
