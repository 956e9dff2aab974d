//! Public-key JWTs: RS256, ES256 and EdDSA from a PEM or JWKS file or a
//! JWKS URL, `kid` selection, issuer and audience, and every refusal.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::helpers::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

fn signing_key(name: &str, alg: Algorithm) -> EncodingKey {
    let pem = fixture(name);
    match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        other => panic!("{other:?}"),
    }
}

fn sign(key: &str, alg: Algorithm, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &signing_key(key, alg)).unwrap()
}

fn jwk(key: &str, alg: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(&signing_key(key, alg), alg).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.key_algorithm = None;
    jwk
}

fn jwks(keys: Vec<Jwk>) -> String {
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

fn claims() -> serde_json::Value {
    json!({ "sub": "svc", "tenant": "acme", "exp": now_secs() + 300 })
}

async fn app_with_keys_file(
    contents: &str,
    extra: &[(&str, &str)],
) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    std::fs::write(&path, contents).unwrap();
    let mut options = Options::default().env("STRONGROOM_JWT_PUBLIC_KEYS", path.to_str().unwrap());
    for (k, v) in extra {
        options = options.env(k, v);
    }
    (spawn_with(options).await, dir)
}

async fn status(app: &TestApp, token: String) -> u16 {
    app.get("missing", &Cred::Bearer(token)).await.status
}

#[tokio::test]
async fn rs256_es256_and_eddsa_from_pem_files_are_accepted() {
    for (public, private, alg) in [
        ("rsa.pub", "rsa.key", Algorithm::RS256),
        ("ec.pub", "ec.key", Algorithm::ES256),
        ("ed.pub", "ed.key", Algorithm::EdDSA),
    ] {
        let pem = String::from_utf8(fixture(public)).unwrap();
        let (app, _dir) = app_with_keys_file(&pem, &[]).await;
        let token = sign(private, alg, None, &claims());
        let cred = Cred::Bearer(token);
        assert_eq!(app.put("k", "v", &cred).await.status, 200, "{alg:?}");
        assert_eq!(app.get("k", &cred).await.json()["value"], "v", "{alg:?}");
    }
}

#[tokio::test]
async fn a_jwks_file_selects_keys_by_kid() {
    let set = jwks(vec![
        jwk("rsa.key", Algorithm::RS256, "r1"),
        jwk("ec.key", Algorithm::ES256, "e1"),
        jwk("ed.key", Algorithm::EdDSA, "d1"),
    ]);
    let (app, _dir) = app_with_keys_file(&set, &[]).await;
    assert_eq!(
        status(
            &app,
            sign("rsa.key", Algorithm::RS256, Some("r1"), &claims())
        )
        .await,
        404
    );
    assert_eq!(
        status(
            &app,
            sign("ec.key", Algorithm::ES256, Some("e1"), &claims())
        )
        .await,
        404
    );
    assert_eq!(
        status(
            &app,
            sign("ed.key", Algorithm::EdDSA, Some("d1"), &claims())
        )
        .await,
        404
    );
    // The right key under the wrong kid, an unknown kid, and no kid with
    // several keys configured are all refused.
    assert_eq!(
        status(
            &app,
            sign("ec.key", Algorithm::ES256, Some("d1"), &claims())
        )
        .await,
        401
    );
    assert_eq!(
        status(
            &app,
            sign("ec.key", Algorithm::ES256, Some("nope"), &claims())
        )
        .await,
        401
    );
    assert_eq!(
        status(&app, sign("ec.key", Algorithm::ES256, None, &claims())).await,
        401
    );
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

#[tokio::test]
async fn every_bad_token_is_refused_with_401() {
    let set = jwks(vec![
        jwk("ec.key", Algorithm::ES256, "e1"),
        jwk("rsa.key", Algorithm::RS256, "r1"),
    ]);
    let (app, _dir) = app_with_keys_file(
        &set,
        &[
            ("STRONGROOM_JWT_ISSUER", "https://issuer.example"),
            ("STRONGROOM_JWT_AUDIENCE", "strongroom"),
        ],
    )
    .await;
    let now = now_secs();
    let good = json!({ "tenant": "acme", "iss": "https://issuer.example", "aud": "strongroom", "exp": now + 300 });
    let with = |patch: serde_json::Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let es = |c: &serde_json::Value| sign("ec.key", Algorithm::ES256, Some("e1"), c);
    assert_eq!(status(&app, es(&good)).await, 404, "the good token works");

    let rsa_public_pem = fixture("rsa.pub");
    let hs_with_rsa_public = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("r1".into());
        jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(&rsa_public_pem)).unwrap()
    };
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT","kid":"e1"}"#),
        b64(good.to_string().as_bytes())
    );
    let cases: Vec<(&str, String)> = vec![
        ("expired", es(&with(json!({ "exp": now - 120 })))),
        ("not yet valid", es(&with(json!({ "nbf": now + 120 })))),
        ("no exp", es(&with(json!({ "exp": null })))),
        ("alg none", none),
        (
            "HS256 signed with the RSA public key as secret",
            hs_with_rsa_public,
        ),
        (
            "unknown kid",
            sign("ec.key", Algorithm::ES256, Some("zz"), &good),
        ),
        (
            "valid signature by a key not configured",
            sign("other-ec.key", Algorithm::ES256, Some("e1"), &good),
        ),
        (
            "wrong iss",
            es(&with(json!({ "iss": "https://evil.example" }))),
        ),
        ("no iss", es(&with(json!({ "iss": null })))),
        ("wrong aud", es(&with(json!({ "aud": "someone-else" })))),
        ("over 8 KiB", es(&with(json!({ "pad": "x".repeat(8200) })))),
        (
            "RS256 header on an ES256 key id",
            sign("rsa.key", Algorithm::RS256, Some("e1"), &good),
        ),
    ];
    for (what, token) in cases {
        let r = app.get("missing", &Cred::Bearer(token)).await;
        assert_eq!(r.status, 401, "{what}: {}", r.body);
        assert_eq!(
            r.header("www-authenticate").as_deref(),
            Some("Bearer"),
            "{what}"
        );
    }
}

