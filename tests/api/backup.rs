//! Backup, restore, migrate and scheduled backups on the real binary: no
//! plaintext in a backup, a restore that answers exactly as the source did,
//! a damaged file refused whole, `--force`, one instant under writes, a
//! sqlite → nats → sqlite migration, and the `serve --backup-dir` schedule.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::helpers::*;

#[tokio::test]
async fn a_backup_holds_no_plaintext_value_or_api_key_text() {
    let app = spawn_app().await;
    let admin = app.admin();
    let acme_key = app.create_key("acme", &[]);
    let acme = Cred::ApiKey(acme_key.clone());
    let suffix = random_hex(16);
    let canary = |name: &str, v: u32| format!("CANARY-{name}-v{v}-{suffix}");
    // Several versions, a soft-deleted key, and a second tenant's key.
    let writes: [(&Cred, &str, &str, u32); 4] = [
        (&admin, "canary/a", "a", 3),
        (&admin, "canary/b", "b", 2),
        (&admin, "canary/deleted", "deleted", 2),
        (&acme, "canary/acme", "acme", 1),
    ];
    let mut values = Vec::new();
    for (cred, key, name, versions) in writes {
        for v in 1..=versions {
            let value = canary(name, v);
            assert_eq!(app.put(key, &value, cred).await.status, 200);
            values.push(value);
        }
    }
    assert_eq!(app.delete("canary/deleted", &admin).await.status, 200);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain.backup");
    let shown = counts(&ok(&backup(&app.data_dir, &file)), "backed up ", &to(&file));
    // 4 secrets (the soft-deleted one included), 8 versions, a data key
    // per tenant, the bootstrap key and acme's.
    assert_eq!(shown, [4, 8, 2, 2]);

    let bytes = std::fs::read(&file).unwrap();
    let Cred::ApiKey(admin_key) = &admin else {
        unreachable!()
    };
    let master_key = std::fs::read_to_string(app.data_dir.join("master.key")).unwrap();
    let mut forbidden: Vec<(String, Vec<u8>)> = Vec::new();
    for value in &values {
        forbidden.push((format!("value {value}"), value.as_bytes().to_vec()));
        // Base64 of the value at any alignment: a long middle piece.
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        forbidden.push((
            format!("base64 of {value}"),
            b64.as_bytes()[4..b64.len() - 4].to_vec(),
        ));
    }
    for key in [admin_key.as_str(), acme_key.as_str()] {
        forbidden.push(("an API key".into(), key.as_bytes().to_vec()));
        // `sr_<16 hex id>_<secret>`: the id may be named, the secret never.
        forbidden.push(("an API key's secret".into(), key.as_bytes()[20..].to_vec()));
    }
    forbidden.push((
        "the master key".into(),
        master_key.trim().as_bytes().to_vec(),
    ));
    for (what, needle) in &forbidden {
        assert!(!contains(&bytes, needle), "{what} is in the backup");
    }

    // Key names are not secret: the file names every key, per tenant.
    let lines = backup_lines(&file);
    assert_eq!(lines[0]["strongroom_backup"], 1, "header {}", lines[0]);
    assert!(lines[0].get("kek_id").is_some(), "header {}", lines[0]);
    let end = &lines[lines.len() - 1]["end"];
    assert_eq!(end["records"], (lines.len() - 2) as u64, "end {end}");
    assert!(
        end["mac"].as_str().is_some_and(|m| hex::decode(m).is_ok()),
        "end {end}"
    );
    let mut names: Vec<(String, String)> = secrets_of(&lines)
        .map(|s| {
            (
                s["tenant"].as_str().unwrap().into(),
                s["key"].as_str().unwrap().into(),
            )
        })
        .collect();
    names.sort();
    let names: Vec<(&str, &str)> = names
        .iter()
        .map(|(t, k)| (t.as_str(), k.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("acme", "canary/acme"),
            ("default", "canary/a"),
            ("default", "canary/b"),
            ("default", "canary/deleted"),
        ]
    );
    // API keys appear, as hashes only (checked above: no key text).
    assert_eq!(
        lines.iter().filter(|l| l.get("apikey").is_some()).count(),
        2
    );
}

