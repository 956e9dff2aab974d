//! Identity (DESIGN section 11): policies and roles over HTTP, workload
//! login with a platform JWT (each binding refused on its own), `srt_`
//! tokens (lookup, revocation, a role's deletion, the sweep), and the
//! canaries: no JWT or token in a log, the trail, an error or a file.

use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
pub const ISSUER: &str = "https://ci.example.test";
pub const AUDIENCE: &str = "https://strongroom.example.test";
pub const SUBJECT: &str = "repo:acme/app:ref:refs/heads/main";

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

pub fn key(name: &str, alg: Algorithm) -> EncodingKey {
    let pem = fixture(name);
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        other => panic!("{other:?}"),
    }
}

pub fn sign(file: &str, alg: Algorithm, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &key(file, alg)).unwrap()
}

pub fn jwks(keys: &[(&str, Algorithm, &str)]) -> String {
    let keys: Vec<Jwk> = keys
        .iter()
        .map(|(file, alg, kid)| {
            let mut jwk = Jwk::from_encoding_key(&key(file, *alg), *alg).unwrap();
            jwk.common.key_id = Some((*kid).to_owned());
            jwk.common.key_algorithm = None;
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

/// A GitHub Actions job's token, as its claims look.
pub fn claims() -> Value {
    let now = now_secs();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": SUBJECT,
        "environment": "prod",
        "repository_owner": "acme",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    })
}

pub fn ci_jwt(claims: &Value) -> String {
    sign("rsa.key", Algorithm::RS256, "k1", claims)
}

/// A server with provider `ci` (keys from a JWKS file holding `rsa.key`
/// as `k1`).
pub async fn app_with_provider(extra: &[(&str, String)]) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jwks.json"),
        jwks(&[("rsa.key", Algorithm::RS256, "k1")]),
    )
    .unwrap();
    let providers = json!([{ "name": "ci", "issuer": ISSUER, "jwks_file": "jwks.json" }]);
    let path = dir.path().join("providers.json");
    std::fs::write(&path, providers.to_string()).unwrap();
    let mut options = Options::default().env("STRONGROOM_OIDC_PROVIDERS", path.to_str().unwrap());
    for (k, v) in extra {
        options = options.env(k, v);
    }
    (spawn_with(options).await, dir)
}

pub fn ci_role() -> Value {
    json!({
        "provider": "ci",
        "bound_audiences": [AUDIENCE],
        "bound_subject": "repo:acme/*:ref:refs/heads/main",
        "bound_claims": { "environment": ["prod", "staging"] },
        "user_claim": "sub",
        "scopes": ["secrets:list"],
        "policies": ["readers"],
        "token_ttl_seconds": 600
    })
}

pub async fn put_json(app: &TestApp, path: &str, body: &Value, cred: &Cred) -> Reply {
    let b = app
        .client
        .put(app.url(path))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    app.send(b, cred).await
}

pub async fn login(app: &TestApp, tenant: &str, role: &str, jwt: &str) -> Reply {
    let b = app
        .client
        .post(app.url("/auth/login/jwt"))
        .header("Content-Type", "application/json")
        .body(json!({ "tenant": tenant, "role": role, "jwt": jwt }).to_string());
    app.send(b, &Cred::None).await
}

