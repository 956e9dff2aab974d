//! Per-secret expiry: `ttl_seconds` / `expires_at` on PUT, reads that stop
//! at the lapse whatever the sweep has done, listings and metadata that show
//! it, and the sweep's one `secrets.expire` line per lapsed key.

use std::time::{Duration, Instant};

use crate::audit::lines;
use crate::helpers::*;

impl TestApp {
    async fn put_json(&self, body: serde_json::Value, cred: &Cred) -> Reply {
        self.put_raw(body.to_string(), cred).await
    }

    async fn undelete(&self, key: &str, cred: &Cred) -> Reply {
        let b = self.client.post(self.url(&format!("/undelete/{key}")));
        self.send(b, cred).await
    }
}

/// A server whose sweep runs only at start (reads must not need it).
async fn without_sweep() -> TestApp {
    spawn_with(Options::default().env("STRONGROOM_EXPIRY_SWEEP_INTERVAL", "1h")).await
}

/// `without_sweep`, on a clock the test moves on.
async fn without_sweep_on(clock: &TestClock) -> TestApp {
    spawn_with(
        Options::default()
            .env("STRONGROOM_EXPIRY_SWEEP_INTERVAL", "1h")
            .clock(clock),
    )
    .await
}

fn listed(reply: &Reply) -> Vec<String> {
    reply.json()["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_owned())
        .collect()
}

fn expire_lines(app: &TestApp) -> Vec<serde_json::Value> {
    lines(app)
        .into_iter()
        .filter(|l| l["action"] == "secrets.expire")
        .collect()
}

#[tokio::test]
async fn a_two_second_ttl_lapses_on_time_before_any_sweep_and_undelete_keeps_no_expiry() {
    let clock = TestClock::new();
    let app = without_sweep_on(&clock).await;
    let admin = app.admin();
    let r = app
        .put_json(
            serde_json::json!({"key": "team/short", "value": "ttl-canary", "ttl_seconds": 2}),
            &admin,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), serde_json::json!({"message": "success"}));
    app.put("team/long", "stays", &admin).await;

    assert_eq!(app.get("team/short", &admin).await.status, 200);
    let meta = app.metadata("team/short", &admin).await.json();
    let expires_at = meta["expires_at"].as_str().unwrap().to_owned();
    assert!(
        expires_at.ends_with('Z') && expires_at.len() == 24,
        "{expires_at}"
    );
    let all = app.list("?prefix=team/", &admin).await;
    assert_eq!(listed(&all), ["team/long", "team/short"]);
    assert_eq!(all.json()["secrets"][1]["expires_at"], expires_at.as_str());
    assert!(all.json()["secrets"][0]["expires_at"].is_null());
    let soon = app
        .list("?prefix=team/&expiring_before=2099-01-01T00:00:00Z", &admin)
        .await;
    assert_eq!(soon.status, 200, "{}", soon.body);
    assert_eq!(listed(&soon), ["team/short"], "only what lapses");
    let past = app
        .list("?expiring_before=2000-01-01T00:00:00Z", &admin)
        .await;
    assert!(listed(&past).is_empty());

    // One second after the lapse: gone for reads, listings and
    // preconditions, though no sweep has run.
    clock.advance(Duration::from_secs(3));
    let r = app.get("team/short", &admin).await;
    assert_eq!((r.status, r.error()), (404, "resource not found".into()));
    assert_eq!(app.get("team/short?version=1", &admin).await.status, 404);
    assert_eq!(
        listed(&app.list("?prefix=team/", &admin).await),
        ["team/long"]
    );
    let meta = app.metadata("team/short", &admin).await.json();
    assert_eq!(meta["deleted"], true);
    assert_eq!(meta["expires_at"], expires_at.as_str());
    assert!(expire_lines(&app).is_empty(), "no sweep has run");

    // Undelete brings it back with no expiry.
    assert_eq!(app.undelete("team/short", &admin).await.status, 200);
    assert_eq!(
        app.get("team/short", &admin).await.json()["value"],
        "ttl-canary"
    );
    let meta = app.metadata("team/short", &admin).await.json();
    assert!(
        meta["expires_at"].is_null() && meta["deleted"] == false,
        "{meta}"
    );
}

