//! Encryption at rest: nothing secret in any byte of the data dir or the log,
//! the generated master key's mode, and refusal of a wrong master key.

use base64::Engine as _;

use crate::helpers::*;

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The plain, base64 and UTF-16 forms a leak could take.
fn encodings(text: &str) -> Vec<(String, Vec<u8>)> {
    let utf16le: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    let utf16be: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
    let std = base64::engine::general_purpose::STANDARD.encode(text);
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    vec![
        ("plain".into(), text.as_bytes().to_vec()),
        // Base64 of a text starting at any of three alignments: compare a
        // long middle piece that does not depend on the neighbours.
        ("base64".into(), std.as_bytes()[4..std.len() - 4].to_vec()),
        (
            "base64url".into(),
            url.as_bytes()[4..url.len() - 4].to_vec(),
        ),
        ("utf16le".into(), utf16le),
        ("utf16be".into(), utf16be),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn no_value_or_api_key_reaches_the_data_dir_or_the_log() {
    let mut app = spawn_app().await;
    let canary_value = "CANARY-VALUE-7f3a9c1e-never-on-disk";
    let canary_key = app.create_key("acme", &[]);
    let cred = Cred::ApiKey(canary_key.clone());
    for i in 0..3 {
        assert_eq!(
            app.put(&format!("canary/{i}"), canary_value, &cred)
                .await
                .status,
            200
        );
    }
    assert_eq!(
        app.get("canary/0", &cred).await.json()["value"],
        canary_value
    );
    // Failures too: a bad body that holds the value, a wrong key.
    app.put_raw(
        format!(r#"{{"key":"bad key","value":"{canary_value}"}}"#),
        &cred,
    )
    .await;
    app.put_raw(
        format!(r#"{{"key":"k","value":{{"v":"{canary_value}"}}}}"#),
        &cred,
    )
    .await;
    app.get("canary/0", &Cred::ApiKey(format!("{canary_key}x")))
        .await;
    assert_eq!(app.terminate().code(), Some(0));
    let log = app.log_text();
    let bootstrap = app.bootstrap_key.clone().unwrap();
    for (what, canary) in [
        ("value", canary_value),
        ("api key", canary_key.as_str()),
        ("bootstrap key", bootstrap.as_str()),
    ] {
        for (form, bytes) in encodings(canary) {
            for file in files(&app.data_dir) {
                let data = std::fs::read(&file).unwrap();
                assert!(
                    !contains(&data, &bytes),
                    "{what} ({form}) found in {}",
                    file.display()
                );
            }
        }
        if what != "bootstrap key" {
            assert!(!log.contains(canary), "{what} found in the log");
        }
    }
    // The key *names* stay out of the log too.
    assert!(!log.contains("canary/0"), "key name in the log");
}

#[tokio::test]
async fn the_generated_master_key_is_private_and_warned_about() {
    let app = spawn_app().await;
    let path = app.data_dir.join("master.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let log = app.log_text();
    assert!(
        log.contains("\"level\":\"WARN\"") && log.contains("master key"),
        "{log}"
    );
}

#[tokio::test]
async fn a_start_without_the_master_key_over_an_existing_store_writes_none() {
    let mut app = spawn_app().await;
    let admin = app.admin();
    assert_eq!(app.put("k", "kept", &admin).await.status, 200);
    assert_eq!(app.terminate().code(), Some(0));
    let key_file = app.data_dir.join("master.key");
    let saved = std::fs::read(&key_file).unwrap();
    std::fs::remove_file(&key_file).unwrap();
    let stderr = refused_start(command(&app.data_dir));
    // The embedded store refuses before opening; the shared one once its
    // recorded key's check value refuses the key generated for this start.
    let why = if on_nats() {
        "does not match"
    } else {
        "no master key"
    };
    assert!(stderr.contains(why), "{stderr}");
    assert!(
        !key_file.exists(),
        "a new master.key was written over the store"
    );
    assert!(!app.data_dir.join("master.key.pending").exists());
    std::fs::write(&key_file, &saved).unwrap();
    let again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    assert_eq!(again.get("k", &admin).await.json()["value"], "kept");
}

#[tokio::test]
async fn a_wrong_master_key_stops_the_server_and_leaves_the_data_intact() {
    let key_a = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
    let key_b = base64::engine::general_purpose::STANDARD.encode([2u8; 32]);
    let mut app = spawn_with(Options::default().env("STRONGROOM_MASTER_KEY", &key_a)).await;
    let admin = Cred::ApiKey(app.create_key("t", &[]));
    app.put("k", "kept", &admin).await;
    assert_eq!(app.terminate().code(), Some(0));
    let state = |dir: std::path::PathBuf| async move {
        if on_nats() {
            format!("{:?}", nats_state(&dir).await).into_bytes()
        } else {
            std::fs::read(dir.join("strongroom.db")).unwrap()
        }
    };
    let before = state(app.data_dir.clone()).await;
    assert!(!before.is_empty());

    let started = std::time::Instant::now();
    let mut wrong_key = command(&app.data_dir);
    wrong_key.env("STRONGROOM_MASTER_KEY", &key_b);
    let stderr = refused_start(wrong_key);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(stderr.contains("master key"), "{stderr}");
    assert!(!stderr.contains(&key_b) && !stderr.contains(&key_a));
    let after = state(app.data_dir.clone()).await;
    assert!(after == before, "the stored data changed");

    let again = spawn_with(
        Options::default()
            .data_dir(&app.data_dir)
            .env("STRONGROOM_MASTER_KEY", &key_a),
    )
    .await;
    assert_eq!(again.get("k", &admin).await.json()["value"], "kept");
}

#[tokio::test]
async fn a_master_key_file_works_and_a_malformed_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kek");
    std::fs::write(
        &file,
        base64::engine::general_purpose::STANDARD.encode([9u8; 32]) + "\n",
    )
    .unwrap();
    let app =
        spawn_with(Options::default().env("STRONGROOM_MASTER_KEY_FILE", file.to_str().unwrap()))
            .await;
    assert!(
        !app.data_dir.join("master.key").exists(),
        "no generated key when one is given"
    );
    assert_eq!(app.put("k", "v", &app.admin()).await.status, 200);

    std::fs::write(&file, "too short").unwrap();
    let mut malformed = command(&dir.path().join("other"));
    malformed.env("STRONGROOM_MASTER_KEY_FILE", &file);
    assert!(refused_start(malformed).contains("master key"));
    assert!(
        !dir.path().join("other").exists(),
        "a refused start wrote its data dir"
    );
}

/// Moves the stored version 1 of "a" under "b" of tenant `default`, while no
/// server runs: the sealed bytes (on nats the whole record) of one key
/// under another's name.
async fn move_a_over_b(data_dir: &std::path::Path) {
    if on_nats() {
        let a = nats_kv_get(data_dir, "", &nats_secret_key("default", "a")).await;
        nats_kv_put(data_dir, "", &nats_secret_key("default", "b"), a).await;
    } else {
        let db = rusqlite::Connection::open(data_dir.join("strongroom.db")).unwrap();
        db.execute(
            "UPDATE versions SET sealed = (SELECT sealed FROM versions WHERE key = 'a') WHERE key = 'b'",
            [],
        )
        .unwrap();
    }
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_key_fails_to_open() {
    let mut app = spawn_app().await;
    let admin = app.admin();
    app.put("a", "value-a", &admin).await;
    app.put("b", "value-b", &admin).await;
    assert_eq!(app.terminate().code(), Some(0));
    move_a_over_b(&app.data_dir).await;
    let again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    let r = again.get("b", &admin).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.error(), "stored data failed its integrity check");
    assert!(!r.body.contains("value-a"));
}

/// Flips one bit of `column` in the one row of `table` matching `filter`,
/// at the byte `at` picks from the blob's length, while no server runs.
fn flip_bit(
    data_dir: &std::path::Path,
    table: &str,
    column: &str,
    filter: &str,
    at: fn(usize) -> usize,
) {
    let db = rusqlite::Connection::open(data_dir.join("strongroom.db")).unwrap();
    let mut blob: Vec<u8> = db
        .query_row(
            &format!("SELECT {column} FROM {table} WHERE {filter}"),
            [],
            |r| r.get(0),
        )
        .unwrap();
    let i = at(blob.len());
    blob[i] ^= 1;
    let changed = db
        .execute(
            &format!("UPDATE {table} SET {column} = ?1 WHERE {filter}"),
            [&blob],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

#[tokio::test]
async fn one_flipped_byte_in_a_ciphertext_is_named_counted_and_never_a_value() {
    sqlite_only!("edits the database file");
    let mut app = spawn_app().await;
    let admin = app.admin();
    assert_eq!(
        app.put("team/flipped", "canary-flipped-value", &admin)
            .await
            .status,
        200
    );
    assert_eq!(
        app.put("team/intact", "intact-value", &admin).await.status,
        200
    );
    assert_eq!(app.terminate().code(), Some(0));
    // The middle byte of the sealed value: inside the ciphertext.
    flip_bit(
        &app.data_dir,
        "versions",
        "sealed",
        "key = 'team/flipped'",
        |n| n / 2,
    );
    let again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    let r = again.get("team/flipped", &admin).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.error(), "stored data failed its integrity check");
    assert!(!r.body.contains("canary"));
    assert_eq!(
        again.get("team/intact", &admin).await.json()["value"],
        "intact-value"
    );
    assert!(
        again
            .log_shows("stored data failed its integrity check")
            .await
    );
    let log = again.log_text();
    assert!(!log.contains("canary"), "{log}");
    assert!(!log.contains("master key does not match"), "{log}");
    assert_eq!(
        again.counter("strongroom_integrity_failures_total").await,
        1
    );
}

#[tokio::test]
async fn a_damaged_data_key_is_named_as_that_data_key_not_as_the_master_key() {
    sqlite_only!("edits the database file");
    let mut app = spawn_app().await;
    let admin = app.admin();
    assert_eq!(
        app.put("dek/one", "value-under-dek-1", &admin).await.status,
        200
    );
    assert_eq!(app.terminate().code(), Some(0));
    // The last byte of the wrapped key: its authentication tag.
    flip_bit(
        &app.data_dir,
        "records",
        "value",
        "kind = 'dek' AND id LIKE 'default/%'",
        |n| n - 1,
    );
    let again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    for _ in 0..2 {
        let r = again.get("dek/one", &admin).await;
        assert_eq!(r.status, 502, "{}", r.body);
        assert_eq!(r.error(), "stored data failed its integrity check");
    }
    assert!(
        again
            .log_shows("data key 1 failed its integrity check")
            .await,
        "{}",
        again.log_text()
    );
    assert!(!again.log_text().contains("master key does not match"));
}

#[tokio::test]
async fn the_data_dir_and_its_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    app.put("k", "v", &app.admin()).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&app.data_dir), 0o700);
    for file in files(&app.data_dir) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

/// `apikey create` before the first `serve` makes a store no master key is
/// bound to yet: the first `serve` then generates one, and the key works.
#[tokio::test]
async fn a_key_created_before_the_first_serve_works_once_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data, "early", &[]);
    let app = spawn_with(Options::default().data_dir(&data)).await;
    assert!(app.data_dir.join("master.key").exists());
    let cred = Cred::ApiKey(key);
    assert_eq!(app.put("early/k", "v", &cred).await.status, 200);
    assert_eq!(app.get("early/k", &cred).await.json()["value"], "v");
}

/// Reproduction (issue 32, item 6): one damaged record in a batch failed
/// the whole `POST /batch/get` with 502. Now the intact keys are answered,
/// the damaged one is named in `damaged` (never a value) with a 502 line
/// in the audit trail.
#[tokio::test]
async fn a_batch_answers_the_intact_keys_and_names_the_damaged_one() {
    let mut app = spawn_app().await;
    let admin = app.admin();
    app.put("a", "value-a", &admin).await;
    app.put("b", "value-b", &admin).await;
    app.put("c", "value-c", &admin).await;
    assert_eq!(app.terminate().code(), Some(0));
    move_a_over_b(&app.data_dir).await;
    let again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    let r = again
        .batch_get(
            serde_json::json!({ "keys": ["a", "b", "c", "absent"] }),
            &admin,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(
        body["secrets"],
        serde_json::json!([
            {"key": "a", "value": "value-a", "version": 1},
            {"key": "c", "value": "value-c", "version": 1},
        ])
    );
    assert_eq!(body["missing"], serde_json::json!(["absent"]));
    assert_eq!(body["damaged"], serde_json::json!(["b"]));
    assert!(!r.body.contains("value-b"));
    let request_id = r.header("x-request-id").unwrap();
    let mut again = again;
    assert_eq!(again.terminate().code(), Some(0));
    let line = crate::audit::lines(&again)
        .into_iter()
        .find(|l| l["request_id"] == request_id.as_str() && l["key"] == "b")
        .expect("a line for the damaged key");
    assert_eq!(line["status"], 502);
}
