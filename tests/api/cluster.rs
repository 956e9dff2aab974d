//! Scale-out on a 3-node NATS cluster (started by the test on loopback
//! ports) with R3 buckets: two gateways serve one tenant; a write through
//! one reads back through the other; and while 8 clients write through both,
//! one NATS node is SIGKILLed: writes may fail (503) during the failover, but
//! every acknowledged write reads back with its exact value through both.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::helpers::*;
use crate::outage::wait_ready;

struct Node {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts three clustered `nats-server -js` nodes; returns them and the
/// comma-separated client URLs. A port `free_port` found free can be taken
/// by another test's connection before a node binds it (the node then
/// exits), so a start that does not come up is tried again on new ports.
fn start_cluster() -> (Vec<Node>, String) {
    for attempt in 1..=3 {
        if let Some(started) = try_start_cluster() {
            return started;
        }
        eprintln!("a 3-node nats cluster did not come up (attempt {attempt}); new ports");
    }
    panic!("a 3-node nats cluster did not come up in 3 attempts");
}

fn try_start_cluster() -> Option<(Vec<Node>, String)> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let mut nodes = Vec::new();
    for (i, (port, cluster)) in ports.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let routes: Vec<String> = ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, (_, c))| format!("nats://127.0.0.1:{c}"))
            .collect();
        let child = Command::new(nats_server_binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-n", &format!("node{i}"), "--cluster_name", "c"])
            .args(["--cluster", &format!("nats://127.0.0.1:{cluster}")])
            .args(["--routes", &routes.join(",")])
            .arg("-sd")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        nodes.push(Node { child, _dir: dir });
    }
    for (port, _) in &ports {
        if !listens(*port, Duration::from_secs(10)) {
            return None;
        }
    }
    let urls: Vec<String> = ports
        .iter()
        .map(|(p, _)| format!("nats://127.0.0.1:{p}"))
        .collect();
    Some((nodes, urls.join(",")))
}

/// Waits until JetStream answers API requests (a meta leader is elected)
/// and an R3 stream can be placed.
async fn wait_for_jetstream(url: &str) {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: "readiness".into(),
                subjects: vec!["readiness".into()],
                num_replicas: 3,
                ..Default::default()
            })
            .await;
        if probe.is_ok() {
            let _ = js.delete_stream("readiness").await;
            return;
        }
        assert!(
            Instant::now() < deadline,
            "JetStream cluster not ready: {probe:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_on_an_r3_cluster_keep_every_acknowledged_write_through_a_node_kill() {
    nats_only!("starts its own NATS cluster; run once, in the nats pass");
    let started = Instant::now();
    let (mut nodes, urls) = start_cluster();
    wait_for_jetstream(urls.split(',').next().unwrap()).await;
    let master = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let options = Options::default()
        .env("STRONGROOM_STORE", "nats")
        .env("STRONGROOM_NATS_URL", &urls)
        .env("STRONGROOM_NATS_BUCKET", "cluster")
        .env("STRONGROOM_NATS_REPLICAS", "3")
        .env("STRONGROOM_MASTER_KEY", &master);
    let a = spawn_with(options.clone()).await;
    // A fresh R3 stream may still be electing its leader: the gateway then
    // serves 503 until start-up finishes. Only then start the second one.
    wait_ready(&a, Duration::from_secs(30)).await;
    let b = spawn_with(options.clone()).await;
    wait_ready(&b, Duration::from_secs(30)).await;
    let has_bootstrap = |app: &TestApp| app.log_text().lines().any(|l| l.starts_with("sr_"));
    assert!(
        has_bootstrap(&a) && !has_bootstrap(&b),
        "one bootstrap key, from the first gateway"
    );
    // A key issued by the CLI against the cluster works on both gateways.
    let mut cli = command(&a.data_dir);
    for (name, value) in &options.env {
        cli.env(name, value);
    }
    let out = cli
        .args([
            "apikey", "create", "--store", "nats", "--tenant", "acme", "--name", "c",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let cred = Cred::ApiKey(key.clone());
    assert_eq!(a.put("first", "through-a", &cred).await.status, 200);
    assert_eq!(b.get("first", &cred).await.json()["value"], "through-a");

    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let failed = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let mut writers = Vec::new();
    for w in 0..8 {
        let url = if w % 2 == 0 {
            a.url("/secrets")
        } else {
            b.url("/secrets")
        };
        let (client, key, acked, failed, stop) = (
            client.clone(),
            key.clone(),
            acked.clone(),
            failed.clone(),
            stop.clone(),
        );
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // One key per write: an acknowledged value is the only one.
                let (name, value) = (format!("c{w}/{i}"), format!("value-{w}-{i}"));
                i += 1;
                let r = client
                    .put(&url)
                    .header("X-Api-Key", &key)
                    .json(&serde_json::json!({ "key": name, "value": value }))
                    .send()
                    .await;
                match r.map(|r| r.status().as_u16()) {
                    Ok(200) => {
                        acked.lock().unwrap().insert(name, value);
                    }
                    Ok(503) | Err(_) => *failed.lock().unwrap() += 1,
                    Ok(other) => panic!("write answered {other}"),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_kill = acked.lock().unwrap().len();
    // SIGKILL the first node, the one the gateways' URL lists first.
    nodes[0].child.kill().unwrap();
    let _ = nodes[0].child.wait();
    // Let writes go on through the failover (reconnect, leader elections:
    // a few seconds, more on a loaded machine) until a good number has been
    // acknowledged after the kill, or 40 s have passed.
    let killed_at = Instant::now();
    while killed_at.elapsed() < Duration::from_secs(40) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if acked.lock().unwrap().len() >= before_kill + 200
            && killed_at.elapsed() > Duration::from_secs(6)
        {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let after_kill = acked.len() - before_kill;
    eprintln!(
        "cluster: {} acknowledged ({before_kill} before the kill, {after_kill} after), {} failed",
        acked.len(),
        failed.lock().unwrap()
    );
    assert!(
        before_kill > 0 && after_kill > 0,
        "writes went on after the kill"
    );
    for (name, value) in &acked {
        for gateway in [&a, &b] {
            let mut tries = 0;
            loop {
                let r = gateway.get(name, &cred).await;
                if r.status == 503 && tries < 50 {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                assert_eq!(r.status, 200, "{name}: {}", r.body);
                assert_eq!(r.json()["value"], value.as_str(), "{name}");
                break;
            }
        }
    }
    eprintln!("cluster test took {:?}", started.elapsed());
}
