//! Per-request audit recording. The `audited` middleware gives each request
//! on a secret or API-key route an `AuditRecorder`; handlers fill in the
//! principal and key; a change's line is written by the store `Hook` inside
//! the change's transaction, every other line by the middleware after the
//! handler. If a line cannot be written the client gets 503: a read's value
//! is never sent and a change is rolled back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::middleware::RequestId;
use super::AppState;
use crate::audit::{Audit, AuditEntry};
use crate::auth::Principal;
use crate::http::ClientAddr;
use crate::store::{Hook, StoreError};

/// The audit line of one request, filled in as the request is handled.
#[derive(Clone)]
pub struct AuditRecorder(Arc<Inner>);

struct Inner {
    audit: Arc<Audit>,
    entry: Mutex<AuditEntry>,
    written: AtomicBool,
}

impl AuditRecorder {
    pub fn principal(&self, principal: &Principal) {
        let mut entry = self.entry();
        entry.tenant = Some(principal.tenant.to_string());
        entry.subject = Some(principal.subject.clone());
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

    /// Writes the line with `status`, once. (The hook and the middleware
    /// run one after the other, never at once.)
    pub async fn write(&self, status: u16) -> Result<(), crate::audit::AuditError> {
        self.write_line(status, false).await
    }

    /// `write`, or from inside a change's transaction (`in_change`), where
    /// the file trail stages the line for the batch's COMMIT.
    async fn write_line(
        &self,
        status: u16,
        in_change: bool,
    ) -> Result<(), crate::audit::AuditError> {
        if self.0.written.load(Ordering::Acquire) {
            return Ok(());
        }
        self.0
            .audit
            .record(&self.0.entry, status, in_change)
            .await?;
        self.0.written.store(true, Ordering::Release);
        Ok(())
    }

    /// A store hook that writes the line with `status` inside the change's
    /// transaction (sqlite: staged, and written with the batch's other lines
    /// before its COMMIT) or before its publish (nats), aborting the change
    /// when the line cannot be written.
    pub fn hook(&self, status: u16) -> Hook {
        let recorder = self.clone();
        Box::new(move || {
            Box::pin(async move {
                recorder
                    .write_line(status, true)
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("audit: {e}")))
            })
        })
    }
}

fn action(method: &Method, route: &str) -> &'static str {
    match (method.as_str(), route) {
        ("PUT", "/secrets") => "secrets.write",
        ("GET", "/secrets") => "secrets.list",
        ("GET", _) if route.starts_with("/secrets/") => "secrets.read",
        ("DELETE", _) if route.starts_with("/secrets/") => "secrets.delete",
        ("GET", _) if route.starts_with("/metadata/") => "secrets.metadata",
        ("DELETE", _) if route.starts_with("/metadata/") => "secrets.destroy",
        ("POST", _) if route.starts_with("/undelete/") => "secrets.undelete",
        ("POST", "/apikeys") => "apikeys.create",
        ("GET", "/apikeys") => "apikeys.list",
        ("DELETE", _) if route.starts_with("/apikeys/") => "apikeys.revoke",
        _ => "other",
    }
}

pub async fn audited(
    State(app): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("", MatchedPath::as_str);
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let client = request
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|c| c.0 .0.to_string());
    let recorder = AuditRecorder(Arc::new(Inner {
        audit: app.audit.clone(),
        entry: Mutex::new(AuditEntry {
            request_id,
            tenant: None,
            subject: None,
            action: action(request.method(), route),
            key: None,
            status: 0,
            client,
        }),
        written: AtomicBool::new(false),
    }));
    request.extensions_mut().insert(recorder.clone());
    let response = next.run(request).await;
    match recorder.write(response.status().as_u16()).await {
        Ok(()) => response,
        Err(e) => ApiError::Unavailable(format!("audit: {e}")).into_response(),
    }
}
