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

/// Reproduction (issue 32, item 5): a key whose only scope is `audit:read`
/// got 200 with every key `missing` and wrote 100 audit lines per
/// `POST /batch/get`: one key wrote about 1.6 GB of audit in 10 s. Now a
/// credential that may read none of the keys it names is refused 403 with
/// the request's one line, and past the failed-authentication burst its
/// refusals are answered 429 and summarised, a line a second at most.
#[tokio::test]
async fn a_batch_that_may_read_nothing_is_one_refusal_and_floods_are_summarised() {
    let mut app = spawn_app().await;
    let admin = app.admin();
    let hundred: Vec<String> = (0..100).map(|i| format!("zz/k{i}")).collect();
    for key in &hundred[..3] {
        app.put(key, "batch-refusal-canary", &admin).await;
    }
    let auditor = app.create_key("default", &["--scopes", "audit:read"]);
    let flooder = crate::audit::client_from_another_address();
    let body = serde_json::json!({ "keys": hundred }).to_string();
    let trail_before = crate::audit::trail(&app.data_dir).len();
    let (mut forbidden, mut limited) = (Vec::new(), 0);
    const FLOOD: usize = 60;
    let started = std::time::Instant::now();
    for _ in 0..FLOOD {
        let reply = flooder
            .post(app.url("/batch/get"))
            .header("X-Api-Key", &auditor)
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        match reply.status().as_u16() {
            403 => forbidden.push(reply.headers()["x-request-id"].to_str().unwrap().to_owned()),
            429 => limited += 1,
            other => panic!("{other}: {}", reply.text().await.unwrap()),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        !forbidden.is_empty() && limited > 0,
        "{} forbidden, {limited} limited",
        forbidden.len()
    );
    // The default burst (20) and rate (10 a second) bound the refusals.
    assert!(
        forbidden.len() <= 20 + (10.0 * (elapsed + 1.0)) as usize,
        "{}",
        forbidden.len()
    );
    // Another address is served as ever.
    let mine = app
        .batch_get(serde_json::json!({ "keys": ["zz/k0"] }), &admin)
        .await;
    assert_eq!(mine.status, 200, "{}", mine.body);

    assert_eq!(app.terminate().code(), Some(0));
    let lines = lines(&app);
    for id in &forbidden {
        let of: Vec<_> = lines
            .iter()
            .filter(|l| l["request_id"] == id.as_str())
            .collect();
        assert_eq!(of.len(), 1, "one line per refused batch: {of:?}");
        assert_eq!(
            (of[0]["action"].as_str(), of[0]["status"].as_u64()),
            (Some("secrets.batch_get"), Some(403))
        );
    }
    // Every line of theirs is a refused batch's, or a summary naming the
    // key (not the address: others may share it behind a proxy).
    let theirs: Vec<_> = lines
        .iter()
        .filter(|l| l["client"].as_str().unwrap_or("").starts_with("127.0.0.2:"))
        .collect();
    assert_eq!(theirs.len(), forbidden.len(), "{theirs:?}");
    let subject = lines
        .iter()
        .find(|l| l["request_id"] == forbidden[0].as_str())
        .unwrap()["subject"]
        .clone();
    let summaries: Vec<_> = lines
        .iter()
        .filter(|l| l["action"] == "auth.throttled" && l["subject"] == subject)
        .collect();
    let summed: u64 = summaries
        .iter()
        .map(|l| {
            l["note"]
                .as_str()
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(summed, limited as u64, "{summaries:?}");
    assert!(
        summaries.len() <= elapsed as usize + 3,
        "{} summaries",
        summaries.len()
    );
    let grown = crate::audit::trail(&app.data_dir).len() - trail_before;
    eprintln!(
        "{grown} audit bytes for {FLOOD} refused batches ({} per batch)",
        grown / FLOOD
    );
    assert!(
        grown < FLOOD * 1_000,
        "{grown} bytes of audit for {FLOOD} refused batches"
    );
}
