//! Workload login: whether a platform's JWT (a CI job's, a pod's)
//! satisfies a role, binding by binding, as Vault's `auth/jwt` roles do:
//! the signature under the provider's keys (the algorithm fixed by the
//! key's type), `iss`, `exp`/`nbf`/`iat` with 60 s of leeway, `aud` against
//! `bound_audiences`, `sub` against the `bound_subject` glob, and every
//! `bound_claims` entry. A refusal names the binding, never the token.

use std::sync::Arc;

use jsonwebtoken::Validation;
use serde_json::{Map, Value};

use super::jwks::{select, Selected};
use super::providers::Provider;
use crate::store::identity::RoleRecord;

/// Tokens longer than this are refused before any parsing.
pub const MAX_JWT_BYTES: usize = 16 * 1024;
const LEEWAY_SECS: i64 = 60;

/// The binding a JWT failed, in words for the caller's `detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

fn refused(why: impl Into<String>) -> Refused {
    Refused(why.into())
}

/// `*` matches any run of characters (none included); everything else
/// matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and where in the text it began to match.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// A claim by name, or by JSON pointer when it starts with `/`
/// (`/repository_owner`, `/kubernetes.io/namespace`).
fn claim<'c>(claims: &'c Map<String, Value>, name: &str) -> Option<&'c Value> {
    if name.starts_with('/') {
        walk(claims, name)
    } else {
        claims.get(name)
    }
}

/// Follows a JSON pointer through `claims` without copying them.
fn walk<'c>(claims: &'c Map<String, Value>, pointer: &str) -> Option<&'c Value> {
    let mut parts = pointer.split('/').skip(1);
    let first = parts.next()?;
    let mut at = claims.get(&unescape(first))?;
    for part in parts {
        at = match at {
            Value::Object(m) => m.get(&unescape(part))?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(at)
}

fn unescape(part: &str) -> String {
    part.replace("~1", "/").replace("~0", "~")
}

/// A claim's value as text, when it is a string, number or boolean.
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Whether `value` (or, for a list, any element of it) matches a pattern.
fn any_matches(value: &Value, patterns: &[String]) -> bool {
    let one = |v: &Value| as_text(v).is_some_and(|t| patterns.iter().any(|p| glob_match(p, &t)));
    match value {
        Value::Array(items) => items.iter().any(one),
        v => one(v),
    }
}

/// Verifies `jwt` against `role` under `provider`'s keys; the value of
/// the role's `user_claim` when every binding holds.
pub async fn verify(
    provider: &Arc<Provider>,
    role: &RoleRecord,
    jwt: &str,
) -> Result<String, Refused> {
    let claims = signed_claims(provider, jwt).await?;
    check_claims(provider, role, &claims)
}

/// Verifies a person's ID token: as `verify`, and its `aud` names
/// strongroom's client and its `nonce` is the login's (none for the device
/// flow, which has no nonce).
pub async fn verify_id_token(
    provider: &Arc<Provider>,
    role: &RoleRecord,
    id_token: &str,
    client_id: &str,
    nonce: Option<&str>,
) -> Result<String, Refused> {
    let claims = signed_claims(provider, id_token).await?;
    let for_us = match claims.get("aud") {
        Some(Value::String(aud)) => aud == client_id,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    };
    if !for_us {
        return Err(refused(
            "aud: the ID token was not issued to strongroom's client",
        ));
    }
    if let Some(nonce) = nonce {
        let given = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
        let same =
            aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), nonce.as_bytes());
        if same.is_err() {
            return Err(refused("nonce: the ID token's nonce is not this login's"));
        }
    }
    check_claims(provider, role, &claims)
}

/// The claims of `jwt` once its signature verifies under the provider's
/// keys.
async fn signed_claims(provider: &Arc<Provider>, jwt: &str) -> Result<Map<String, Value>, Refused> {
    if jwt.is_empty() || jwt.len() > MAX_JWT_BYTES {
        return Err(refused("jwt: not a JWT of at most 16 KiB"));
    }
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| {
        refused("jwt: not a JWT, or signed with an alg strongroom never accepts (none)")
    })?;
    // RFC 7515 4.1.11: a critical extension we do not understand.
    if header.crit.is_some() {
        return Err(refused(
            "jwt: a critical header extension is not understood",
        ));
    }
    provider.refresh_if_stale().await;
    let mut keys = provider.keys();
    let mut key = select(&keys, &header);
    if matches!(key, Selected::None) && header.kid.is_some() && provider.refresh().await {
        keys = provider.keys();
        key = select(&keys, &header);
    }
    let key = match key {
        Selected::Key(key) => key,
        Selected::None => {
            return Err(refused(format!(
                "signature: no key of provider {} has the token's kid",
                provider.name
            )))
        }
        Selected::WrongAlgorithm => {
            return Err(refused(
                "signature: the token's alg is not the one its key's type allows",
            ))
        }
    };
    // The signature only; every claim is checked below, on our clock.
    let mut validation = Validation::new(key.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Map<String, Value>>(jwt, &key.key, &validation)
        .map(|data| data.claims)
        .map_err(|_| refused("signature: the token's signature does not verify"))
}

