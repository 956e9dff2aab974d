//! API-key management over HTTP and offline, and the no-escalation rule.

use serde_json::json;

use crate::helpers::*;

impl TestApp {
    pub async fn create_api_key(&self, body: serde_json::Value, cred: &Cred) -> Reply {
        let b = self
            .client
            .post(self.url("/apikeys"))
            .header("Content-Type", "application/json")
            .body(body.to_string());
        self.send(b, cred).await
    }
    pub async fn list_api_keys(&self, cred: &Cred) -> Reply {
        self.send(self.client.get(self.url("/apikeys")), cred).await
    }
    pub async fn revoke_api_key(&self, id: &str, cred: &Cred) -> Reply {
        self.send(
            self.client.delete(self.url(&format!("/apikeys/{id}"))),
            cred,
        )
        .await
    }
}

#[tokio::test]
async fn create_shows_the_key_once_and_it_works_with_default_scopes_for_90_days() {
    let app = spawn_app().await;
    let admin = app.admin();
    let r = app.create_api_key(json!({ "name": "ci" }), &admin).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let body = r.json();
    let fields = field_names(&body);
    assert_eq!(
        fields,
        ["created_at", "expires_at", "id", "key", "name", "scopes"]
    );
    let key = body["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with(&format!("sr_{}_", body["id"].as_str().unwrap())));
    assert_eq!(body["name"], "ci");
    let mut scopes: Vec<&str> = body["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    scopes.sort();
    assert_eq!(
        scopes,
        [
            "secrets:delete",
            "secrets:list",
            "secrets:read",
            "secrets:write"
        ]
    );
    let created = parse_rfc3339_days(body["created_at"].as_str().unwrap());
    let expires = parse_rfc3339_days(body["expires_at"].as_str().unwrap());
    assert_eq!(expires - created, 90, "default lifetime");
    let cred = Cred::ApiKey(key.clone());
    assert_eq!(app.put("k", "v", &cred).await.status, 200);
    // A secrets-only key cannot manage keys.
    assert_eq!(app.list_api_keys(&cred).await.status, 403);

    let listed = app.list_api_keys(&admin).await;
    assert_eq!(listed.status, 200);
    assert!(!listed.body.contains(&key), "key text never listed");
    assert!(
        !listed.body.contains(&key[20..]),
        "not even its secret part"
    );
    let keys = listed.json()["apikeys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2, "bootstrap and ci");
    let ci = keys.iter().find(|k| k["name"] == "ci").unwrap();
    let fields = field_names(ci);
    assert_eq!(
        fields,
        [
            "created_at",
            "expires_at",
            "id",
            "last_used_at",
            "name",
            "scopes"
        ]
    );
    assert!(ci["last_used_at"].is_string(), "used once above: {ci}");
}

/// Days since 1970 of an RFC 3339 date, enough to compare lifetimes.
fn parse_rfc3339_days(text: &str) -> i64 {
    let (y, m, d): (i64, i64, i64) = (
        text[0..4].parse().unwrap(),
        text[5..7].parse().unwrap(),
        text[8..10].parse().unwrap(),
    );
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[tokio::test]
async fn a_revoked_key_answers_401_on_the_next_request() {
    let app = spawn_app().await;
    let admin = app.admin();
    let body = app
        .create_api_key(json!({ "name": "temp", "expires_in_days": 7 }), &admin)
        .await
        .json();
    let (id, key) = (
        body["id"].as_str().unwrap().to_owned(),
        Cred::ApiKey(body["key"].as_str().unwrap().into()),
    );
    assert_eq!(
        parse_rfc3339_days(body["expires_at"].as_str().unwrap())
            - parse_rfc3339_days(body["created_at"].as_str().unwrap()),
        7
    );
    assert_eq!(
        app.get("k", &key).await.status,
        404,
        "works (and is now cached)"
    );
    let r = app.revoke_api_key(&id, &admin).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"message":"success"}"#)
    );
    assert_eq!(app.get("k", &key).await.status, 401, "refused at once");
    assert_eq!(
        app.revoke_api_key(&id, &admin).await.status,
        404,
        "already revoked"
    );
    let listed = app.list_api_keys(&admin).await.json();
    assert!(listed["apikeys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["id"] != id.as_str()));
}

#[tokio::test]
async fn keys_are_tenant_scoped() {
    let app = spawn_app().await;
    let other_admin = Cred::ApiKey(app.create_key("other", &["--scopes", "apikeys:admin"]));
    let mine = app
        .create_api_key(json!({ "name": "mine" }), &app.admin())
        .await
        .json();
    let listed = app.list_api_keys(&other_admin).await.json();
    assert!(listed["apikeys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["name"] != "mine"));
    let id = mine["id"].as_str().unwrap();
    assert_eq!(app.revoke_api_key(id, &other_admin).await.status, 404);
    assert_eq!(
        app.get("k", &Cred::ApiKey(mine["key"].as_str().unwrap().into()))
            .await
            .status,
        404,
        "still works"
    );
}

#[tokio::test]
async fn nobody_mints_a_key_stronger_than_themselves() {
    let app = spawn_app().await;
    let narrow =
        Cred::ApiKey(app.create_key("default", &["--scopes", "apikeys:admin,secrets:read:prod/"]));
    let ok = app
        .create_api_key(
            json!({ "name": "n", "scopes": ["secrets:read:prod/app/"] }),
            &narrow,
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    for scopes in [
        json!(["secrets:read"]),
        json!(["secrets:read:dev/"]),
        json!(["secrets:write:prod/"]),
    ] {
        let r = app
            .create_api_key(json!({ "name": "n", "scopes": scopes }), &narrow)
            .await;
        assert_eq!((r.status, r.error()), (403, "forbidden".into()), "{scopes}");
    }
    // Omitted scopes mean every secrets:* scope, which this key lacks.
    assert_eq!(
        app.create_api_key(json!({ "name": "n" }), &narrow)
            .await
            .status,
        403
    );
    let no_admin = Cred::ApiKey(app.create_key("default", &[]));
    assert_eq!(
        app.create_api_key(
            json!({ "name": "n", "scopes": ["secrets:read"] }),
            &no_admin
        )
        .await
        .status,
        403
    );
}

#[tokio::test]
async fn bad_create_bodies_answer_400() {
    let app = spawn_app().await;
    let admin = app.admin();
    for body in [
        json!({}),
        json!({ "name": "" }),
        json!({ "name": " \u{3000}" }),
        json!({ "name": "\u{85}" }),
        json!({ "name": "a\nb" }),
        json!({ "name": "é".repeat(129) }),
        json!({ "name": 5 }),
        json!({ "name": "n", "scopes": "secrets:read" }),
        json!({ "name": "n", "scopes": ["secrets:bogus"] }),
        json!({ "name": "n", "scopes": [] }),
        json!({ "name": "n", "expires_in_days": 0 }),
        json!({ "name": "n", "expires_in_days": "7" }),
        json!(["n"]),
    ] {
        let r = app.create_api_key(body.clone(), &admin).await;
        assert_eq!(
            (r.status, r.error()),
            (400, "invalid request format".into()),
            "{body}"
        );
    }
    assert_eq!(app.revoke_api_key("not-an-id", &admin).await.status, 400);
    assert_eq!(
        app.revoke_api_key("0123456789abcdef", &admin).await.status,
        404
    );
    // A name is counted in characters, and null means "not given" for the
    // optional fields, as the OpenAPI document says.
    let long = "é".repeat(128);
    let body = json!({ "name": long, "scopes": null, "expires_in_days": null });
    let r = app.create_api_key(body, &admin).await;
    assert_eq!(r.status, 201, "{}", r.body);
}

#[tokio::test]
async fn the_cli_lists_and_revokes_offline() {
    let mut app = spawn_app().await;
    let key = app.create_key("acme", &[]);
    let id = key.split('_').nth(1).unwrap().to_owned();
    let cred = Cred::ApiKey(key.clone());
    assert_eq!(app.get("k", &cred).await.status, 404);
    assert_eq!(app.terminate().code(), Some(0));

    let out = command(&app.data_dir)
        .args(["apikey", "list", "--tenant", "acme", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["apikeys"][0]["id"], id.as_str());
    assert!(
        listed["apikeys"][0]["last_used_at"].is_string(),
        "flushed at shutdown: {listed}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&key));
    let table = command(&app.data_dir)
        .args(["apikey", "list", "--tenant", "acme"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).contains(&id));

    let out = command(&app.data_dir)
        .args(["apikey", "revoke", "--tenant", "other", &id])
        .output()
        .unwrap();
    assert!(!out.status.success(), "wrong tenant");
    let out = command(&app.data_dir)
        .args(["apikey", "revoke", "--tenant", "acme", &id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    assert_eq!(again.get("k", &cred).await.status, 401);
}

#[tokio::test]
async fn a_cli_revocation_while_the_server_runs_holds_within_a_second() {
    let clock = TestClock::new();
    let app = spawn_with(Options::default().clock(&clock)).await;
    let key = app.create_key("acme", &[]);
    let id = key.split('_').nth(1).unwrap().to_owned();
    let cred = Cred::ApiKey(key);
    assert_eq!(app.get("k", &cred).await.status, 404);
    let out = command(&app.data_dir)
        .args(["apikey", "revoke", "--tenant", "acme", &id])
        .output()
        .unwrap();
    assert!(out.status.success());
    // The server learns of it once its key cache entry (1 s) lapses.
    clock.advance(std::time::Duration::from_millis(1100));
    assert_eq!(app.get("k", &cred).await.status, 401);
}

#[tokio::test]
async fn a_key_revoked_through_one_gateway_is_refused_by_another_at_once() {
    nats_only!("two gateways share one store only on nats");
    let a = spawn_app().await;
    let b = spawn_with(Options::default().data_dir(&a.data_dir)).await;
    let key = a.create_key("default", &[]);
    let id = key.split('_').nth(1).unwrap().to_owned();
    let cred = Cred::ApiKey(key);
    // Both gateways have the key in their cache now.
    assert_eq!(a.get("k", &cred).await.status, 404);
    let cached_at = std::time::Instant::now();
    assert_eq!(b.get("k", &cred).await.status, 404);
    let r = a.revoke_api_key(&id, &a.admin()).await;
    assert_eq!(r.status, 200);
    // b refuses the key before its cached entry's 1 s is over: only the
    // watch can have made it forget.
    loop {
        let status = b.get("k", &cred).await.status;
        // Within half the cache entry's life: only the watch can do that.
        let within = cached_at.elapsed() < strongroom::auth::APIKEY_CACHE_TTL / 2;
        assert!(
            within,
            "b served the revoked key for its cache's whole life"
        );
        if status == 401 {
            break;
        }
        assert_eq!(status, 404);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(a.get("k", &cred).await.status, 401);
}

/// Reproduction (issue 32, item 6): `GET /apikeys` ignored `limit`; 5,001
/// keys came back in one 849 KB answer. It now pages by id with `limit`
/// and `cursor`, every key once.
#[tokio::test]
async fn the_key_list_pages_by_id_and_sees_each_key_once() {
    let app = spawn_app().await;
    let admin = app.admin();
    let mut made = Vec::new();
    for i in 0..12 {
        let b = app
            .client
            .post(app.url("/apikeys"))
            .header("Content-Type", "application/json")
            .body(serde_json::json!({ "name": format!("paged-{i}") }).to_string());
        let r = app.send(b, &admin).await;
        assert_eq!(r.status, 201, "{}", r.body);
        made.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = "/apikeys?limit=5".to_owned();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = app.send(app.client.get(app.url(&path)), &admin).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let page = r.json();
        let ids: Vec<String> = page["apikeys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(ids.len() <= 5, "{ids:?}");
        seen.extend(ids);
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    // Twelve made and the bootstrap key: three pages, in id order.
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "in id order, each once");
    assert_eq!(seen.len(), 13);
    assert!(made.iter().all(|id| seen.contains(id)));
    for bad in ["limit=0", "limit=1001", "limit=x"] {
        let r = app
            .send(app.client.get(app.url(&format!("/apikeys?{bad}"))), &admin)
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
}
