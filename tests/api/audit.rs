//! The audit trail: one line per request on a secret or API key, allowed or
//! refused; a verifiable hash chain; fail closed; no values or credentials.

use crate::helpers::*;

/// The trail's text: audit.log, or on nats the stream as `audit export`
/// writes it (the same lines).
pub(crate) fn trail(data_dir: &std::path::Path) -> String {
    if on_nats() {
        let out = command(data_dir)
            .args(["audit", "export"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    } else {
        std::fs::read_to_string(data_dir.join("audit.log")).unwrap()
    }
}

pub(crate) fn lines(app: &TestApp) -> Vec<serde_json::Value> {
    trail(&app.data_dir)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `strongroom audit verify` on the test's store (the stream on nats).
fn verify(data_dir: &std::path::Path) -> (bool, String) {
    verify_with(data_dir, &[])
}

fn verify_with(data_dir: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = command(data_dir)
        .args(["audit", "verify"])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn every_request_on_a_secret_or_key_leaves_one_line() {
    let app = spawn_app().await;
    let admin = app.admin();
    let Cred::ApiKey(admin_key) = &admin else {
        unreachable!()
    };
    let admin_id = admin_key.split('_').nth(1).unwrap().to_owned();
    app.put("a/b", "audit-canary-value", &admin).await;
    app.get("a/b", &admin).await;
    app.get("a/b", &Cred::None).await;
    let wrong = format!("sr_{admin_id}_{}", "A".repeat(43));
    app.get("a/b", &Cred::ApiKey(wrong.clone())).await;
    app.delete("a/b", &admin).await;
    app.get("a/b", &admin).await;
    // HEAD is answered by the GET handler, and audited as a read; a method
    // the route does not have and the operational routes are not audited.
    app.send(app.client.head(app.url("/secrets/a/b")), &admin)
        .await;
    app.send(app.client.patch(app.url("/secrets/a/b")), &admin)
        .await;
    app.send(app.client.get(app.url("/healthz")), &Cred::None)
        .await;
    app.send(app.client.get(app.url("/readyz")), &Cred::None)
        .await;
    app.send(app.client.get(app.url("/apikeys")), &admin).await;
    let log = lines(&app);
    let summary: Vec<(String, u64)> = log
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap().to_owned(),
                l["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("secrets.write".to_string(), 200),
            ("secrets.read".to_string(), 200),
            ("secrets.read".to_string(), 401),
            ("secrets.read".to_string(), 401),
            ("secrets.delete".to_string(), 200),
            ("secrets.read".to_string(), 404),
            ("secrets.read".to_string(), 404),
            ("apikeys.list".to_string(), 200),
        ]
    );
    let first = &log[0];
    for field in [
        "time",
        "request_id",
        "tenant",
        "subject",
        "action",
        "key",
        "status",
        "client",
        "v",
        "seq",
        "prev",
        "mac",
    ] {
        assert!(!first[field].is_null(), "{field} in {first}");
    }
    assert_eq!(first["tenant"], "default");
    assert_eq!(first["key"], "a/b");
    assert_eq!(first["subject"], format!("apikey:{admin_id}"));
    assert!(first["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(
        log[2]["subject"].is_null() && log[2]["tenant"].is_null(),
        "no credential, no subject"
    );
    assert_eq!(
        log[3]["subject"],
        format!("apikey:{admin_id}"),
        "a key id guess for a refused key"
    );
    let text = trail(&app.data_dir);
    for secret in ["audit-canary-value", admin_key.as_str(), &wrong[20..]] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }
    let (ok, out) = verify(&app.data_dir);
    assert!(ok, "{out}");
}

async fn app_with_lines() -> TestApp {
    let mut app = spawn_app().await;
    let admin = app.admin();
    for i in 0..6 {
        app.put(&format!("k{i}"), "v", &admin).await;
    }
    assert_eq!(app.terminate().code(), Some(0));
    let (ok, out) = verify(&app.data_dir);
    assert!(ok, "{out}");
    app
}

/// Tampers with the trail's lines in audit.log. A stream denies edits and
/// deletes, so on nats the stream is exported to audit.log first: the file
/// verifier then checks exactly the stream's lines.
fn rewrite(app: &TestApp, f: impl FnOnce(&mut Vec<String>)) {
    let path = app.data_dir.join("audit.log");
    let mut lines: Vec<String> = trail(&app.data_dir).lines().map(str::to_owned).collect();
    f(&mut lines);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

/// Verifies audit.log (on nats: the exported, tampered copy) with the
/// store's audit key.
fn verify_file(data_dir: &std::path::Path) -> (bool, String) {
    let path = data_dir.join("audit.log");
    verify_with(data_dir, &["--file", path.to_str().unwrap()])
}

#[tokio::test]
async fn verify_names_an_edited_line() {
    let app = app_with_lines().await;
    rewrite(&app, |l| {
        l[3] = l[3].replace("\"status\":200", "\"status\":404")
    });
    let (ok, out) = verify_file(&app.data_dir);
    assert!(!ok);
    assert!(out.contains("line 4"), "{out}");
}

#[tokio::test]
async fn verify_names_where_a_line_was_removed() {
    let app = app_with_lines().await;
    rewrite(&app, |l| {
        l.remove(2);
    });
    let (ok, out) = verify_file(&app.data_dir);
    assert!(!ok);
    assert!(out.contains("line 3"), "{out}");
}

#[tokio::test]
async fn verify_names_where_lines_were_reordered() {
    let app = app_with_lines().await;
    rewrite(&app, |l| l.swap(1, 4));
    let (ok, out) = verify_file(&app.data_dir);
    assert!(!ok);
    assert!(out.contains("line 2"), "{out}");
}

#[tokio::test]
async fn the_chain_continues_across_restarts() {
    let app = app_with_lines().await;
    let again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    again.put("after", "v", &again_admin(&app)).await;
    drop(again);
    let (ok, out) = verify(&app.data_dir);
    assert!(ok, "{out}");
    assert_eq!(lines(&app).len(), 7);
}

fn again_admin(app: &TestApp) -> Cred {
    Cred::ApiKey(app.bootstrap_key.clone().unwrap())
}

#[tokio::test]
async fn when_the_audit_stream_is_full_the_request_fails_503_and_changes_nothing() {
    nats_only!(
        "sqlite's full disk is a_full_disk_answers_503_and_service_returns_on_the_same_chain"
    );
    let mut app = spawn_app().await;
    let admin = app.admin();
    app.put("kept", "before", &admin).await;
    assert_eq!(app.terminate().code(), Some(0));
    // A full stream: it holds no more messages and refuses new ones.
    nats_audit_full(&app.data_dir, true).await;
    let broken = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    let r = broken.put("new", "never", &admin).await;
    assert_eq!((r.status, r.error()), (503, "service unavailable".into()));
    let r = broken.put("kept", "changed", &admin).await;
    assert_eq!(r.status, 503);
    assert_eq!(broken.delete("kept", &admin).await.status, 503);
    let r = broken.get("kept", &admin).await;
    assert_eq!(r.status, 503);
    assert!(
        !r.body.contains("before"),
        "no value without its audit line"
    );
    let r = broken
        .create_api_key(serde_json::json!({ "name": "x" }), &admin)
        .await;
    assert_eq!(r.status, 503);
    assert!(!r.body.contains("sr_"));
    drop(broken);
    nats_audit_full(&app.data_dir, false).await;
    let again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    assert_eq!(again.get("new", &admin).await.status, 404);
    assert_eq!(again.get("kept", &admin).await.json()["value"], "before");
    let keys = again.list_api_keys(&admin).await.json();
    assert_eq!(
        keys["apikeys"].as_array().unwrap().len(),
        1,
        "no key was minted"
    );
}

/// Makes the nats audit stream full (no more messages, new ones refused) or
/// lifts that limit again.
async fn nats_audit_full(data_dir: &std::path::Path, full: bool) {
    use async_nats::jetstream::stream::DiscardPolicy;
    let client = async_nats::connect(shared_nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(format!("{}_audit", bucket_for(data_dir)))
        .await
        .unwrap();
    let info = stream.info().await.unwrap().clone();
    let mut config = info.config.clone();
    if full {
        config.max_messages = info.state.messages as i64;
        config.discard = DiscardPolicy::New;
    } else {
        config.max_messages = -1;
        config.discard = DiscardPolicy::Old;
    }
    js.update_stream(config).await.unwrap();
}

#[tokio::test]
async fn two_gateways_append_their_own_chains_to_the_stream() {
    nats_only!("two gateways share one trail only on the nats store");
    let a = spawn_app().await;
    let b = spawn_with(Options::default().data_dir(&a.data_dir)).await;
    let admin = a.admin();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (client, urls, admin) = (
            a.client.clone(),
            [a.url("/secrets"), b.url("/secrets")],
            admin.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let Cred::ApiKey(key) = admin else {
                unreachable!()
            };
            for i in 0..10 {
                let body = serde_json::json!({ "key": format!("w{w}/{i}"), "value": "v" });
                let r = client
                    .put(&urls[(w + i) % 2])
                    .header("X-Api-Key", &key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (ok, out) = verify(&a.data_dir);
    assert!(ok, "{out}");
    assert!(out.contains("intact, 80 lines in 2 chains"), "{out}");
    let lines = lines(&a);
    assert_eq!(lines.len(), 80);
    // Every line names its gateway: two, each with a chain numbered from 1.
    let mut gateways = std::collections::BTreeMap::<String, Vec<u64>>::new();
    for line in &lines {
        let gateway = line["gateway"].as_str().expect("a gateway id").to_owned();
        gateways
            .entry(gateway)
            .or_default()
            .push(line["seq"].as_u64().unwrap());
    }
    assert_eq!(gateways.len(), 2, "{gateways:?}");
    for seqs in gateways.values() {
        assert_eq!(*seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    }
    // Exported, the merged chains verify chain by chain: an edit, a gap or
    // a reorder in either is named with its gateway.
    let second = gateways.keys().nth(1).unwrap().clone();
    let mark = format!("\"gateway\":\"{second}\"");
    let at: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l["gateway"] == second.as_str())
        .map(|(i, _)| i)
        .collect();
    type Tamper = Box<dyn Fn(&mut Vec<String>)>;
    let (a1, a2) = (at[1], at[2]);
    let tampers: [(&str, Tamper); 3] = [
        (
            "edit",
            Box::new(move |l: &mut Vec<String>| {
                l[a1] = l[a1].replace("\"status\":200", "\"status\":500")
            }),
        ),
        (
            "gap",
            Box::new(move |l: &mut Vec<String>| {
                l.remove(a1);
            }),
        ),
        (
            "reorder",
            Box::new(move |l: &mut Vec<String>| l.swap(a1, a2)),
        ),
    ];
    let exported = trail(&a.data_dir);
    for (what, tamper) in tampers {
        let mut tampered: Vec<String> = exported.lines().map(str::to_owned).collect();
        tamper(&mut tampered);
        assert!(tampered.iter().any(|l| l.contains(&mark)));
        std::fs::write(a.data_dir.join("audit.log"), tampered.join("\n") + "\n").unwrap();
        let (ok, out) = verify_file(&a.data_dir);
        assert!(!ok, "{what}: {out}");
        assert!(
            out.contains(&format!("the chain of gateway {second}: line 2 is bad")),
            "{what}: {out}"
        );
    }
}

#[tokio::test]
async fn a_gateway_killed_mid_append_leaves_every_chain_intact() {
    nats_only!("gateways keep their own chains only on the nats store");
    let a = spawn_app().await;
    let mut b = spawn_with(Options::default().data_dir(&a.data_dir)).await;
    let admin = a.admin();
    let Cred::ApiKey(key) = admin.clone() else {
        unreachable!()
    };
    // Both gateways take writes; B is killed while its lines are in flight.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (client, url, key) = (
            a.client.clone(),
            if w % 2 == 0 {
                a.url("/secrets")
            } else {
                b.url("/secrets")
            },
            key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut answered = Vec::new();
            for i in 0..200 {
                let name = format!("kill/{w}/{i}");
                let body = serde_json::json!({ "key": name, "value": "v" });
                match client
                    .put(&url)
                    .header("X-Api-Key", &key)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => answered.push(name),
                    Ok(r) => panic!("{}", r.status()),
                    // B is gone.
                    Err(_) => break,
                }
            }
            answered
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    signal(&b.child, "KILL");
    let _ = b.child.wait();
    let mut answered = Vec::new();
    for t in tasks {
        answered.extend(t.await.unwrap());
    }
    assert!(answered.len() >= 800, "{} answered", answered.len());
    let (ok, out) = verify(&a.data_dir);
    assert!(ok, "{out}");
    assert!(out.contains("in 2 chains"), "{out}");
    // Every write answered 200 has its line.
    let lines = lines(&a);
    let written: std::collections::HashSet<String> = lines
        .iter()
        .filter(|l| l["action"] == "secrets.write" && l["status"] == 200)
        .filter_map(|l| l["key"].as_str().map(str::to_owned))
        .collect();
    for name in &answered {
        assert!(
            written.contains(name),
            "{name} answered 200 without its line"
        );
    }
}

/// Two gateways on nats (one on sqlite, which serves one process per file)
/// race `If-Match` writes on one key: each round exactly one writer wins,
/// and every request's line carries the status it answered with.
#[tokio::test]
async fn racing_writers_each_get_a_line_with_the_outcome_they_answered() {
    let a = spawn_app().await;
    let b = if on_nats() {
        Some(spawn_with(Options::default().data_dir(&a.data_dir)).await)
    } else {
        None
    };
    let urls = [a.url("/secrets"), b.as_ref().unwrap_or(&a).url("/secrets")];
    let admin = a.admin();
    let Cred::ApiKey(key) = &admin else {
        unreachable!()
    };
    let mut answered = std::collections::HashMap::new();
    for round in 0..12 {
        let name = format!("race/{round}");
        assert_eq!(a.put(&name, "seed", &admin).await.status, 200);
        let mut tasks = Vec::new();
        for w in 0..32 {
            let (client, url, key) = (a.client.clone(), urls[w % 2].clone(), key.clone());
            let body = serde_json::json!({ "key": name, "value": format!("w{w}") });
            let id = format!("race-{round}-{w}");
            tasks.push(tokio::spawn(async move {
                let r = client
                    .put(url)
                    .header("X-Api-Key", key)
                    .header("X-Request-Id", &id)
                    .header("If-Match", "\"1\"")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                (id, r.status().as_u16())
            }));
        }
        let mut winners = 0;
        for t in tasks {
            let (id, status) = t.await.unwrap();
            assert!(matches!(status, 200 | 412), "{id}: {status}");
            winners += usize::from(status == 200);
            answered.insert(id, status);
        }
        assert_eq!(winners, 1, "round {round}");
    }
    let mut logged = std::collections::HashMap::<String, Vec<u64>>::new();
    for line in lines(&a) {
        if let Some(id) = line["request_id"]
            .as_str()
            .filter(|id| id.starts_with("race-"))
        {
            assert_eq!(line["action"], "secrets.write", "{line}");
            logged
                .entry(id.to_owned())
                .or_default()
                .push(line["status"].as_u64().unwrap());
        }
    }
    for (id, status) in &answered {
        assert_eq!(
            logged.get(id).map(Vec::as_slice),
            Some(&[u64::from(*status)][..]),
            "request {id} answered {status}"
        );
    }
    assert_eq!(logged.len(), answered.len());
    let (ok, out) = verify(&a.data_dir);
    assert!(ok, "{out}");
}

/// A gateway that dies after its change is stored but before its line is
/// appended leaves the intent it recorded first; `audit verify` keeps the
/// chain intact and names the request, its key and that the change was made.
#[tokio::test]
async fn a_gateway_dying_between_change_and_line_leaves_an_intent_verify_names() {
    nats_only!("only the nats store writes a change and its line apart");
    let a = spawn_app().await;
    let admin = a.admin();
    let Cred::ApiKey(key) = &admin else {
        unreachable!()
    };
    assert_eq!(a.put("mid/crash", "one", &admin).await.status, 200);
    let mut dying = spawn_with(
        Options::default()
            .data_dir(&a.data_dir)
            .env("STRONGROOM_FAILPOINT", "after-change"),
    )
    .await;
    let sent = dying
        .client
        .put(dying.url("/secrets"))
        .header("X-Api-Key", key)
        .header("X-Request-Id", "dies-mid-change")
        .json(&serde_json::json!({ "key": "mid/crash", "value": "two" }))
        .send()
        .await;
    assert!(
        sent.is_err(),
        "no answer from a gateway that died: {sent:?}"
    );
    let status = wait_timeout(&mut dying.child, std::time::Duration::from_secs(10));
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    // The change stands: it was stored before the gateway died.
    assert_eq!(a.get("mid/crash", &admin).await.json()["value"], "two");
    let (ok, out) = verify(&a.data_dir);
    assert!(ok, "{out}");
    let named: Vec<&str> = out.lines().filter(|l| l.contains("has no line")).collect();
    assert_eq!(named.len(), 1, "{out}");
    assert!(
        named[0].contains("request dies-mid-change on $KV."),
        "{out}"
    );
    assert!(named[0].contains(".mid/crash has no line"), "{out}");
    assert!(named[0].ends_with("the change was made"), "{out}");
    assert!(
        lines(&a)
            .iter()
            .all(|l| l["request_id"] != "dies-mid-change"),
        "no line claims an outcome nobody saw"
    );
}

/// A small tmpfs, mounted for one test and unmounted after it.
pub(crate) struct Tmpfs(
    pub std::path::PathBuf,
    #[allow(dead_code)] tempfile::TempDir,
);

impl Tmpfs {
    /// `None` (the test then says it is skipped) unless this runs as root
    /// where mounting is allowed.
    pub(crate) fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("fs");
        std::fs::create_dir(&at).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Tmpfs(at, dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// `/readyz`'s status once its once-a-second probe has run again.
async fn readyz(app: &TestApp) -> u16 {
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    app.client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Fills the file system holding `dir` to the last byte; returns the filler.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while file.write_all(&small).is_ok() {}
    while file.write_all(&[0]).is_ok() {}
    path
}

/// A full disk (a real one: a tmpfs filled to the last byte) makes changes
/// and reads answer 503 and change nothing; once space returns the same
/// server carries on, on the same chain; after a restart every acknowledged
/// write is there and the trail verifies.
#[tokio::test]
async fn a_full_disk_answers_503_and_service_returns_on_the_same_chain() {
    if on_nats() {
        eprintln!("skipped on nats: the stream's full case is its own test");
        return;
    }
    let Some(fs) = Tmpfs::mount("16m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let data_dir = fs.0.join("data");
    let mut app = spawn_with(Options::default().data_dir(&data_dir)).await;
    let admin = app.admin();
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        assert_eq!(
            app.put(&format!("k{i}"), "before", &admin).await.status,
            200
        );
        acknowledged.push((format!("k{i}"), "before".to_owned()));
    }
    assert_eq!(readyz(&app).await, 200);
    let filler = fill(&fs.0);
    assert_eq!(readyz(&app).await, 503, "a full disk is not ready");
    let mut refused = 0;
    for i in 0..50 {
        let r = app.put(&format!("full{i}"), "never", &admin).await;
        match r.status {
            200 => acknowledged.push((format!("full{i}"), "never".to_owned())),
            503 => {
                assert_eq!(r.error(), "service unavailable");
                refused += 1;
            }
            other => panic!("a full disk answered {other}: {}", r.body),
        }
        let r = app.get("k0", &admin).await;
        assert!(matches!(r.status, 200 | 503), "{}", r.status);
        assert!(
            r.status == 200 || !r.body.contains("before"),
            "no value without its line"
        );
    }
    assert!(
        refused >= 45,
        "only {refused} of 50 writes on a full disk refused"
    );
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(readyz(&app).await, 200, "space is back");
    for i in 0..20 {
        let r = app.put(&format!("after{i}"), "again", &admin).await;
        assert_eq!(r.status, 200, "space is back: {}", r.body);
        acknowledged.push((format!("after{i}"), "again".to_owned()));
    }
    assert_eq!(app.terminate().code(), Some(0));
    let (ok, out) = verify(&data_dir);
    assert!(ok, "{out}");
    let again = spawn_with(Options::default().data_dir(&data_dir)).await;
    for (key, value) in &acknowledged {
        assert_eq!(
            again.get(key, &admin).await.json()["value"],
            value.as_str(),
            "{key}"
        );
    }
    for i in 0..50 {
        let key = format!("full{i}");
        if !acknowledged.iter().any(|(k, _)| *k == key) {
            assert_eq!(
                again.get(&key, &admin).await.status,
                404,
                "{key} was refused"
            );
        }
    }
}

#[tokio::test]
async fn the_audit_api_shows_a_tenant_only_its_own_lines_page_by_page() {
    let app = spawn_app().await;
    let admin = app.admin();
    let other = Cred::ApiKey(app.create_key(
        "other",
        &["--scopes", "secrets:read,secrets:write,audit:read"],
    ));
    for i in 0..5 {
        assert_eq!(app.put(&format!("mine/{i}"), "v", &admin).await.status, 200);
    }
    assert_eq!(app.put("theirs", "v", &other).await.status, 200);
    let stranger = Cred::ApiKey("sr_0123456789abcdef_notakey".into());
    assert_eq!(app.get("mine/0", &stranger).await.status, 401);

    let page = |after: Option<u64>, cred: Cred| {
        let url = match after {
            Some(a) => app.url(&format!("/audit?limit=2&after={a}")),
            None => app.url("/audit?limit=2"),
        };
        let app = &app;
        async move { app.send(app.client.get(url), &cred).await }
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let reply = page(after, admin.clone()).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let body = reply.json();
        let lines = body["lines"].as_array().unwrap();
        assert!(lines.len() <= 2, "{body}");
        seen.extend(lines.iter().cloned());
        match body["next"].as_u64() {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert!(seen.iter().all(|l| l["tenant"] == "default"), "{seen:?}");
    let seqs: Vec<u64> = seen.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let written: Vec<&str> = seen
        .iter()
        .filter(|l| l["action"] == "secrets.write")
        .map(|l| l["key"].as_str().unwrap())
        .collect();
    assert_eq!(written, ["mine/0", "mine/1", "mine/2", "mine/3", "mine/4"]);

    let theirs = page(None, other).await.json();
    let lines = theirs["lines"].as_array().unwrap();
    assert!(lines.iter().any(|l| l["key"] == "theirs"), "{theirs}");
    assert!(lines.iter().all(|l| l["tenant"] == "other"), "{theirs}");
    // The refused stranger's line belongs to no tenant: nobody is shown it.
    assert!(!seen.iter().any(|l| l["status"] == 401), "{seen:?}");
}

/// A client that connects from `127.0.0.2`, another address than the
/// tests' own.
pub(crate) fn client_from_another_address() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_guessing_flood_is_refused_429_and_summarised_not_logged_line_by_line() {
    let mut app = spawn_with(
        Options::default()
            .env("STRONGROOM_AUTH_FAILURE_LIMIT", "5")
            .env("STRONGROOM_AUTH_FAILURE_BURST", "10"),
    )
    .await;
    let admin = app.admin();
    assert_eq!(app.put("k", "v", &admin).await.status, 200);
    let flooder = client_from_another_address();
    let url = app.url("/secrets/k");
    let started = std::time::Instant::now();
    const FLOOD: usize = 400;
    const AT_ONCE: usize = 8;
    let mut statuses = Vec::new();
    for round in 0..FLOOD / AT_ONCE {
        let sends: Vec<_> = (0..AT_ONCE)
            .map(|i| {
                let guess = format!("sr_0123456789abcdef_guess{round}x{i}");
                tokio::spawn(flooder.get(&url).header("X-Api-Key", guess).send())
            })
            .collect();
        for send in sends {
            let reply = send.await.unwrap().unwrap();
            if reply.status() == 429 {
                assert_eq!(reply.headers()["retry-after"], "1");
                assert_eq!(reply.text().await.unwrap(), r#"{"error":"rate limited"}"#);
            } else {
                statuses.push(reply.status().as_u16());
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let refused = statuses.len();
    let throttled = FLOOD - refused;
    assert!(statuses.iter().all(|&s| s == 401), "{statuses:?}");
    // The burst, what the rate adds over the flood, and the requests in
    // flight when the budget ran out.
    let budget = 10 + AT_ONCE + (5.0 * (elapsed + 1.0)) as usize;
    assert!(refused <= budget, "{refused} refusals in {elapsed:.1} s");
    // Another address is served as ever, during the flood's throttle.
    assert_eq!(app.get("k", &admin).await.status, 200);

    assert_eq!(app.terminate().code(), Some(0));
    let lines = lines(&app);
    let theirs: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["client"].as_str().unwrap_or("").starts_with("127.0.0.2:"))
        .collect();
    let one_by_one = theirs.iter().filter(|l| l["status"] == 401).count();
    assert_eq!(one_by_one, refused);
    let summaries: Vec<&&serde_json::Value> = theirs
        .iter()
        .filter(|l| l["action"] == "auth.throttled")
        .collect();
    assert!(!summaries.is_empty());
    let summed: usize = summaries
        .iter()
        .map(|l| {
            assert_eq!(l["status"], 429);
            let note = l["note"].as_str().unwrap();
            note.split(' ').next().unwrap().parse::<usize>().unwrap()
        })
        .sum();
    assert_eq!(summed, throttled);
    // A line a second at most, not a line a request.
    assert!(
        summaries.len() <= elapsed as usize + 3,
        "{}",
        summaries.len()
    );
    let log = app.log_text();
    assert!(
        !log.contains("\"status\":429"),
        "a refused request's access line"
    );
    assert!(log.contains("failed authentications over the limit"));
    assert!(
        log.lines().count() < 3 * refused + 40,
        "{}",
        log.lines().count()
    );
    let (ok, out) = verify(&app.data_dir);
    assert!(ok, "{out}");
}

#[tokio::test]
async fn the_throttled_count_is_a_metric() {
    let app = spawn_with(
        Options::default()
            .env("STRONGROOM_AUTH_FAILURE_LIMIT", "1")
            .env("STRONGROOM_AUTH_FAILURE_BURST", "2"),
    )
    .await;
    let flooder = client_from_another_address();
    let mut throttled = 0;
    for _ in 0..10 {
        let r = flooder.get(app.url("/secrets/k")).send().await.unwrap();
        if r.status() == 429 {
            throttled += 1;
        }
    }
    assert!(throttled >= 7, "{throttled}");
    // Counted when summarised, once a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let counted = app.counter("strongroom_auth_throttled_total").await;
        if counted == throttled || std::time::Instant::now() > deadline {
            assert_eq!(counted, throttled);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
