//! Operations: health, readiness, metrics, the OpenAPI document, and the
//! access log's shape and discretion.

use crate::helpers::*;

#[tokio::test]
async fn health_and_readiness_need_no_auth() {
    let app = spawn_app().await;
    let r = app
        .send(app.client.get(app.url("/healthz")), &Cred::None)
        .await;
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("ok")));
    let r = app
        .send(app.client.get(app.url("/readyz")), &Cred::None)
        .await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("ready"))
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_without_key_names() {
    let app = spawn_app().await;
    let admin = app.admin();
    app.put("metric-secret-name", "metric-secret-value", &admin)
        .await;
    app.get("metric-secret-name", &admin).await;
    app.get("metric-secret-name", &Cred::None).await;
    let r = app
        .send(app.client.get(app.url("/metrics")), &Cred::None)
        .await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = r.body;
    assert!(
        text.contains(
            r#"strongroom_http_requests_total{method="PUT",route="/secrets",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"strongroom_http_requests_total{method="GET",route="/secrets/{*key}",status="200"} 1"#
    ));
    assert!(text.contains(
        r#"strongroom_http_requests_total{method="GET",route="/secrets/{*key}",status="401"} 1"#
    ));
    assert!(text.contains(
        "strongroom_http_request_duration_seconds_bucket{route=\"/secrets\",le=\"+Inf\"} 1"
    ));
    assert!(text.contains(r#"strongroom_auth_failures_total{reason="missing"} 1"#));
    assert!(
        !text.contains("metric-secret"),
        "no key names or values in metrics"
    );
}

#[tokio::test]
async fn the_openapi_document_is_a_superset_of_the_compat_spec() {
    let app = spawn_app().await;
    let r = app
        .send(app.client.get(app.url("/openapi.json")), &Cred::None)
        .await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let compat = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/api/quiva-secrets-compat.yaml"
    ))
    .ok();
    // Every path, method and status of the compat spec is in ours.
    let expected = [
        ("/secrets", "put", ["200", "400"].as_slice()),
        ("/secrets/{key}", "get", ["200", "400", "404"].as_slice()),
        ("/secrets/{key}", "delete", ["200", "400", "404"].as_slice()),
    ];
    for (path, method, codes) in expected {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path}");
        for code in codes.iter().chain(["401", "503"].iter()) {
            assert!(op["responses"][code].is_object(), "{method} {path} {code}");
        }
        if let Some(compat) = &compat {
            assert!(
                compat.contains(&format!("  {path}:")),
                "compat spec names {path}"
            );
        }
    }
    assert!(doc["paths"]["/secrets"]["put"]["responses"]["413"].is_object());
    assert!(doc["paths"]["/secrets"]["put"]["responses"]["415"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["apiKeyAuth"]["name"],
        "X-Api-Key"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["components"]["schemas"]["Key"]["maxLength"], 256);
}

#[tokio::test]
async fn one_access_log_line_per_request_without_secrets() {
    let mut app = spawn_app().await;
    let admin = app.admin();
    let token = hs256_token(&serde_json::json!({ "tenant": "t", "exp": now_secs() + 60 }));
    app.put("log/key-name", "log-secret-value", &admin).await;
    app.get("log/key-name", &admin).await;
    app.get("log/key-name", &Cred::Bearer(token.clone())).await;
    app.put_raw(r#"{"key":"log/x","value":"log-body-value"#, &admin)
        .await;
    assert_eq!(app.terminate().code(), Some(0));
    let log = app.log_text();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "strongroom::access")
        .collect();
    assert_eq!(lines.len(), 4, "{log}");
    for line in &lines {
        let f = &line["fields"];
        assert!(f["method"].is_string() && f["route"].is_string() && f["status"].is_number());
        assert!(
            f["latency_us"].is_number() && f["request_id"].as_str().is_some_and(|s| !s.is_empty())
        );
    }
    assert_eq!(lines[0]["fields"]["route"], "/secrets");
    assert_eq!(lines[2]["fields"]["status"], 401);
    for secret in [
        "log/key-name",
        "log-secret-value",
        "log-body-value",
        &token,
        admin_key(&app).as_str(),
    ] {
        assert!(
            !log.lines()
                .any(|l| l.contains(secret) && !l.starts_with("sr_")),
            "{secret} in the log"
        );
    }
}

fn admin_key(app: &TestApp) -> String {
    app.bootstrap_key.clone().unwrap()
}

/// Reproduction (issue 32, item 5): a disk filling up with audit lines
/// gave no sign until the fail-closed trail answered 503 to everyone. Now
/// below `--disk-warn-bytes` free, `/readyz` (still 200) says so in its
/// detail, the metrics show it and the log warns, well before writes fail.
#[tokio::test]
async fn a_data_dir_running_out_of_room_is_warned_of_before_writes_fail() {
    // No real disk is that full: a threshold above any free space.
    let app =
        spawn_with(Options::default().env("STRONGROOM_DISK_WARN_BYTES", "18000000000000000000"))
            .await;
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    let warning = body["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("bytes free"), "{body}");
    assert_eq!(app.counter("strongroom_data_dir_low").await, 1);
    assert!(app.counter("strongroom_data_dir_free_bytes").await > 0);
    assert!(
        app.log_shows("running out of room").await,
        "{}",
        app.log_text()
    );
    // Writes still go on.
    assert_eq!(app.put("room/k", "v", &app.admin()).await.status, 200);

    let calm = spawn_app().await;
    let body: serde_json::Value = calm
        .client
        .get(calm.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body, serde_json::json!({"status": "ready"}));
    assert_eq!(calm.counter("strongroom_data_dir_low").await, 0);
}
