//! Key lifecycle on the real binary: a keyring of master keys reloaded on
//! SIGHUP and `rekey` while serving, a rekey killed half-way, a start that
//! lacks a master key some data key needs, data-key rotation by the API,
//! the CLI and the seal limit, and `reseal` beside concurrent writes.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use base64::Engine as _;
use strongroom::crypto::MasterKey;

use crate::helpers::*;

/// A fresh random master key, as base64 text.
fn new_key() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn kek_id(key: &str) -> String {
    MasterKey::from_base64(key).unwrap().id().to_string()
}

/// Writes the master key file: one key a line, the first active.
fn write_keys(path: &Path, keys: &[&str]) {
    std::fs::write(path, keys.join("\n") + "\n").unwrap();
}

/// Runs a store tool on `data_dir` with the key file.
fn tool(data_dir: &Path, keyfile: &Path, args: &[&str]) -> Output {
    command(data_dir)
        .env("STRONGROOM_MASTER_KEY_FILE", keyfile)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A data dir and a key file outside it, kept for the test's length.
struct Place {
    _temp: tempfile::TempDir,
    data: PathBuf,
    keyfile: PathBuf,
}

fn place() -> Place {
    let temp = tempfile::tempdir().unwrap();
    Place {
        data: temp.path().join("data"),
        keyfile: temp.path().join("master.keys"),
        _temp: temp,
    }
}

async fn serve(p: &Place, extra: &[(&str, &str)]) -> TestApp {
    let mut options = Options::default()
        .data_dir(&p.data)
        .env("STRONGROOM_MASTER_KEY_FILE", p.keyfile.to_str().unwrap());
    for (name, value) in extra {
        options = options.env(name, value);
    }
    spawn_with(options).await
}

/// Every (key, version) -> value written so far.
type Written = Vec<(String, u64, String)>;

async fn write_versions(
    app: &TestApp,
    cred: &Cred,
    keys: &[&str],
    versions: u64,
    out: &mut Written,
) {
    for key in keys {
        for v in 1..=versions {
            let value = format!("{key}-value-{v}");
            assert_eq!(app.put(key, &value, cred).await.status, 200);
            let meta = app
                .send(app.client.get(app.url(&format!("/metadata/{key}"))), cred)
                .await
                .json();
            let version = meta["current_version"].as_u64().unwrap();
            out.push((key.to_string(), version, value));
        }
    }
}

async fn assert_all_read_back(app: &TestApp, cred: &Cred, written: &Written) {
    for (key, version, value) in written {
        let reply = app.get(&format!("{key}?version={version}"), cred).await;
        assert_eq!(reply.status, 200, "{key} v{version}: {}", reply.body);
        assert_eq!(reply.json()["value"], value.as_str(), "{key} v{version}");
    }
}

async fn dek_ids(app: &TestApp, cred: &Cred, key: &str) -> Vec<u64> {
    let meta = app
        .send(app.client.get(app.url(&format!("/metadata/{key}"))), cred)
        .await
        .json();
    meta["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["dek_id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_rekey_while_serving_lets_the_old_master_key_leave_the_file() {
    let p = place();
    let (a, b) = (new_key(), new_key());
    write_keys(&p.keyfile, &[&a]);
    let mut app = serve(&p, &[]).await;
    let admin = app.admin();
    let acme = Cred::ApiKey(app.create_key("acme", &[]));
    let (mut mine, mut theirs, mut new) = (Written::new(), Written::new(), Written::new());
    write_versions(&app, &admin, &["db/one", "db/two"], 3, &mut mine).await;
    write_versions(&app, &acme, &["svc/x"], 2, &mut theirs).await;
    // A second data key for `default`: three data keys under A in all.
    let rotated = app
        .send(app.client.post(app.url("/keys/rotate")), &admin)
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert_eq!(rotated.json()["dek_id"], 2);
    write_versions(&app, &admin, &["db/one"], 1, &mut mine).await;

    // B joins the file in front, and the running server takes it.
    write_keys(&p.keyfile, &[&b, &a]);
    signal(&app.child, "HUP");
    assert!(
        app.log_shows("master keys reloaded").await,
        "{}",
        app.log_text()
    );
    // A new tenant's first data key is wrapped under B already.
    let beta = Cred::ApiKey(app.create_key("beta", &[]));
    write_versions(&app, &beta, &["b/k"], 1, &mut new).await;

    let first = tool(&p.data, &p.keyfile, &["rekey"]);
    assert_eq!(
        stdout(&first).trim(),
        format!("rewrapped 3 data keys under master key {}", kek_id(&b))
    );
    let again = tool(&p.data, &p.keyfile, &["rekey"]);
    assert!(stdout(&again).starts_with("rewrapped 0 data keys"));
    // Still serving meanwhile, under both keys.
    assert_all_read_back(&app, &admin, &mine).await;

    write_keys(&p.keyfile, &[&b]);
    assert_eq!(app.terminate().code(), Some(0));
    let first_log = app.log_text();
    let app = serve(&p, &[]).await;
    assert_all_read_back(&app, &admin, &mine).await;
    assert_all_read_back(&app, &acme, &theirs).await;
    assert_all_read_back(&app, &beta, &new).await;
    for text in [
        first_log,
        app.log_text(),
        String::from_utf8_lossy(&first.stderr).into(),
    ] {
        for key in [&a, &b] {
            assert!(!text.contains(key.as_str()), "a master key reached a log");
        }
    }
}

#[tokio::test]
async fn a_rekey_killed_half_way_finishes_when_run_again_and_a_missing_key_is_named() {
    let p = place();
    let (a, b) = (new_key(), new_key());
    write_keys(&p.keyfile, &[&a]);
    let mut app = serve(&p, &[]).await;
    let mut creds = Vec::new();
    for tenant in ["t1", "t2", "t3"] {
        let cred = Cred::ApiKey(app.create_key(tenant, &[]));
        let mut mine = Written::new();
        write_versions(&app, &cred, &["k"], 2, &mut mine).await;
        creds.push((cred, mine));
    }
    let admin = app.admin();
    let mut mine = Written::new();
    write_versions(&app, &admin, &["d"], 1, &mut mine).await;
    creds.push((admin, mine));
    assert_eq!(app.terminate().code(), Some(0));

    write_keys(&p.keyfile, &[&b, &a]);
    let killed = command(&p.data)
        .env("STRONGROOM_MASTER_KEY_FILE", &p.keyfile)
        .env("STRONGROOM_FAILPOINT", "rekey-after-one")
        .arg("rekey")
        .output()
        .unwrap();
    assert!(!killed.status.success(), "the failpoint stops the rekey");

    // Three data keys still need A: a start without it names A and
    // changes nothing.
    write_keys(&p.keyfile, &[&b]);
    let before = store_bytes(&p.data);
    let mut refused = command(&p.data);
    refused.env("STRONGROOM_MASTER_KEY_FILE", &p.keyfile);
    let err = refused_start(refused);
    assert!(
        err.contains(&format!(
            "master key {}, which is not in the keyring",
            kek_id(&a)
        )),
        "{err}"
    );
    assert_eq!(
        store_bytes(&p.data),
        before,
        "a refused start wrote to the store"
    );

    write_keys(&p.keyfile, &[&b, &a]);
    let rest = tool(&p.data, &p.keyfile, &["rekey"]);
    assert!(
        stdout(&rest).starts_with("rewrapped 3 data keys"),
        "{}",
        stdout(&rest)
    );
    write_keys(&p.keyfile, &[&b]);
    let app = serve(&p, &[]).await;
    for (cred, mine) in &creds {
        assert_all_read_back(&app, cred, mine).await;
    }
}

/// The embedded store's files, to show a refused start left them alone
/// (empty on nats, whose data is elsewhere).
fn store_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    if on_nats() {
        return Vec::new();
    }
    let mut out: Vec<_> = ["strongroom.db", "strongroom.db-wal", "audit.log"]
        .iter()
        .filter_map(|n| Some((n.to_string(), std::fs::read(dir.join(n)).ok()?)))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn data_keys_rotate_by_the_api_the_cli_and_the_seal_limit() {
    let p = place();
    write_keys(&p.keyfile, &[&new_key()]);
    let app = serve(&p, &[("STRONGROOM_DEK_MAX_SEALS", "5")]).await;
    let admin = app.admin();
    let plain = Cred::ApiKey(app.create_key("default", &[]));
    let denied = app
        .send(app.client.post(app.url("/keys/rotate")), &plain)
        .await;
    assert_eq!(denied.status, 403);

    // Five seals under data key 1; the sixth is under a new key 2.
    let mut written = Written::new();
    let keys: Vec<String> = (0..6).map(|i| format!("limit/{i}")).collect();
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    write_versions(&app, &admin, &names, 1, &mut written).await;
    let mut sealed_with = Vec::new();
    for key in &names {
        sealed_with.extend(dek_ids(&app, &admin, key).await);
    }
    assert_eq!(sealed_with, [1, 1, 1, 1, 1, 2]);

    // The API: new writes under the new key; old versions still open.
    let rotated = app
        .send(app.client.post(app.url("/keys/rotate")), &admin)
        .await;
    assert_eq!(rotated.json()["dek_id"], 3);
    write_versions(&app, &admin, &["limit/0"], 1, &mut written).await;
    assert_eq!(dek_ids(&app, &admin, "limit/0").await, [1, 3]);

    // The CLI, against the running server: new writes follow within the
    // keyring's refresh (a second).
    let out = tool(&p.data, &p.keyfile, &["rotate-dek", "--tenant", "default"]);
    assert_eq!(
        stdout(&out).trim(),
        "tenant default now seals with data key 4"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        write_versions(&app, &admin, &["limit/1"], 1, &mut written).await;
        if dek_ids(&app, &admin, "limit/1").await.last() == Some(&4) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "new writes never used data key 4"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_all_read_back(&app, &admin, &written).await;
    let audit = app
        .send(app.client.get(app.url("/audit?limit=1000")), &admin)
        .await
        .json();
    let rotations = audit["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["action"] == "keys.rotate")
        .map(|l| l["status"].as_u64().unwrap())
        .collect::<Vec<_>>();
    // The refusal and the rotation, each with its own line.
    assert_eq!(rotations, [403, 200], "{audit}");
}

#[tokio::test]
async fn reseal_reencrypts_every_version_and_never_undoes_a_concurrent_write() {
    sqlite_only!("a JetStream key's history cannot be rewritten; the nats test checks the refusal");
    let p = place();
    write_keys(&p.keyfile, &[&new_key()]);
    let app = serve(&p, &[]).await;
    let admin = app.admin();
    let keys: Vec<String> = (0..150).map(|i| format!("r/{i:03}")).collect();
    for key in &keys {
        for v in 1..=3 {
            assert_eq!(
                app.put(key, &format!("{key}-{v}"), &admin).await.status,
                200
            );
        }
    }
    let rotated = app
        .send(app.client.post(app.url("/keys/rotate")), &admin)
        .await;
    assert_eq!(rotated.json()["dek_id"], 2);

    // One writer goes on writing every key's next version while reseal runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, url, cred, keys, stop) = (
            app.client.clone(),
            app.url("/secrets"),
            admin_key(&admin),
            keys.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut next = vec![4u64; keys.len()];
            let mut acknowledged = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for (i, key) in keys.iter().enumerate().step_by(7) {
                    let body =
                        serde_json::json!({"key": key, "value": format!("{key}-{}", next[i])});
                    let r = client
                        .put(&url)
                        .header("X-Api-Key", &cred)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    next[i] += 1;
                    acknowledged += 1;
                }
            }
            (next, acknowledged)
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (data, keyfile) = (p.data.clone(), p.keyfile.clone());
    let out = tokio::task::spawn_blocking(move || {
        tool(
            &data,
            &keyfile,
            &["reseal", "--tenant", "default", "--batch", "40"],
        )
    })
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (next, acknowledged) = writer.await.unwrap();
    assert!(acknowledged > 0, "the writer wrote during the reseal");
    let text = stdout(&out);
    let resealed: usize = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(resealed > 0 && resealed <= 450, "{text}");

    for (i, key) in keys.iter().enumerate() {
        // Every retained version is under data key 2 and holds what was
        // written for it; the newest is the writer's last acknowledged.
        assert!(
            dek_ids(&app, &admin, key).await.iter().all(|&d| d == 2),
            "{key}"
        );
        let meta = app
            .send(app.client.get(app.url(&format!("/metadata/{key}"))), &admin)
            .await
            .json();
        let current = meta["current_version"].as_u64().unwrap();
        assert_eq!(current, next[i] - 1, "{key}");
        for v in meta["versions"].as_array().unwrap() {
            let n = v["version"].as_u64().unwrap();
            let got = app.get(&format!("{key}?version={n}"), &admin).await.json();
            assert_eq!(got["value"], format!("{key}-{n}").as_str());
        }
    }
}

fn admin_key(cred: &Cred) -> String {
    match cred {
        Cred::ApiKey(k) => k.clone(),
        _ => unreachable!("the admin has an API key"),
    }
}

#[tokio::test]
async fn reseal_on_nats_is_refused_and_says_what_to_do() {
    nats_only!("the embedded store reseals; the test above covers it");
    let p = place();
    write_keys(&p.keyfile, &[&new_key()]);
    let app = serve(&p, &[]).await;
    assert_eq!(app.put("k", "v", &app.admin()).await.status, 200);
    let out = tool(&p.data, &p.keyfile, &["reseal", "--tenant", "default"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reseal needs the embedded store") && err.contains("migrate"),
        "{err}"
    );
}

/// Reproduction (issue 32, item 6): a tenant could hold any number of API
/// keys and data keys. Now `POST /apikeys` and `POST /keys/rotate` answer
/// 409 at the tenant's cap, and a revoked key makes room again.
#[tokio::test]
async fn a_tenant_holds_at_most_its_caps_of_api_keys_and_data_keys() {
    let app = spawn_with(
        Options::default()
            .env("STRONGROOM_MAX_APIKEYS_PER_TENANT", "3")
            .env("STRONGROOM_MAX_DATA_KEYS_PER_TENANT", "2"),
    )
    .await;
    let admin = Cred::ApiKey(app.create_key(
        "capped",
        &[
            "--scopes",
            "apikeys:admin,keys:admin,secrets:read,secrets:write",
        ],
    ));
    let create = |name: &str| {
        app.client
            .post(app.url("/apikeys"))
            .header("Content-Type", "application/json")
            .body(serde_json::json!({ "name": name, "scopes": ["secrets:read"] }).to_string())
    };
    // The admin key itself is one of the three.
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let r = app.send(create(name), &admin).await;
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    let over = app.send(create("c"), &admin).await;
    assert_eq!(
        (over.status, over.error().as_str()),
        (409, "limit reached"),
        "{}",
        over.body
    );
    let revoke = app.client.delete(app.url(&format!("/apikeys/{}", ids[0])));
    assert_eq!(app.send(revoke, &admin).await.status, 200);
    assert_eq!(app.send(create("c"), &admin).await.status, 201);
    // Another tenant is not counted.
    let other = app.create_key("other", &["--scopes", "apikeys:admin,secrets:read"]);
    assert_eq!(
        app.send(create("theirs"), &Cred::ApiKey(other))
            .await
            .status,
        201
    );

    let rotate = || app.client.post(app.url("/keys/rotate"));
    // The first write makes data key 1; one rotation makes 2, the cap.
    assert_eq!(app.put("capped/k", "v", &admin).await.status, 200);
    let first = app.send(rotate(), &admin).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let over = app.send(rotate(), &admin).await;
    assert_eq!(
        (over.status, over.error().as_str()),
        (409, "limit reached"),
        "{}",
        over.body
    );
}
