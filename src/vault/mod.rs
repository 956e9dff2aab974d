//! The Vault-compatible API (DESIGN §12), a front-end beside `api/` on the
//! same listener, router and middleware: KV v2 at one mount (`secret` by
//! default), token `lookup-self`/`revoke-self`, JWT login, and the `sys/`
//! endpoints clients ask before they start. Tools written for Vault work
//! by pointing `VAULT_ADDR` here.
//!
//! Architecture invariant: a handler parses, calls operations of
//! `crate::ops`, and renders Vault's shapes; it never checks a scope,
//! writes an audit line, seals, or touches the store. Vault's own rules
//! that strongroom keeps (versions, check-and-set, per-version deletes,
//! key settings) are the store model's, whichever API wrote the key.

mod auth;
mod caller;
pub mod error;
mod kv;
mod metadata;
mod routes;
mod sys;
mod unsupported;
mod wire;

use axum::http::{Method, Uri};

pub use error::VaultError;
pub use routes::{operation, router};
pub use unsupported::{starting, unrouted, unsupported_operation};

/// Mount paths Vault keeps for itself, which a KV mount cannot take.
const RESERVED: [&str; 4] = ["sys", "auth", "identity", "cubbyhole"];

/// The mount the flag names, without a trailing `/`: path segments of
/// `A-Z a-z 0-9 - _ .`, not one of Vault's own mounts.
pub fn parse_mount(text: &str) -> Result<String, String> {
    let mount = text.trim().trim_end_matches('/');
    let segments_ok = !mount.is_empty()
        && mount.len() <= 128
        && mount.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    if !segments_ok {
        return Err(format!(
            "--vault-mount {text:?}: a mount is one or more path segments of A-Z a-z 0-9 - _ ."
        ));
    }
    let first = mount.split('/').next().unwrap_or("");
    if RESERVED.contains(&first) {
        return Err(format!(
            "--vault-mount {text:?}: {first}/ is Vault's own; choose another mount"
        ));
    }
    Ok(mount.to_owned())
}

/// Whether a path is the Vault API's (under `/v1/`).
pub fn is_vault_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// Vault's `LIST` as `GET ...?list=true`, which Vault itself takes as the
/// same request: a router matches only the methods it knows. The server
/// applies it to every request's method and URI before routing
/// (`http::Settings::rewrite`); every other request passes untouched.
pub fn list_as_get(method: &mut Method, uri: &mut Uri) {
    if method.as_str() != "LIST" || !is_vault_path(uri.path()) {
        return;
    }
    let path_and_query = match uri.query() {
        Some(query) if !query.is_empty() => format!("{}?{query}&list=true", uri.path()),
        _ => format!("{}?list=true", uri.path()),
    };
    let mut parts = uri.clone().into_parts();
    let Ok(path_and_query) = path_and_query.parse() else {
        return;
    };
    parts.path_and_query = Some(path_and_query);
    if let Ok(rewritten) = Uri::from_parts(parts) {
        *uri = rewritten;
        *method = Method::GET;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_is_plain_path_segments_and_not_vaults_own() {
        assert_eq!(parse_mount("secret").unwrap(), "secret");
        assert_eq!(parse_mount("secret/").unwrap(), "secret");
        assert_eq!(parse_mount("kv/prod").unwrap(), "kv/prod");
        for bad in ["", "/", "a//b", "sys", "auth/x", "a b", "../x", "{x}"] {
            assert!(parse_mount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn list_is_read_as_get_with_list_true_under_v1_only() {
        let rewrite = |method: &str, uri: &str| {
            let mut method = Method::from_bytes(method.as_bytes()).unwrap();
            let mut uri: Uri = uri.parse().unwrap();
            list_as_get(&mut method, &mut uri);
            (method.to_string(), uri.to_string())
        };
        assert_eq!(
            rewrite("LIST", "/v1/secret/metadata/a/"),
            ("GET".into(), "/v1/secret/metadata/a/?list=true".into())
        );
        assert_eq!(
            rewrite("LIST", "/v1/secret/metadata?x=1"),
            ("GET".into(), "/v1/secret/metadata?x=1&list=true".into())
        );
        assert_eq!(
            rewrite("GET", "/v1/secret/metadata/a"),
            ("GET".into(), "/v1/secret/metadata/a".into())
        );
        assert_eq!(
            rewrite("LIST", "/secrets"),
            ("LIST".into(), "/secrets".into())
        );
    }
}
