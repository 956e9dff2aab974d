//! Operations: every thing a caller can do, whichever front-end it came
//! through. Each takes the request's `Call`, the authenticated principal
//! and a typed request, and returns a typed outcome (or an `OpError`) that
//! the front-end maps to its protocol. Authorization, the audit line with
//! the outcome the request really had, sealing and opening, expiry and
//! preconditions happen here, once.
//!
//! Architecture invariant: nothing here knows a wire protocol; `ops/`
//! imports no front-end (`api/`), and the store below it gets data, never a
//! callback.

mod admit;
mod apikeys;
mod batch;
mod call;
mod error;
mod identity;
mod keys;
mod kv;
mod kv_mount;
mod limits;
mod login;
mod oidc;
mod secrets;
mod trail;
pub mod watch;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

pub use admit::{InFlight, Unread};
pub use apikeys::{ApiKeyPage, CreateApiKey, CreatedApiKey};
pub use batch::Batch;
pub use call::Call;
pub use error::OpError;
pub use identity::Written as IdentityWritten;
pub use keys::Rotated;
pub use kv::{
    KvConfig, KvConfigChange, KvMetadata, KvRead, KvSettings, KvVersion, SettingsChange,
    VersionsChange,
};
pub use limits::Limits;
pub use login::{LoggedIn, Login, SelfInfo, TokenInfo};
pub use oidc::{AuthUrl, Callback, DeviceStarted};
pub use secrets::{Expiry, Listing, PutRequest, Secret, Written};
pub use watch::Watch;

use crate::audit::AuditEntry;
use crate::auth::failures::FailureLimit;
use crate::auth::ratelimit::RateLimit;
use crate::auth::shares::Shares;
use crate::auth::Authenticator;
use crate::crypto::Keyring;
use crate::metrics::Metrics;
use crate::store::{Store, Trail};

/// What a caller can ask for, each with the `action` its audit lines
/// carry: the action belongs to the operation, not to a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Put,
    Get,
    List,
    Delete,
    Metadata,
    Destroy,
    Undelete,
    Watch,
    BatchGet,
    ApiKeyCreate,
    ApiKeyList,
    ApiKeyRevoke,
    AuditRead,
    RotateKeys,
    PolicyPut,
    PolicyGet,
    PolicyList,
    PolicyDelete,
    RolePut,
    RoleGet,
    RoleList,
    RoleDelete,
    Login,
    TokenLookup,
    TokenRevoke,
    OidcAuthUrl,
    OidcCallback,
    OidcDevice,
    OidcDeviceToken,
    MetadataWrite,
    ConfigRead,
    ConfigWrite,
}

impl Operation {
    pub fn action(self) -> &'static str {
        match self {
            Operation::Put => "secrets.write",
            Operation::Get => "secrets.read",
            Operation::List => "secrets.list",
            Operation::Delete => "secrets.delete",
            Operation::Metadata => "secrets.metadata",
            Operation::Destroy => "secrets.destroy",
            Operation::Undelete => "secrets.undelete",
            Operation::Watch => "secrets.watch",
            Operation::BatchGet => "secrets.batch_get",
            Operation::ApiKeyCreate => "apikeys.create",
            Operation::ApiKeyList => "apikeys.list",
            Operation::ApiKeyRevoke => "apikeys.revoke",
            Operation::AuditRead => "audit.read",
            Operation::RotateKeys => "keys.rotate",
            Operation::PolicyPut => "auth.policy.write",
            Operation::PolicyGet => "auth.policy.read",
            Operation::PolicyList => "auth.policy.list",
            Operation::PolicyDelete => "auth.policy.delete",
            Operation::RolePut => "auth.role.write",
            Operation::RoleGet => "auth.role.read",
            Operation::RoleList => "auth.role.list",
            Operation::RoleDelete => "auth.role.delete",
            Operation::Login => "auth.login",
            Operation::TokenLookup => "auth.token.lookup",
            Operation::TokenRevoke => "auth.token.revoke",
            Operation::MetadataWrite => "secrets.metadata.write",
            Operation::ConfigRead => "secrets.config.read",
            Operation::ConfigWrite => "secrets.config.write",
            // Each step of a person's login is a line of it: the start's
            // success says it began (`note`), a refusal at any step why.
            Operation::OidcAuthUrl
            | Operation::OidcDevice
            | Operation::OidcCallback
            | Operation::OidcDeviceToken => "auth.login",
        }
    }
}

