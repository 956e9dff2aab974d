//! Who the caller is: the credential is found in the headers here and
//! admitted by the operations layer (`Ops::authenticate`, which counts
//! failures and in-flight shares). Handlers take the result as an
//! extractor: `Caller` (authenticated) or `Keyed` (also the key the path
//! names, parsed). Whether the caller may do what it asks is the
//! operation's to decide.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};

use super::error::{ApiError, Op};
use super::request;
use super::AppState;
use crate::auth::{AuthError, Credential, Principal};
use crate::ops::{Call, InFlight, Operation, Unread};
use crate::types::SecretKey;

/// The request's one credential: `X-Api-Key`, `Authorization: Bearer` or
/// Vault's `X-Vault-Token` (the last two an API key or login token by its
/// shape, else a JWT, as a Vault client sends either header). With two
/// different ones it is refused, so an invalid credential can never ride
/// along unnoticed beside a valid one; a Vault client that sends its token
/// both as `X-Vault-Token` and as the bearer token sends one credential.
pub fn credential(headers: &HeaderMap) -> Result<Credential<'_>, AuthError> {
    let authorization = one(headers, &header::AUTHORIZATION)?;
    let api_key = one(headers, &X_API_KEY)?;
    let vault = one(headers, &X_VAULT_TOKEN)?
        .map(|value| {
            value
                .to_str()
                .map(str::trim)
                .map_err(|_| AuthError::Malformed)
        })
        .transpose()?
        // Vault's clients send an empty header when they have no token.
        .filter(|text| !text.is_empty());
    match (api_key, authorization, vault) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(AuthError::Ambiguous),
        (Some(value), None, None) => {
            let text = value.to_str().map_err(|_| AuthError::Malformed)?;
            Ok(Credential::ApiKey(text.trim()))
        }
        (None, Some(value), vault) => {
            let text = value.to_str().map_err(|_| AuthError::Malformed)?;
            let (scheme, token) = text.trim().split_once(' ').ok_or(AuthError::Malformed)?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(AuthError::Malformed);
            }
            match vault {
                None => Ok(bearer_credential(token.trim())),
                Some(same) if same == token.trim() => Ok(bearer_credential(same)),
                Some(_) => Err(AuthError::Ambiguous),
            }
        }
        (None, None, Some(text)) => Ok(bearer_credential(text)),
        (None, None, None) => Err(AuthError::Missing),
    }
}

/// A bearer token's or `X-Vault-Token`'s credential: an API key or a
/// login token as an API key is (the authenticator tells the two apart),
/// anything else as a JWT, which can never take either shape.
fn bearer_credential(text: &str) -> Credential<'_> {
    if crate::auth::apikeys::key_id(text).is_some() || crate::auth::tokens::is_token(text) {
        Credential::ApiKey(text)
    } else {
        Credential::Bearer(text)
    }
}

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const X_VAULT_TOKEN: HeaderName = HeaderName::from_static("x-vault-token");

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

/// The request's call, which the middleware begins for every audited route.
pub(crate) fn call(parts: &Parts) -> Result<Call, ApiError> {
    parts
        .extensions
        .get::<Call>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("an audited route without a call".into()))
}

/// Authenticates the request's credential through the operations layer:
/// every front-end admits its callers here.
pub(crate) async fn admit(
    app: &AppState,
    headers: &HeaderMap,
    call: &Call,
) -> Result<Arc<Principal>, crate::ops::OpError> {
    let credential = credential(headers).map_err(|error| Unread {
        error,
        api_key: [&X_API_KEY, &X_VAULT_TOKEN]
            .into_iter()
            .find_map(|name| headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::trim),
    });
    app.ops.authenticate(call, credential).await
}

async fn principal(app: &AppState, parts: &Parts, call: &Call) -> Result<Arc<Principal>, ApiError> {
    Ok(admit(app, &parts.headers, call).await?)
}

/// Where the key starts in the path of a route about one key (the rest of
/// the path after the prefix), and whose 400 text a bad key gets.
pub fn key_prefix(operation: Operation) -> Option<(&'static str, Op)> {
    match operation {
        Operation::Get => Some(("/secrets/", Op::Get)),
        Operation::Delete => Some(("/secrets/", Op::Delete)),
        Operation::Metadata | Operation::Destroy => Some(("/metadata/", Op::Other)),
        Operation::Undelete => Some(("/undelete/", Op::Other)),
        _ => None,
    }
}

/// An authenticated caller.
pub struct Caller {
    pub principal: Arc<Principal>,
    pub call: Call,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let call = call(parts)?;
        let principal = principal(app, parts, &call).await?;
        Ok(Caller { principal, call })
    }
}

/// A caller not (yet) authenticated: a login.
pub struct Anonymous {
    pub call: Call,
}

impl FromRequestParts<Arc<AppState>> for Anonymous {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _app: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Anonymous { call: call(parts)? })
    }
}

/// An authenticated caller and the key the path names.
pub struct Keyed {
    pub principal: Arc<Principal>,
    pub key: SecretKey,
    pub call: Call,
}

impl FromRequestParts<Arc<AppState>> for Keyed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let call = call(parts)?;
        let Some((prefix, op)) = key_prefix(call.operation()) else {
            return Err(ApiError::Internal(
                "a keyed handler on a route without a key".into(),
            ));
        };
        let principal = principal(app, parts, &call).await?;
        let key = request::key_from_path(parts.uri.path(), prefix, op)?;
        call.key(key.as_str());
        Ok(Keyed {
            principal,
            key,
            call,
        })
    }
}
