//! Per-request bookkeeping: a request id, one access-log line (method, route
//! template, status, latency, request id: never a key, value or header), and
//! the request metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::metrics::method_label;

/// A request id: the caller's `X-Request-Id` when it is short and plain,
/// else a process-unique one.
fn request_id(request: &Request) -> HeaderValue {
    if let Some(given) = request.headers().get("x-request-id") {
        let ok = given.len() <= 64
            && !given.is_empty()
            && given
                .as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            return given.clone();
        }
    }
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let bytes = crate::crypto::seal::random_bytes::<4>();
        u32::from_be_bytes(*bytes)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{prefix:08x}-{n:x}")).expect("hex is a valid header")
}

/// The request id, for handlers and the audit trail.
#[derive(Clone)]
pub struct RequestId(pub String);

pub async fn observe(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    // A MatchedPath clone shares its text; no copy per request.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let id = request_id(&request);
    request
        .extensions_mut()
        .insert(RequestId(id.to_str().unwrap_or("").to_owned()));
    let mut response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.observe(method, route, status, elapsed);
    tracing::info!(
        target: "strongroom::access",
        method,
        route = %route,
        status,
        latency_us = elapsed.as_micros() as u64,
        request_id = id.to_str().unwrap_or(""),
        "request"
    );
    response.headers_mut().insert("x-request-id", id);
    response
}
