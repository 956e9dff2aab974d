//! Versions, check-and-set, soft delete, undelete, destroy, metadata and
//! listing, over HTTP.

use std::collections::HashSet;

use crate::helpers::*;

impl TestApp {
    async fn put_with(&self, key: &str, value: &str, header: (&str, &str), cred: &Cred) -> Reply {
        let body = serde_json::json!({ "key": key, "value": value }).to_string();
        let b = self
            .client
            .put(self.url("/secrets"))
            .header("Content-Type", "application/json")
            .header(header.0, header.1)
            .body(body);
        self.send(b, cred).await
    }
    pub async fn metadata(&self, key: &str, cred: &Cred) -> Reply {
        self.send(self.client.get(self.url(&format!("/metadata/{key}"))), cred)
            .await
    }
    pub async fn list(&self, query: &str, cred: &Cred) -> Reply {
        self.send(self.client.get(self.url(&format!("/secrets{query}"))), cred)
            .await
    }
}

#[tokio::test]
async fn each_put_makes_a_new_version_reported_as_etag() {
    let app = spawn_app().await;
    let admin = app.admin();
    let first = app.put("k", "one", &admin).await;
    assert_eq!(first.header("etag").as_deref(), Some("\"1\""));
    app.put("k", "two", &admin).await;
    let r = app.get("k", &admin).await;
    assert_eq!(r.header("etag").as_deref(), Some("\"2\""));
    let modified = r.header("last-modified").unwrap();
    assert!(httpdate_parses(&modified), "{modified}");
    let old = app.get("k?version=1", &admin).await;
    assert_eq!(
        (old.json()["value"].as_str(), old.header("etag").as_deref()),
        (Some("one"), Some("\"1\""))
    );
    assert_eq!(app.get("k?version=2", &admin).await.json()["value"], "two");
    assert_eq!(app.get("k?version=3", &admin).await.status, 404);
    for bad in ["0", "-1", "x", "1.5", "99999999999999999999"] {
        let r = app.get(&format!("k?version={bad}"), &admin).await;
        assert_eq!(
            (r.status, r.error()),
            (400, "error retrieving secret".into()),
            "{bad}"
        );
    }
}

fn httpdate_parses(text: &str) -> bool {
    text.ends_with(" GMT") && text.len() == 29
}

