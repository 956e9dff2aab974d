//! The HTTP surface: routes, request parsing, and the mapping of every
//! outcome to a status and JSON body.
//!
//! Architecture invariant: only `api/` knows HTTP and JSON; it reaches data
//! through `Store` and `Keyring`, and credentials through `Authenticator`.

mod access;
mod apikeys;
pub mod audit;
mod batch;
pub mod error;
mod keys;
mod middleware;
mod ops;
mod request;
pub mod routes;
mod secrets;
mod trail;
mod ui;
pub mod watch;

use std::sync::{Arc, OnceLock};

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::auth::failures::FailureLimit;
use crate::auth::ratelimit::RateLimit;
use crate::auth::Authenticator;
use crate::crypto::Keyring;
use crate::metrics::Metrics;
use crate::store::{Store, Trail};
pub use error::ApiError;

/// Size limits, configurable at start.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body accepted (413 `request too large` above).
    pub max_request_bytes: usize,
    /// Largest secret value accepted (413 `value too large` above).
    pub max_value_bytes: usize,
    /// Failed authentications per second per client address (0: no limit)
    /// and how many at once, before its requests answer 429.
    pub auth_failures_per_second: u32,
    /// Requests per second per credential (0: no limit) and how many at once.
    pub rate_limit: u32,
    pub rate_limit_burst: u32,
    /// Requests handled at once; beyond it 503 at once.
    pub max_in_flight: usize,
    /// How long a request's body may take to arrive (408 beyond it).
    pub body_timeout: std::time::Duration,
    /// Bytes a second a body must average after a short grace (408 below;
    /// 0: no minimum).
    pub body_min_rate: u32,
    /// Requests one tenant, and one credential, may have in flight at once
    /// (429 beyond it), so no one takes every slot of `max_in_flight`.
    pub max_in_flight_per_tenant: usize,
    pub max_in_flight_per_credential: usize,
    pub auth_failure_burst: u32,
    /// How often an idle `/watch` stream sends a heartbeat comment.
    pub watch_heartbeat: std::time::Duration,
    /// Most bytes of keys and values one `POST /batch/get` answers with.
    pub max_batch_response_bytes: usize,
    /// Live API keys and data keys one tenant may hold (409 beyond).
    pub max_apikeys_per_tenant: usize,
    pub max_deks_per_tenant: usize,
    /// Free bytes on the data dir's file system below which `/readyz`, the
    /// log and a metric warn, well before writes fail.
    pub disk_warn_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 1024 * 1024,
            max_value_bytes: 64 * 1024,
            auth_failures_per_second: 10,
            auth_failure_burst: 20,
            rate_limit: 0,
            rate_limit_burst: 100,
            max_in_flight: 1024,
            body_timeout: std::time::Duration::from_secs(30),
            body_min_rate: 1024,
            max_in_flight_per_tenant: 256,
            max_in_flight_per_credential: 128,
            watch_heartbeat: watch::DEFAULT_HEARTBEAT,
            max_batch_response_bytes: 1024 * 1024,
            max_apikeys_per_tenant: 1000,
            max_deks_per_tenant: 1000,
            disk_warn_bytes: 1 << 30,
        }
    }
}

/// Everything a handler needs, shared by all requests.
pub struct AppState {
    pub store: Store,
    /// Where the lines that record no change go (changes' lines go through
    /// `store`).
    pub trail: Trail,
    pub keyring: Keyring,
    pub auth: Authenticator,
    pub metrics: Metrics,
    pub limits: Limits,
    /// Failed authentications per client address (`Limits`).
    pub auth_failures: FailureLimit,
    /// Refusals (403) per credential, on the same budget: counted by tenant
    /// and subject, not address, so one credential behind a shared proxy
    /// cannot lock out the others.
    pub forbidden: FailureLimit<(String, String)>,
    /// Requests per credential, when limited (`Limits`).
    pub rate_limit: Option<RateLimit>,
    /// Requests being handled now, against `Limits::max_in_flight`.
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// What each tenant and credential holds of them (`Limits`).
    pub shares: Arc<crate::auth::shares::Shares>,
    /// Where the store keeps its files (and the master key when generated):
    /// its free space is watched.
    pub data_dir: std::path::PathBuf,
    /// The last readiness probe and when it ran (`ops::readyz`).
    pub readiness: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
}

/// Shared slot for the application state: empty while start-up waits for
/// the store (every route but `/healthz` then answers 503).
pub type Ready = Arc<OnceLock<Arc<AppState>>>;

/// Builds the router with every route and the per-request middleware.
pub fn router(state: Arc<AppState>) -> Router {
    routes::audited()
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/ui", get(ui::root))
        .route("/ui/", get(ui::index))
        .route("/ui/{file}", get(ui::file))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(middleware::ObserveLayer(state.clone()))
        // Liveness probes stay out of the access log and the metrics, as
        // they are while start-up waits for the store (`gated_router`).
        .route("/healthz", get(ops::healthz))
        .with_state(state)
}

/// The router while start-up may still be waiting for the store: `/healthz`
/// always answers; every other request goes to the full router once the
/// state exists, and answers 503 `service unavailable` until then.
pub fn gated_router(ready: Ready) -> Router {
    let inner: Arc<std::sync::OnceLock<Router>> = Arc::default();
    let gate = tower::service_fn(move |request: axum::extract::Request| {
        let (ready, inner) = (ready.clone(), inner.clone());
        async move {
            Ok::<_, std::convert::Infallible>(match ready.get() {
                Some(state) => {
                    use tower::ServiceExt;
                    let app = inner.get_or_init(|| router(state.clone())).clone();
                    app.oneshot(request).await.into_response()
                }
                None => ApiError::Unavailable("store not reachable yet".into()).into_response(),
            })
        }
    });
    Router::new()
        .route("/healthz", get(ops::healthz))
        .fallback_service(gate)
}
