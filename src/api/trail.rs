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

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

pub async fn read(
    State(app): State<Arc<AppState>>,
    Caller { principal, .. }: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    let pairs = request::query_pairs(uri.query(), Op::Other)?;
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let after = match param("after") {
        None => 0,
        Some(text) => text.parse::<u64>().map_err(|_| {
            ApiError::bad(
                Op::Other,
                "after must be a line number (an integer of 0 or more)",
            )
        })?,
    };
    let limit = match param("limit") {
        None => DEFAULT_PAGE,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::bad(
                    Op::Other,
                    format!("limit must be an integer from 1 to {MAX_PAGE}"),
                ))
            }
        },
    };
    let tenant = principal.tenant.as_str().to_owned();
    let page = app
        .trail
        .read_after(after, limit, move |line| {
            line.get("tenant").and_then(|t| t.as_str()) == Some(tenant.as_str())
        })
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(serde_json::json!({ "lines": page.lines, "next": page.next })).into_response())
}
