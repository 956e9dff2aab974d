//! What the Vault API answers for what strongroom does not serve: another
//! mount or engine, another auth method, Vault's ACL policies, response
//! wrapping, a method a route does not take. Always Vault's JSON shape,
//! never a page, with a sentence saying what strongroom serves instead.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::caller::NO_WRAPPING;
use super::error::{errors_body, VaultError};

/// Vault's 404 for a path no mount serves, quoting the path as Go's `%q`
/// would (cut short: it is the caller's text).
fn no_handler(path: &str, instead: String) -> Response {
    let shown: String = path.chars().take(256).collect();
    VaultError::new(
        StatusCode::NOT_FOUND,
        vec![
            format!("no handler for route {shown:?}. route entry not found."),
            instead,
        ],
    )
    .into_response()
}

/// The answer to a request under `/v1/` that no Vault route matched.
pub fn unrouted(mount: &str, request: &Request) -> Response {
    if let Err(e) = super::caller::refuse_wrapping(request.headers()) {
        return e.into_response();
    }
    let path = request.uri().path();
    let relative = path.strip_prefix("/v1/").unwrap_or("");
    if relative.starts_with("sys/policy") || relative.starts_with("sys/policies") {
        return VaultError::bad(
            "Vault ACL policies (HCL) are not supported: strongroom grants scopes, \
             directly or through its own policies (PUT /policies/{name})",
        )
        .into_response();
    }
    if relative.starts_with("sys/wrapping") {
        return VaultError::bad(NO_WRAPPING).into_response();
    }
    let instead = if relative.starts_with("auth/") {
        "strongroom serves the token auth method (lookup-self, revoke-self) and the jwt \
         auth method (login) only"
            .to_owned()
    } else if relative.starts_with("sys/") {
        "strongroom serves sys/health, sys/init, sys/seal-status, sys/mounts and \
         sys/internal/ui/mounts only"
            .to_owned()
    } else if relative.starts_with(&format!("{mount}/")) {
        format!(
            "strongroom's KV v2 mount {mount}/ serves data/, metadata/, delete/, undelete/, \
             destroy/ and config"
        )
    } else {
        format!("strongroom serves one secrets engine, KV version 2, mounted at {mount}/")
    };
    no_handler(relative, instead)
}

/// Vault's 405 for a method a route does not take.
pub fn unsupported_operation(mount: &str, request: &Request) -> Response {
    if let Err(e) = super::caller::refuse_wrapping(request.headers()) {
        return e.into_response();
    }
    let relative = request.uri().path().strip_prefix("/v1/").unwrap_or("");
    let mut errors = vec!["unsupported operation".to_owned()];
    if relative.starts_with("sys/mounts") {
        errors.push(format!(
            "strongroom serves one KV version 2 mount, {mount}/, set by --vault-mount; \
             mounts cannot be enabled, tuned or removed"
        ));
    }
    VaultError::new(StatusCode::METHOD_NOT_ALLOWED, errors).into_response()
}

/// The answer while start-up still waits for the store.
pub fn starting() -> Response {
    let mut response = errors_body(
        StatusCode::SERVICE_UNAVAILABLE,
        &["service unavailable".to_owned()],
    );
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("1"),
    );
    response
}