#[tokio::test]
async fn a_restore_answers_every_secret_version_deleted_state_and_api_key_as_before() {
    let mut src = spawn_app().await;
    let admin = src.admin();
    let acme = Cred::ApiKey(src.create_key("acme", &[]));
    let writes: [(&str, &Cred, &str, u32); 6] = [
        ("default", &admin, "app/db", 3),
        ("default", &admin, "app/api", 2),
        ("default", &admin, "app/gone", 2),
        ("default", &admin, "app/destroyed", 2),
        ("acme", &acme, "app/db", 2),
        ("acme", &acme, "acme/only", 1),
    ];
    for (tenant, cred, key, versions) in writes {
        for v in 1..=versions {
            let value = format!("{key}-{v}-{tenant}");
            assert_eq!(src.put(key, &value, cred).await.status, 200);
        }
    }
    assert_eq!(src.delete("app/gone", &admin).await.status, 200);
    let destroy = src
        .send(
            src.client.delete(src.url("/metadata/app/destroyed")),
            &admin,
        )
        .await;
    assert_eq!(destroy.status, 200);
    // A policy: a record of the identity model, backed up and restored too.
    let policy = src
        .client
        .put(src.url("/policies/readers"))
        .header("Content-Type", "application/json")
        .body(r#"{"scopes":["secrets:read:app/"]}"#);
    assert_eq!(src.send(policy, &admin).await.status, 200);

    // Every answer a client could get, per tenant: the current value, each
    // version (and one past the last), the metadata, the listing, and the
    // other tenant's key (404: isolation).
    let mut probes: Vec<(String, Cred, String)> = Vec::new();
    for (who, cred, keys) in [
        (
            "default",
            &admin,
            vec![
                ("app/db", 3),
                ("app/api", 2),
                ("app/gone", 2),
                ("app/destroyed", 2),
                ("acme/only", 1),
            ],
        ),
        (
            "acme",
            &acme,
            vec![("app/db", 2), ("acme/only", 1), ("app/api", 2)],
        ),
    ] {
        probes.push((who.into(), cred.clone(), "/secrets".into()));
        probes.push((who.into(), cred.clone(), "/policies".into()));
        probes.push((who.into(), cred.clone(), "/policies/readers".into()));
        for (key, versions) in keys {
            probes.push((who.into(), cred.clone(), format!("/secrets/{key}")));
            probes.push((who.into(), cred.clone(), format!("/metadata/{key}")));
            for v in 1..=versions + 1 {
                probes.push((
                    who.into(),
                    cred.clone(),
                    format!("/secrets/{key}?version={v}"),
                ));
            }
        }
    }
    let before = answers(&src, &probes).await;
    // The probes see data, not only 404s.
    assert!(
        before.iter().filter(|a| a.status == 200).count() >= 20,
        "{before:#?}"
    );
    assert_eq!(src.get("app/gone", &admin).await.status, 404);
    assert_eq!(
        src.get("acme/only", &acme).await.json()["value"],
        "acme/only-1-acme"
    );

    // The backup is taken while the server runs; a later write is not in it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("src.backup");
    let started = Instant::now();
    let shown = counts(&ok(&backup(&src.data_dir, &file)), "backed up ", &to(&file));
    // Beside a running server a backup of a few secrets waits on nothing the
    // server holds (its keep-alive connections close after 10 s idle).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a backup beside the running server took {:?}",
        started.elapsed()
    );
    assert_eq!(
        shown,
        [5, 10, 2, 2],
        "secrets, versions, data keys, API keys"
    );
    assert_eq!(src.put("after/backup", "late", &admin).await.status, 200);
    assert_eq!(src.terminate().code(), Some(0));

    let (_temp, target) = fresh_target(Some(&src.data_dir));
    let restored = counts(
        &ok(&restore(&target, &file, &[])),
        "restored ",
        &from(&file),
    );
    assert_eq!(restored, shown);

    let mut app = spawn_with(Options::default().data_dir(&target)).await;
    assert!(
        app.bootstrap_key.is_none(),
        "API keys were restored: no bootstrap key on this start"
    );
    let after = answers(&app, &probes).await;
    assert_eq!(after.len(), before.len());
    for (a, b) in after.iter().zip(&before) {
        assert_eq!(a, b, "the restored store answers differently");
    }
    assert_eq!(app.get("after/backup", &admin).await.status, 404);
    // The soft-deleted key is still undeletable, with its last value.
    let undelete = app
        .send(app.client.post(app.url("/undelete/app/gone")), &admin)
        .await;
    assert_eq!(undelete.status, 200, "{}", undelete.body);
    assert_eq!(
        app.get("app/gone", &admin).await.json()["value"],
        "app/gone-2-default"
    );
    assert_eq!(app.terminate().code(), Some(0));

    // The restore left a chained line: the target's trail verifies.
    let (verified, text) = verify(&target, &[]);
    assert!(verified && text.contains("intact"), "{text}");
    assert!(
        trail_actions(&target, &[])
            .iter()
            .any(|a| a == "system.restore"),
        "no system.restore line"
    );
}

