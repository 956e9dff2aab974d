//! Authentication: API keys issued by the CLI, the bootstrap key, and HS256
//! JWTs with their time and algorithm rules.

use base64::Engine as _;
use serde_json::json;

use crate::helpers::*;

fn assert_unauthorized(r: &Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.body);
    assert_eq!(r.body, r#"{"error":"unauthorized"}"#, "{what}");
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Bearer"),
        "{what}"
    );
}

#[tokio::test]
async fn requests_without_valid_credentials_answer_401() {
    let app = spawn_app().await;
    let admin = app.admin();
    app.put("k", "v", &admin).await;
    assert_unauthorized(&app.get("k", &Cred::None).await, "no credentials");
    assert_unauthorized(
        &app.put("k", "x", &Cred::None).await,
        "no credentials on PUT",
    );
    assert_unauthorized(
        &app.delete("k", &Cred::None).await,
        "no credentials on DELETE",
    );
    let Cred::ApiKey(real) = &admin else {
        unreachable!()
    };
    let mut tampered = real.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for bad in [
        "nonsense",
        "sr_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        tampered.as_str(),
    ] {
        assert_unauthorized(&app.get("k", &Cred::ApiKey(bad.into())).await, bad);
    }
    // JWT auth is not configured on this server, so any bearer token fails.
    assert_unauthorized(
        &app.get("k", &Cred::Bearer("a.b.c".into())).await,
        "bearer without jwt config",
    );
    assert_eq!(
        app.get("k", &admin).await.json()["value"],
        "v",
        "nothing changed"
    );
}

#[tokio::test]
async fn the_bootstrap_key_is_printed_once_on_first_start_only() {
    let mut app = spawn_app().await;
    let key = app.bootstrap_key.clone().expect("first start prints a key");
    assert!(key.len() >= 60, "high-entropy key: {key}");
    assert_eq!(app.terminate().code(), Some(0));
    let again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    assert!(again.bootstrap_key.is_none(), "second start prints no key");
    assert_eq!(
        again.put("k", "v", &Cred::ApiKey(key)).await.status,
        200,
        "the key still works"
    );
}

#[tokio::test]
async fn no_bootstrap_key_when_jwt_is_configured() {
    let app = spawn_with(Options::default().env("STRONGROOM_JWT_HS256_SECRET", JWT_SECRET)).await;
    assert!(app.bootstrap_key.is_none());
}

#[tokio::test]
async fn a_key_created_by_the_cli_while_the_server_runs_works_at_once() {
    let app = spawn_app().await;
    let key = app.create_key("acme", &[]);
    assert!(key.starts_with("sr_"));
    // sr_ + 16 hex of id + _ + 43 base64url characters (256 bits) of secret.
    assert_eq!(key.len(), 3 + 16 + 1 + 43);
    let cred = Cred::ApiKey(key);
    assert_eq!(app.put("acme/db", "pw", &cred).await.status, 200);
    assert_eq!(app.get("acme/db", &cred).await.json()["value"], "pw");
    assert_eq!(app.delete("acme/db", &cred).await.status, 200);
}

#[tokio::test]
async fn two_keys_from_the_cli_differ() {
    let app = spawn_app().await;
    assert_ne!(app.create_key("t", &[]), app.create_key("t", &[]));
}

#[tokio::test]
async fn scopes_limit_what_a_key_may_do() {
    let app = spawn_app().await;
    let admin = app.admin();
    app.put("prod/db", "p", &admin).await;
    let reader = Cred::ApiKey(app.create_key("default", &["--scopes", "secrets:read:prod/"]));
    assert_eq!(app.get("prod/db", &reader).await.status, 200);
    let r = app.put("prod/db", "x", &reader).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, r#"{"error":"forbidden"}"#)
    );
    assert_eq!(app.delete("prod/db", &reader).await.status, 403);
    app.put("dev/db", "d", &admin).await;
    assert_eq!(app.get("dev/db", &reader).await.status, 403);
    assert_eq!(app.get("prod/db", &admin).await.json()["value"], "p");
}

#[tokio::test]
async fn the_cli_refuses_bad_scopes_and_tenants() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--tenant", "acme", "--scopes", "secrets:reed"],
        vec!["--tenant", "a/b"],
        vec!["--tenant", "acme", "--expires-in-days", "0"],
    ] {
        let out = command(dir.path())
            .args(["apikey", "create", "--name", "n"])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} printed a key");
        assert!(!out.stderr.is_empty());
    }
}