#[tokio::test]
async fn versions_beyond_max_versions_are_pruned_oldest_first() {
    let app = spawn_with(Options::default().env("STRONGROOM_MAX_VERSIONS", "3")).await;
    let admin = app.admin();
    for i in 1..=5 {
        app.put("k", &format!("v{i}"), &admin).await;
    }
    assert_eq!(app.get("k?version=2", &admin).await.status, 404, "pruned");
    assert_eq!(app.get("k?version=3", &admin).await.json()["value"], "v3");
    let meta = app.metadata("k", &admin).await.json();
    let versions: Vec<u64> = meta["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [3, 4, 5]);
}

#[tokio::test]
async fn default_keeps_ten_versions() {
    let app = spawn_app().await;
    let admin = app.admin();
    for i in 1..=12 {
        app.put("k", &format!("v{i}"), &admin).await;
    }
    assert_eq!(app.get("k?version=2", &admin).await.status, 404);
    assert_eq!(app.get("k?version=3", &admin).await.json()["value"], "v3");
}

#[tokio::test]
async fn if_match_mismatch_answers_412_and_changes_nothing() {
    let app = spawn_app().await;
    let admin = app.admin();
    app.put("k", "one", &admin).await;
    let r = app
        .put_with("k", "two", ("If-Match", "\"7\""), &admin)
        .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (412, r#"{"error":"version mismatch"}"#)
    );
    assert_eq!(app.get("k", &admin).await.json()["value"], "one");
    let r = app
        .put_with("k", "two", ("If-Match", "\"1\""), &admin)
        .await;
    assert_eq!(
        (r.status, r.header("etag").as_deref()),
        (200, Some("\"2\""))
    );
    let del = app
        .client
        .delete(app.url("/secrets/k"))
        .header("If-Match", "\"1\"");
    assert_eq!(app.send(del, &admin).await.status, 412);
    assert_eq!(app.get("k", &admin).await.json()["value"], "two");
    let del = app
        .client
        .delete(app.url("/secrets/k"))
        .header("If-Match", "\"2\"");
    assert_eq!(app.send(del, &admin).await.status, 200);
    let r = app
        .put_with("k", "x", ("If-Match", "\"nope\""), &admin)
        .await;
    assert_eq!(
        (r.status, r.error()),
        (400, "invalid request format".into())
    );
}

#[tokio::test]
async fn if_none_match_creates_only() {
    let app = spawn_app().await;
    let admin = app.admin();
    assert_eq!(
        app.put_with("k", "one", ("If-None-Match", "*"), &admin)
            .await
            .status,
        200
    );
    let r = app
        .put_with("k", "two", ("If-None-Match", "*"), &admin)
        .await;
    assert_eq!((r.status, r.error()), (412, "version mismatch".into()));
    assert_eq!(app.get("k", &admin).await.json()["value"], "one");
}

#[tokio::test]
async fn racing_create_only_puts_have_exactly_one_winner() {
    let app = spawn_app().await;
    let admin = app.admin();
    for round in 0..5 {
        let key = format!("race/{round}");
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (client, url, cred) = (app.client.clone(), app.url("/secrets"), admin.clone());
            let body =
                serde_json::json!({ "key": key, "value": format!("writer-{i}") }).to_string();
            tasks.push(tokio::spawn(async move {
                let Cred::ApiKey(k) = cred else {
                    unreachable!()
                };
                let r = client
                    .put(url)
                    .header("X-Api-Key", k)
                    .header("Content-Type", "application/json")
                    .header("If-None-Match", "*")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (i, r.status().as_u16())
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (i, status) = t.await.unwrap();
            match status {
                200 => winners.push(i),
                412 => {}
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let got = app.get(&key, &admin).await;
        assert_eq!(got.json()["value"], format!("writer-{}", winners[0]));
        assert_eq!(got.header("etag").as_deref(), Some("\"1\""));
    }
}

#[tokio::test]
async fn soft_delete_undelete_and_put_after_delete() {
    let app = spawn_app().await;
    let admin = app.admin();
    app.put("k", "one", &admin).await;
    app.put("k", "two", &admin).await;
    assert_eq!(app.delete("k", &admin).await.status, 200);
    assert_eq!(app.get("k", &admin).await.status, 404);
    let meta = app.metadata("k", &admin).await.json();
    assert_eq!(
        (meta["deleted"].as_bool(), meta["current_version"].as_u64()),
        (Some(true), Some(2))
    );
    let undelete = app
        .send(app.client.post(app.url("/undelete/k")), &admin)
        .await;
    assert_eq!(
        (undelete.status, undelete.body.as_str()),
        (200, r#"{"message":"success"}"#)
    );
    assert_eq!(app.get("k", &admin).await.json()["value"], "two");
    assert_eq!(
        app.send(app.client.post(app.url("/undelete/k")), &admin)
            .await
            .status,
        404,
        "nothing to restore"
    );
    assert_eq!(
        app.send(app.client.post(app.url("/undelete/never")), &admin)
            .await
            .status,
        404
    );
    // PUT on a soft-deleted key makes the next version, as Vault KV v2 does.
    app.delete("k", &admin).await;
    let r = app.put("k", "three", &admin).await;
    assert_eq!(r.header("etag").as_deref(), Some("\"3\""));
    let meta = app.metadata("k", &admin).await.json();
    let flags: Vec<(u64, bool)> = meta["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["deleted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(flags, [(1, false), (2, true), (3, false)]);
}

#[tokio::test]
async fn metadata_has_the_documented_shape_and_no_value() {
    let app = spawn_app().await;
    let admin = app.admin();
    app.put("team/db", "metadata-canary", &admin).await;
    app.put("team/db", "metadata-canary-2", &admin).await;
    let r = app.metadata("team/db", &admin).await;
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("metadata-canary"));
    let m = r.json();
    let fields = field_names(&m);
    assert_eq!(
        fields,
        [
            "created_at",
            "current_version",
            "deleted",
            "expires_at",
            "key",
            "updated_at",
            "versions"
        ]
    );
    assert!(m["expires_at"].is_null(), "written without an expiry");
    assert_eq!(m["key"], "team/db");
    assert_eq!(m["current_version"], 2);
    assert_eq!(m["deleted"], false);
    for v in m["versions"].as_array().unwrap() {
        let fields = field_names(v);
        // dek_id: the data key the version is sealed under (issue 18).
        // destroyed: its value gone for good (Vault's destroy, issue 36).
        assert_eq!(
            fields,
            ["created_at", "dek_id", "deleted", "destroyed", "version"]
        );
        assert_eq!(v["destroyed"], false, "{v}");
        assert!(v["dek_id"].as_u64().is_some_and(|id| id >= 1), "{v}");
        assert!(is_rfc3339_utc(v["created_at"].as_str().unwrap()));
    }
    assert!(is_rfc3339_utc(m["created_at"].as_str().unwrap()));
    assert!(m["updated_at"].as_str().unwrap() >= m["created_at"].as_str().unwrap());
    assert_eq!(app.metadata("missing", &admin).await.status, 404);
    assert_eq!(app.metadata("bad..key", &admin).await.status, 400);
}

fn is_rfc3339_utc(text: &str) -> bool {
    let b = text.as_bytes();
    text.len() == 24 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && text.ends_with('Z')
}

#[tokio::test]
async fn destroy_removes_every_version_and_its_bytes() {
    let mut app = spawn_app().await;
    let admin = app.admin();
    app.put("doomed", "destroy-me-1", &admin).await;
    app.put("doomed", "destroy-me-2", &admin).await;
    app.put("kept", "kept-value", &admin).await;
    // The sealed bytes as stored, to look for after the destroy.
    // On nats a record is a 33-byte header and the sealed bytes.
    let doomed = nats_secret_key("default", "doomed");
    let sealed: Vec<Vec<u8>> = if on_nats() {
        nats_kv_history(&app.data_dir, "", &doomed)
            .await
            .into_iter()
            .map(|p| p[33..].to_vec())
            .collect()
    } else {
        let db = rusqlite::Connection::open(app.data_dir.join("strongroom.db")).unwrap();
        let mut stmt = db
            .prepare("SELECT sealed FROM versions WHERE key = 'doomed'")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(sealed.len(), 2);
    let r = app
        .send(app.client.delete(app.url("/metadata/doomed")), &admin)
        .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"message":"success"}"#)
    );
    assert_eq!(app.get("doomed", &admin).await.status, 404);
    assert_eq!(app.get("doomed?version=1", &admin).await.status, 404);
    assert_eq!(app.metadata("doomed", &admin).await.status, 404);
    assert_eq!(
        app.send(app.client.post(app.url("/undelete/doomed")), &admin)
            .await
            .status,
        404
    );
    assert_eq!(
        app.send(app.client.delete(app.url("/metadata/doomed")), &admin)
            .await
            .status,
        404
    );
    if on_nats() {
        // A purge is a rollup: the stream keeps only the purge marker. (The
        // file store frees the messages; it does not overwrite them on disk.)
        let left = nats_kv_history(&app.data_dir, "", &doomed).await;
        assert!(
            left.iter().all(Vec::is_empty),
            "{} messages left",
            left.len()
        );
    }
    // Shutdown checkpoints the WAL into the database file.
    assert_eq!(app.terminate().code(), Some(0));
    for entry in std::fs::read_dir(&app.data_dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        for blob in &sealed {
            // The ciphertext and tag after the 17-byte header.
            let needle = &blob[17..];
            assert!(
                !data.windows(needle.len()).any(|w| w == needle),
                "destroyed bytes still on disk"
            );
        }
    }
    let again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    assert_eq!(
        again.get("kept", &admin).await.json()["value"],
        "kept-value"
    );
    let r = again.put("doomed", "reborn", &admin).await;
    assert_eq!(
        r.header("etag").as_deref(),
        Some("\"1\""),
        "a destroyed key starts over"
    );
}

#[tokio::test]
async fn listing_returns_metadata_in_byte_order_without_values() {
    let app = spawn_app().await;
    let admin = app.admin();
    for key in ["b", "a/2", "a/1", "B", "a/3", "c"] {
        app.put(key, "list-canary", &admin).await;
    }
    app.delete("a/3", &admin).await;
    let r = app.list("", &admin).await;
    assert_eq!(r.status, 200);
    assert!(!r.body.contains("list-canary"));
    let body = r.json();
    let keys: Vec<&str> = body["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["B", "a/1", "a/2", "b", "c"],
        "byte order, soft-deleted left out"
    );
    assert!(body["next_cursor"].is_null());
    let first = &body["secrets"][0];
    let fields = field_names(first);
    assert_eq!(
        fields,
        ["created_at", "expires_at", "key", "updated_at", "version"]
    );
    assert!(first["expires_at"].is_null());
    let r = app.list("?prefix=a/", &admin).await.json();
    assert_eq!(r["secrets"].as_array().unwrap().len(), 2);
    for bad in ["?limit=1001", "?limit=0", "?limit=x", "?prefix=a%20b"] {
        let r = app.list(bad, &admin).await;
        assert_eq!(
            (r.status, r.error()),
            (400, "invalid request format".into()),
            "{bad}"
        );
    }
    assert_eq!(app.list("?limit=1000", &admin).await.status, 200);
}

#[tokio::test]
async fn walking_250_keys_in_pages_of_100_sees_each_once_while_others_are_written() {
    let app = spawn_app().await;
    let admin = app.admin();
    let mut want = HashSet::new();
    for i in 0..250 {
        let key = format!("walk/{i:04}");
        app.put(&key, "v", &admin).await;
        want.insert(key);
    }
    // Writers add and update other keys, before and after the walk's
    // position, while it runs.
    let writer = {
        let (client, url, cred) = (app.client.clone(), app.url("/secrets"), admin.clone());
        tokio::spawn(async move {
            let Cred::ApiKey(k) = cred else {
                unreachable!()
            };
            for i in 0..200 {
                for key in [
                    format!("walk/{i:04}x"),
                    format!("aaa/{i}"),
                    format!("walk/{:04}", i % 250),
                ] {
                    let body = serde_json::json!({ "key": key, "value": "w" }).to_string();
                    client
                        .put(&url)
                        .header("X-Api-Key", &k)
                        .header("Content-Type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                }
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = "?prefix=walk/&limit=100".to_string();
        if let Some(c) = &cursor {
            query.push_str(&format!("&cursor={}", urlencode(c)));
        }
        let page = app.list(&query, &admin).await.json();
        pages += 1;
        let rows = page["secrets"].as_array().unwrap();
        assert!(rows.len() <= 100);
        seen.extend(rows.iter().map(|r| r["key"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    writer.await.unwrap();
    assert!(pages >= 3);
    let original: Vec<&String> = seen.iter().filter(|k| want.contains(*k)).collect();
    assert_eq!(original.len(), 250, "each original key exactly once");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no key twice");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, seen, "byte order across pages");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn a_narrowed_list_scope_lists_only_under_its_prefix() {
    let app = spawn_app().await;
    let lister = Cred::ApiKey(app.create_key("default", &["--scopes", "secrets:list:prod/"]));
    assert_eq!(app.list("?prefix=prod/", &lister).await.status, 200);
    assert_eq!(app.list("?prefix=prod/app/", &lister).await.status, 200);
    assert_eq!(app.list("", &lister).await.status, 403);
    assert_eq!(app.list("?prefix=dev/", &lister).await.status, 403);
}

/// A version destroyed through Vault's API (one version, not the key) has
/// its value gone from the store: no nats message holds it, no byte of the
/// data dir; the versions beside it stay readable.
#[tokio::test]
async fn a_version_destroyed_through_vault_leaves_no_ciphertext() {
    let mut app = spawn_app().await;
    let admin = app.admin();
    for value in ["one-kept", "two-destroyed", "three-kept"] {
        assert_eq!(app.put("doomed/two", value, &admin).await.status, 200);
    }
    // Version 2's sealed bytes as stored (a nats record of this shape is a
    // 33-byte header and the sealed bytes).
    let doomed = nats_secret_key("default", "doomed/two");
    let sealed: Vec<u8> = if on_nats() {
        let history = nats_kv_history(&app.data_dir, "", &doomed).await;
        assert_eq!(history.len(), 3);
        history[1][33..].to_vec()
    } else {
        let db = rusqlite::Connection::open(app.data_dir.join("strongroom.db")).unwrap();
        db.query_row(
            "SELECT sealed FROM versions WHERE key = 'doomed/two' AND version = 2",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    // The ciphertext and tag after the 17-byte header.
    let needle = sealed[17..].to_vec();
    let r = app
        .send(
            app.client
                .post(app.url("/v1/secret/destroy/doomed/two"))
                .header("X-Vault-Token", app.bootstrap_key.clone().unwrap())
                .body(r#"{"versions":[2]}"#),
            &Cred::None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(app.get("doomed/two?version=2", &admin).await.status, 404);
    for (version, value) in [(1, "one-kept"), (3, "three-kept")] {
        let r = app
            .get(&format!("doomed/two?version={version}"), &admin)
            .await;
        assert_eq!(r.json()["value"], value);
    }
    let meta = app.metadata("doomed/two", &admin).await.json();
    assert_eq!(meta["versions"][1]["destroyed"], true, "{meta}");
    if on_nats() {
        let left = nats_kv_history(&app.data_dir, "", &doomed).await;
        assert!(
            !left
                .iter()
                .any(|m| m.windows(needle.len()).any(|w| w == needle.as_slice())),
            "a message still holds the destroyed version"
        );
    }
    assert_eq!(app.terminate().code(), Some(0));
    for entry in std::fs::read_dir(&app.data_dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !data.windows(needle.len()).any(|w| w == needle.as_slice()),
            "destroyed bytes still on disk"
        );
    }
}
