//! The External Secrets Operator's generic webhook provider, a client no one
//! here wrote: the exact request shapes it sends (Go's HTTP client, the key
//! query-escaped into the path, the headers of docs/operations.md's `SecretStore`),
//! and the answers it relies on (`$.value`, 404 when the secret is gone).

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// One request as ESO's webhook provider sends it, on its own connection;
/// returns the status and the body.
async fn eso_get(app: &TestApp, escaped_key: &str, auth_header: &str) -> (u16, String) {
    let host = app.addr.trim_start_matches("http://");
    let request = format!(
        "GET /secrets/{escaped_key} HTTP/1.1\r\n\
         Host: {host}\r\n\
         User-Agent: Go-http-client/1.1\r\n\
         {auth_header}\r\n\
         Content-Type: application/json\r\n\
         Accept-Encoding: gzip\r\n\
         Connection: close\r\n\r\n"
    );
    let mut stream = TcpStream::connect(host).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("content-encoding"),
        "{head}"
    );
    (status, body.to_owned())
}

#[tokio::test]
async fn the_external_secrets_webhook_provider_reads_values_and_sees_404_when_gone() {
    let app = spawn_with(Options::default().env("STRONGROOM_JWT_HS256_SECRET", JWT_SECRET)).await;
    let token = hs256_token(&json!({
        "sub": "external-secrets", "tenant": "acme",
        "scope": "secrets:read:k8s/", "exp": now_secs() + 300,
    }));
    let writer = Cred::Bearer(hs256_token(
        &json!({ "sub": "ops", "tenant": "acme", "exp": now_secs() + 300 }),
    ));
    let api_key = app.create_key("acme", &["--scopes", "secrets:read:k8s/"]);
    assert_eq!(
        app.put("k8s/app/db-password", "s3cr\"et\n", &writer)
            .await
            .status,
        200
    );

    // `{{ .remoteRef.key | urlquery }}`: "/" arrives as %2F.
    let bearer = format!("Authorization: Bearer {token}");
    let keyed = format!("X-Api-Key: {api_key}");
    for auth in [&bearer, &keyed] {
        let (status, body) = eso_get(&app, "k8s%2Fapp%2Fdb-password", auth).await;
        assert_eq!(status, 200, "{body}");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["value"], "s3cr\"et\n", "$.value is the value");
        // Unescaped, as a template without the escape sends it.
        let (status, _) = eso_get(&app, "k8s/app/db-password", auth).await;
        assert_eq!(status, 200);
    }

    // Gone: 404 with the compat body, which ESO reads as "no such secret".
    assert_eq!(app.delete("k8s/app/db-password", &writer).await.status, 200);
    for auth in [&bearer, &keyed] {
        let (status, body) = eso_get(&app, "k8s%2Fapp%2Fdb-password", auth).await;
        assert_eq!(
            (status, body.as_str()),
            (404, r#"{"error":"resource not found"}"#)
        );
        let (status, _) = eso_get(&app, "k8s%2Fnever", auth).await;
        assert_eq!(status, 404);
    }
    // Outside its read scope, the operator's credential is refused.
    app.put("other/x", "v", &writer).await;
    let (status, _) = eso_get(&app, "other%2Fx", &bearer).await;
    assert_eq!(status, 403);
}
