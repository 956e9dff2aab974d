//! An identity provider found by discovery: the test serves
//! `/.well-known/openid-configuration` and its JWKS over HTTPS (a CA and
//! certificate it makes), rotates the provider's key, and breaks the
//! provider for a while. A new `kid` is fetched (at most once per 10 s); a
//! key that left the JWKS stops verifying once the keys are fetched again;
//! a failed fetch keeps the last good keys and shows in `/readyz` and the
//! metrics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use crate::identity::{claims, jwks, login, put_json, sign};

/// What the provider answers: the status of its key set, and the set.
struct Served {
    status: u16,
    jwks: String,
    fetches: usize,
}

/// Starts the HTTPS provider on loopback; its issuer URL, and the CA file
/// that signed its certificate.
async fn start_provider(dir: &std::path::Path, served: Arc<Mutex<Served>>) -> (String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let ca_path = dir.join("provider-ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let discovery = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/keys") }).to_string();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, served, discovery) =
                (acceptor.clone(), served.clone(), discovery.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                let (status, body) = match path.as_str() {
                    "/.well-known/openid-configuration" => (200, discovery),
                    "/keys" => {
                        let mut s = served.lock().unwrap();
                        s.fetches += 1;
                        (s.status, s.jwks.clone())
                    }
                    _ => (404, "{}".to_owned()),
                };
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(body.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (issuer, ca_path.to_str().unwrap().to_owned())
}

// Multi-threaded: starting the server blocks a thread while the provider
// answers its first fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_and_a_withdrawn_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Beside its signing key the provider publishes an encryption key and
    // a key of an algorithm strongroom does not take (as Keycloak does):
    // they are skipped, not a reason to refuse the whole set.
    let mut with_others: serde_json::Value =
        serde_json::from_str(&jwks(&[("rsa.key", Algorithm::RS256, "enc1")])).unwrap();
    with_others["keys"][0]["use"] = json!("enc");
    with_others["keys"][0]["alg"] = json!("RSA-OAEP");
    let mut rs384 = with_others["keys"][0].clone();
    rs384["use"] = json!("sig");
    rs384["alg"] = json!("RS384");
    rs384["kid"] = json!("rs384");
    let signing: serde_json::Value =
        serde_json::from_str(&jwks(&[("ec.key", Algorithm::ES256, "k1")])).unwrap();
    let first = json!({ "keys": [with_others["keys"][0], rs384, signing["keys"][0]] });
    let served = Arc::new(Mutex::new(Served {
        status: 200,
        jwks: first.to_string(),
        fetches: 0,
    }));
    let (issuer, ca) = start_provider(dir.path(), served.clone()).await;
    let providers = json!([{ "name": "gh", "issuer": issuer, "ca_file": ca }]);
    let path = dir.path().join("providers.json");
    std::fs::write(&path, providers.to_string()).unwrap();
    let clock = TestClock::new();
    let app = spawn_with(
        Options::default()
            .clock(&clock)
            .env("STRONGROOM_OIDC_PROVIDERS", path.to_str().unwrap()),
    )
    .await;
    assert_eq!(
        served.lock().unwrap().fetches,
        1,
        "fetched at start: {}",
        app.log_text()
    );
    let role = json!({
        "provider": "gh",
        "bound_audiences": [crate::identity::AUDIENCE],
        "scopes": ["secrets:read"],
        "token_ttl_seconds": 60
    });
    assert_eq!(
        put_json(&app, "/auth/roles/ci", &role, &app.admin())
            .await
            .status,
        200
    );
    let mut c = claims();
    c["iss"] = json!(issuer);
    // The test clock moves on by 20 minutes; the token outlives that.
    c["exp"] = json!(now_secs() + 3600);
    let by = |file: &str, kid: &str| sign(file, Algorithm::ES256, kid, &c);
    let detail = |r: &Reply| r.json()["detail"].as_str().unwrap_or("").to_owned();

    assert_eq!(
        login(&app, "default", "ci", &by("ec.key", "k1"))
            .await
            .status,
        200
    );

    // The provider adds k2. Within 10 s of the last fetch an unknown kid
    // does not fetch again; after them it does.
    served.lock().unwrap().jwks = jwks(&[
        ("ec.key", Algorithm::ES256, "k1"),
        ("other-ec.key", Algorithm::ES256, "k2"),
    ]);
    let r = login(&app, "default", "ci", &by("other-ec.key", "k2")).await;
    assert_eq!(r.status, 401);
    assert!(detail(&r).starts_with("signature"), "{}", r.body);
    assert_eq!(served.lock().unwrap().fetches, 1, "rate-limited");
    clock.advance(Duration::from_secs(11));
    let r = login(&app, "default", "ci", &by("other-ec.key", "k2")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(served.lock().unwrap().fetches, 2);
    assert_eq!(
        login(&app, "default", "ci", &by("ec.key", "k1"))
            .await
            .status,
        200
    );

    // The provider withdraws k1. Once the keys are older than 10 minutes,
    // the next login fetches them again (in the background: it is verified
    // with the keys in use), and from then on k1 no longer verifies.
    served.lock().unwrap().jwks = jwks(&[("other-ec.key", Algorithm::ES256, "k2")]);
    clock.advance(Duration::from_secs(601));
    assert_eq!(
        login(&app, "default", "ci", &by("other-ec.key", "k2"))
            .await
            .status,
        200
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = login(&app, "default", "ci", &by("ec.key", "k1")).await;
        if r.status == 401 {
            assert!(detail(&r).starts_with("signature"), "{}", r.body);
            break;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(std::time::Instant::now() < deadline, "k1 still verifies");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served.lock().unwrap().fetches, 3);
    assert_eq!(
        login(&app, "default", "ci", &by("other-ec.key", "k2"))
            .await
            .status,
        200
    );

    // The provider breaks: the last good keys stay in use, and the
    // failure shows in /readyz and the metrics.
    assert_eq!(
        app.counter("strongroom_oidc_key_fetch_failures_total{provider=\"gh\"}")
            .await,
        0
    );
    served.lock().unwrap().status = 500;
    clock.advance(Duration::from_secs(601));
    assert_eq!(
        login(&app, "default", "ci", &by("other-ec.key", "k2"))
            .await
            .status,
        200
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while app
        .counter("strongroom_oidc_key_fetch_failures_total{provider=\"gh\"}")
        .await
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no failed fetch counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served.lock().unwrap().fetches, 4, "one fetch was tried");
    assert_eq!(
        login(&app, "default", "ci", &by("other-ec.key", "k2"))
            .await
            .status,
        200
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: serde_json::Value = ready.json().await.unwrap();
    let warnings = ready["warnings"].to_string();
    assert!(warnings.contains("identity provider gh"), "{warnings}");
    assert!(warnings.contains("status 500"), "{warnings}");
    assert_eq!(
        app.counter("strongroom_oidc_key_fetch_failures_total{provider=\"gh\"}")
            .await,
        1
    );
    assert_eq!(
        app.counter("strongroom_oidc_keys_stale{provider=\"gh\"}")
            .await,
        1
    );

    // Mended: the next fetch clears the warning.
    served.lock().unwrap().status = 200;
    clock.advance(Duration::from_secs(11));
    let r = login(&app, "default", "ci", &by("ec.key", "k3")).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        app.counter("strongroom_oidc_keys_stale{provider=\"gh\"}")
            .await,
        0
    );
}

#[tokio::test]
async fn a_provider_issuer_must_be_https_or_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("providers.json");
    std::fs::write(
        &path,
        json!([{ "name": "x", "issuer": "http://idp.example.com" }]).to_string(),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut cmd = command(&data);
    cmd.env("STRONGROOM_OIDC_PROVIDERS", &path);
    let err = refused_start(cmd);
    assert!(err.contains("must be https://"), "{err}");
}