fn check_claims(
    provider: &Provider,
    role: &RoleRecord,
    claims: &Map<String, Value>,
) -> Result<String, Refused> {
    if claims.get("iss").and_then(Value::as_str) != Some(provider.issuer.as_str()) {
        return Err(refused(format!(
            "iss: the token was not issued by provider {}",
            provider.name
        )));
    }
    let now = crate::clock::now_ms() / 1000;
    let time = |name: &str| claims.get(name).map(|v| v.as_f64().map(|f| f as i64));
    match time("exp") {
        Some(Some(exp)) if now <= exp.saturating_add(LEEWAY_SECS) => {}
        Some(Some(_)) => return Err(refused("exp: the token has expired")),
        _ => return Err(refused("exp: the token has no numeric exp")),
    }
    match time("nbf") {
        None => {}
        Some(Some(nbf)) if nbf <= now + LEEWAY_SECS => {}
        _ => return Err(refused("nbf: the token is not valid yet")),
    }
    match time("iat") {
        None => {}
        Some(Some(iat)) if iat <= now + LEEWAY_SECS => {}
        _ => return Err(refused("iat: the token was issued in the future")),
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => role.bound_audiences.contains(aud),
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(Value::as_str)
            .any(|a| role.bound_audiences.iter().any(|b| b == a)),
        _ => false,
    };
    if !audience_ok {
        return Err(refused(
            "aud: no audience of the token is in bound_audiences",
        ));
    }
    if let Some(pattern) = &role.bound_subject {
        let sub = claims.get("sub").and_then(Value::as_str);
        if !sub.is_some_and(|sub| glob_match(pattern, sub)) {
            return Err(refused("bound_subject: the token's sub does not match"));
        }
    }
    for (name, patterns) in &role.bound_claims {
        if !claim(claims, name).is_some_and(|v| any_matches(v, patterns)) {
            return Err(refused(format!(
                "bound_claims: claim '{name}' is missing or has no allowed value"
            )));
        }
    }
    claim(claims, &role.user_claim)
        .and_then(as_text)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            refused(format!(
                "user_claim: the token has no '{}' claim",
                role.user_claim
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_stars_and_literals() {
        assert!(glob_match(
            "repo:acme/*:ref:refs/heads/main",
            "repo:acme/app:ref:refs/heads/main"
        ));
        assert!(!glob_match(
            "repo:acme/*:ref:refs/heads/main",
            "repo:acme/app:ref:refs/heads/dev"
        ));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(glob_match("a*b*c", "abbbc"));
        assert!(!glob_match("a*b", "a"));
        assert!(!glob_match("abc", "abcd"));
        assert!(glob_match(
            "system:serviceaccount:prod:*",
            "system:serviceaccount:prod:api"
        ));
        assert!(!glob_match(
            "system:serviceaccount:prod:*",
            "system:serviceaccount:dev:api"
        ));
    }

    #[test]
    fn claims_by_name_pointer_and_list() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"environment":"prod","groups":["a","ops"],"kubernetes.io":{"namespace":"prod"},"n":7}"#,
        )
        .unwrap();
        let pats = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(any_matches(
            claim(&claims, "environment").unwrap(),
            &pats(&["prod"])
        ));
        assert!(any_matches(
            claim(&claims, "groups").unwrap(),
            &pats(&["ops"])
        ));
        assert!(!any_matches(
            claim(&claims, "groups").unwrap(),
            &pats(&["dev"])
        ));
        assert!(any_matches(
            claim(&claims, "/kubernetes.io/namespace").unwrap(),
            &pats(&["pro*"])
        ));
        assert!(any_matches(claim(&claims, "n").unwrap(), &pats(&["7"])));
        assert!(claim(&claims, "/missing/x").is_none());
    }

    /// A person's ID token: strongroom's client in `aud`, and the login's
    /// `nonce` (a provider cannot be made to send a wrong one, so this is
    /// checked here, under a provider whose key is the RSA fixture).
    #[test]
    fn an_id_token_must_name_our_client_and_carry_the_logins_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
        let providers = serde_json::json!([{
            "name": "corp", "issuer": "https://idp.example.test",
            "jwks_file": format!("{fixtures}/rsa.pub"), "client_id": "strongroom"
        }]);
        let path = dir.path().join("providers.json");
        std::fs::write(&path, providers.to_string()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let loaded = runtime
            .block_on(crate::auth::providers::Providers::load(&path))
            .unwrap();
        let provider = loaded.get("corp").unwrap().clone();
        let role = RoleRecord {
            name: "people".into(),
            provider: "corp".into(),
            // The other application too: only the client check refuses it.
            bound_audiences: vec!["strongroom".into(), "another-app".into()],
            bound_subject: None,
            bound_claims: Default::default(),
            user_claim: "email".into(),
            scopes: vec![],
            policies: vec![],
            token_ttl_seconds: 60,
            allowed_redirect_uris: vec![],
            uid: "u".into(),
            updated_at: 0,
        };
        let key = std::fs::read(format!("{fixtures}/rsa.key")).unwrap();
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&key).unwrap();
        let sign = |aud: &str, nonce: &str| {
            let now = jsonwebtoken::get_current_timestamp();
            let claims = serde_json::json!({
                "iss": "https://idp.example.test", "aud": aud, "sub": "alice",
                "email": "alice@example.test", "nonce": nonce, "iat": now, "exp": now + 300,
            });
            let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        };
        let check = |token: String, nonce: Option<&str>| {
            runtime.block_on(verify_id_token(
                &provider,
                &role,
                &token,
                "strongroom",
                nonce,
            ))
        };
        assert_eq!(
            check(sign("strongroom", "n-1"), Some("n-1")).unwrap(),
            "alice@example.test"
        );
        let wrong_nonce = check(sign("strongroom", "n-2"), Some("n-1")).unwrap_err();
        assert!(wrong_nonce.0.starts_with("nonce"), "{wrong_nonce:?}");
        let other_client = check(sign("another-app", "n-1"), Some("n-1")).unwrap_err();
        assert_eq!(
            other_client.0,
            "aud: the ID token was not issued to strongroom's client"
        );
        // The device flow has no nonce to compare.
        assert!(check(sign("strongroom", "whatever"), None).is_ok());
    }
}
