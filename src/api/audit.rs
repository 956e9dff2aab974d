//! Per-request audit recording. The request middleware, through `begin`,
//! gives each request to an audited route an `AuditRecorder`; handlers fill
//! in the principal and key. A change hands its line to the store as data
//! (`change_line`), and the store writes it in the same unit of work as the
//! change; every other line (reads, refusals, failed changes) is appended by
//! the middleware after the handler (`finish`). If a line cannot be written
//! the client gets 503: a read's value is never sent and a change is not
//! made.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::routes::Route;
use crate::audit::AuditEntry;
use crate::auth::Principal;
use crate::http::ClientAddr;
use crate::store::{LineBody, Trail, TrailError};

/// The audit line of one request, filled in as the request is handled.
#[derive(Clone)]
pub struct AuditRecorder(Arc<Inner>);

struct Inner {
    trail: Trail,
    route: &'static Route,
    entry: Mutex<AuditEntry>,
    /// Set once the store wrote the line with the change.
    written: AtomicBool,
    /// Set when the failed-authentication limit refused the request: its
    /// line is one count in a summary (`summarise_throttled`).
    throttled: AtomicBool,
    /// The request's place in `--max-in-flight`, given back with the
    /// recorder.
    in_flight: Mutex<Option<super::access::InFlight>>,
}

impl AuditRecorder {
    pub fn route(&self) -> &'static Route {
        self.0.route
    }

    /// Holds the request's place in `--max-in-flight` until it is done.
    pub fn hold(&self, in_flight: super::access::InFlight) {
        *self.0.in_flight.lock().unwrap_or_else(|p| p.into_inner()) = Some(in_flight);
    }

    /// The request's place in `--max-in-flight`, for an answer's body to
    /// hold until it is sent.
    fn take_in_flight(&self) -> Option<super::access::InFlight> {
        self.0
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The request's id, which its audit line carries.
    pub fn request_id(&self) -> Arc<str> {
        self.entry().request_id.clone()
    }

    pub fn principal(&self, principal: &Arc<Principal>) {
        self.entry().principal = Some(principal.clone());
    }

    /// The subject of a refused credential: at most a public key id.
    pub fn subject_guess(&self, subject: Option<String>) {
        self.entry().subject = subject;
    }

    pub fn key(&self, key: &str) {
        self.entry().key = Some(key.to_owned());
    }

    fn entry(&self) -> std::sync::MutexGuard<'_, AuditEntry> {
        self.0.entry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The line of this request's change with the status its success
    /// answers, for the store to write with the change.
    pub fn change_line(&self, status: u16) -> LineBody {
        let mut entry = self.entry();
        entry.status = status;
        entry.render()
    }

    /// The authenticated caller's tenant and subject, if any.
    pub fn credential(&self) -> Option<(String, String)> {
        let entry = self.entry();
        let principal = entry.principal.as_ref()?;
        Some((
            principal.tenant.as_str().to_owned(),
            principal.subject.clone(),
        ))
    }

    /// The client's address, as the connection gave it.
    pub fn client(&self) -> Option<IpAddr> {
        self.entry().client.map(|c| c.ip())
    }

    /// The failed-authentication limit refused the request: no line of its
    /// own, and no access-log line.
    pub fn throttled(&self) {
        self.0.throttled.store(true, Ordering::Release);
    }

    pub fn is_throttled(&self) -> bool {
        self.0.throttled.load(Ordering::Acquire)
    }

    /// The line of one key among several a request reads (`POST
    /// /batch/get`): the request's line, as a read of that key with the
    /// status a read of it alone would have had.
    pub fn line_for(&self, key: &str, status: u16) -> LineBody {
        let entry = self.entry();
        AuditEntry {
            request_id: entry.request_id.clone(),
            principal: entry.principal.clone(),
            subject: entry.subject.clone(),
            action: "secrets.read",
            key: Some(key.to_owned()),
            status,
            client: entry.client,
        }
        .render()
    }

    /// The handler wrote a line per key (`line_for`), which stand for the
    /// request's own.
    pub fn written_per_key(&self) {
        self.0.written.store(true, Ordering::Release);
    }

    /// The store made the change and wrote its line.
    pub fn changed(&self) {
        self.0.written.store(true, Ordering::Release);
    }

    /// Appends the line with `status`, unless the change wrote it.
    async fn write(&self, status: u16) -> Result<(), TrailError> {
        if self.0.written.load(Ordering::Acquire) || self.is_throttled() {
            return Ok(());
        }
        let line = {
            let mut entry = self.entry();
            entry.status = status;
            entry.render()
        };
        self.0.trail.append(line).await
    }
}

