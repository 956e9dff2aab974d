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
use crate::clock::{now_ms, rfc3339};

pub async fn rotate(
    State(app): State<Arc<AppState>>,
    Caller { principal, .. }: Caller,
) -> Result<Response, ApiError> {
    // Every data key is kept (old versions open under theirs): bounded, so
    // one credential cannot grow the store without end.
    let held = app.store.deks(&principal.tenant).await?.len();
    if held >= app.limits.max_deks_per_tenant {
        return Err(ApiError::LimitReached {
            what: "data keys",
            limit: app.limits.max_deks_per_tenant,
        });
    }
    let id = app.keyring.rotate(&principal.tenant).await?;
    let body = serde_json::json!({ "dek_id": id, "created_at": rfc3339(now_ms()) });
    Ok(Json(body).into_response())
}
