//! The Vault route table: every audited Vault route with the operation it
//! calls, declared once. The router is built from it (the KV routes under
//! the configured mount) and the request middleware asks `operation` for a
//! request's entry, as it asks the quiva table, to begin its call. The
//! `sys/` routes tell nothing of any secret and are not audited, as
//! `/healthz` is not.

use std::sync::Arc;

use axum::http::Method;
use axum::routing::{delete, get, patch, post, put};
use axum::Router;

use super::{auth, kv, metadata, sys, wire};
use crate::api::routes::{route, Route};
use crate::api::AppState;
use crate::ops::Operation;

/// The KV v2 routes under the mount. Vault takes POST and PUT alike for a
/// write (its Go client sends PUT, hvac POST). `GET metadata/{path}` is a
/// listing when it asks `list=true` (`LIST` is read as that).
static MOUNTED: &[Route] = &[
    route!(GET "data/{*path}", Get, get(kv::read)),
    route!(POST "data/{*path}", Put, post(kv::write)),
    route!(PUT "data/{*path}", Put, put(kv::write)),
    route!(PATCH "data/{*path}", Put, patch(kv::patch)),
    route!(DELETE "data/{*path}", Delete, delete(kv::delete_latest)),
    route!(POST "delete/{*path}", Delete, post(kv::change_versions)),
    route!(PUT "delete/{*path}", Delete, put(kv::change_versions)),
    route!(POST "undelete/{*path}", Undelete, post(kv::change_versions)),
    route!(PUT "undelete/{*path}", Undelete, put(kv::change_versions)),
    route!(POST "destroy/{*path}", Destroy, post(kv::change_versions)),
    route!(PUT "destroy/{*path}", Destroy, put(kv::change_versions)),
    route!(GET "metadata/{*path}", Metadata, get(metadata::read)),
    route!(GET "metadata/", List, get(metadata::list)),
    route!(GET "metadata", List, get(metadata::list)),
    route!(POST "metadata/{*path}", MetadataWrite, post(metadata::write)),
    route!(PUT "metadata/{*path}", MetadataWrite, put(metadata::write)),
    route!(PATCH "metadata/{*path}", MetadataWrite, patch(metadata::patch)),
    route!(DELETE "metadata/{*path}", Destroy, delete(metadata::destroy)),
    route!(GET "config", ConfigRead, get(metadata::config)),
    route!(POST "config", ConfigWrite, post(metadata::set_config)),
    route!(PUT "config", ConfigWrite, put(metadata::set_config)),
];

/// The token and JWT auth routes.
static AUTH: &[Route] = &[
    route!(GET "/v1/auth/token/lookup-self", TokenLookup, get(auth::lookup_self)),
    route!(POST "/v1/auth/token/lookup-self", TokenLookup, post(auth::lookup_self)),
    route!(POST "/v1/auth/token/revoke-self", TokenRevoke, post(auth::revoke_self)),
    route!(PUT "/v1/auth/token/revoke-self", TokenRevoke, put(auth::revoke_self)),
    route!(POST "/v1/auth/jwt/login", Login, post(auth::login)),
    route!(PUT "/v1/auth/jwt/login", Login, put(auth::login)),
];

/// Every Vault route, the KV ones under `/v1/<mount>/`.
pub fn router(mount: &str) -> Router<Arc<AppState>> {
    let mounted = MOUNTED.iter().fold(Router::new(), |router, route| {
        router.route(&format!("/v1/{mount}/{}", route.path), (route.handler)())
    });
    AUTH.iter()
        .fold(mounted, |router, route| {
            router.route(route.path, (route.handler)())
        })
        .route("/v1/sys/health", get(sys::health))
        .route("/v1/sys/init", get(sys::init))
        .route("/v1/sys/seal-status", get(sys::seal_status))
        .route("/v1/sys/mounts", get(sys::mounts))
        .route("/v1/sys/mounts/{*path}", get(sys::mount))
        .route("/v1/sys/internal/ui/mounts/{*path}", get(sys::ui_mount))
}

/// The operation of a request to the Vault route `template` (HEAD is a
/// GET); `None` for routes that are not audited and for other paths.
pub fn operation(
    method: &Method,
    template: &str,
    query: Option<&str>,
    mount: &str,
) -> Option<Operation> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let under_mount = template
        .strip_prefix("/v1/")
        .and_then(|rest| rest.strip_prefix(mount))
        .and_then(|rest| rest.strip_prefix('/'));
    let (table, path) = match under_mount {
        Some(rest) => (MOUNTED, rest),
        None => (AUTH, template),
    };
    let route = table
        .iter()
        .find(|r| r.method == method && r.path == path)?;
    if route.operation == Operation::Metadata && lists(query) {
        return Some(Operation::List);
    }
    Some(route.operation)
}

/// Whether a query asks `list=true` (any of Go's spellings of true).
pub fn lists(query: Option<&str>) -> bool {
    wire::query_param(query, "list")
        .ok()
        .flatten()
        .and_then(|text| wire::parse_bool(&text))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vault_route_has_its_operation_under_the_mount_only() {
        let op = |method: &str, template: &str, query: Option<&str>| {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            operation(&method, template, query, "secret")
        };
        assert_eq!(
            op("GET", "/v1/secret/data/{*path}", None),
            Some(Operation::Get)
        );
        assert_eq!(
            op("HEAD", "/v1/secret/data/{*path}", None),
            Some(Operation::Get)
        );
        assert_eq!(
            op("PUT", "/v1/secret/data/{*path}", None),
            Some(Operation::Put)
        );
        assert_eq!(
            op("PATCH", "/v1/secret/data/{*path}", None),
            Some(Operation::Put)
        );
        assert_eq!(
            op("GET", "/v1/secret/metadata/{*path}", None),
            Some(Operation::Metadata)
        );
        assert_eq!(
            op("GET", "/v1/secret/metadata/{*path}", Some("list=true")),
            Some(Operation::List)
        );
        assert_eq!(
            op("GET", "/v1/secret/metadata/{*path}", Some("list=0")),
            Some(Operation::Metadata)
        );
        assert_eq!(
            op("POST", "/v1/secret/destroy/{*path}", None),
            Some(Operation::Destroy)
        );
        assert_eq!(
            op("POST", "/v1/auth/jwt/login", None),
            Some(Operation::Login)
        );
        assert_eq!(op("GET", "/v1/sys/health", None), None);
        assert_eq!(op("GET", "/v1/secretx/data/{*path}", None), None);
        assert_eq!(op("OPTIONS", "/v1/secret/data/{*path}", None), None);
        assert_eq!(op("GET", "/secrets/{*key}", None), None);
    }
}
