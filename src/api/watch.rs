//! `GET /watch?prefix=P`: Server-Sent Events of every change under P in
//! commit order (`{"key","version","action","at"}` with the event's id,
//! never a value), from `Ops::watch`. `Last-Event-ID` or `?after=` resumes
//! after an id; 410 when some of the events after it are no longer kept.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::access::Caller;
use super::error::{ApiError, Op};
use super::{request, AppState};
use crate::clock::rfc3339;
use crate::store::events::Event;

fn sse(event: &Event) -> SseEvent {
    let data = serde_json::json!({
        "key": event.key,
        "version": event.version,
        "action": event.action,
        "at": rfc3339(event.at),
    });
    SseEvent::default()
        .id(event.id.to_string())
        .data(data.to_string())
}

/// The id to resume after: `Last-Event-ID` (what a reconnecting
/// `EventSource` sends) or `?after=`.
fn resume_after(headers: &HeaderMap, query: &request::ListQuery) -> Result<Option<u64>, ApiError> {
    let id = |text: &str| {
        text.trim().parse::<u64>().map_err(|_| {
            ApiError::bad(
                Op::Other,
                "Last-Event-ID and after must be an event id (a whole number)",
            )
        })
    };
    // Both are checked, so a bad `after` is refused even beside a header
    // that takes precedence over it.
    let after = query.get("after").map(id).transpose()?;
    let last = headers
        .get("last-event-id")
        .map(|value| id(value.to_str().unwrap_or("x")))
        .transpose()?;
    Ok(last.or(after))
}

pub async fn watch(
    State(app): State<Arc<AppState>>,
    Caller { principal, call }: Caller,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    // The extractor authenticated this credential; the watch checks it
    // again as it goes on.
    let credential = super::access::credential(&headers).map_err(|_| ApiError::Unauthorized)?;
    let query = request::ListQuery::parse(uri.query())?;
    let prefix = query.prefix()?.to_owned();
    let after = resume_after(&headers, &query)?;
    let watch = app
        .ops
        .watch(&call, &principal, credential, prefix, after)
        .await?;
    let stream = futures_util::stream::unfold(watch, |mut watch| async move {
        let event = watch.next().await?;
        Some((Ok::<_, Infallible>(sse(&event)), watch))
    });
    let keep_alive = KeepAlive::new()
        .interval(app.ops.limits.watch_heartbeat)
        .text("heartbeat");
    let mut response = Sse::new(stream).keep_alive(keep_alive).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}