/// The readers policy and the ci role in tenant `default`.
pub async fn set_up_ci(app: &TestApp) {
    let admin = app.admin();
    let policy = json!({ "scopes": ["secrets:read:prod/"] });
    let r = put_json(app, "/policies/readers", &policy, &admin).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = put_json(app, "/auth/roles/ci", &ci_role(), &admin).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Every file under `dir`, as bytes.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            found.push((path, bytes));
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_workload_logs_in_and_its_token_holds_what_the_role_grants() {
    let (app, _dir) = app_with_provider(&[]).await;
    set_up_ci(&app).await;
    let admin = app.admin();
    assert_eq!(app.put("prod/db", "s3cret-value", &admin).await.status, 200);
    assert_eq!(app.put("dev/db", "dev-value", &admin).await.status, 200);
    let jwt = ci_jwt(&claims());
    let before = now_secs();
    let r = login(&app, "default", "ci", &jwt).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let body = r.json();
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(
        token.starts_with("srt_") && token.len() >= 4 + 43,
        "{token}"
    );
    assert_eq!(body["tenant"], "default");
    assert_eq!(body["subject"], format!("ci:{SUBJECT}"));
    let mut scopes: Vec<&str> = body["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    scopes.sort();
    assert_eq!(scopes, ["secrets:list", "secrets:read:prod/"]);
    let expires = time::OffsetDateTime::parse(
        body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert!(
        (before + 590..=now_secs() + 600).contains(&expires),
        "{expires}"
    );

    // The token, as a bearer token or an API key header.
    let bearer = Cred::Bearer(token.clone());
    let r = app.get("prod/db", &bearer).await;
    assert_eq!(
        (r.status, r.json()["value"].as_str()),
        (200, Some("s3cret-value"))
    );
    assert_eq!(
        app.get("prod/db", &Cred::ApiKey(token.clone()))
            .await
            .status,
        200
    );
    assert_eq!(app.get("dev/db", &bearer).await.status, 403);
    assert_eq!(app.put("prod/db", "x", &bearer).await.status, 403);
    // The platform JWT itself is no strongroom credential.
    assert_eq!(
        app.get("prod/db", &Cred::Bearer(jwt.clone())).await.status,
        401
    );

    let r = app
        .send(app.client.get(app.url("/auth/token")), &bearer)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let me = r.json();
    assert_eq!(me["role"], "ci");
    assert_eq!(me["subject"], format!("ci:{SUBJECT}"));
    assert_eq!(me["policies"], json!(["readers"]));
    // An API key is not a login token.
    let r = app
        .send(app.client.get(app.url("/auth/token")), &admin)
        .await;
    assert_eq!(r.status, 400, "{}", r.body);

    let r = app
        .send(app.client.delete(app.url("/auth/token")), &bearer)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.get("prod/db", &bearer).await.status, 401);
    let r = app
        .send(app.client.delete(app.url("/auth/token")), &bearer)
        .await;
    assert_eq!(r.status, 401);

    // The trail has the login and the revocation, with role and subject.
    let lines = crate::audit::lines(&app);
    let login_line = lines
        .iter()
        .find(|l| l["action"] == "auth.login" && l["status"] == 200)
        .expect("an auth.login line");
    assert_eq!(login_line["key"], "ci");
    assert_eq!(login_line["tenant"], "default");
    assert_eq!(login_line["subject"], format!("ci:{SUBJECT}"));
    let revoked = lines
        .iter()
        .find(|l| l["action"] == "auth.token.revoke")
        .expect("an auth.token.revoke line");
    assert_eq!(revoked["status"], 200);
    assert_eq!(revoked["subject"], format!("ci:{SUBJECT}"));
    assert!(lines
        .iter()
        .any(|l| l["action"] == "auth.policy.write" && l["key"] == "readers"));
    assert!(lines
        .iter()
        .any(|l| l["action"] == "auth.role.write" && l["key"] == "ci"));

    // Canaries: neither the JWT nor the token in a log, the trail, the
    // metrics or any file of the store.
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let trail = crate::audit::trail(&app.data_dir);
    for canary in [jwt.as_str(), token.as_str(), &token[4..]] {
        assert!(!app.log_text().contains(canary), "a credential in the log");
        assert!(!trail.contains(canary), "a credential in the trail");
        assert!(!metrics.contains(canary), "a credential in the metrics");
        for (path, bytes) in files_under(&app.data_dir) {
            assert!(
                !contains(&bytes, canary),
                "a credential in {}",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn every_binding_is_enforced_and_named_without_echoing_the_token() {
    // Each refusal counts against the address's failed-authentication
    // budget, as a bad credential does: room for them all here.
    let (app, _dir) = app_with_provider(&[("STRONGROOM_AUTH_FAILURE_BURST", "100".into())]).await;
    set_up_ci(&app).await;
    let admin = app.admin();
    let mut email_role = ci_role();
    email_role["user_claim"] = json!("email");
    assert_eq!(
        put_json(&app, "/auth/roles/by-email", &email_role, &admin)
            .await
            .status,
        200
    );
    let now = now_secs();
    let with = |field: &str, value: Value| {
        let mut c = claims();
        c[field] = value;
        c
    };
    let without = |field: &str| {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(field);
        c
    };
    let valid = ci_jwt(&claims());
    let parts: Vec<&str> = valid.split('.').collect();
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&with("sub", json!("repo:acme/app:ref:refs/heads/x"))),
        parts[2]
    );
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": "k1"})),
        parts[1]
    );
    // HS256 keyed with the provider's public key: the classic confusion.
    let public_pem = fixture("rsa.pub");
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("k1".into());
    let confused = jsonwebtoken::encode(
        &hs_header,
        &claims(),
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    let cases: Vec<(&str, &str, String, &str)> = vec![
        ("default", "ci", tampered, "signature"),
        ("default", "ci", none, "jwt"),
        ("default", "ci", confused, "signature"),
        (
            "default",
            "ci",
            sign("rsa.key", Algorithm::RS256, "k9", &claims()),
            "signature",
        ),
        (
            "default",
            "ci",
            sign("ec.key", Algorithm::ES256, "k1", &claims()),
            "signature",
        ),
        (
            "default",
            "ci",
            ci_jwt(&with("iss", json!("https://evil.test"))),
            "iss",
        ),
        (
            "default",
            "ci",
            ci_jwt(&with("exp", json!(now - 120))),
            "exp",
        ),
        ("default", "ci", ci_jwt(&without("exp")), "exp"),
        (
            "default",
            "ci",
            ci_jwt(&with("nbf", json!(now + 300))),
            "nbf",
        ),
        (
            "default",
            "ci",
            ci_jwt(&with("iat", json!(now + 300))),
            "iat",
        ),
        (
            "default",
            "ci",
            ci_jwt(&with("aud", json!("https://other.test"))),
            "aud",
        ),
        ("default", "ci", ci_jwt(&without("aud")), "aud"),
        (
            "default",
            "ci",
            ci_jwt(&with("sub", json!("repo:acme/app:ref:refs/heads/dev"))),
            "bound_subject",
        ),
        (
            "default",
            "ci",
            ci_jwt(&with("environment", json!("dev"))),
            "bound_claims",
        ),
        (
            "default",
            "ci",
            ci_jwt(&with("environment", json!(["dev", "test"]))),
            "bound_claims",
        ),
        (
            "default",
            "ci",
            ci_jwt(&without("environment")),
            "bound_claims",
        ),
        ("default", "by-email", ci_jwt(&claims()), "user_claim"),
        ("default", "nobody", ci_jwt(&claims()), "role"),
        ("other", "ci", ci_jwt(&claims()), "role"),
        ("not a tenant", "ci", ci_jwt(&claims()), "tenant"),
        ("default", "ci", "not.a.jwt".into(), "jwt"),
    ];
    for (tenant, role, jwt, binding) in &cases {
        let r = login(&app, tenant, role, jwt).await;
        assert_eq!(r.status, 401, "{binding}: {}", r.body);
        assert_eq!(r.error(), "unauthorized");
        let detail = r.json()["detail"].as_str().unwrap().to_owned();
        assert!(detail.starts_with(binding), "{binding}: {detail}");
        assert!(
            !r.body.contains(jwt.as_str()),
            "{binding}: the token echoed"
        );
        let signature = jwt.rsplit('.').next().unwrap();
        if signature.len() > 8 {
            assert!(
                !r.body.contains(signature),
                "{binding}: the signature echoed"
            );
        }
    }
    // What the bindings allow: leeway, a list audience, a list claim.
    for ok in [
        ci_jwt(&with("exp", json!(now - 30))),
        ci_jwt(&with("aud", json!(["https://other.test", AUDIENCE]))),
        ci_jwt(&with("environment", json!(["dev", "staging"]))),
        ci_jwt(&without("iat")),
    ] {
        let r = login(&app, "default", "ci", &ok).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // One line per refusal, with the binding as its note, never a token.
    let lines = crate::audit::lines(&app);
    let refused: Vec<&Value> = lines
        .iter()
        .filter(|l| l["action"] == "auth.login" && l["status"] == 401)
        .collect();
    assert_eq!(refused.len(), cases.len());
    assert!(refused
        .iter()
        .any(|l| l["note"].as_str().unwrap().starts_with("bound_claims")));
    let trail = crate::audit::trail(&app.data_dir);
    for (_, _, jwt, _) in &cases {
        if let Some(signature) = jwt.rsplit('.').next().filter(|s| s.len() > 8) {
            assert!(!trail.contains(signature));
            assert!(!app.log_text().contains(signature));
        }
    }
    // A malformed body is the caller's mistake, not a login: 400.
    let b = app
        .client
        .post(app.url("/auth/login/jwt"))
        .header("Content-Type", "application/json")
        .body(json!({ "tenant": "default", "role": "ci" }).to_string());
    assert_eq!(app.send(b, &Cred::None).await.status, 400);
}

#[tokio::test]
async fn nobody_grants_what_they_do_not_hold() {
    let (app, _dir) = app_with_provider(&[]).await;
    let admin = app.admin();
    let wide = json!({ "scopes": ["secrets:write"] });
    assert_eq!(
        put_json(&app, "/policies/writers", &wide, &admin)
            .await
            .status,
        200
    );
    let narrow =
        Cred::ApiKey(app.create_key("default", &["--scopes", "auth:admin,secrets:read:prod/"]));
    let r = put_json(&app, "/policies/mine", &wide, &narrow).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let inside = json!({ "scopes": ["secrets:read:prod/app/"] });
    assert_eq!(
        put_json(&app, "/policies/mine", &inside, &narrow)
            .await
            .status,
        200
    );
    let mut role = ci_role();
    role["policies"] = json!([]);
    role["scopes"] = json!(["secrets:read"]);
    assert_eq!(
        put_json(&app, "/auth/roles/r", &role, &narrow).await.status,
        403
    );
    role["scopes"] = json!([]);
    role["policies"] = json!(["writers"]);
    assert_eq!(
        put_json(&app, "/auth/roles/r", &role, &narrow).await.status,
        403
    );
    role["policies"] = json!(["mine"]);
    assert_eq!(
        put_json(&app, "/auth/roles/r", &role, &narrow).await.status,
        200
    );
    // Taking away what one could not grant is refused too: deleting or
    // replacing a policy or role that holds more than its author.
    let r = app
        .send(app.client.delete(app.url("/policies/writers")), &narrow)
        .await;
    assert_eq!(r.status, 403);
    let r = put_json(&app, "/policies/writers", &inside, &narrow).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let mut broad = ci_role();
    broad["policies"] = json!(["writers"]);
    assert_eq!(
        put_json(&app, "/auth/roles/broad", &broad, &admin)
            .await
            .status,
        200
    );
    let mut shrunk = ci_role();
    shrunk["policies"] = json!([]);
    shrunk["scopes"] = json!([]);
    assert_eq!(
        put_json(&app, "/auth/roles/broad", &shrunk, &narrow)
            .await
            .status,
        403
    );
    let r = app
        .send(app.client.delete(app.url("/auth/roles/broad")), &narrow)
        .await;
    assert_eq!(r.status, 403);
    // A GET's answer can be put back (its name and time are ignored), but
    // not under another name.
    let shown = app
        .send(app.client.get(app.url("/auth/roles/broad")), &admin)
        .await;
    let shown = shown.json();
    assert_eq!(
        put_json(&app, "/auth/roles/broad", &shown, &admin)
            .await
            .status,
        200
    );
    assert_eq!(
        put_json(&app, "/auth/roles/other", &shown, &admin)
            .await
            .status,
        400
    );
    let r = app
        .send(app.client.delete(app.url("/auth/roles/broad")), &admin)
        .await;
    assert_eq!(r.status, 200);
    // Without auth:admin, nothing.
    let reader = Cred::ApiKey(app.create_key("default", &["--scopes", "secrets:read"]));
    for path in [
        "/policies",
        "/auth/roles",
        "/policies/mine",
        "/auth/roles/r",
    ] {
        let r = app.send(app.client.get(app.url(path)), &reader).await;
        assert_eq!(r.status, 403, "{path}");
    }
    // Rules of the record, each a 400 that changes nothing.
    let mut bad = Vec::new();
    for (field, value) in [
        ("provider", json!("unknown")),
        ("token_ttl_seconds", json!(86_401)),
        ("bound_audiences", json!([])),
        ("policies", json!(["absent"])),
        ("scopes", json!(["secrets:reed"])),
        ("bound_claim", json!({})),
    ] {
        let mut role = ci_role();
        role["policies"] = json!([]);
        role[field] = value;
        bad.push(role);
    }
    for role in &bad {
        let r = put_json(&app, "/auth/roles/bad", role, &admin).await;
        assert_eq!(r.status, 400, "{role}: {}", r.body);
    }
    let r = put_json(&app, "/auth/roles/bad..name", &ci_role(), &admin).await;
    assert_eq!(r.status, 400);
    let r = app
        .send(app.client.get(app.url("/auth/roles/bad")), &admin)
        .await;
    assert_eq!(r.status, 404);
    let r = app
        .send(app.client.get(app.url("/auth/roles")), &admin)
        .await;
    assert_eq!(r.json()["roles"].as_array().unwrap().len(), 1);
    let r = app.send(app.client.get(app.url("/policies")), &admin).await;
    let listed = r.json();
    let names: Vec<&str> = listed["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mine", "writers"]);
}

#[tokio::test]
async fn a_policy_change_applies_to_keys_and_tokens_from_the_next_request() {
    let (app, _dir) = app_with_provider(&[]).await;
    set_up_ci(&app).await;
    let admin = app.admin();
    app.put("prod/db", "p", &admin).await;
    app.put("dev/db", "d", &admin).await;
    let b = app
        .client
        .post(app.url("/apikeys"))
        .header("Content-Type", "application/json")
        .body(json!({ "name": "by-policy", "policies": ["readers"] }).to_string());
    let r = app.send(b, &admin).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let key = Cred::ApiKey(r.json()["key"].as_str().unwrap().to_owned());
    let r = login(&app, "default", "ci", &ci_jwt(&claims())).await;
    let token = Cred::Bearer(r.json()["token"].as_str().unwrap().to_owned());
    for cred in [&key, &token] {
        assert_eq!(app.get("prod/db", cred).await.status, 200);
        assert_eq!(app.get("dev/db", cred).await.status, 403);
    }
    let moved = json!({ "scopes": ["secrets:read:dev/"] });
    assert_eq!(
        put_json(&app, "/policies/readers", &moved, &admin)
            .await
            .status,
        200
    );
    for cred in [&key, &token] {
        assert_eq!(app.get("prod/db", cred).await.status, 403);
        assert_eq!(app.get("dev/db", cred).await.status, 200);
    }
    let r = app
        .send(app.client.delete(app.url("/policies/readers")), &admin)
        .await;
    assert_eq!(r.status, 200);
    for cred in [&key, &token] {
        assert_eq!(app.get("dev/db", cred).await.status, 403);
    }
    // Deleting the role ends its tokens at the next request.
    let r = app
        .send(app.client.delete(app.url("/auth/roles/ci")), &admin)
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .send(app.client.get(app.url("/secrets?prefix=")), &token)
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
}

#[tokio::test]
async fn a_token_lives_no_longer_than_its_role_allows_now() {
    let clock = TestClock::new();
    let (app, _dir) = app_with_provider(&[(clock.env().0, clock.env().1)]).await;
    set_up_ci(&app).await;
    let admin = app.admin();
    let r = login(&app, "default", "ci", &ci_jwt(&claims())).await;
    let token = Cred::Bearer(r.json()["token"].as_str().unwrap().to_owned());
    assert_eq!(app.get("prod/x", &token).await.status, 404);
    let mut shorter = ci_role();
    shorter["token_ttl_seconds"] = json!(60);
    assert_eq!(
        put_json(&app, "/auth/roles/ci", &shorter, &admin)
            .await
            .status,
        200
    );
    assert_eq!(app.get("prod/x", &token).await.status, 404);
    clock.advance(Duration::from_secs(61));
    assert_eq!(app.get("prod/x", &token).await.status, 401);
}

#[tokio::test]
async fn expired_tokens_are_swept_so_the_store_stays_bounded() {
    let clock = TestClock::new();
    let (app, _dir) = app_with_provider(&[
        (clock.env().0, clock.env().1),
        ("STRONGROOM_EXPIRY_SWEEP_INTERVAL", "1s".into()),
    ])
    .await;
    set_up_ci(&app).await;
    let mut role = ci_role();
    role["token_ttl_seconds"] = json!(1);
    assert_eq!(
        put_json(&app, "/auth/roles/short", &role, &app.admin())
            .await
            .status,
        200
    );
    let jwt = ci_jwt(&claims());
    const LOGINS: usize = 10_000;
    let app = std::sync::Arc::new(app);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..32 {
        let (app, jwt) = (app.clone(), jwt.clone());
        tasks.spawn(async move {
            for _ in (worker..LOGINS).step_by(32) {
                let r = login(&app, "default", "short", &jwt).await;
                assert_eq!(r.status, 200, "{}", r.body);
            }
        });
    }
    tasks.join_all().await;
    let r = login(&app, "default", "short", &jwt).await;
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get("prod/k", &Cred::Bearer(token.clone())).await.status,
        404
    );
    clock.advance(Duration::from_secs(2));
    assert_eq!(app.get("prod/k", &Cred::Bearer(token)).await.status, 401);
    assert_eq!(
        app.counter("strongroom_login_tokens_issued_total").await,
        LOGINS as u64 + 1
    );
    // The sweep runs every second: wait for it to have removed every one
    // and to leave none behind.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let swept = app.counter("strongroom_login_tokens_swept_total").await;
        if swept == LOGINS as u64 + 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{swept} swept");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stored_tokens(&app).await, 0);
}

/// How many token records the store holds (sqlite: the records table; nats:
/// the tokens bucket's live keys).
async fn stored_tokens(app: &TestApp) -> usize {
    if on_nats() {
        nats_live_keys(&app.data_dir, "_tokens").await
    } else {
        let db = rusqlite::Connection::open_with_flags(
            app.data_dir.join("strongroom.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        db.query_row(
            "SELECT COUNT(*) FROM records WHERE kind = 'token'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as usize
    }
}

#[tokio::test]
async fn a_token_revoked_or_its_role_deleted_on_one_gateway_is_refused_by_another() {
    nats_only!("two gateways share one store only on nats");
    let (a, dir) = app_with_provider(&[]).await;
    let providers = dir.path().join("providers.json");
    let b = spawn_with(
        Options::default()
            .data_dir(&a.data_dir)
            .env("STRONGROOM_OIDC_PROVIDERS", providers.to_str().unwrap()),
    )
    .await;
    set_up_ci(&a).await;
    let admin = a.admin();
    a.put("prod/db", "p", &admin).await;
    let token = |r: Reply| Cred::Bearer(r.json()["token"].as_str().unwrap().to_owned());
    let first = token(login(&a, "default", "ci", &ci_jwt(&claims())).await);
    assert_eq!(b.get("prod/db", &first).await.status, 200);
    let cached_at = std::time::Instant::now();
    let r = a.send(a.client.delete(a.url("/auth/token")), &first).await;
    assert_eq!(r.status, 200);
    answers_within_the_cache_life(&b, &first, cached_at, 401).await;

    // A policy change on a applies on b.
    let second = token(login(&a, "default", "ci", &ci_jwt(&claims())).await);
    assert_eq!(b.get("prod/db", &second).await.status, 200);
    let cached_at = std::time::Instant::now();
    let moved = json!({ "scopes": ["secrets:read:dev/"] });
    assert_eq!(
        put_json(&a, "/policies/readers", &moved, &admin)
            .await
            .status,
        200
    );
    answers_within_the_cache_life(&b, &second, cached_at, 403).await;

    // A role deleted on a ends its tokens on b.
    let moved = json!({ "scopes": ["secrets:read:prod/"] });
    assert_eq!(
        put_json(&a, "/policies/readers", &moved, &admin)
            .await
            .status,
        200
    );
    let third = token(login(&b, "default", "ci", &ci_jwt(&claims())).await);
    assert_eq!(b.get("prod/db", &third).await.status, 200);
    let cached_at = std::time::Instant::now();
    let r = a
        .send(a.client.delete(a.url("/auth/roles/ci")), &admin)
        .await;
    assert_eq!(r.status, 200);
    answers_within_the_cache_life(&b, &third, cached_at, 401).await;
}

/// Polls `app` with `cred` until it answers `until`, which must come
/// within half the life of the other gateway's cache entry (1 s, fetched
/// just before `cached_at`): only the watch can have told it that soon.
async fn answers_within_the_cache_life(
    app: &TestApp,
    cred: &Cred,
    cached_at: std::time::Instant,
    until: u16,
) {
    let limit = strongroom::auth::APIKEY_CACHE_TTL / 2;
    while app.get("prod/db", cred).await.status != until {
        assert!(
            cached_at.elapsed() < limit,
            "the other gateway served the credential for half its cache's life"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