#[tokio::test]
async fn a_changed_truncated_or_reordered_backup_is_refused_whole() {
    let app = spawn_app().await;
    let admin = app.admin();
    for i in 0..4 {
        for v in 1..=2 {
            assert_eq!(
                app.put(&format!("k{i}"), &format!("v{i}.{v}"), &admin)
                    .await
                    .status,
                200
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("intact.backup");
    ok(&backup(&app.data_dir, &file));
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let secret_lines: Vec<usize> = (0..lines.len())
        .filter(|&i| {
            serde_json::from_str::<serde_json::Value>(lines[i])
                .unwrap()
                .get("secret")
                .is_some()
        })
        .collect();
    assert!(secret_lines.len() >= 2, "{text}");
    let joined = |lines: &[String]| -> String { lines.iter().map(|l| format!("{l}\n")).collect() };
    let owned: Vec<String> = lines.iter().map(|l| l.to_string()).collect();

    // One base64 character of a sealed value changed to another: still
    // valid JSON and base64, but not what was written.
    let changed = {
        let mut out = owned.clone();
        let i = secret_lines[0];
        let record: serde_json::Value = serde_json::from_str(&out[i]).unwrap();
        let sealed = record["secret"]["versions"][0]["sealed"]
            .as_str()
            .unwrap()
            .to_owned();
        let at = out[i].find(&sealed).unwrap() + sealed.len() / 2;
        let old = out[i].as_bytes()[at];
        let new = if old == b'A' { "B" } else { "A" };
        out[i].replace_range(at..at + 1, new);
        joined(&out)
    };
    let without_end = joined(&owned[..owned.len() - 1]);
    let cut_mid_line = {
        let i = *secret_lines.last().unwrap();
        let mut out = joined(&owned[..i]);
        out.push_str(&owned[i][..owned[i].len() / 2]);
        out
    };
    let reordered = {
        let mut out = owned.clone();
        out.swap(secret_lines[0], secret_lines[1]);
        joined(&out)
    };
    for (name, bytes, words) in [
        ("changed", changed, "failed its integrity check"),
        ("without its end line", without_end, "truncated"),
        ("cut in the middle of a line", cut_mid_line, "truncated"),
        ("reordered", reordered, "failed its integrity check"),
    ] {
        assert_ne!(bytes, text, "{name}: the variant differs");
        let bad = dir
            .path()
            .join(format!("{}.backup", name.replace(' ', "-")));
        std::fs::write(&bad, &bytes).unwrap();
        let (_temp, target) = fresh_target(Some(&app.data_dir));
        let err = refused(&restore(&target, &bad, &[]));
        assert!(
            err.contains("strongroom: error:") && err.contains(words),
            "{name}: {err}"
        );
        // Nothing was written: the intact file still restores without
        // --force into the same target.
        ok(&restore(&target, &file, &[]));
    }

    // A master key the file was not made under.
    let mut other = [0u8; 32];
    aws_lc_rs::rand::fill(&mut other).unwrap();
    let other = base64::engine::general_purpose::STANDARD.encode(other);
    let (_temp, target) = fresh_target(None);
    let err = refused(&restore(
        &target,
        &file,
        &[("STRONGROOM_MASTER_KEY", &other)],
    ));
    assert!(err.contains("not in the keyring"), "{err}");
    assert!(!err.contains(&other), "the key in an error: {err}");
    copy_master_key(&app.data_dir, &target);
    ok(&restore(&target, &file, &[]));
}

#[tokio::test]
async fn restore_refuses_a_non_empty_store_without_force_and_replaces_it_with_force() {
    // Data keys are wrapped by the master key: both stores share one.
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let env = [("STRONGROOM_MASTER_KEY", key.as_str())];
    let options = || Options::default().env("STRONGROOM_MASTER_KEY", &key);

    let mut src = spawn_with(options()).await;
    let src_admin = src.admin();
    for (k, v) in [
        ("from/backup", "b1"),
        ("from/backup", "b2"),
        ("shared", "backup-shared"),
    ] {
        assert_eq!(src.put(k, v, &src_admin).await.status, 200);
    }
    let src_meta = src
        .send(src.client.get(src.url("/metadata/from/backup")), &src_admin)
        .await;
    assert_eq!(src_meta.status, 200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("src.backup");
    ok(&backup_with(&src.data_dir, &file, &env));
    assert_eq!(src.terminate().code(), Some(0));

    let mut target = spawn_with(options()).await;
    let target_admin = target.admin();
    for (k, v) in [("target/own", "mine"), ("shared", "target-shared")] {
        assert_eq!(target.put(k, v, &target_admin).await.status, 200);
    }
    assert_eq!(target.terminate().code(), Some(0));

    let err = refused(&restore(&target.data_dir, &file, &env));
    assert!(err.contains("is not empty"), "{err}");
    // Nothing changed: the target still has its own secrets.
    let mut again = spawn_with(options().data_dir(&target.data_dir)).await;
    assert_eq!(
        again.get("target/own", &target_admin).await.json()["value"],
        "mine"
    );
    assert_eq!(
        again.get("shared", &target_admin).await.json()["value"],
        "target-shared"
    );
    assert_eq!(again.get("from/backup", &target_admin).await.status, 404);
    assert_eq!(again.terminate().code(), Some(0));

    let out = restore_forced(&target.data_dir, &file, &env);
    assert_eq!(counts(&ok(&out), "restored ", &from(&file)), [2, 3, 1, 1]);
    let mut replaced = spawn_with(options().data_dir(&target.data_dir)).await;
    assert!(replaced.bootstrap_key.is_none());
    assert_eq!(
        replaced.get("from/backup", &src_admin).await.json()["value"],
        "b2"
    );
    assert_eq!(
        replaced.get("shared", &src_admin).await.json()["value"],
        "backup-shared"
    );
    assert_eq!(
        replaced.get("target/own", &src_admin).await.status,
        404,
        "the target's own secret is gone"
    );
    let meta = replaced
        .send(
            replaced.client.get(replaced.url("/metadata/from/backup")),
            &src_admin,
        )
        .await;
    assert_eq!(meta.json(), src_meta.json());
    let list = replaced
        .send(replaced.client.get(replaced.url("/secrets")), &src_admin)
        .await;
    let listed = list.json();
    let keys: Vec<&str> = listed["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["from/backup", "shared"], "the backup's secrets only");
    assert_eq!(replaced.terminate().code(), Some(0));
    let (verified, text) = verify(&target.data_dir, &env);
    assert!(verified && text.contains("intact"), "{text}");
    assert!(trail_actions(&target.data_dir, &env)
        .iter()
        .any(|a| a == "system.restore"));
}

#[tokio::test]
async fn a_backup_taken_during_writes_is_one_instant() {
    sqlite_only!("one read transaction is the embedded engine's guarantee");
    let app = Arc::new(spawn_app().await);
    let admin = app.admin();
    let key = |i: usize| format!("k{i:03}");
    // Round 1: every key once. (One writer at a time throughout: what this
    // test looks at is the backup, not concurrent writes.)
    for i in 0..500 {
        let r = app.put(&key(i), "r1", &admin).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }

    // Rounds 2, 3, ...: k000..k499 in order, one write at a time, so any
    // instant sees a prefix of the keys one version ahead of the rest.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (app, admin, stop) = (app.clone(), admin.clone(), stop.clone());
        tokio::spawn(async move {
            let mut round = 2;
            while !stop.load(Ordering::SeqCst) {
                for i in 0..500 {
                    let r = app.put(&key(i), &format!("r{round}"), &admin).await;
                    assert_eq!(r.status, 200, "{}", r.body);
                }
                round += 1;
            }
            round
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for n in 0..5 {
        let file = dir.path().join(format!("during-{n}.backup"));
        let (data_dir, out) = (app.data_dir.clone(), file.clone());
        let output = tokio::task::spawn_blocking(move || backup(&data_dir, &out))
            .await
            .unwrap();
        ok(&output);
        files.push(file);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let rounds = writer.await.unwrap();
    eprintln!("writer finished {} rounds", rounds - 2);

    let mut states = Vec::new();
    for file in &files {
        let lines = backup_lines(file);
        let mut secrets: Vec<(String, u64, u64)> = secrets_of(&lines)
            .map(|s| {
                let highest = s["versions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v["version"].as_u64().unwrap())
                    .max()
                    .unwrap();
                (
                    s["key"].as_str().unwrap().to_owned(),
                    s["current_version"].as_u64().unwrap(),
                    highest,
                )
            })
            .collect();
        secrets.sort();
        assert_eq!(secrets.len(), 500, "{}", file.display());
        for (key, current, highest) in &secrets {
            assert_eq!(current, highest, "{key} in {}", file.display());
        }
        let versions: Vec<u64> = secrets.iter().map(|s| s.1).collect();
        let cut = versions.windows(2).all(|w| w[0] >= w[1]) && versions[0] - versions[499] <= 1;
        assert!(
            cut,
            "{}: not one instant of sequential writes: {versions:?}",
            file.display()
        );
        states.push(versions.iter().sum::<u64>());
    }
    eprintln!("backups saw version sums {states:?}");
    states.dedup();
    assert!(
        states.len() > 1,
        "the writer made no progress between backups"
    );
}

#[tokio::test]
async fn migrate_copies_sqlite_to_nats_and_back_with_every_version_identical() {
    sqlite_only!("starts from the embedded store; the nats run covers restore into nats");
    const KEYS: usize = 10_000;
    const TASKS: usize = 32;
    let started = Instant::now();
    let mut phase = Instant::now();
    let mut lap = |name: &str| {
        eprintln!(
            "{name}: {:.1?} (total {:.1?})",
            phase.elapsed(),
            started.elapsed()
        );
        phase = Instant::now();
    };
    let src = Arc::new(spawn_app().await);
    let admin = src.admin();
    let suffix = random_hex(8);
    let key = |i: usize| format!("m/{i:05}");
    let value = move |i: usize, v: u64| format!("{i}-v{v}-{suffix}");
    let deleted = |i: usize| i % 1000 == 7;

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (src, admin, value) = (src.clone(), admin.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            for i in (t..KEYS).step_by(TASKS) {
                for v in 1..=3 {
                    let r = src.put(&key(i), &value(i, v), &admin).await;
                    assert_eq!(r.status, 200, "{}", r.body);
                }
                if deleted(i) {
                    assert_eq!(src.delete(&key(i), &admin).await.status, 200);
                }
            }
        }));
    }
    for t in tasks.drain(..) {
        t.await.unwrap();
    }
    lap("30,000 writes");
    let original = metadata_of_all(&src, &admin, KEYS, TASKS).await;
    // The versions of a soft-deleted key answer as the source answered.
    let mut deleted_answers = Vec::new();
    for i in (0..KEYS).filter(|&i| deleted(i)) {
        for v in 1..=3 {
            let r = src.get(&format!("{}?version={v}", key(i)), &admin).await;
            deleted_answers.push((i, v, r.status, r.body));
        }
    }
    lap("source metadata");
    let mut src = Arc::try_unwrap(src).ok().expect("no task holds the app");
    assert_eq!(src.terminate().code(), Some(0));

    // sqlite → a fresh nats bucket.
    let bucket = format!("mig{}", random_hex(8));
    let out = command(&src.data_dir)
        .args([
            "migrate",
            "--to-store",
            "nats",
            "--to-nats-url",
            shared_nats_url(),
        ])
        .args(["--to-nats-bucket", &bucket])
        .output()
        .unwrap();
    let expected = [KEYS as u64, 3 * KEYS as u64, 1, 1];
    assert_eq!(counts(&ok(&out), "migrated ", ""), expected);
    lap("migrate sqlite -> nats");

    // That bucket → a fresh sqlite data dir, under the same master key.
    let master_key = src.data_dir.join("master.key");
    let scratch = tempfile::tempdir().unwrap();
    let (_temp, target) = fresh_target(Some(&src.data_dir));
    let nats_source = |cmd: &mut Command| {
        cmd.env("STRONGROOM_MASTER_KEY_FILE", &master_key).args([
            "--store",
            "nats",
            "--nats-url",
            shared_nats_url(),
            "--nats-bucket",
            &bucket,
        ]);
    };
    let mut back = command(scratch.path());
    back.arg("migrate");
    nats_source(&mut back);
    back.args(["--to-store", "sqlite", "--to-data-dir"])
        .arg(&target);
    assert_eq!(
        counts(&ok(&back.output().unwrap()), "migrated ", ""),
        expected
    );
    lap("migrate nats -> sqlite");

    // The middle store's trail is the stream `<bucket>_audit`.
    for sub in ["verify", "export"] {
        let mut cmd = command(scratch.path());
        cmd.args(["audit", sub]);
        nats_source(&mut cmd);
        let text = ok(&cmd.output().unwrap());
        if sub == "verify" {
            assert!(text.contains("intact"), "{text}");
        } else {
            assert!(text.contains("\"system.restore\""), "{text}");
        }
    }

    let mut app = Arc::new(spawn_with(Options::default().data_dir(&target)).await);
    assert!(app.bootstrap_key.is_none());
    let migrated = metadata_of_all(&app, &admin, KEYS, TASKS).await;
    assert_eq!(migrated.len(), original.len());
    for (i, (a, b)) in migrated.iter().zip(&original).enumerate() {
        assert_eq!(a, b, "metadata of {}", key(i));
    }
    for t in 0..TASKS {
        let (app, admin, value) = (app.clone(), admin.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            for i in (t..KEYS).step_by(TASKS).filter(|&i| !deleted(i)) {
                for v in 1..=3 {
                    let r = app.get(&format!("{}?version={v}", key(i)), &admin).await;
                    assert_eq!(
                        (r.status, r.json()["value"].as_str().map(str::to_owned)),
                        (200, Some(value(i, v))),
                        "{} version {v}",
                        key(i)
                    );
                }
            }
        }));
    }
    for t in tasks.drain(..) {
        t.await.unwrap();
    }
    for (i, v, status, body) in &deleted_answers {
        let r = app.get(&format!("{}?version={v}", key(*i)), &admin).await;
        assert_eq!(
            (r.status, &r.body),
            (*status, body),
            "{} version {v}",
            key(*i)
        );
    }
    lap("compare 40,000 answers");
    let app = Arc::get_mut(&mut app).expect("no task holds the app");
    assert_eq!(app.terminate().code(), Some(0));
    let (verified, text) = verify(&target, &[]);
    assert!(verified && text.contains("intact"), "{text}");
    assert!(trail_actions(&target, &[])
        .iter()
        .any(|a| a == "system.restore"));
    lap("verify");
}

#[tokio::test]
async fn scheduled_backups_are_written_pruned_and_a_failure_never_stops_the_server() {
    let temp = tempfile::tempdir().unwrap();
    let backups = temp.path().join("backups");
    std::fs::create_dir(&backups).unwrap();
    let app = spawn_with(
        Options::default()
            .env("STRONGROOM_BACKUP_DIR", backups.to_str().unwrap())
            .env("STRONGROOM_BACKUP_INTERVAL", "1s")
            .env("STRONGROOM_BACKUP_KEEP", "3"),
    )
    .await;
    let admin = app.admin();
    assert_eq!(app.put("sched/a", "one", &admin).await.status, 200);
    assert_eq!(app.put("sched/b", "two", &admin).await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.counter("strongroom_backups_total").await < 5 {
        assert!(
            Instant::now() < deadline,
            "fewer than 5 backups in 30 s:\n{}",
            app.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.counter("strongroom_backups_failed_total").await, 0);

    // Between two runs the dir holds exactly `keep` backups and no temp
    // file (a run is written to `.…tmp` and renamed, then the oldest pruned).
    let deadline = Instant::now() + Duration::from_secs(10);
    let copies = loop {
        let names: Vec<String> = std::fs::read_dir(&backups)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let finished: Vec<&String> = names.iter().filter(|n| n.ends_with(".backup")).collect();
        if finished.len() == 3 && names.len() == 3 {
            for name in &finished {
                assert!(is_backup_name(name), "{name}");
            }
            // Copied out, as the server goes on pruning.
            let copies: Option<Vec<(String, Vec<u8>)>> = finished
                .iter()
                .map(|n| {
                    std::fs::read(backups.join(n))
                        .ok()
                        .map(|b| (n.to_string(), b))
                })
                .collect();
            if let Some(copies) = copies {
                break copies;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never exactly 3 backups and nothing else: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let newest = copies.iter().map(|(n, _)| n).max().unwrap().clone();
    for (name, bytes) in &copies {
        let file = temp.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let (_t, target) = fresh_target(Some(&app.data_dir));
        let shown = counts(
            &ok(&restore(&target, &file, &[])),
            "restored ",
            &from(&file),
        );
        if *name == newest {
            assert_eq!(shown[..2], [2, 2], "the newest backup holds both secrets");
        }
    }

    // A backup dir that is a regular file: every run fails, the server
    // goes on serving.
    let not_a_dir = temp.path().join("not-a-dir");
    std::fs::write(&not_a_dir, "a file").unwrap();
    let mut broken = spawn_with(
        Options::default()
            .env("STRONGROOM_BACKUP_DIR", not_a_dir.to_str().unwrap())
            .env("STRONGROOM_BACKUP_INTERVAL", "1s")
            .env("STRONGROOM_BACKUP_KEEP", "3"),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while broken.counter("strongroom_backups_failed_total").await < 2 {
        assert!(
            Instant::now() < deadline,
            "fewer than 2 failed backups in 10 s:\n{}",
            broken.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        broken.log_shows("backup failed").await,
        "{}",
        broken.log_text()
    );
    assert_eq!(broken.counter("strongroom_backups_total").await, 0);
    let cred = broken.admin();
    assert_eq!(broken.put("still/serving", "yes", &cred).await.status, 200);
    assert_eq!(
        broken.get("still/serving", &cred).await.json()["value"],
        "yes"
    );
    assert!(
        broken.child.try_wait().unwrap().is_none(),
        "the server stopped"
    );
    assert_eq!(std::fs::read_to_string(&not_a_dir).unwrap(), "a file");
    assert_eq!(broken.terminate().code(), Some(0));
}

/// `strongroom backup --out FILE` on the test's store.
fn backup(data_dir: &Path, out: &Path) -> Output {
    backup_with(data_dir, out, &[])
}

fn backup_with(data_dir: &Path, out: &Path, env: &[(&str, &str)]) -> Output {
    command(data_dir)
        .envs(env.iter().copied())
        .args(["backup", "--out"])
        .arg(out)
        .output()
        .unwrap()
}

/// `strongroom restore --from FILE` into the store of `data_dir`.
fn restore(data_dir: &Path, file: &Path, env: &[(&str, &str)]) -> Output {
    command(data_dir)
        .envs(env.iter().copied())
        .args(["restore", "--from"])
        .arg(file)
        .output()
        .unwrap()
}

fn restore_forced(data_dir: &Path, file: &Path, env: &[(&str, &str)]) -> Output {
    command(data_dir)
        .envs(env.iter().copied())
        .args(["restore", "--force", "--from"])
        .arg(file)
        .output()
        .unwrap()
}

/// Asserts the command succeeded and returns its stdout.
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Asserts the command exited 1 and returns its stderr.
fn refused(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

fn to(file: &Path) -> String {
    format!(" to {}", file.display())
}

fn from(file: &Path) -> String {
    format!(" from {}", file.display())
}

/// The counts of `<verb>S secrets (V versions), D data keys, A API keys<tail>`
/// (one line; a singular noun for a count of 1 is accepted).
fn counts(stdout: &str, verb: &str, tail: &str) -> [u64; 4] {
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout:?}");
    let middle = stdout
        .trim_end()
        .strip_prefix(verb)
        .and_then(|s| s.strip_suffix(tail))
        .unwrap_or_else(|| panic!("not {verb}…{tail}: {stdout:?}"));
    let numbers: Vec<u64> = middle
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(numbers.len(), 4, "{stdout:?}");
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    let words = |p: [&str; 4]| {
        format!(
            "{} secret{} ({} version{}), {} data key{}, {} API key{}",
            numbers[0], p[0], numbers[1], p[1], numbers[2], p[2], numbers[3], p[3]
        )
    };
    let all_plural = words(["s"; 4]);
    let by_count = words([
        plural(numbers[0]),
        plural(numbers[1]),
        plural(numbers[2]),
        plural(numbers[3]),
    ]);
    assert!(middle == all_plural || middle == by_count, "{stdout:?}");
    [numbers[0], numbers[1], numbers[2], numbers[3]]
}

/// A fresh data dir (and so, on nats, a fresh bucket), holding the master
/// key of `key_from` when given.
fn fresh_target(key_from: Option<&Path>) -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("data");
    if let Some(source) = key_from {
        copy_master_key(source, &dir);
    }
    (temp, dir)
}

fn copy_master_key(from_dir: &Path, to_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to_dir).unwrap();
    std::fs::set_permissions(to_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let to = to_dir.join("master.key");
    std::fs::copy(from_dir.join("master.key"), &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The backup file's lines, parsed.
fn backup_lines(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn secrets_of(lines: &[serde_json::Value]) -> impl Iterator<Item = &serde_json::Value> {
    lines.iter().filter_map(|l| l.get("secret"))
}

/// `strongroom audit verify` on the store of `data_dir`: (passed, output).
fn verify(data_dir: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = command(data_dir)
        .envs(env.iter().copied())
        .args(["audit", "verify"])
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

/// The actions of the trail's lines, from `strongroom audit export`.
fn trail_actions(data_dir: &Path, env: &[(&str, &str)]) -> Vec<String> {
    let out = command(data_dir)
        .envs(env.iter().copied())
        .args(["audit", "export"])
        .output()
        .unwrap();
    ok(&out)
        .lines()
        .map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).unwrap();
            line["action"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// One answer of a probe: what a client sees.
#[derive(Debug, PartialEq)]
struct Answer {
    probe: String,
    status: u16,
    etag: Option<String>,
    last_modified: Option<String>,
    body: serde_json::Value,
}

async fn answers(app: &TestApp, probes: &[(String, Cred, String)]) -> Vec<Answer> {
    let mut out = Vec::new();
    for (who, cred, path) in probes {
        let r = app.send(app.client.get(app.url(path)), cred).await;
        out.push(Answer {
            probe: format!("{who} GET {path}"),
            status: r.status,
            etag: r.header("etag"),
            last_modified: r.header("last-modified"),
            body: r.json(),
        });
    }
    out
}

/// `GET /metadata/K` of keys `m/00000..`, fetched by `tasks` at once.
async fn metadata_of_all(
    app: &Arc<TestApp>,
    cred: &Cred,
    keys: usize,
    tasks: usize,
) -> Vec<serde_json::Value> {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (app, cred) = (app.clone(), cred.clone());
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in (t..keys).step_by(tasks) {
                let r = app
                    .send(
                        app.client.get(app.url(&format!("/metadata/m/{i:05}"))),
                        &cred,
                    )
                    .await;
                assert_eq!(r.status, 200, "m/{i:05}: {}", r.body);
                got.push((i, r.json()));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, m)| m).collect()
}

/// `strongroom-<yyyymmddThhmmss.mmmZ>.backup`.
fn is_backup_name(name: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix("strongroom-")
        .and_then(|s| s.strip_suffix("Z.backup"))
    else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 19
        && b[8] == b'T'
        && b[15] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || i == 15 || c.is_ascii_digit())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    aws_lc_rs::rand::fill(&mut buf).unwrap();
    hex::encode(buf)
}

/// Reproduction (issue 32, item 2): `backup --data-dir D --out
/// D/strongroom.db` renamed the backup over the live database; the server
/// kept answering 200 into the unlinked file, and after a restart the store
/// said "file is not a database" and acknowledged writes were gone. Every
/// spelling of a path into the data dir is refused now (compared by device
/// and inode), an existing file is replaced only with `--force`, and the
/// same for `restore --from`, `migrate --to-data-dir` and `--backup-dir`.
#[tokio::test]
async fn a_backup_never_lands_in_the_data_dir_and_never_overwrites_without_force() {
    let mut app = spawn_app().await;
    let admin = app.admin();
    assert_eq!(app.put("typo/a", "kept", &admin).await.status, 200);
    let temp = tempfile::tempdir().unwrap();
    let alias = temp.path().join("alias");
    std::os::unix::fs::symlink(&app.data_dir, &alias).unwrap();
    let mut into_store = vec![
        app.data_dir.join("new.backup"),
        alias.join("new.backup"),
        temp.path().join("alias/../data/x.backup"),
    ];
    let files: Vec<PathBuf> = std::fs::read_dir(&app.data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert!(!files.is_empty());
    for file in &files {
        into_store.push(file.clone());
        // A hard link elsewhere is the same file.
        let linked = temp.path().join(format!(
            "link-{}",
            file.file_name().unwrap().to_string_lossy()
        ));
        std::fs::hard_link(file, &linked).unwrap();
        into_store.push(linked);
    }
    // A backup renamed over a file would give it a new inode.
    let inode = |f: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(f).unwrap());
    let before: Vec<(PathBuf, u64)> = files.iter().map(|f| (f.clone(), inode(f))).collect();
    for out in &into_store {
        let forced = command(&app.data_dir)
            .args(["backup", "--force", "--out"])
            .arg(out)
            .output()
            .unwrap();
        let err = refused(&forced);
        assert!(
            err.contains("inside the store's data directory"),
            "{}: {err}",
            out.display()
        );
        let restored = restore_forced(&app.data_dir, out, &[]);
        assert!(
            refused(&restored).contains("data directory"),
            "{}",
            out.display()
        );
    }
    for (file, ino) in &before {
        assert_eq!(inode(file), *ino, "{} was replaced", file.display());
    }
    assert!(!app.data_dir.join("new.backup").exists());

    // Outside it: written; again without --force: refused, file unchanged.
    let out = temp.path().join("ok.backup");
    ok(&backup(&app.data_dir, &out));
    let first = std::fs::read(&out).unwrap();
    assert!(refused(&backup(&app.data_dir, &out)).contains("--force"));
    assert_eq!(std::fs::read(&out).unwrap(), first);
    let forced = command(&app.data_dir)
        .args(["backup", "--force", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    ok(&forced);

    // Nothing acknowledged was lost: served now and after a restart.
    assert_eq!(app.put("typo/b", "after", &admin).await.status, 200);
    app.terminate();
    let app = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    for (key, value) in [("typo/a", "kept"), ("typo/b", "after")] {
        let got = app.get(key, &admin).await;
        assert_eq!(
            (got.status, got.json()["value"].as_str()),
            (200, Some(value))
        );
    }
}

#[tokio::test]
async fn migrate_and_scheduled_backups_refuse_the_source_data_dir() {
    sqlite_only!("a nats target keeps nothing in a data dir");
    let app = spawn_app().await;
    let data = app.data_dir.clone();
    for target in [
        data.clone(),
        data.join("inner"),
        data.parent().unwrap().to_owned(),
    ] {
        let out = command(&data)
            .args([
                "migrate",
                "--to-store",
                "sqlite",
                "--force",
                "--to-data-dir",
            ])
            .arg(&target)
            .output()
            .unwrap();
        assert!(
            refused(&out).contains("data directory"),
            "{}",
            target.display()
        );
    }
    let started = command(&data)
        .env("STRONGROOM_BACKUP_DIR", data.join("backups"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&started.stderr);
    assert!(
        !started.status.success() && err.contains("--backup-dir"),
        "{err}"
    );
}

/// Polls `/readyz` until a warning says `needle`; fails after 30 s.
async fn wait_for_warning(app: &TestApp, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body: serde_json::Value = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let warned = body["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w.as_str().unwrap_or("").contains(needle)));
        if warned {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no warning says {needle:?}: {body}\n{}",
            app.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reproduction (issue 32, item 6): scheduled backups on a full backup
/// disk failed every time while older ones filled it. Now the oldest go
/// early, one at a time (never the newest), the new one is written, and
/// `/readyz`'s detail says so; with no room even then, it says the backup
/// failed.
#[tokio::test]
async fn scheduled_backups_on_a_full_disk_make_room_by_age_and_say_so() {
    let Some(fs) = crate::audit::Tmpfs::mount("3m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let backups = fs.0.join("backups");
    std::fs::create_dir(&backups).unwrap();
    let app = spawn_with(
        Options::default()
            .env("STRONGROOM_BACKUP_DIR", backups.to_str().unwrap())
            .env("STRONGROOM_BACKUP_INTERVAL", "1s")
            .env("STRONGROOM_BACKUP_KEEP", "10"),
    )
    .await;
    let admin = app.admin();
    // About 700 KB a backup (sealed values do not compress): four fit.
    let value = random_hex(30_000);
    for i in 0..12 {
        assert_eq!(
            app.put(&format!("room/{i}"), &value, &admin).await.status,
            200
        );
    }
    wait_for_warning(&app, "removed early").await;
    // Every backup left is whole, and the newest is recent.
    let names: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".backup"))
        .collect();
    assert!(names.len() >= 2, "{names:?}");
    assert!(app.counter("strongroom_backups_total").await >= names.len() as u64);

    // A value too big for the disk even when emptied: the backup fails and
    // /readyz says so; the server serves.
    for i in 0..40 {
        assert_eq!(
            app.put(&format!("huge/{i}"), &value, &admin).await.status,
            200
        );
    }
    wait_for_warning(&app, "scheduled backup failed").await;
    assert_eq!(app.get("room/0", &admin).await.status, 200);
    // Room was made down to one backup, never the newest: the one left is
    // no older than the newest seen before the store outgrew the disk.
    let left: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".backup"))
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        &left[0] >= names.iter().max().unwrap(),
        "{left:?} after {names:?}"
    );
}
