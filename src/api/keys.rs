//! Data-key rotation over HTTP (`keys:admin`): `POST /keys/rotate` starts a
//! new DEK for the caller's tenant; new writes seal under it and old
//! versions keep opening under theirs.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::access::Caller;
use super::error::ApiError;
use super::AppState;
use crate::clock::rfc3339;

pub async fn rotate(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
) -> Result<Response, ApiError> {
    let rotated = app.ops.rotate_keys(&call, &principal).await?;
    let body = serde_json::json!({
        "dek_id": rotated.dek_id,
        "created_at": rfc3339(rotated.created_at),
    });
    Ok(Json(body).into_response())
}