#[tokio::test]
async fn a_bad_expiry_is_refused_with_a_detail_and_writes_nothing() {
    let app = without_sweep().await;
    let admin = app.admin();
    for (extra, detail) in [
        (
            serde_json::json!({"ttl_seconds": 60, "expires_at": "2099-01-01T00:00:00Z"}),
            "not both",
        ),
        (
            serde_json::json!({"expires_at": "2001-01-01T00:00:00Z"}),
            "future",
        ),
        (serde_json::json!({"expires_at": "tomorrow"}), "RFC 3339"),
        (serde_json::json!({"expires_at": 1_900_000_000}), "RFC 3339"),
        (
            serde_json::json!({"expires_at": "2999-01-01T00:00:00Z"}),
            "ten years",
        ),
        (serde_json::json!({"ttl_seconds": 0}), "from 1 to"),
        (serde_json::json!({"ttl_seconds": -5}), "from 1 to"),
        (serde_json::json!({"ttl_seconds": 1.5}), "from 1 to"),
        (
            serde_json::json!({"ttl_seconds": 315_576_001u64}),
            "from 1 to",
        ),
        (serde_json::json!({"ttl_seconds": "60"}), "from 1 to"),
    ] {
        let mut body = serde_json::json!({"key": "bad/expiry", "value": "expiry-bad-canary"});
        for (name, value) in extra.as_object().unwrap() {
            body[name] = value.clone();
        }
        let r = app.put_json(body.clone(), &admin).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.error(), "invalid request format");
        let said = r.json()["detail"].as_str().unwrap().to_owned();
        assert!(said.contains(detail), "{body}: {said}");
        assert!(!r.body.contains("expiry-bad-canary"));
    }
    assert_eq!(app.get("bad/expiry", &admin).await.status, 404);
    let bad_list = app.list("?expiring_before=soon", &admin).await;
    assert_eq!(bad_list.status, 400, "{}", bad_list.body);
    // The longest TTL and a null expiry are fine.
    let r = app
        .put_json(
            serde_json::json!({"key": "ok/long", "value": "v", "ttl_seconds": 315_576_000u64}),
            &admin,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = app
        .put_json(
            serde_json::json!({"key": "ok/none", "value": "v", "expires_at": null}),
            &admin,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn the_sweep_marks_each_lapsed_key_once_and_never_a_rewritten_one() {
    let app = spawn_with(Options::default().env("STRONGROOM_EXPIRY_SWEEP_INTERVAL", "1s")).await;
    let admin = app.admin();
    let ttl = |key: &str, seconds: u64| serde_json::json!({"key": key, "value": format!("{key}-canary"), "ttl_seconds": seconds});
    for key in [
        "sweep/lapses",
        "sweep/rewritten-none",
        "sweep/rewritten-later",
    ] {
        assert_eq!(app.put_json(ttl(key, 2), &admin).await.status, 200);
    }
    app.put("sweep/rewritten-none", "no expiry now", &admin)
        .await;
    app.put_json(ttl("sweep/rewritten-later", 3600), &admin)
        .await;

    let deadline = Instant::now() + Duration::from_secs(15);
    while expire_lines(&app).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Two more sweeps, which must add nothing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let swept = expire_lines(&app);
    assert_eq!(swept.len(), 1, "{swept:?}");
    let line = &swept[0];
    assert_eq!(line["key"], "sweep/lapses");
    assert_eq!(
        (&line["subject"], &line["tenant"]),
        (&"system".into(), &"default".into())
    );
    assert_eq!(line["status"], 200);
    assert_eq!(app.counter("strongroom_secrets_expired_total").await, 1);
    assert_eq!(app.get("sweep/lapses", &admin).await.status, 404);
    assert_eq!(
        app.get("sweep/rewritten-none", &admin).await.json()["value"],
        "no expiry now"
    );
    assert_eq!(app.get("sweep/rewritten-later", &admin).await.status, 200);
    let meta = app.metadata("sweep/lapses", &admin).await.json();
    assert_eq!(meta["deleted"], true);
    assert!(!crate::audit::trail(&app.data_dir).contains("-canary"));
    let out = command(&app.data_dir)
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_key_that_lapsed_while_the_server_was_down_is_swept_at_start() {
    let clock = TestClock::new();
    let mut app = without_sweep_on(&clock).await;
    let admin = app.admin();
    let body = serde_json::json!({"key": "down/lapses", "value": "v", "ttl_seconds": 1});
    assert_eq!(app.put_json(body, &admin).await.status, 200);
    assert_eq!(app.terminate().code(), Some(0));
    // Down for longer than the key's lifetime.
    clock.advance(Duration::from_millis(1500));
    let again = spawn_with(
        Options::default()
            .data_dir(&app.data_dir)
            .env("STRONGROOM_EXPIRY_SWEEP_INTERVAL", "1h")
            .clock(&clock),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while expire_lines(&again).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let swept = expire_lines(&again);
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(swept[0]["key"], "down/lapses");
    assert_eq!(again.get("down/lapses", &admin).await.status, 404);
}
