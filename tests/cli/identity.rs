//! `strongroom role …` and `strongroom policy …` against a real server,
//! from flags and from a JSON file, and a login token (`STRONGROOM_TOKEN`)
//! used by the client commands.

use std::process::Command;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::helpers::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");
const ISSUER: &str = "https://ci.example.test";

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(format!("{FIXTURES}/rsa.key")).unwrap()).unwrap()
}

/// A server whose provider `ci` holds `rsa.key` as `k1`.
fn server_with_provider(dir: &std::path::Path) -> Server {
    let mut jwk = Jwk::from_encoding_key(&rsa_key(), Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let set = serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap();
    std::fs::write(dir.join("jwks.json"), set).unwrap();
    let providers = json!([{ "name": "ci", "issuer": ISSUER, "jwks_file": "jwks.json" }]);
    let path = dir.join("providers.json");
    std::fs::write(&path, providers.to_string()).unwrap();
    Server::start_with(&[("STRONGROOM_OIDC_PROVIDERS", path.to_str().unwrap())])
}

fn login(s: &Server, role: &str) -> (u16, Value) {
    let now = now_secs();
    let claims = json!({
        "iss": ISSUER, "aud": "strongroom", "sub": "repo:acme/app",
        "environment": "prod", "iat": now, "exp": now + 300,
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".into());
    let jwt = jsonwebtoken::encode(&header, &claims, &rsa_key()).unwrap();
    let url = format!("{}/auth/login/jwt", s.addr);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let r = reqwest::Client::new()
                .post(url)
                .json(&json!({ "tenant": "default", "role": role, "jwt": jwt }))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap())
        })
}

fn with_token(s: &Server, token: &str) -> Command {
    let mut cmd = bare_cli();
    cmd.env("STRONGROOM_ADDR", &s.addr)
        .env("STRONGROOM_TOKEN", token);
    cmd
}

#[test]
fn roles_and_policies_are_managed_from_flags_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_with_provider(dir.path());
    s.ok(&["policy", "put", "readers", "--scopes", "secrets:read:prod/"]);
    assert_eq!(stdout(&s.ok(&["policy", "ls"])), "readers\n");
    let shown: Value = serde_json::from_slice(&s.ok(&["policy", "get", "readers"]).stdout).unwrap();
    assert_eq!(shown["scopes"], json!(["secrets:read:prod/"]));

    s.ok(&[
        "role",
        "put",
        "ci",
        "--provider",
        "ci",
        "--audience",
        "strongroom",
        "--subject",
        "repo:acme/*",
        "--claim",
        "environment=prod",
        "--claim",
        "environment=staging",
        "--policies",
        "readers",
        "--ttl",
        "120",
    ]);
    let role: Value = serde_json::from_slice(&s.ok(&["role", "get", "ci"]).stdout).unwrap();
    assert_eq!(
        role["bound_claims"],
        json!({ "environment": ["prod", "staging"] })
    );
    assert_eq!(role["token_ttl_seconds"], 120);
    assert_eq!(role["user_claim"], "sub");
    let file = dir.path().join("role.json");
    let from_file = json!({
        "provider": "ci", "bound_audiences": ["strongroom"],
        "bound_claims": { "environment": "dev" }, "scopes": ["secrets:list"]
    });
    std::fs::write(&file, from_file.to_string()).unwrap();
    s.ok(&["role", "put", "dev-ci", "--file", file.to_str().unwrap()]);
    assert_eq!(stdout(&s.ok(&["role", "ls"])), "ci\ndev-ci\n");
    let listed: Value = serde_json::from_slice(&s.ok(&["role", "ls", "--json"]).stdout).unwrap();
    assert_eq!(
        listed["roles"][1]["bound_claims"],
        json!({ "environment": ["dev"] })
    );

    // A login's token is a credential for the client commands.
    s.ok(&["put", "prod/db", "s3cret"]);
    let (status, body) = login(&s, "ci");
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    let out = run_with_stdin(with_token(&s, &token).args(["get", "prod/db"]), None);
    assert_success(&out, &["get", "prod/db"]);
    assert_eq!(out.stdout, b"s3cret");
    // The role's claims bind: a dev token is refused.
    assert_eq!(login(&s, "dev-ci").0, 401);

    // Refusals in words, with the CLI's exit codes.
    let out = s.run(&[
        "role",
        "put",
        "bad",
        "--provider",
        "nope",
        "--audience",
        "a",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("provider 'nope' is not configured"),
        "{}",
        stderr(&out)
    );
    let narrow = s.create_key("default", &["--scopes", "secrets:read"]);
    let mut cmd = bare_cli();
    cmd.env("STRONGROOM_ADDR", &s.addr)
        .env("STRONGROOM_API_KEY", &narrow);
    let out = run_with_stdin(cmd.args(["policy", "ls"]), None);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));

    s.ok(&["role", "rm", "ci"]);
    let out = run_with_stdin(with_token(&s, &token).args(["get", "prod/db"]), None);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(!stderr(&out).contains(&token));
    let out = s.run(&["role", "get", "ci"]);
    assert_eq!(out.status.code(), Some(3));
    s.ok(&["policy", "rm", "readers"]);
    assert_eq!(stdout(&s.ok(&["policy", "ls"])), "");
}
