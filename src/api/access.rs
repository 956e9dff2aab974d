//! Who the caller is and whether the route lets them in: the credential is
//! found in the headers here and verified by `auth/`; the route table
//! (`routes::Access`) says what must be allowed. Handlers take the result as
//! an extractor: `Caller` (authenticated, and a tenant-wide scope checked)
//! or `Keyed` (also the key named by the path, checked against the route's
//! scopes).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};

use super::audit::AuditRecorder;
use super::error::ApiError;
use super::request;
use super::routes::Access;
use super::AppState;
use crate::auth::failures::Admission;
use crate::auth::{AuthError, Credential, Principal};
use crate::types::SecretKey;

/// The request's one credential. With both an API key and a bearer token it
/// is refused, so an invalid credential can never ride along unnoticed
/// beside a valid one.
pub fn credential(headers: &HeaderMap) -> Result<Credential<'_>, AuthError> {
    let authorization = one(headers, &header::AUTHORIZATION)?;
    let api_key = one(headers, &X_API_KEY)?;
    match (api_key, authorization) {
        (Some(_), Some(_)) => Err(AuthError::Ambiguous),
        (Some(value), None) => {
            let text = value.to_str().map_err(|_| AuthError::Malformed)?;
            Ok(Credential::ApiKey(text.trim()))
        }
        (None, Some(value)) => {
            let text = value.to_str().map_err(|_| AuthError::Malformed)?;
            let (scheme, token) = text.trim().split_once(' ').ok_or(AuthError::Malformed)?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(AuthError::Malformed);
            }
            Ok(Credential::Bearer(token.trim()))
        }
        (None, None) => Err(AuthError::Missing),
    }
}

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The one value of a credential header: two of it are refused, since which
/// counts would be a guess (a proxy may add one).
fn one<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'h HeaderValue>, AuthError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(AuthError::Repeated);
    }
    Ok(first)
}

/// Authenticates a request, records who it was for the audit line, and
/// counts failures by reason.
pub async fn principal(
    app: &AppState,
    headers: &HeaderMap,
    audit: &AuditRecorder,
) -> Result<Arc<Principal>, ApiError> {
    let client = audit.client();
    let admission = client.map(|addr| (addr, app.auth_failures.admit(&addr)));
    if let Some((_, Admission::Refused)) = admission {
        audit.throttled();
        return Err(ApiError::RateLimited);
    }
    let result = match credential(headers) {
        Ok(credential) => app.auth.authenticate(credential).await,
        Err(e) => Err(e),
    };
    if let Some((addr, admitted)) = admission {
        // A store that could not answer says nothing about the credential.
        let failed = matches!(&result, Err(e) if !matches!(e, AuthError::StoreUnavailable));
        app.auth_failures.settle(&addr, admitted, failed);
    }
    match &result {
        Ok(principal) => audit.principal(principal),
        Err(_) => audit.subject_guess(
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .and_then(|t| crate::auth::apikeys::key_id(t.trim()))
                .map(|id| format!("apikey:{id}")),
        ),
    }
    if let Ok(principal) = &result {
        // A credential that keeps asking for what it may not have (403s
        // past the failed-authentication budget) is refused as a guessing
        // address is, and summarised.
        if app.forbidden.exhausted_with(|| {
            (
                principal.tenant.as_str().to_owned(),
                principal.subject.clone(),
            )
        }) {
            audit.throttled();
            return Err(ApiError::RateLimited);
        }
        if let Some(limit) = &app.rate_limit {
            if limit
                .admit(principal.tenant.as_str(), &principal.subject)
                .is_err()
            {
                app.metrics.rate_limited();
                return Err(ApiError::RateLimited);
            }
        }
        // Counted only once the credential is known and within its rate:
        // a flooding credential's refused requests never crowd out others'.
        audit.hold(InFlight::enter(app, principal)?);
    }
    result.map_err(|e| {
        app.metrics.auth_failure(e.label());
        tracing::info!(reason = e.label(), "authentication refused");
        match e {
            AuthError::StoreUnavailable => ApiError::Unavailable("api key lookup failed".into()),
            AuthError::Repeated => ApiError::bad(
                super::error::Op::Other,
                "send one X-Api-Key or one Authorization header, not several",
            ),
            _ => ApiError::Unauthorized,
        }
    })
}

