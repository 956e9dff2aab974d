//! Per-request audit recording. The request middleware, through `begin`,
//! gives each request on a secret or API-key route an `AuditRecorder`;
//! handlers fill in the principal and key; a change's line is written by the
//! store `Hook` inside the change's transaction, every other line by the
//! middleware after the handler (`finish`). If a line cannot be written the
//! client gets 503: a read's value is never sent and a change is rolled back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
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

/// The audited action of a request to `route`: every route that reaches a
/// secret or an API key has one; any other request is "other" and is not
/// audited. HEAD is answered by the GET handlers, so it is audited as GET.
fn action(method: &Method, route: &str) -> &'static str {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    match (method, route) {
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

/// Starts the audit line of a request to an audited route (`route` is its
/// template) and hands the recorder to the handler in the request's
/// extensions; `None` for a request that is not audited.
pub(super) fn begin(
    app: &AppState,
    request: &mut Request,
    route: &str,
    request_id: &str,
) -> Option<AuditRecorder> {
    let action = action(request.method(), route);
    if action == "other" {
        return None;
    }
    // Taken out, not read: nothing after this needs it, and the slot it
    // frees takes the recorder, so the request's extension map (four
    // entries otherwise) does not have to grow and rehash.
    let client = request
        .extensions_mut()
        .remove::<ConnectInfo<ClientAddr>>()
        .map(|c| c.0 .0);
    let recorder = AuditRecorder(Arc::new(Inner {
        audit: app.audit.clone(),
        entry: Mutex::new(AuditEntry {
            request_id: Arc::from(request_id),
            principal: None,
            subject: None,
            action,
            key: None,
            status: 0,
            client,
        }),
        written: AtomicBool::new(false),
    }));
    request.extensions_mut().insert(recorder.clone());
    Some(recorder)
}

/// Writes the line with the response's status, unless the handler's change
/// already wrote it; answers 503 instead of `response` when the line cannot
/// be written.
///
/// The write's future is boxed, and this is not an async fn (whose future
/// would hold `response` twice): this future lives inside the request
/// middleware's, which would otherwise outgrow the largest block malloc's
/// per-thread cache serves (about 1 KB) and cost every request a trip
/// through malloc's slow path and a consolidation of its free lists.
#[allow(clippy::manual_async_fn)]
pub(super) fn finish(
    recorder: AuditRecorder,
    response: Response,
) -> impl std::future::Future<Output = Response> {
    async move {
        let status = response.status().as_u16();
        match Box::pin(recorder.write(status)).await {
            Ok(()) => response,
            Err(e) => ApiError::Unavailable(format!("audit: {e}")).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of `api::router`'s audited group, with each method it
    /// answers (HEAD with its GET): each must have an action, or its
    /// handler would find no recorder. Keep in step with the router.
    #[test]
    fn every_audited_route_has_an_action_and_nothing_else_does() {
        let audited = [
            ("PUT", "/secrets"),
            ("GET", "/secrets"),
            ("HEAD", "/secrets"),
            ("GET", "/secrets/"),
            ("HEAD", "/secrets/"),
            ("DELETE", "/secrets/"),
            ("GET", "/secrets/{*key}"),
            ("HEAD", "/secrets/{*key}"),
            ("DELETE", "/secrets/{*key}"),
            ("GET", "/metadata/{*key}"),
            ("HEAD", "/metadata/{*key}"),
            ("DELETE", "/metadata/{*key}"),
            ("POST", "/undelete/{*key}"),
            ("POST", "/apikeys"),
            ("GET", "/apikeys"),
            ("HEAD", "/apikeys"),
            ("DELETE", "/apikeys/{*id}"),
        ];
        for (method, route) in audited {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_ne!(action(&method, route), "other", "{method} {route}");
        }
        let not_audited = [
            ("GET", "/readyz"),
            ("GET", "/metrics"),
            ("GET", "/openapi.json"),
            ("GET", "/healthz"),
            ("GET", "unmatched"),
            ("POST", "/secrets"),
            ("PATCH", "/secrets/{*key}"),
            ("OPTIONS", "/secrets/{*key}"),
            ("PUT", "/metadata/{*key}"),
            ("GET", "/undelete/{*key}"),
            ("GET", "/apikeys/{*id}"),
        ];
        for (method, route) in not_audited {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(action(&method, route), "other", "{method} {route}");
        }
    }
}
