//! The audit trail as an attacker and a fault would try it: lines chained
//! under a key only the server holds, a recorded head that catches lines cut
//! off the end (a deleted stream on nats), a file removed under a running
//! server, and the one-server-per-data-dir lock.

use crate::helpers::*;
use std::path::Path;

fn verify_with_env(data_dir: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = command(data_dir)
        .args(["audit", "verify"])
        .envs(env.iter().copied())
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

fn verify(data_dir: &Path) -> (bool, String) {
    verify_with_env(data_dir, &[])
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

/// A server that wrote `n` lines (one PUT each) and was stopped cleanly.
async fn stopped_after(n: usize) -> TestApp {
    let mut app = spawn_app().await;
    let admin = app.admin();
    for i in 0..n {
        assert_eq!(app.put(&format!("k{i}"), "v", &admin).await.status, 200);
    }
    assert_eq!(app.terminate().code(), Some(0));
    app
}

fn audit_lines(data_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(data_dir.join("audit.log"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(data_dir: &Path, lines: &[String]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(data_dir.join("audit.log"), text).unwrap();
}

#[tokio::test]
async fn an_edit_with_every_later_hash_recomputed_without_the_key_is_named() {
    sqlite_only!("the stream cannot be edited by a client");
    let app = stopped_after(6).await;
    let mut lines = audit_lines(&app.data_dir);
    assert!(lines.iter().all(|l| l.starts_with("{\"v\":2,\"seq\":")));
    // The attacker edits line 3 and, holding no key, re-chains every line
    // from there with plain SHA-256 in place of the MACs.
    lines[2] = lines[2].replace("\"key\":\"k2\"", "\"key\":\"k9\"");
    let mut prev = serde_json::from_str::<serde_json::Value>(&lines[1]).unwrap()["mac"]
        .as_str()
        .unwrap()
        .to_owned();
    for line in lines.iter_mut().skip(2) {
        let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
        value["prev"] = prev.clone().into();
        let text = value.to_string();
        let covered = &text[..text.rfind(",\"mac\"").unwrap()];
        let forged = sha256_hex(covered.as_bytes());
        *line = format!("{covered},\"mac\":\"{forged}\"}}");
        prev = forged;
    }
    write_lines(&app.data_dir, &lines);
    let (ok, out) = verify(&app.data_dir);
    assert!(!ok, "{out}");
    assert!(out.contains("line 3 is bad"), "{out}");
}

#[tokio::test]
async fn verify_needs_the_master_key_the_trail_was_keyed_with() {
    sqlite_only!("the master key file lives in the test's data dir on sqlite");
    let app = stopped_after(2).await;
    let (ok, out) = verify(&app.data_dir);
    assert!(ok && out.contains("intact, 2 lines"), "{out}");
    let other = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let (ok, out) = verify_with_env(&app.data_dir, &[("STRONGROOM_MASTER_KEY", other)]);
    assert!(!ok, "{out}");
    assert!(out.contains("master key does not match"), "{out}");
    assert!(!out.contains(other));
    std::fs::rename(
        app.data_dir.join("master.key"),
        app.data_dir.join("elsewhere.key"),
    )
    .unwrap();
    let (ok, out) = verify(&app.data_dir);
    assert!(!ok, "{out}");
    assert!(
        out.contains("line 1 is bad: the line is keyed: verify needs the master key"),
        "{out}"
    );
    let file = app.data_dir.join("elsewhere.key");
    let (ok, out) = verify_with_env(
        &app.data_dir,
        &[("STRONGROOM_MASTER_KEY_FILE", file.to_str().unwrap())],
    );
    assert!(ok, "{out}");
}

#[tokio::test]
async fn a_trail_written_before_keyed_lines_verifies_and_continues_keyed() {
    sqlite_only!("the file format");
    let app = stopped_after(0).await;
    // Three lines as the unkeyed format wrote them.
    let mut lines = Vec::new();
    let mut prev = "0".repeat(64);
    for i in 0..3 {
        let text = format!(
            "{{\"time\":\"2026-01-01T00:00:0{i}.000Z\",\"request_id\":\"old{i}\",\"tenant\":\"default\",\"subject\":null,\"action\":\"secrets.read\",\"key\":\"k\",\"status\":404,\"client\":null,\"prev\":\"{prev}\""
        );
        let hash = sha256_hex(text.as_bytes());
        lines.push(format!("{text},\"hash\":\"{hash}\"}}"));
        prev = hash;
    }
    write_lines(&app.data_dir, &lines);
    let (ok, out) = verify(&app.data_dir);
    assert!(ok && out.contains("intact, 3 lines"), "{out}");
    let mut again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    let admin = app.admin();
    assert_eq!(again.put("new", "v", &admin).await.status, 200);
    assert_eq!(again.terminate().code(), Some(0));
    let lines = audit_lines(&app.data_dir);
    assert_eq!(lines.len(), 4);
    assert!(lines[3].starts_with("{\"v\":2,\"seq\":4,"), "{}", lines[3]);
    let (ok, out) = verify(&app.data_dir);
    assert!(ok && out.contains("intact, 4 lines"), "{out}");
}

#[tokio::test]
async fn lines_cut_off_the_end_or_an_emptied_file_are_reported() {
    sqlite_only!("the stream denies deletes and purges");
    let app = stopped_after(5).await;
    let lines = audit_lines(&app.data_dir);
    write_lines(&app.data_dir, &lines[..3]);
    let (ok, out) = verify(&app.data_dir);
    assert!(!ok, "{out}");
    assert!(
        out.contains("the trail ends at line 3 but the store recorded line 5"),
        "{out}"
    );
    write_lines(&app.data_dir, &[]);
    let (ok, out) = verify(&app.data_dir);
    assert!(
        !ok && out.contains("ends at line 0 but the store recorded line 5"),
        "{out}"
    );
    // A server will not begin a new chain over it unless told to.
    let err = refused_start(command(&app.data_dir));
    assert!(err.contains("--audit-restart-chain"), "{err}");
    let mut restarted = spawn_with(
        Options::default()
            .data_dir(&app.data_dir)
            .env("STRONGROOM_AUDIT_RESTART_CHAIN", "true"),
    )
    .await;
    assert_eq!(restarted.terminate().code(), Some(0));
    let lines = audit_lines(&app.data_dir);
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["action"], "system.audit_restart");
    assert!(
        first["note"]
            .as_str()
            .unwrap()
            .starts_with("previous head 5:"),
        "{first}"
    );
    let (ok, out) = verify(&app.data_dir);
    assert!(ok, "{out}");
}

#[tokio::test]
async fn a_deleted_audit_stream_is_reported_and_no_new_chain_begins_over_it() {
    nats_only!("the audit stream");
    let mut app = spawn_app().await;
    let admin = app.admin();
    for i in 0..5 {
        assert_eq!(app.put(&format!("k{i}"), "v", &admin).await.status, 200);
    }
    // The gateway records the head within a second of its last append.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(app.terminate().code(), Some(0));
    let (ok, out) = verify(&app.data_dir);
    assert!(ok, "{out}");
    let client = async_nats::connect(shared_nats_url()).await.unwrap();
    async_nats::jetstream::new(client)
        .delete_stream(format!("{}_audit", bucket_for(&app.data_dir)))
        .await
        .unwrap();
    let (ok, out) = verify(&app.data_dir);
    assert!(!ok, "{out}");
    assert!(
        out.contains("the trail ends at line 0 but the store recorded line 5"),
        "{out}"
    );
    let err = refused_start(command(&app.data_dir));
    assert!(err.contains("--audit-restart-chain"), "{err}");
    // Told to, it begins a new chain, whose head then replaces the old one's
    // (lower in number though it is): later starts and `verify` are clean.
    let mut restarted = spawn_with(
        Options::default()
            .data_dir(&app.data_dir)
            .env("STRONGROOM_AUDIT_RESTART_CHAIN", "true"),
    )
    .await;
    assert_eq!(restarted.put("k0", "again", &admin).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(restarted.terminate().code(), Some(0));
    let (ok, out) = verify(&app.data_dir);
    assert!(ok, "{out}");
    let mut plain = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    assert_eq!(plain.get("k0", &admin).await.json()["value"], "again");
    assert_eq!(plain.terminate().code(), Some(0));
}

#[tokio::test]
async fn a_trail_file_removed_under_a_running_server_stops_it_until_restored() {
    sqlite_only!("the file trail");
    let app = spawn_app().await;
    let admin = app.admin();
    assert_eq!(app.put("k", "one", &admin).await.status, 200);
    let path = app.data_dir.join("audit.log");
    let away = app.data_dir.join("moved.log");
    std::fs::rename(&path, &away).unwrap();
    let r = app.put("k", "two", &admin).await;
    assert_eq!((r.status, r.error()), (503, "service unavailable".into()));
    assert_eq!(app.get("k", &admin).await.status, 503);
    let ready = app
        .send(app.client.get(app.url("/readyz")), &Cred::None)
        .await;
    assert_eq!(ready.status, 503);
    let failures = app.counter("strongroom_audit_write_failures_total").await;
    assert!(failures >= 2, "{failures}");
    assert!(app.log_shows("the trail's file is gone").await);
    // A file put in its place is not the trail either.
    std::fs::write(&path, b"").unwrap();
    assert_eq!(app.put("k", "three", &admin).await.status, 503);
    // Restored: the same file again, and the chain carries on.
    std::fs::rename(&away, &path).unwrap();
    assert_eq!(app.put("k", "four", &admin).await.status, 200);
    let ready = app
        .send(app.client.get(app.url("/readyz")), &Cred::None)
        .await;
    assert_eq!(ready.status, 200);
    assert_eq!(app.get("k", &admin).await.json()["value"], "four");
    let (ok, out) = verify(&app.data_dir);
    assert!(ok, "{out}");
}

#[tokio::test]
async fn removing_the_lock_file_does_not_let_a_second_server_start() {
    sqlite_only!("one server per embedded data dir");
    let app = spawn_app().await;
    let _ = std::fs::remove_file(app.data_dir.join("serve.lock"));
    let started = std::time::Instant::now();
    let err = refused_start(command(&app.data_dir));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(err.contains("in use by another strongroom server"), "{err}");
}

fn rotated_files(data_dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("audit-") && name.ends_with(".log")
        })
        .collect();
    files.sort();
    files
}

/// A trail that rotated several times: `audit-<seq>.log` files and the
/// current `audit.log`, stopped cleanly.
async fn rotated_trail() -> (TestApp, Vec<std::path::PathBuf>) {
    let mut app = spawn_with(Options::default().env("STRONGROOM_AUDIT_MAX_BYTES", "2000")).await;
    let admin = app.admin();
    for i in 0..40 {
        assert_eq!(app.get(&format!("k{i}"), &admin).await.status, 404);
    }
    assert_eq!(app.terminate().code(), Some(0));
    let files = rotated_files(&app.data_dir);
    (app, files)
}

#[tokio::test]
async fn a_rotated_trail_is_one_chain_and_verify_names_a_missing_reordered_or_edited_file() {
    sqlite_only!("audit.log rotates on the embedded store");
    let (app, files) = rotated_trail().await;
    assert!(files.len() >= 3, "{files:?}");
    // Each rotated file is named after its first line's number.
    for file in &files {
        let first: serde_json::Value = serde_json::from_str(
            std::fs::read_to_string(file)
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        let name = file.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            name,
            format!("audit-{:020}.log", first["seq"].as_u64().unwrap())
        );
    }
    let (ok, out) = verify(&app.data_dir);
    assert!(ok && out.contains("intact, 40 lines"), "{out}");

    // Edited: named by its file and line.
    let victim = &files[1];
    let saved = std::fs::read_to_string(victim).unwrap();
    std::fs::write(
        victim,
        saved.replacen("\"status\":404", "\"status\":200", 1),
    )
    .unwrap();
    let (ok, out) = verify(&app.data_dir);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("{}: line 1 is bad", victim.display())),
        "{out}"
    );
    std::fs::write(victim, &saved).unwrap();

    // Missing: the next file's first line is reported.
    let hidden = app.data_dir.join("hidden");
    std::fs::rename(victim, &hidden).unwrap();
    let (ok, out) = verify(&app.data_dir);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("{}: line 1 is bad", files[2].display())),
        "{out}"
    );
    assert!(
        out.contains("previous line is missing or out of order"),
        "{out}"
    );
    std::fs::rename(&hidden, victim).unwrap();

    // Reordered: two files' names swapped.
    std::fs::rename(&files[0], &hidden).unwrap();
    std::fs::rename(&files[1], &files[0]).unwrap();
    std::fs::rename(&hidden, &files[1]).unwrap();
    let (ok, out) = verify(&app.data_dir);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("{}: line 1 is bad", files[0].display())),
        "{out}"
    );
}

