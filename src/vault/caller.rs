//! Who a Vault request's caller is, as extractors: the credential
//! (`X-Vault-Token` or `Authorization: Bearer`) admitted by the operations
//! layer exactly as the quiva API's, then `X-Vault-Namespace` held to the
//! credential's tenant. Every extractor also refuses response wrapping,
//! which strongroom does not do.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};

use super::error::VaultError;
use crate::api::access;
use crate::api::AppState;
use crate::auth::Principal;
use crate::ops::{Call, Operation};

const X_VAULT_NAMESPACE: HeaderName = HeaderName::from_static("x-vault-namespace");
const X_VAULT_WRAP_TTL: HeaderName = HeaderName::from_static("x-vault-wrap-ttl");

/// Vault's answer to a request for response wrapping.
pub const NO_WRAPPING: &str = "response wrapping is not supported";

/// 400 when the request asks for its answer wrapped: answering it
/// unwrapped would hand a client a secret it meant to pass on sealed.
pub fn refuse_wrapping(headers: &HeaderMap) -> Result<(), VaultError> {
    if headers.contains_key(X_VAULT_WRAP_TTL) {
        return Err(VaultError::bad(NO_WRAPPING));
    }
    Ok(())
}

/// The namespace the request names, without its slashes; `None` when it
/// names none.
pub fn namespace(headers: &HeaderMap) -> Result<Option<String>, VaultError> {
    let Some(value) = headers.get(X_VAULT_NAMESPACE) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| VaultError::bad("X-Vault-Namespace is not valid text"))?;
    let text = text.trim().trim_matches('/');
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// 403 unless the namespace, when one is named, is the credential's
/// tenant (DESIGN §12): a namespace never switches tenants.
fn same_namespace(headers: &HeaderMap, principal: &Principal) -> Result<(), VaultError> {
    match namespace(headers)? {
        Some(ns) if ns != principal.tenant.as_str() => Err(VaultError::denied()),
        _ => Ok(()),
    }
}

/// An authenticated caller of an audited Vault route.
pub struct Vaulted {
    pub principal: Arc<Principal>,
    pub call: Call,
}

impl FromRequestParts<Arc<AppState>> for Vaulted {
    type Rejection = VaultError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let call = access::call(parts)?;
        refuse_wrapping(&parts.headers)?;
        let principal = access::admit(app, &parts.headers, &call).await?;
        same_namespace(&parts.headers, &principal)?;
        Ok(Vaulted { principal, call })
    }
}

/// A caller not yet authenticated (a login), and the tenant it logs in to:
/// the namespace it names, else `default`.
pub struct Anonymous {
    pub call: Call,
    pub tenant: String,
}

impl FromRequestParts<Arc<AppState>> for Anonymous {
    type Rejection = VaultError;

    async fn from_request_parts(
        parts: &mut Parts,
        _app: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let call = access::call(parts)?;
        refuse_wrapping(&parts.headers)?;
        let tenant = namespace(&parts.headers)?.unwrap_or_else(|| "default".into());
        Ok(Anonymous { call, tenant })
    }
}

/// An authenticated caller of an unaudited route (`sys/mounts`, which
/// tells nothing of any secret): admitted as any caller is, so refusals
/// count against the same limits, but no audit line is written.
pub struct Known;

impl FromRequestParts<Arc<AppState>> for Known {
    type Rejection = VaultError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        refuse_wrapping(&parts.headers)?;
        let client = parts
            .extensions
            .get::<axum::extract::ConnectInfo<crate::http::ClientAddr>>()
            .map(|c| c.0 .0);
        // A call only to admit the credential: it is never finished, so it
        // writes no line; its in-flight place goes with it.
        let call = app.ops.begin(Operation::Metadata, "", client);
        let principal = access::admit(app, &parts.headers, &call).await?;
        same_namespace(&parts.headers, &principal)?;
        Ok(Known)
    }
}

/// A caller of an unauthenticated Vault route (`sys/health`).
pub struct Unwrapped;

impl FromRequestParts<Arc<AppState>> for Unwrapped {
    type Rejection = VaultError;

    async fn from_request_parts(
        parts: &mut Parts,
        _app: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        refuse_wrapping(&parts.headers)?;
        Ok(Unwrapped)
    }
}
