//! The route table: every route that reaches a secret, an API key, a
//! policy, a role or a login, with the operation it calls, declared once. The router is built from it and
//! the request middleware finds a request's entry in it (`find`) to begin
//! the request's call, so a route cannot exist without its operation.

use std::sync::Arc;

use axum::http::Method;
use axum::routing::{delete, get, post, put, MethodRouter};

use super::{apikeys, batch, identity, keys, login, oidc, secrets, trail, watch, AppState};
use crate::ops::Operation;

/// One audited route (of this table, or of another front-end's on the
/// same router: `vault/routes.rs`).
pub struct Route {
    pub method: Method,
    /// The path as the router matches it (the middleware sees this template;
    /// a table under a mount gives the path after it).
    pub path: &'static str,
    pub operation: Operation,
    pub handler: fn() -> MethodRouter<Arc<AppState>>,
}

macro_rules! route {
    ($method:ident $path:literal, $operation:ident, $router:ident($handler:path)) => {
        Route {
            method: Method::$method,
            path: $path,
            operation: Operation::$operation,
            handler: || $router($handler),
        }
    };
}
pub(crate) use route;

/// Every audited route. A key may hold `/`, so `{*key}` is the rest of the
/// path; `/secrets/` itself is there so an empty key answers 400, not 404.
pub static ROUTES: &[Route] = &[
    route!(PUT "/secrets", Put, put(secrets::put_secret)),
    route!(GET "/secrets", List, get(secrets::list_secrets)),
    route!(GET "/secrets/", Get, get(secrets::get_secret)),
    route!(GET "/secrets/{*key}", Get, get(secrets::get_secret)),
    route!(DELETE "/secrets/", Delete, delete(secrets::delete_secret)),
    route!(DELETE "/secrets/{*key}", Delete, delete(secrets::delete_secret)),
    route!(GET "/metadata/{*key}", Metadata, get(secrets::get_metadata)),
    route!(DELETE "/metadata/{*key}", Destroy, delete(secrets::destroy_secret)),
    route!(POST "/undelete/{*key}", Undelete, post(secrets::undelete_secret)),
    route!(GET "/watch", Watch, get(watch::watch)),
    route!(POST "/batch/get", BatchGet, post(batch::batch_get)),
    route!(POST "/apikeys", ApiKeyCreate, post(apikeys::create)),
    route!(GET "/apikeys", ApiKeyList, get(apikeys::list)),
    route!(DELETE "/apikeys/{*id}", ApiKeyRevoke, delete(apikeys::revoke)),
    route!(GET "/audit", AuditRead, get(trail::read)),
    route!(POST "/keys/rotate", RotateKeys, post(keys::rotate)),
    route!(GET "/policies", PolicyList, get(identity::list_policies)),
    route!(PUT "/policies/{name}", PolicyPut, put(identity::put_policy)),
    route!(GET "/policies/{name}", PolicyGet, get(identity::get_policy)),
    route!(DELETE "/policies/{name}", PolicyDelete, delete(identity::delete_policy)),
    route!(GET "/auth/roles", RoleList, get(identity::list_roles)),
    route!(PUT "/auth/roles/{name}", RolePut, put(identity::put_role)),
    route!(GET "/auth/roles/{name}", RoleGet, get(identity::get_role)),
    route!(DELETE "/auth/roles/{name}", RoleDelete, delete(identity::delete_role)),
    route!(POST "/auth/login/jwt", Login, post(login::login_jwt)),
    route!(POST "/auth/oidc/auth_url", OidcAuthUrl, post(oidc::auth_url)),
    route!(POST "/auth/oidc/callback", OidcCallback, post(oidc::callback)),
    route!(POST "/auth/oidc/device", OidcDevice, post(oidc::device)),
    route!(POST "/auth/oidc/device/token", OidcDeviceToken, post(oidc::device_token)),
    route!(GET "/auth/token", TokenLookup, get(login::lookup)),
    route!(DELETE "/auth/token", TokenRevoke, delete(login::revoke)),
];

/// The router of every audited route.
pub fn audited() -> axum::Router<Arc<AppState>> {
    ROUTES.iter().fold(axum::Router::new(), |router, route| {
        router.route(route.path, (route.handler)())
    })
}

/// The entry of a request to `path` (its route template). HEAD is answered
/// by the GET handlers, so it is audited as GET; a method a route does not
/// have, and every other route, has none and is not audited.
pub fn find(method: &Method, path: &str) -> Option<&'static Route> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    ROUTES.iter().find(|r| r.method == method && r.path == path)
}

/// The operation a request to `template` (its route template) calls: the
/// quiva table's, else the Vault front-end's (whose routes sit under its
/// mount, and whose `GET ...?list=true` is a listing).
pub fn operation(
    method: &Method,
    template: &str,
    query: Option<&str>,
    vault_mount: &str,
) -> Option<Operation> {
    find(method, template)
        .map(|route| route.operation)
        .or_else(|| crate::vault::operation(method, template, query, vault_mount))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Methods and routes without an entry are the router's other routes
    /// and a route's other methods: none of them is audited.
    #[test]
    fn every_audited_route_has_an_action_and_nothing_else_does() {
        for route in ROUTES {
            assert!(find(&route.method, route.path).is_some());
            if route.method == Method::GET {
                assert_eq!(
                    find(&Method::HEAD, route.path).unwrap().operation,
                    route.operation
                );
            }
        }
        for (method, path) in [
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
            ("GET", "/keys/rotate"),
            ("GET", "/batch/get"),
        ] {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert!(find(&method, path).is_none(), "{method} {path}");
        }
    }
}
