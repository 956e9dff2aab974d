//! A gateway started while NATS is down serves 503 (but is alive), and
//! recovers by itself when NATS comes back.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

/// Waits until `/readyz` answers 200.
pub async fn wait_ready(app: &TestApp, limit: Duration) {
    let start = Instant::now();
    loop {
        let r = app
            .send(app.client.get(app.url("/readyz")), &Cred::None)
            .await;
        if r.status == 200 {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "not ready after {limit:?}: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_while_nats_is_down_answers_503_and_recovers_by_itself() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let data = tempfile::tempdir().unwrap();
    let app = spawn_with(
        Options::default()
            .data_dir(&data.path().join("data"))
            .env("STRONGROOM_STORE", "nats")
            .env("STRONGROOM_NATS_URL", &url)
            .env("STRONGROOM_NATS_BUCKET", "outage"),
    )
    .await;
    assert_eq!(
        app.send(app.client.get(app.url("/healthz")), &Cred::None)
            .await
            .status,
        200,
        "alive"
    );
    let r = app
        .send(app.client.get(app.url("/readyz")), &Cred::None)
        .await;
    assert_eq!((r.status, r.error()), (503, "service unavailable".into()));
    let fake = Cred::ApiKey(format!("sr_0123456789abcdef_{}", "A".repeat(43)));
    let r = app.put("k", "v", &fake).await;
    assert_eq!((r.status, r.error()), (503, "service unavailable".into()));
    assert_eq!(app.get("k", &fake).await.status, 503);

    // NATS comes up on the port the gateway was told about.
    let store_dir = tempfile::tempdir().unwrap();
    let mut nats = Command::new(nats_server_binary())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store_dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port, Duration::from_secs(10));
    wait_ready(&app, Duration::from_secs(20)).await;
    // Start-up finished in the background, bootstrap key included.
    let start = Instant::now();
    let key = loop {
        if let Some(k) = app.log_text().lines().find(|l| l.starts_with("sr_")) {
            break k.to_owned();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no bootstrap key");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let admin = Cred::ApiKey(key);
    assert_eq!(app.put("k", "after the outage", &admin).await.status, 200);
    assert_eq!(
        app.get("k", &admin).await.json()["value"],
        "after the outage"
    );
    let _ = nats.kill();
    let _ = nats.wait();
}