#[tokio::test]
async fn the_audit_api_pages_a_tenants_lines_across_rotated_files() {
    sqlite_only!("rotation; the nats pass reads the stream in audit::");
    let (app, files) = rotated_trail().await;
    assert!(files.len() >= 3);
    let mut again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    let admin = app.admin();
    let other = again.create_key("other", &["--scopes", "secrets:read,audit:read"]);
    assert_eq!(
        again.get("x", &Cred::ApiKey(other.clone())).await.status,
        404
    );
    let read = |after: Option<u64>, cred: Cred| {
        let url = match after {
            Some(a) => again.url(&format!("/audit?limit=7&after={a}")),
            None => again.url("/audit?limit=7"),
        };
        let again = &again;
        async move { again.send(again.client.get(url), &cred).await }
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = read(after, admin.clone()).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let body = page.json();
        for line in body["lines"].as_array().unwrap() {
            assert_eq!(line["tenant"], "default", "{line}");
            seen.push(line["seq"].as_u64().unwrap());
        }
        match body["next"].as_u64() {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    // 40 reads, then this start's `audit.read` lines up to each request.
    assert!(seen.len() > 40, "{}", seen.len());
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    // Every line of the rotated files, none lost at a file's edge.
    assert_eq!(seen[..40], (1..=40).collect::<Vec<u64>>()[..], "{seen:?}");
    let theirs = read(None, Cred::ApiKey(other)).await.json();
    let lines = theirs["lines"].as_array().unwrap();
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|l| l["tenant"] == "other"), "{theirs}");
    // Without the scope: 403, and a bad cursor: 400.
    let reader = again.create_key("default", &["--scopes", "secrets:read"]);
    let refused = read(None, Cred::ApiKey(reader)).await;
    assert_eq!(refused.status, 403);
    let bad = again
        .send(again.client.get(again.url("/audit?after=x")), &admin)
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(again.terminate().code(), Some(0));
}

