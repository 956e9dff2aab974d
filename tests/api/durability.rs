//! Durability: acknowledged writes survive SIGKILL; restarts keep
//! everything; SIGTERM drains in-flight requests and exits 0.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn every_acknowledged_write_survives_sigkill() {
    let mut app = spawn_app().await;
    let admin = app.admin();
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..16 {
        let (client, url, cred, acked) = (
            app.client.clone(),
            app.url("/secrets"),
            admin.clone(),
            acked.clone(),
        );
        writers.push(tokio::spawn(async move {
            let Cred::ApiKey(key) = cred else {
                unreachable!()
            };
            for i in 0.. {
                // Half the writers overwrite one key, half write new ones,
                // so both inserts and new versions are in flight.
                let name = if w % 2 == 0 {
                    format!("w{w}/k{i}")
                } else {
                    format!("w{w}/same")
                };
                let value = format!("value-{w}-{i}-{}", "x".repeat(i % 50));
                let body = serde_json::json!({ "key": name, "value": value }).to_string();
                let sent = client
                    .put(&url)
                    .header("X-Api-Key", &key)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => {
                        acked.lock().unwrap().insert(name, value);
                    }
                    _ => break,
                }
            }
        }));
    }
    // Let writes flow, then kill the server without warning.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let count_before_kill = acked.lock().unwrap().len();
    app.kill9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        count_before_kill > 50,
        "the test wrote too little to mean anything: {count_before_kill}"
    );

    let again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    for (key, value) in &acked {
        let r = again.get(key, &admin).await;
        assert_eq!(r.status, 200, "acknowledged {key} lost");
        // For an overwritten key a later unacknowledged write may have
        // committed too; otherwise the value is exactly the acked one.
        if key.ends_with("/same") {
            let got = r.json()["value"].as_str().unwrap().to_owned();
            let (w, i) = parse_value(&got);
            let (_, acked_i) = parse_value(value);
            assert!(
                w == parse_value(value).0 && i >= acked_i,
                "{key}: {got} older than acked {value}"
            );
        } else {
            assert_eq!(r.json()["value"].as_str().unwrap(), value, "{key}");
        }
    }
}

fn parse_value(v: &str) -> (u32, u32) {
    let mut parts = v.split('-').skip(1);
    (
        parts.next().unwrap().parse().unwrap(),
        parts.next().unwrap().parse().unwrap(),
    )
}

#[tokio::test]
async fn a_restart_keeps_everything() {
    let mut app = spawn_app().await;
    let admin = app.admin();
    for i in 0..20 {
        app.put(&format!("k{i}"), &format!("v{i}"), &admin).await;
    }
    app.delete("k0", &admin).await;
    assert_eq!(app.terminate().code(), Some(0));
    let again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    assert_eq!(again.get("k0", &admin).await.status, 404);
    for i in 1..20 {
        assert_eq!(
            again.get(&format!("k{i}"), &admin).await.json()["value"],
            format!("v{i}")
        );
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    let mut app = spawn_app().await;
    let admin = app.admin();
    let Cred::ApiKey(key) = admin.clone() else {
        unreachable!()
    };
    // A request whose body is still arriving when SIGTERM lands.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let pending = tokio::spawn(
        app.client
            .put(app.url("/secrets"))
            .header("X-Api-Key", key)
            .header("Content-Type", "application/json")
            .body(body)
            .send(),
    );
    tx.send(Ok(br#"{"key":"slow","#.to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&app.child, "TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(Ok(br#""value":"made it"}"#.to_vec()))
        .await
        .unwrap();
    drop(tx);
    let response = pending.await.unwrap().expect("in-flight request answered");
    assert_eq!(response.status(), 200);
    let status = wait_timeout(&mut app.child, Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(0));
    let again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    assert_eq!(again.get("slow", &admin).await.json()["value"], "made it");
}

#[tokio::test]
async fn sigterm_with_a_half_sent_request_exits_0_after_the_grace() {
    let mut app = spawn_with(Options::default().env("STRONGROOM_SHUTDOWN_GRACE", "1")).await;
    let admin = app.admin();
    assert_eq!(app.put("k", "kept", &admin).await.status, 200);
    // A client that sends half a request head and then nothing more.
    let addr = app.addr.trim_start_matches("http://").to_owned();
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(&mut stalled, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = std::time::Instant::now();
    signal(&app.child, "TERM");
    let status = wait_timeout(&mut app.child, Duration::from_secs(15))
        .expect("exits despite the half-sent request");
    assert_eq!(status.code(), Some(0));
    let waited = signalled.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "waited the grace: {waited:?}"
    );
    assert!(app.log_shows("shutdown grace is over").await);
    drop(stalled);
    let again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    assert_eq!(again.get("k", &admin).await.json()["value"], "kept");
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    if on_nats() {
        return; // gateways over nats share the store by design
    }
    let app = spawn_app().await;
    let admin = app.admin();
    assert_eq!(app.put("k", "first", &admin).await.status, 200);
    let stderr = refused_start(command(&app.data_dir));
    assert!(
        stderr.contains("in use by another strongroom server"),
        "{stderr}"
    );
    // The first server is undisturbed.
    assert_eq!(app.get("k", &admin).await.json()["value"], "first");
}

/// Readers polling a key while one writer changes it never see a value
/// older than the last acknowledged write, and a GET after an acknowledged
/// delete answers 404 (the read cache is invalidated before a write is
/// answered).
#[tokio::test]
async fn reads_never_go_back_behind_an_acknowledged_write() {
    let app = Arc::new(spawn_app().await);
    let admin = app.admin();
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (app, admin, acked, done) = (app.clone(), admin.clone(), acked.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let floor = acked.load(std::sync::atomic::Ordering::SeqCst);
                let reply = app.get("race", &admin).await;
                if floor == 0 {
                    continue;
                }
                assert_eq!(reply.status, 200, "a read after write {floor} failed");
                let seen: u64 = reply.json()["value"].as_str().unwrap().parse().unwrap();
                assert!(
                    seen >= floor,
                    "read {seen} after write {floor} was acknowledged"
                );
                reads += 1;
            }
            reads
        }));
    }
    for i in 1..=200u64 {
        assert_eq!(app.put("race", &i.to_string(), &admin).await.status, 200);
        acked.store(i, std::sync::atomic::Ordering::SeqCst);
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    assert_eq!(app.get("race", &admin).await.json()["value"], "200");
    assert_eq!(app.delete("race", &admin).await.status, 200);
    assert_eq!(app.get("race", &admin).await.status, 404);
    assert_eq!(app.put("race", "again", &admin).await.status, 200);
    assert_eq!(app.get("race", &admin).await.json()["value"], "again");
}