/// A request counted against `--max-in-flight` and its tenant's and
/// credential's shares of it until dropped (with its audit recorder, once
/// the answer is done or the client has left).
pub struct InFlight {
    count: Arc<std::sync::atomic::AtomicUsize>,
    _share: crate::auth::shares::Share,
}

impl InFlight {
    /// 429 when the caller's tenant or credential holds its share already
    /// (its own limit, like a rate limit); 503 when the server is full.
    fn enter(app: &AppState, principal: &Principal) -> Result<InFlight, ApiError> {
        let share = app.shares.enter(principal).map_err(|_| {
            app.metrics.rate_limited();
            ApiError::RateLimited
        })?;
        let before = app.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= app.limits.max_in_flight {
            app.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::Overloaded);
        }
        Ok(InFlight {
            count: app.in_flight.clone(),
            _share: share,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers larger than this keep their request's in-flight place until
/// their body is sent, so one credential's unread answers count against its
/// share; smaller ones leave with the first write.
const HOLD_ABOVE: u64 = 64 * 1024;

/// `response`, whose body holds the request's place in `--max-in-flight`
/// (from `slot`) until it is sent or dropped, when the body is large.
pub fn hold_while_sent(
    response: axum::response::Response,
    slot: impl FnOnce() -> Option<InFlight>,
) -> axum::response::Response {
    use hyper::body::Body as _;
    if response.body().size_hint().lower() <= HOLD_ABOVE {
        return response;
    }
    let Some(slot) = slot() else {
        return response;
    };
    response.map(|body| axum::body::Body::new(Holding { body, _slot: slot }))
}

/// A body and the in-flight place it holds.
struct Holding {
    body: axum::body::Body,
    _slot: InFlight,
}

impl hyper::body::Body for Holding {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    // `is_end_stream` stays false (the default): told the body had ended,
    // hyper would drop it, and the place, on taking the last frame, while
    // that frame may still wait for its client.

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The request's audit recorder, which the middleware gives every audited
/// route.
fn recorder(parts: &Parts) -> Result<AuditRecorder, ApiError> {
    parts
        .extensions
        .get::<AuditRecorder>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("an audited route without a recorder".into()))
}

/// An authenticated caller; for a tenant-wide route, one allowed its action.
pub struct Caller {
    pub principal: Arc<Principal>,
    pub audit: AuditRecorder,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let audit = recorder(parts)?;
        let principal = principal(app, &parts.headers, &audit).await?;
        if let Access::Tenant(action) = audit.route().access {
            if !principal.allows(action, "") {
                return Err(ApiError::Forbidden);
            }
        }
        Ok(Caller { principal, audit })
    }
}

/// An authenticated caller allowed one of the route's scopes on the key the
/// path names.
pub struct Keyed {
    pub principal: Arc<Principal>,
    pub key: SecretKey,
    pub audit: AuditRecorder,
}

impl FromRequestParts<Arc<AppState>> for Keyed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let audit = recorder(parts)?;
        let Access::Key { prefix, op, needs } = audit.route().access else {
            return Err(ApiError::Internal(
                "a keyed handler on a route without a key".into(),
            ));
        };
        let principal = principal(app, &parts.headers, &audit).await?;
        let key = request::key_from_path(parts.uri.path(), prefix, op)?;
        audit.key(key.as_str());
        if !needs.iter().any(|&a| principal.allows(a, key.as_str())) {
            return Err(ApiError::Forbidden);
        }
        Ok(Keyed {
            principal,
            key,
            audit,
        })
    }
}
