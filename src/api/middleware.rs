//! Per-request bookkeeping: a request id, the operations layer's `Call` of a
//! request to an audited route (`routes::operation`, `Ops::begin`, and
//! `Ops::finish` for a request that never reached its operation), one access-log line
//! (method, route template, status, latency, request id: never a key, value
//! or header), and the request metrics. One middleware for all of it: each
//! layer costs a boxed future per request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use tower::{Layer, Service};

use super::AppState;

/// A constant, so answering with it allocates no header name.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request id: the caller's `X-Request-Id` when it is short and plain,
/// else a process-unique one: a random prefix fixed at start and a counter,
/// in hex (`1a2b3c4d-7f`).
fn request_id(request: &Request) -> HeaderValue {
    if let Some(given) = request.headers().get(X_REQUEST_ID) {
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
    let prefix = *PREFIX.get_or_init(|| {
        let bytes = crate::crypto::seal::random_bytes::<4>();
        u32::from_be_bytes(*bytes)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let (text, len) = format_id(prefix, n);
    HeaderValue::from_bytes(&text[..len]).expect("hex is a valid header")
}

/// `{prefix:08x}-{n:x}`, on the stack: the text and its length.
fn format_id(prefix: u32, n: u64) -> ([u8; 25], usize) {
    use std::io::Write;
    let mut text = [0u8; 8 + 1 + 16];
    let mut cursor = std::io::Cursor::new(&mut text[..]);
    write!(cursor, "{prefix:08x}-{n:x}").expect("25 bytes hold the id");
    let len = cursor.position() as usize;
    (text, len)
}

/// Maps a method to a static label so arbitrary methods cannot grow the
/// metrics' label set.
fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "PUT" => "PUT",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// The request middleware as a tower layer (`Router::layer`, so it runs
/// after routing and sees the route template). Written by hand rather than
/// with `axum::middleware::from_fn`, which per request clones the inner
/// service into a box, boxes it again as `Next`, and boxes the inner future
/// once more on the way through: this layer boxes only its own future.
#[derive(Clone)]
pub struct ObserveLayer(pub Arc<AppState>);

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            state: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    state: Arc<AppState>,
    inner: S,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let method = method_label(request.method());
        // A MatchedPath clone shares its text; no copy per request.
        let matched = request.extensions().get::<MatchedPath>().cloned();
        let id = request_id(&request);
        let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
        let operation = super::routes::operation(
            request.method(),
            route,
            request.uri().query(),
            &self.state.vault_mount,
        );
        let call = operation.map(|operation| {
            // Taken out, not read: nothing after this needs it, and the
            // slot it frees takes the call, so the request's extension map
            // does not have to grow and rehash.
            let client = request
                .extensions_mut()
                .remove::<axum::extract::ConnectInfo<crate::http::ClientAddr>>()
                .map(|c| c.0 .0);
            let call = self
                .state
                .ops
                .begin(operation, id.to_str().unwrap_or(""), client);
            request.extensions_mut().insert(call.clone());
            call
        });
        // Called here, not inside the future: `poll_ready` above was the
        // inner service's, so it needs no clone to stay ready.
        let answer = self.inner.call(request);
        let state = self.state.clone();
        Box::pin(async move {
            let Ok(mut response) = answer.await;
            let mut summarised = false;
            if let Some(call) = call {
                summarised = call.is_throttled();
                response = finish(&state, call, response).await;
            }
            let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
            let request_id = id.to_str().unwrap_or("");
            let elapsed = started.elapsed();
            let status = response.status().as_u16();
            state.ops.metrics.observe(method, route, status, elapsed);
            match response.extensions().get::<super::error::Tally>() {
                Some(super::error::Tally::Shed) => state.ops.metrics.shed(),
                Some(super::error::Tally::Integrity) => state.ops.metrics.integrity_failure(),
                None => {}
            }
            // A refusal of the failed-authentication limit is counted in a
            // summary line instead.
            if !summarised {
                crate::log::access::record(&crate::log::access::Access {
                    method,
                    route,
                    status,
                    latency_us: elapsed.as_micros() as u64,
                    request_id,
                });
            }
            let headers = response.headers_mut();
            headers.insert(X_REQUEST_ID, id);
            // A JSON answer (or any) is never to be sniffed as a page.
            headers.insert(
                axum::http::header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            Ok(response)
        })
    }
}

/// Records a request its operation did not (a refused credential, a body
/// that would not parse) with its answer's status; answers 503 instead when
/// the line cannot be written. A large answer keeps the request's in-flight
/// place until it is sent.
///
/// The write's future is boxed, and this is not an async fn (whose future
/// would hold `response` twice): this future lives inside the middleware's,
/// which would otherwise outgrow the largest block malloc's per-thread
/// cache serves (about 1 KB).
#[allow(clippy::manual_async_fn)]
fn finish(
    state: &AppState,
    call: crate::ops::Call,
    response: Response,
) -> impl Future<Output = Response> + '_ {
    async move {
        let status = response.status().as_u16();
        match Box::pin(state.ops.finish(&call, status)).await {
            Ok(()) => super::access::hold_while_sent(response, || call.take_in_flight()),
            Err(e) => axum::response::IntoResponse::into_response(super::ApiError::from(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_a_fixed_prefix_and_a_hex_counter() {
        let request = Request::new(axum::body::Body::empty());
        let ids: Vec<String> = (0..40)
            .map(|_| request_id(&request).to_str().unwrap().to_owned())
            .collect();
        let prefix = &ids[0][..9];
        for pair in ids.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(a.starts_with(prefix) && b.starts_with(prefix), "{a} {b}");
            assert_eq!(a.as_bytes()[8], b'-');
            let (a, b) = (
                u64::from_str_radix(&a[9..], 16).unwrap(),
                u64::from_str_radix(&b[9..], 16).unwrap(),
            );
            // Other tests in this process may take ids in between.
            assert!(b > a, "{a:x} then {b:x}");
        }
        for id in &ids {
            let counter = &id[9..];
            assert!(
                !counter.is_empty() && (counter == "0" || !counter.starts_with('0')),
                "{id}"
            );
        }
    }

    #[test]
    fn an_id_is_the_prefix_in_8_hex_digits_and_the_counter_in_hex() {
        for prefix in [0, 1, 0xdead_beef, u32::MAX] {
            for n in [0, 0xf, 0x10, 0x1234_5678_9abc, u64::MAX] {
                let (text, len) = format_id(prefix, n);
                assert_eq!(
                    std::str::from_utf8(&text[..len]).unwrap(),
                    format!("{prefix:08x}-{n:x}")
                );
            }
        }
    }

    #[test]
    fn a_plain_caller_id_is_kept_and_anything_else_replaced() {
        let with = |value: &str| {
            let mut request = Request::new(axum::body::Body::empty());
            request
                .headers_mut()
                .insert("x-request-id", HeaderValue::from_str(value).unwrap());
            request_id(&request).to_str().unwrap().to_owned()
        };
        assert_eq!(with("abc-123_x.y"), "abc-123_x.y");
        assert_ne!(with("has space"), "has space");
        assert_ne!(with(&"a".repeat(65)), "a".repeat(65));
    }
}