#[tokio::test]
async fn an_expired_key_answers_401() {
    let clock = TestClock::new();
    let app = spawn_with(Options::default().clock(&clock)).await;
    let key = app.create_key("t", &["--expires-in-days", "1"]);
    assert_eq!(app.get("k", &Cred::ApiKey(key.clone())).await.status, 404);
    // A day and a second later, on the server's clock: the key's lifetime
    // is checked on every request, cached or not.
    clock.advance(std::time::Duration::from_secs(86_401));
    assert_unauthorized(&app.get("k", &Cred::ApiKey(key)).await, "expired");
}

async fn jwt_app() -> TestApp {
    spawn_with(Options::default().env("STRONGROOM_JWT_HS256_SECRET", JWT_SECRET)).await
}

#[tokio::test]
async fn a_valid_hs256_token_works_and_names_the_tenant() {
    let app = jwt_app().await;
    let token = hs256_token(&json!({ "sub": "alice", "tenant": "acme", "exp": now_secs() + 300 }));
    let cred = Cred::Bearer(token);
    assert_eq!(app.put("k", "jwt-value", &cred).await.status, 200);
    assert_eq!(app.get("k", &cred).await.json()["value"], "jwt-value");
    let other = Cred::Bearer(hs256_token(
        &json!({ "tenant": "other", "exp": now_secs() + 300 }),
    ));
    assert_eq!(app.get("k", &other).await.status, 404);
}

