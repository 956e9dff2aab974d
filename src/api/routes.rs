//! The route table: every route that reaches a secret or an API key, with
//! its audited action and what its caller must be allowed, declared once.
//! The router is built from it and the request middleware finds a request's
//! entry in it (`find`), so a route cannot exist without its action.

use std::sync::Arc;

use axum::http::Method;
use axum::routing::{delete, get, post, put, MethodRouter};

use super::error::Op;
use super::{apikeys, batch, keys, secrets, trail, watch, AppState};
use crate::auth::Action;

/// What a route's caller must be allowed, checked by the `Caller` and
/// `Keyed` extractors (`api::access`).
#[derive(Debug)]
pub enum Access {
    /// Any authenticated caller; the handler checks scopes against what the
    /// request names (a key in the body, a listing prefix).
    Authenticated,
    /// The key is the rest of the path after `prefix` (a 400 with `op`'s
    /// text when it breaks the key rule); one of `needs` must cover it.
    Key {
        prefix: &'static str,
        op: Op,
        needs: &'static [Action],
    },
    /// An action on the caller's whole tenant.
    Tenant(Action),
}

/// One audited route.
pub struct Route {
    pub method: Method,
    /// The path as the router matches it (the middleware sees this template).
    pub path: &'static str,
    /// The `action` of its audit line.
    pub action: &'static str,
    pub access: Access,
    handler: fn() -> MethodRouter<Arc<AppState>>,
}

const SECRET: &str = "/secrets/";
const READ_KEY: Access = Access::Key {
    prefix: SECRET,
    op: Op::Get,
    needs: &[Action::Read],
};
const DELETE_KEY: Access = Access::Key {
    prefix: SECRET,
    op: Op::Delete,
    needs: &[Action::Delete],
};
const METADATA: &str = "/metadata/";
const READ_METADATA: Access = Access::Key {
    prefix: METADATA,
    op: Op::Other,
    needs: &[Action::Read, Action::List],
};
const DESTROY_KEY: Access = Access::Key {
    prefix: METADATA,
    op: Op::Other,
    needs: &[Action::Delete],
};
const UNDELETE_KEY: Access = Access::Key {
    prefix: "/undelete/",
    op: Op::Other,
    needs: &[Action::Write],
};
const ADMIN: Access = Access::Tenant(Action::ApiKeysAdmin);

macro_rules! route {
    ($method:ident $path:literal, $action:literal, $access:expr, $router:ident($handler:path)) => {
        Route {
            method: Method::$method,
            path: $path,
            action: $action,
            access: $access,
            handler: || $router($handler),
        }
    };
}

/// Every audited route. A key may hold `/`, so `{*key}` is the rest of the
/// path; `/secrets/` itself is there so an empty key answers 400, not 404.
pub static ROUTES: &[Route] = &[
    route!(PUT "/secrets", "secrets.write", Access::Authenticated, put(secrets::put_secret)),
    route!(GET "/secrets", "secrets.list", Access::Authenticated, get(secrets::list_secrets)),
    route!(GET "/secrets/", "secrets.read", READ_KEY, get(secrets::get_secret)),
    route!(GET "/secrets/{*key}", "secrets.read", READ_KEY, get(secrets::get_secret)),
    route!(DELETE "/secrets/", "secrets.delete", DELETE_KEY, delete(secrets::delete_secret)),
    route!(DELETE "/secrets/{*key}", "secrets.delete", DELETE_KEY, delete(secrets::delete_secret)),
    route!(GET "/metadata/{*key}", "secrets.metadata", READ_METADATA, get(secrets::get_metadata)),
    route!(DELETE "/metadata/{*key}", "secrets.destroy", DESTROY_KEY, delete(secrets::destroy_secret)),
    route!(POST "/undelete/{*key}", "secrets.undelete", UNDELETE_KEY, post(secrets::undelete_secret)),
    route!(GET "/watch", "secrets.watch", Access::Authenticated, get(watch::watch)),
    route!(POST "/batch/get", "secrets.batch_get", Access::Authenticated, post(batch::batch_get)),
    route!(POST "/apikeys", "apikeys.create", ADMIN, post(apikeys::create)),
    route!(GET "/apikeys", "apikeys.list", ADMIN, get(apikeys::list)),
    route!(DELETE "/apikeys/{*id}", "apikeys.revoke", ADMIN, delete(apikeys::revoke)),
    route!(GET "/audit", "audit.read", Access::Tenant(Action::AuditRead), get(trail::read)),
    route!(POST "/keys/rotate", "keys.rotate", Access::Tenant(Action::KeysAdmin), post(keys::rotate)),
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
                    find(&Method::HEAD, route.path).unwrap().action,
                    route.action
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
