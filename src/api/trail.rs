//! `GET /audit?after=&limit=` (`audit:read`): the caller's tenant's audit
//! lines, oldest first, as the JSON objects of the trail, and the number to
//! pass as `after` for the next page. Another tenant's lines, and lines of
//! no tenant (refused credentials, system lines), are never shown.

use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::access::Caller;
use super::error::{ApiError, Op};
use super::request;
use super::AppState;

pub async fn read(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let query = request::ListQuery::parse(uri.query())?;
    let after = match query.get("after") {
        None => 0,
        Some(text) => text.parse::<u64>().map_err(|_| {
            ApiError::bad(
                Op::Other,
                "after must be a line number (an integer of 0 or more)",
            )
        })?,
    };
    let limit = query.limit()?;
    let page = app.ops.read_audit(&call, &principal, after, limit).await?;
    Ok(Json(serde_json::json!({ "lines": page.lines, "next": page.next })).into_response())
}