/// A JWKS document served on loopback, counting fetches.
struct JwksServer {
    url: String,
    body: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

async fn serve_jwks(initial: String) -> JwksServer {
    let body = Arc::new(Mutex::new(initial));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (b, f) = (body.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let (b, f) = (b.clone(), f.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                let text = b.lock().unwrap().clone();
                ([("content-type", "application/json")], text)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    JwksServer { url, body, fetches }
}

// Multi-threaded: the JWKS server task must answer while `spawn_with`
// blocks this thread waiting for the server to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_url_is_fetched_at_start_and_refreshed_on_an_unknown_kid_at_most_once_a_period() {
    let server = serve_jwks(jwks(vec![jwk("ec.key", Algorithm::ES256, "k1")])).await;
    let clock = TestClock::new();
    let app = spawn_with(
        Options::default()
            .env("STRONGROOM_JWT_JWKS_URL", &server.url)
            .env("STRONGROOM_JWT_JWKS_MIN_REFRESH_SECS", "2")
            .clock(&clock),
    )
    .await;
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1, "fetched at start");
    assert_eq!(
        status(
            &app,
            sign("ec.key", Algorithm::ES256, Some("k1"), &claims())
        )
        .await,
        404
    );

    // The issuer rotates in a new key.
    *server.body.lock().unwrap() = jwks(vec![
        jwk("ec.key", Algorithm::ES256, "k1"),
        jwk("ed.key", Algorithm::EdDSA, "k2"),
    ]);
    let rotated = sign("ed.key", Algorithm::EdDSA, Some("k2"), &claims());
    // Within the refresh period an unknown kid does not refetch.
    assert_eq!(status(&app, rotated.clone()).await, 401);
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1);
    clock.advance(std::time::Duration::from_millis(2100));
    assert_eq!(
        status(&app, rotated).await,
        404,
        "refetched on the unknown kid"
    );
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
    // A burst of unknown kids costs at most one more fetch per period.
    for i in 0..10 {
        let kid = format!("unknown-{i}");
        assert_eq!(
            status(
                &app,
                sign("ec.key", Algorithm::ES256, Some(&kid), &claims())
            )
            .await,
            401
        );
    }
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unreadable_keys_file_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.pem");
    std::fs::write(
        &path,
        "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let mut bad_keys = command(&dir.path().join("data"));
    bad_keys.env("STRONGROOM_JWT_PUBLIC_KEYS", &path);
    assert!(refused_start(bad_keys).contains("public key"));
}
