//! The quiva HTTP API, a front-end: routes, request parsing, and the mapping
//! of every operation's outcome to a status and JSON body.
//!
//! Architecture invariant: a handler parses, calls one operation of
//! `crate::ops`, and renders; it never checks a scope, writes an audit line,
//! seals, or touches the store itself.

pub(crate) mod access;
mod apikeys;
mod batch;
pub mod error;
mod identity;
mod keys;
mod login;
mod middleware;
mod oidc;
pub(crate) mod probes;
pub(crate) mod request;
pub mod routes;
mod secrets;
mod trail;
mod ui;
pub mod watch;

use std::sync::{Arc, OnceLock};

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub use error::ApiError;

/// Everything a handler needs, shared by all requests.
pub struct AppState {
    /// The operations every route calls.
    pub ops: crate::ops::Ops,
    /// Where the store keeps its files (and the master key when generated):
    /// its free space is watched.
    pub data_dir: std::path::PathBuf,
    /// The last readiness probe and when it ran (`probes::readyz`).
    pub readiness: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), String>)>>,
    /// Where the Vault front-end serves KV v2 (`--vault-mount`, `secret`).
    pub vault_mount: String,
}

/// Shared slot for the application state: empty while start-up waits for
/// the store (every route but `/healthz` then answers 503).
pub type Ready = Arc<OnceLock<Arc<AppState>>>;

/// Builds the router with every route and the per-request middleware.
/// (Vault's `LIST` reaches it as `GET ...?list=true`: `vault::list_as_get`,
/// which the server applies before routing.)
pub fn router(state: Arc<AppState>) -> Router {
    routes::audited()
        .merge(crate::vault::router(&state.vault_mount))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
        .route("/openapi.json", get(probes::openapi))
        .route("/ui", get(ui::root))
        .route("/ui/", get(ui::index))
        .route("/ui/{file}", get(ui::file))
        .fallback(probes::not_found)
        .method_not_allowed_fallback(probes::method_not_allowed)
        .layer(middleware::ObserveLayer(state.clone()))
        // Liveness probes stay out of the access log and the metrics, as
        // they are while start-up waits for the store (`gated_router`).
        .route("/healthz", get(probes::healthz))
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
                None if crate::vault::is_vault_path(request.uri().path()) => {
                    crate::vault::starting()
                }
                None => ApiError::Unavailable("store not reachable yet".into()).into_response(),
            })
        }
    });
    Router::new()
        .route("/healthz", get(probes::healthz))
        .fallback_service(gate)
}
