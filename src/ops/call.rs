//! `Call`: one request's passage through an operation, as the audit trail
//! sees it. A front-end begins one per request (`Ops::begin`) and hands it
//! to the operation; the operation names the key, writes the line with the
//! outcome it decided (with the change, in the store's unit of work, or
//! appended), and marks it written. A request that never reached its
//! operation (a refused credential, a body that would not parse) is
//! recorded once the front-end has answered, by `Ops::finish`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::admit::InFlight;
use super::Operation;
use crate::audit::AuditEntry;
use crate::auth::Principal;
use crate::store::LineBody;

/// One request's audit record, filled in as the request is handled. Cheap
/// to clone: the front-end and the operation share it.
#[derive(Clone)]
pub struct Call(Arc<Inner>);

struct Inner {
    operation: Operation,
    entry: Mutex<AuditEntry>,
    /// Set once the request's line (or its lines, one per key) is written.
    written: AtomicBool,
    /// Set when the failed-authentication limit refused the request: its
    /// line is one count in a summary (`Ops::summarise_throttled`).
    throttled: AtomicBool,
    /// The request's place in `--max-in-flight`, given back with the call.
    in_flight: Mutex<Option<InFlight>>,
    /// Why the operation ended as it did, when its line says (a refused
    /// login's binding).
    note: Mutex<Option<String>>,
}

impl Call {
    pub(super) fn new(operation: Operation, request_id: &str, client: Option<SocketAddr>) -> Call {
        Call(Arc::new(Inner {
            operation,
            entry: Mutex::new(AuditEntry {
                request_id: Arc::from(request_id),
                principal: None,
                subject: None,
                action: operation.action(),
                key: None,
                status: 0,
                client,
            }),
            written: AtomicBool::new(false),
            throttled: AtomicBool::new(false),
            in_flight: Mutex::new(None),
            note: Mutex::new(None),
        }))
    }

    pub fn operation(&self) -> Operation {
        self.0.operation
    }

    fn entry(&self) -> std::sync::MutexGuard<'_, AuditEntry> {
        self.0.entry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The request's id, which its audit line carries.
    pub fn request_id(&self) -> Arc<str> {
        self.entry().request_id.clone()
    }

    /// The client's address, as the connection gave it.
    pub fn client(&self) -> Option<std::net::IpAddr> {
        self.entry().client.map(|c| c.ip())
    }

    /// The key (or API key id) the request names, for its line. The
    /// front-end names it as soon as it has parsed it and the operation
    /// again: the second costs no copy.
    pub fn key(&self, key: &str) {
        let mut entry = self.entry();
        if entry.key.as_deref() != Some(key) {
            entry.key = Some(key.to_owned());
        }
    }

    pub(super) fn principal(&self, principal: &Arc<Principal>) {
        self.entry().principal = Some(principal.clone());
    }

    /// The subject of a refused credential: at most a public key id.
    pub(super) fn subject_guess(&self, subject: Option<String>) {
        self.entry().subject = subject;
    }

    /// The authenticated caller's tenant and subject, if any.
    pub(super) fn credential(&self) -> Option<(String, String)> {
        let entry = self.entry();
        let principal = entry.principal.as_ref()?;
        Some((
            principal.tenant.as_str().to_owned(),
            principal.subject.clone(),
        ))
    }

    pub(super) fn hold(&self, in_flight: InFlight) {
        *self.0.in_flight.lock().unwrap_or_else(|p| p.into_inner()) = Some(in_flight);
    }

    /// The request's place in `--max-in-flight`, for an answer's body to
    /// hold until it is sent.
    pub fn take_in_flight(&self) -> Option<InFlight> {
        self.0
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    pub(super) fn throttled(&self) {
        self.0.throttled.store(true, Ordering::Release);
    }

    /// The failed-authentication limit refused the request: no line or
    /// access-log line of its own.
    pub fn is_throttled(&self) -> bool {
        self.0.throttled.load(Ordering::Acquire)
    }

    pub(super) fn is_written(&self) -> bool {
        self.0.written.load(Ordering::Acquire) || self.is_throttled()
    }

    pub(super) fn mark_written(&self) {
        self.0.written.store(true, Ordering::Release);
    }

    /// The request's line with `status`.
    pub(super) fn line(&self, status: u16) -> LineBody {
        let mut entry = self.entry();
        entry.status = status;
        match &*self.0.note.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(note) => entry.render_with_note(note),
            None => entry.render(),
        }
    }

    /// Notes why the operation ended as it did, for its line.
    pub(super) fn note(&self, note: String) {
        *self.0.note.lock().unwrap_or_else(|p| p.into_inner()) = Some(note);
    }

    /// The line of one key among several a request reads (a batch): a read
    /// of that key with the status a read of it alone would have had.
    pub(super) fn line_for(&self, key: &str, status: u16) -> LineBody {
        let entry = self.entry();
        AuditEntry {
            request_id: entry.request_id.clone(),
            principal: entry.principal.clone(),
            subject: entry.subject.clone(),
            action: Operation::Get.action(),
            key: Some(key.to_owned()),
            status,
            client: entry.client,
        }
        .render()
    }
}