/// Everything an operation needs, shared by all requests.
pub struct Ops {
    pub store: Store,
    /// Where the lines that record no change go (changes' lines go through
    /// `store`, in the change's unit of work).
    pub trail: Trail,
    pub keyring: Keyring,
    pub auth: Arc<Authenticator>,
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
    pub in_flight: Arc<AtomicUsize>,
    /// What each tenant and credential holds of them (`Limits`).
    pub shares: Arc<Shares>,
}

impl Ops {
    /// The operations over `store` (whose trail is `trail`), with admission
    /// limits as `limits` says.
    pub fn new(
        store: Store,
        trail: Trail,
        keyring: Keyring,
        auth: Authenticator,
        limits: Limits,
    ) -> Ops {
        Ops {
            store,
            trail,
            keyring,
            auth: Arc::new(auth),
            metrics: Metrics::default(),
            auth_failures: FailureLimit::new(
                limits.auth_failures_per_second,
                limits.auth_failure_burst,
            ),
            forbidden: FailureLimit::new(
                limits.auth_failures_per_second,
                limits.auth_failure_burst,
            ),
            rate_limit: RateLimit::new(limits.rate_limit, limits.rate_limit_burst),
            in_flight: Default::default(),
            shares: Shares::new(
                limits.max_in_flight_per_tenant,
                limits.max_in_flight_per_credential,
            ),
            limits,
        }
    }

    /// Begins the record of one request for `operation`.
    pub fn begin(
        &self,
        operation: Operation,
        request_id: &str,
        client: Option<std::net::SocketAddr>,
    ) -> Call {
        Call::new(operation, request_id, client)
    }

    /// Records a request that ended before its operation decided (a
    /// refused credential, a request the front-end could not parse) with
    /// the status it was answered; a request its operation recorded is
    /// left alone. `Err` when the line cannot be written: the front-end
    /// then answers 503 instead.
    pub async fn finish(&self, call: &Call, status: u16) -> Result<(), OpError> {
        if call.is_written() {
            return Ok(());
        }
        self.append(call, call.line(status)).await
    }

    /// Appends the call's line; one attempt per request: a line that
    /// could not be written is not tried again by `finish` (the request
    /// answers 503).
    async fn append(&self, call: &Call, line: crate::store::LineBody) -> Result<(), OpError> {
        call.mark_written();
        self.trail
            .append(line)
            .await
            .map_err(|e| OpError::Unavailable(e.to_string()))
    }

    /// Ends an operation: writes its line with the outcome's status unless
    /// its change wrote it, and counts a refusal against the credential.
    /// An outcome whose line cannot be written is not given: 503 instead.
    async fn settle<T>(&self, call: &Call, outcome: Result<T, OpError>) -> Result<T, OpError> {
        let status = match &outcome {
            Ok(_) => 200,
            Err(e) => e.status(),
        };
        if status == 403 {
            if let Some(credential) = call.credential() {
                self.forbidden.charge(&credential);
            }
        }
        if !call.is_written() {
            self.append(call, call.line(status)).await?;
        }
        outcome
    }

    /// Writes one line (and one log line) per client address, and per
    /// credential, whose requests a refusal limit turned away since the
    /// last call, with the count: a guessing flood grows the trail by a
    /// line a second, not a line a request.
    pub async fn summarise_throttled(&self) {
        for ((tenant, subject), count) in self.forbidden.take_throttled() {
            self.metrics.auth_throttled(count);
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
            if let Err(e) = self.trail.append(line).await {
                tracing::error!(error = %e, "audit: cannot write the summary of refused requests");
            }
        }
        for (addr, count) in self.auth_failures.take_throttled() {
            self.metrics.auth_throttled(count);
            tracing::warn!(client = %addr, refused = count, "failed authentications over the limit: requests refused");
            let line = AuditEntry {
                request_id: "auth-limit".into(),
                principal: None,
                subject: None,
                action: "auth.throttled",
                key: None,
                status: 429,
                client: Some(std::net::SocketAddr::new(addr, 0)),
            }
            .render_with_note(&format!(
                "{count} requests refused: failed authentications over the limit"
            ));
            if let Err(e) = self.trail.append(line).await {
                tracing::error!(error = %e, "audit: cannot write the summary of refused requests");
            }
        }
    }
}

#[cfg(test)]
mod tests;
