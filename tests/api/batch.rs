//! `POST /batch/get`: many keys in one request, each authorized by its own
//! scope and audited with its own line; whatever the caller may not read is
//! only `missing`, told apart from nothing else.

use crate::audit::lines;
use crate::helpers::*;

impl TestApp {
    pub async fn batch_get(&self, body: serde_json::Value, cred: &Cred) -> Reply {
        let b = self
            .client
            .post(self.url("/batch/get"))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        self.send(b, cred).await
    }
}

fn keys(value: &serde_json::Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_batch_answers_what_the_caller_may_read_and_lists_the_rest_as_missing() {
    let app = spawn_app().await;
    let admin = app.admin();
    for (key, value) in [
        ("team/a", "batch-canary-a"),
        ("team/b", "batch-canary-b"),
        ("other/c", "batch-canary-c"),
        ("team/gone", "batch-canary-gone"),
    ] {
        assert_eq!(app.put(key, value, &admin).await.status, 200);
    }
    app.put("team/b", "batch-canary-b2", &admin).await;
    assert_eq!(app.delete("team/gone", &admin).await.status, 200);
    // Another tenant holds a key of the same name.
    let foreign = Cred::ApiKey(app.create_key("foreign", &[]));
    app.put("team/theirs", "foreign-canary", &foreign).await;
    let reader = Cred::ApiKey(app.create_key("default", &["--scopes", "secrets:read:team/"]));

    let ask = serde_json::json!({ "keys": [
        "team/a", "team/b", "other/c", "team/gone", "team/absent", "team/theirs", "team/a"
    ]});
    let r = app.batch_get(ask, &reader).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let body = r.json();
    assert_eq!(
        body["secrets"],
        serde_json::json!([
            {"key": "team/a", "value": "batch-canary-a", "version": 1},
            {"key": "team/b", "value": "batch-canary-b2", "version": 2},
        ])
    );
    // Out of scope, soft-deleted, absent and another tenant's: the same.
    assert_eq!(
        keys(&body["missing"]),
        ["other/c", "team/gone", "team/absent", "team/theirs"]
    );
    assert!(!r.body.contains("batch-canary-c") && !r.body.contains("foreign-canary"));

    // One line per key, each with the status a read of it alone has, under
    // the one request id; the chain stays intact.
    let request_id = r.header("x-request-id").unwrap();
    let mine: Vec<_> = lines(&app)
        .into_iter()
        .filter(|l| l["request_id"] == request_id.as_str())
        .collect();
    let seen: Vec<(String, u64)> = mine
        .iter()
        .map(|l| {
            assert_eq!(l["action"], "secrets.read", "{l}");
            (
                l["key"].as_str().unwrap().to_owned(),
                l["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let expect = [
        ("team/a", 200),
        ("team/b", 200),
        ("other/c", 403),
        ("team/gone", 404),
        ("team/absent", 404),
        ("team/theirs", 404),
    ];
    assert_eq!(seen.len(), expect.len(), "{seen:?}");
    for (key, status) in expect {
        assert!(seen.contains(&(key.to_owned(), status)), "{key}: {seen:?}");
    }
    let trail = crate::audit::trail(&app.data_dir);
    assert!(!trail.contains("batch-canary"), "a value in the trail");
}

#[tokio::test]
async fn a_bad_batch_is_refused_whole_with_a_detail() {
    let app = spawn_app().await;
    let admin = app.admin();
    app.put("k", "batch-bad-canary", &admin).await;
    let many: Vec<String> = (0..101).map(|i| format!("k{i}")).collect();
    let hundred: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    for (body, detail) in [
        (serde_json::json!({ "keys": [] }), "1 to 100"),
        (serde_json::json!({ "keys": many }), "1 to 100"),
        (serde_json::json!({ "keys": ["k", "bad..key"] }), "keys[1]"),
        (serde_json::json!({ "keys": "k" }), "JSON object"),
        (serde_json::json!(["k"]), "JSON object"),
    ] {
        let r = app.batch_get(body.clone(), &admin).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.error(), "error retrieving secret");
        assert!(
            r.json()["detail"].as_str().unwrap().contains(detail),
            "{}",
            r.body
        );
        assert!(!r.body.contains("batch-bad-canary"));
    }
    let r = app
        .batch_get(serde_json::json!({ "keys": hundred }), &admin)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["missing"].as_array().unwrap().len(), 100);
    let r = app
        .batch_get(serde_json::json!({ "keys": ["k"] }), &Cred::None)
        .await;
    assert_eq!(r.status, 401);
}