/// Reproduction (issue 32, item 6): `GET /audit` parsed the trail from its
/// start on every page (2.2-2.8 s a page on a 1.4M-line trail), and
/// `after=18446744073709551615` overflowed the file-skip test (a 503 in a
/// debug build, every file read in a release one). Now a page starts at
/// the first line past `after` by bisection within its file, and the
/// largest `after` answers an empty last page.
#[tokio::test]
async fn the_audit_api_starts_a_page_anywhere_and_the_largest_cursor_is_the_end() {
    sqlite_only!("rotation; the nats pass reads the stream in audit::");
    let (app, files) = rotated_trail().await;
    assert!(files.len() >= 3);
    let again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    let admin = app.admin();
    let page = |after: u64| {
        let url = again.url(&format!("/audit?limit=3&after={after}"));
        let again = &again;
        let admin = admin.clone();
        async move {
            let r = again.send(again.client.get(url), &admin).await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()
        }
    };
    let end = page(u64::MAX).await;
    assert_eq!(end, serde_json::json!({"lines": [], "next": null}));
    // From every place among the first 40 lines, in whichever file it is.
    for after in 0..38u64 {
        let body = page(after).await;
        let seqs: Vec<u64> = body["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, vec![after + 1, after + 2, after + 3], "after {after}");
        assert_eq!(body["next"].as_u64(), Some(after + 3));
    }
}

/// Reproduction (issue 32, item 5): the audit trail had no retention; one
/// key filled a small disk with it, and the fail-closed trail then
/// answered 503 to every tenant. With `--audit-keep-files 2` the oldest
/// rotated files go once the store's head covers them, a chained line
/// records what went, `audit verify` passes and says so, a restart serves,
/// and a file removed by hand is still named as removed.
#[tokio::test]
async fn rotated_audit_files_are_pruned_and_verify_tells_a_prune_from_a_truncation() {
    sqlite_only!("audit.log rotates on the embedded store; a stream's retention is JetStream's");
    let mut app = spawn_with(
        Options::default()
            .env("STRONGROOM_AUDIT_MAX_BYTES", "2000")
            .env("STRONGROOM_AUDIT_KEEP_FILES", "2")
            .env("STRONGROOM_AUDIT_PRUNE_INTERVAL", "1s"),
    )
    .await;
    let admin = app.admin();
    for i in 0..30 {
        assert_eq!(app.put(&format!("p{i}"), "v", &admin).await.status, 200);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while rotated_files(&app.data_dir).len() > 2
        || !app.log_text().contains("pruned rotated trail files")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "never pruned:\n{}",
            app.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(app.terminate().code(), Some(0));
    let (ok, out) = verify(&app.data_dir);
    assert!(ok, "{out}");
    assert!(out.contains("were pruned"), "{out}");
    let again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    assert_eq!(again.get("p29", &admin).await.status, 200);
    let page = again
        .send(again.client.get(again.url("/audit?limit=5")), &admin)
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let mut again = again;
    assert_eq!(again.terminate().code(), Some(0));
    // Removed by hand, without a line saying so: a truncation.
    let oldest = rotated_files(&app.data_dir).remove(0);
    std::fs::remove_file(&oldest).unwrap();
    let (ok, out) = verify(&app.data_dir);
    assert!(!ok, "{out}");
    assert!(out.contains("no line records pruning"), "{out}");
}
