//! Who the caller is and whether they may be served now: a credential, as
//! a front-end found it, resolved by `auth/` to a principal, within the
//! failed-authentication limit, the per-credential rate and the in-flight
//! shares. Every front-end admits its callers here, so every way in keeps
//! the same limits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Call, OpError, Ops};
use crate::auth::failures::Admission;
use crate::auth::{AuthError, Credential, Principal};

/// A credential the front-end could not read (none, two, or malformed),
/// with the API-key text the request carried, if any: a refused key's
/// public id is what its audit line names.
pub struct Unread<'a> {
    pub error: AuthError,
    pub api_key: Option<&'a str>,
}

impl Ops {
    /// Authenticates the request's credential, records who it was on the
    /// call, and counts failures by reason.
    pub async fn authenticate(
        &self,
        call: &Call,
        credential: Result<Credential<'_>, Unread<'_>>,
    ) -> Result<Arc<Principal>, OpError> {
        let client = call.client();
        let admission = client.map(|addr| (addr, self.auth_failures.admit(&addr)));
        if let Some((_, Admission::Refused)) = admission {
            call.throttled();
            return Err(OpError::RateLimited);
        }
        // The text of an API key, to name its public id if it is refused.
        let api_key = match &credential {
            Ok(Credential::ApiKey(text)) => Some(*text),
            Ok(Credential::Bearer(_)) => None,
            Err(unread) => unread.api_key,
        };
        let result = match credential {
            Ok(credential) => self.auth.authenticate(credential).await,
            Err(unread) => Err(unread.error),
        };
        if let Some((addr, admitted)) = admission {
            // A store that could not answer says nothing about the credential.
            let failed = matches!(&result, Err(e) if !matches!(e, AuthError::StoreUnavailable));
            self.auth_failures.settle(&addr, admitted, failed);
        }
        let principal = match result {
            Ok(principal) => principal,
            Err(e) => {
                call.subject_guess(
                    api_key
                        .and_then(crate::auth::apikeys::key_id)
                        .map(|id| format!("apikey:{id}")),
                );
                self.metrics.auth_failure(e.label());
                tracing::info!(reason = e.label(), "authentication refused");
                return Err(match e {
                    AuthError::StoreUnavailable => {
                        OpError::Unavailable("api key lookup failed".into())
                    }
                    AuthError::Repeated => OpError::Invalid(
                        "send one X-Api-Key or one Authorization header, not several".into(),
                    ),
                    _ => OpError::Unauthorized,
                });
            }
        };
        call.principal(&principal);
        // A credential that keeps asking for what it may not have (403s
        // past the failed-authentication budget) is refused as a guessing
        // address is, and summarised.
        if self.forbidden.exhausted_with(|| {
            (
                principal.tenant.as_str().to_owned(),
                principal.subject.clone(),
            )
        }) {
            call.throttled();
            return Err(OpError::RateLimited);
        }
        if let Some(limit) = &self.rate_limit {
            if limit
                .admit(principal.tenant.as_str(), &principal.subject)
                .is_err()
            {
                self.metrics.rate_limited();
                return Err(OpError::RateLimited);
            }
        }
        // Counted only once the credential is known and within its rate:
        // a flooding credential's refused requests never crowd out others'.
        call.hold(InFlight::enter(self, &principal)?);
        Ok(principal)
    }
}

/// A request counted against `--max-in-flight` and its tenant's and
/// credential's shares of it until dropped (with its call, once the answer
/// is done or the client has left).
pub struct InFlight {
    count: Arc<AtomicUsize>,
    _share: crate::auth::shares::Share,
}

impl InFlight {
    /// `RateLimited` when the caller's tenant or credential holds its share
    /// already (its own limit, like a rate limit); `Overloaded` when the
    /// server is full.
    fn enter(ops: &Ops, principal: &Principal) -> Result<InFlight, OpError> {
        let share = ops.shares.enter(principal).map_err(|_| {
            ops.metrics.rate_limited();
            OpError::RateLimited
        })?;
        let before = ops.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= ops.limits.max_in_flight {
            ops.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(OpError::Overloaded);
        }
        Ok(InFlight {
            count: ops.in_flight.clone(),
            _share: share,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}