/// Starts the audit line of a request to the audited `route` and hands the
/// recorder to the handler in the request's extensions.
pub(super) fn begin(
    trail: &Trail,
    request: &mut Request,
    route: &'static Route,
    request_id: &str,
) -> AuditRecorder {
    // Taken out, not read: nothing after this needs it, and the slot it
    // frees takes the recorder, so the request's extension map does not
    // have to grow and rehash.
    let client = request
        .extensions_mut()
        .remove::<ConnectInfo<ClientAddr>>()
        .map(|c| c.0 .0);
    let recorder = AuditRecorder(Arc::new(Inner {
        trail: trail.clone(),
        route,
        entry: Mutex::new(AuditEntry {
            request_id: Arc::from(request_id),
            principal: None,
            subject: None,
            action: route.action,
            key: None,
            status: 0,
            client,
        }),
        written: AtomicBool::new(false),
        throttled: AtomicBool::new(false),
        in_flight: Mutex::new(None),
    }));
    request.extensions_mut().insert(recorder.clone());
    recorder
}

/// Writes the line with the response's status, unless the handler's change
/// already wrote it; answers 503 instead of `response` when the line cannot
/// be written.
///
/// The write's future is boxed, and this is not an async fn (whose future
/// would hold `response` twice): this future lives inside the request
/// middleware's, which would otherwise outgrow the largest block malloc's
/// per-thread cache serves (about 1 KB).
#[allow(clippy::manual_async_fn)]
pub(super) fn finish(
    recorder: AuditRecorder,
    response: Response,
) -> impl std::future::Future<Output = Response> {
    async move {
        let status = response.status().as_u16();
        match Box::pin(recorder.write(status)).await {
            Ok(()) => super::access::hold_while_sent(response, || recorder.take_in_flight()),
            Err(e) => ApiError::Unavailable(e.to_string()).into_response(),
        }
    }
}

/// Writes one line (and one log line) per client address whose requests
/// the failed-authentication limit refused since the last call, with the
/// count: a guessing flood grows the trail by a line a second, not a line a
/// request.
pub async fn summarise_throttled(state: &super::AppState) {
    for ((tenant, subject), count) in state.forbidden.take_throttled() {
        state.metrics.auth_throttled(count);
        tracing::warn!(
            refused = count,
            "refusals (403) over the limit: a credential's requests refused"
        );
        let line = AuditEntry {
            request_id: "forbidden-limit".into(),
            principal: None,
            subject: Some(subject),
            action: "auth.throttled",
            key: None,
            status: 429,
            client: None,
        }
        .render_with_note(&format!(
            "{count} requests of tenant {tenant} refused: refusals (403) over the limit"
        ));
        if let Err(e) = state.trail.append(line).await {
            tracing::error!(error = %e, "audit: cannot write the summary of refused requests");
        }
    }
    for (addr, count) in state.auth_failures.take_throttled() {
        state.metrics.auth_throttled(count);
        tracing::warn!(client = %addr, refused = count, "failed authentications over the limit: requests refused");
        let line = AuditEntry {
            request_id: "auth-limit".into(),
            principal: None,
            subject: None,
            action: "auth.throttled",
            key: None,
            status: 429,
            client: Some(SocketAddr::new(addr, 0)),
        }
        .render_with_note(&format!(
            "{count} requests refused: failed authentications over the limit"
        ));
        if let Err(e) = state.trail.append(line).await {
            tracing::error!(error = %e, "audit: cannot write the summary of refused requests");
        }
    }
}