#[tokio::test]
async fn token_time_rules_use_60_seconds_of_leeway() {
    let app = jwt_app().await;
    let now = now_secs();
    let cases = [
        (json!({ "tenant": "t" }), false, "no exp"),
        (json!({ "tenant": "t", "exp": now - 120 }), false, "expired"),
        (
            json!({ "tenant": "t", "exp": now - 30 }),
            true,
            "expired within leeway",
        ),
        (
            json!({ "tenant": "t", "exp": now + 300, "nbf": now + 120 }),
            false,
            "not yet valid",
        ),
        (
            json!({ "tenant": "t", "exp": now + 300, "nbf": now + 30 }),
            true,
            "nbf within leeway",
        ),
        (
            json!({ "tenant": "t", "exp": now + 300, "iat": now + 120 }),
            false,
            "issued in the future",
        ),
        (
            json!({ "tenant": "t", "exp": now + 300, "iat": now - 10 }),
            true,
            "iat in the past",
        ),
        (json!({ "exp": now + 300 }), false, "no tenant"),
        (
            json!({ "tenant": "bad tenant", "exp": now + 300 }),
            false,
            "invalid tenant",
        ),
        (
            json!({ "tenant": "t", "exp": now + 300, "scope": "secrets:nope" }),
            false,
            "unknown scope",
        ),
    ];
    for (claims, ok, what) in cases {
        let r = app
            .get("missing", &Cred::Bearer(hs256_token(&claims)))
            .await;
        if ok {
            assert_eq!(r.status, 404, "{what}: {}", r.body);
        } else {
            assert_unauthorized(&r, what);
        }
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

#[tokio::test]
async fn only_hs256_with_the_configured_secret_is_accepted() {
    let app = jwt_app().await;
    let claims = json!({ "tenant": "t", "exp": now_secs() + 300 });
    let payload = b64(claims.to_string().as_bytes());
    let none = format!("{}.{payload}.", b64(br#"{"alg":"none","typ":"JWT"}"#));
    assert_unauthorized(&app.get("k", &Cred::Bearer(none)).await, "alg none");
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    assert_unauthorized(&app.get("k", &Cred::Bearer(hs512)).await, "HS512");
    let wrong_secret = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-another-secret"),
    )
    .unwrap();
    assert_unauthorized(
        &app.get("k", &Cred::Bearer(wrong_secret)).await,
        "wrong secret",
    );
    let good = hs256_token(&claims);
    let (head, rest) = good.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let forged = format!(
        "{head}.{}.{sig}",
        b64(json!({ "tenant": "admin", "exp": now_secs() + 300 })
            .to_string()
            .as_bytes())
    );
    assert_unauthorized(&app.get("k", &Cred::Bearer(forged)).await, "edited payload");
    let huge =
        hs256_token(&json!({ "tenant": "t", "exp": now_secs() + 300, "pad": "x".repeat(9000) }));
    assert_unauthorized(&app.get("k", &Cred::Bearer(huge)).await, "over 8 KiB");
    assert_eq!(app.get("k", &Cred::Bearer(good)).await.status, 404);
}

#[tokio::test]
async fn the_tenant_claim_name_is_configurable() {
    let app = spawn_with(
        Options::default()
            .env("STRONGROOM_JWT_HS256_SECRET", JWT_SECRET)
            .env("STRONGROOM_JWT_TENANT_CLAIM", "org"),
    )
    .await;
    let exp = now_secs() + 300;
    assert_eq!(
        app.get(
            "k",
            &Cred::Bearer(hs256_token(&json!({ "org": "acme", "exp": exp })))
        )
        .await
        .status,
        404
    );
    assert_eq!(
        app.get(
            "k",
            &Cred::Bearer(hs256_token(&json!({ "tenant": "acme", "exp": exp })))
        )
        .await
        .status,
        401
    );
}

#[tokio::test]
async fn token_scopes_are_honoured() {
    let app = jwt_app().await;
    let exp = now_secs() + 300;
    let writer = Cred::Bearer(hs256_token(
        &json!({ "tenant": "t", "exp": exp, "scopes": ["secrets:write"] }),
    ));
    let reader = Cred::Bearer(hs256_token(
        &json!({ "tenant": "t", "exp": exp, "scope": "secrets:read secrets:list" }),
    ));
    assert_eq!(app.put("k", "v", &writer).await.status, 200);
    assert_eq!(app.get("k", &writer).await.status, 403);
    assert_eq!(app.get("k", &reader).await.json()["value"], "v");
    assert_eq!(app.put("k", "w", &reader).await.status, 403);
}

#[tokio::test]
async fn an_empty_scope_claim_grants_nothing_and_only_an_absent_one_grants_all() {
    let app = jwt_app().await;
    let exp = now_secs() + 300;
    let all = Cred::Bearer(hs256_token(&json!({ "tenant": "t", "exp": exp })));
    assert_eq!(app.put("k", "v", &all).await.status, 200);
    for claims in [
        json!({ "tenant": "t", "exp": exp, "scope": "" }),
        json!({ "tenant": "t", "exp": exp, "scope": "   " }),
        json!({ "tenant": "t", "exp": exp, "scopes": [] }),
    ] {
        let none = Cred::Bearer(hs256_token(&claims));
        assert_eq!(app.get("k", &none).await.status, 403, "{claims}");
        assert_eq!(app.put("k", "w", &none).await.status, 403, "{claims}");
    }
    assert_eq!(app.get("k", &all).await.json()["value"], "v");
}

#[tokio::test]
async fn a_token_with_a_critical_extension_is_refused() {
    let app = jwt_app().await;
    let claims = json!({ "tenant": "t", "exp": now_secs() + 300 });
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    for crit in [vec!["exp".to_owned()], vec!["b64".to_owned()]] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.crit = Some(crit);
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert_unauthorized(&app.get("k", &Cred::Bearer(token)).await, "crit");
    }
    // The same token without it is fine.
    let token = hs256_token(&claims);
    assert_eq!(app.get("k", &Cred::Bearer(token)).await.status, 404);
}

#[tokio::test]
async fn a_scope_that_could_never_match_a_key_is_refused_at_creation() {
    let app = spawn_app().await;
    let admin = app.admin();
    for scope in [
        "secrets:read:../",
        "secrets:read:/etc",
        "secrets:write:a//b",
    ] {
        let r = app
            .create_api_key(json!({ "name": "n", "scopes": [scope] }), &admin)
            .await;
        assert_eq!(r.status, 400, "{scope}: {}", r.body);
        assert!(
            r.json()["detail"].as_str().unwrap().contains(scope),
            "{}",
            r.body
        );
        let out = command(&app.data_dir)
            .args([
                "apikey", "create", "--tenant", "t", "--name", "n", "--scopes", scope,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{scope}");
    }
}

#[tokio::test]
async fn a_key_cannot_mint_a_key_that_outlives_it() {
    let app = spawn_app().await;
    let admin = app.admin();
    let parent = app
        .create_api_key(
            json!({ "name": "parent", "expires_in_days": 2,
                    "scopes": ["apikeys:admin", "secrets:read"] }),
            &admin,
        )
        .await
        .json();
    let parent_expiry = parent["expires_at"].as_str().unwrap().to_owned();
    let parent = Cred::ApiKey(parent["key"].as_str().unwrap().to_owned());
    let child = app
        .create_api_key(
            json!({ "name": "child", "expires_in_days": 30, "scopes": ["secrets:read"] }),
            &parent,
        )
        .await;
    assert_eq!(child.status, 201, "{}", child.body);
    assert_eq!(child.json()["expires_at"], parent_expiry.as_str());
    // A shorter lifetime than the parent's stays as asked.
    let short = app
        .create_api_key(
            json!({ "name": "short", "expires_in_days": 1, "scopes": ["secrets:read"] }),
            &parent,
        )
        .await
        .json();
    assert!(short["expires_at"].as_str().unwrap() < parent_expiry.as_str());
}
