//! The Vault-compatible API (DESIGN §12) on the wire: KV v2 under
//! `/v1/secret/`, token and JWT auth, `sys/`, Vault's error shapes, and
//! how it shares keys, tenancy and the audit trail with the quiva API.

use serde_json::{json, Value};

use crate::helpers::*;

/// A Vault client of `app` holding `token` (sent as `X-Vault-Token`).
struct Vault<'a> {
    app: &'a TestApp,
    token: Option<String>,
}

impl<'a> Vault<'a> {
    fn admin(app: &'a TestApp) -> Self {
        Vault {
            app,
            token: app.bootstrap_key.clone(),
        }
    }

    fn with(app: &'a TestApp, token: &str) -> Self {
        Vault {
            app,
            token: Some(token.to_owned()),
        }
    }

    /// A request to `/v1/<path>`.
    fn req(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let b = self
            .app
            .client
            .request(method, self.app.url(&format!("/v1/{path}")));
        match &self.token {
            Some(token) => b.header("X-Vault-Token", token),
            None => b,
        }
    }

    async fn send(&self, b: reqwest::RequestBuilder) -> Reply {
        self.app.send(b, &Cred::None).await
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let mut b = self.req(method, path);
        if let Some(body) = body {
            b = b
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        self.send(b).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }

    /// `POST secret/data/<key>` `{"data": data}` (and `options`).
    async fn write(&self, key: &str, data: Value, options: Option<Value>) -> Reply {
        let mut body = json!({ "data": data });
        if let Some(options) = options {
            body["options"] = options;
        }
        self.call("POST", &format!("secret/data/{key}"), Some(body))
            .await
    }

    async fn versions(&self, what: &str, key: &str, versions: Value) -> Reply {
        let body = json!({ "versions": versions });
        self.call("POST", &format!("secret/{what}/{key}"), Some(body))
            .await
    }
}

fn errors(r: &Reply) -> Vec<String> {
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json"),
        "{}",
        r.body
    );
    let body = r.json();
    assert_eq!(field_names(&body), ["errors"], "{body}");
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect()
}

/// A Go `time.RFC3339Nano` text: RFC 3339 in UTC.
fn assert_go_time(text: &Value) {
    let text = text
        .as_str()
        .unwrap_or_else(|| panic!("{text} is not text"));
    assert!(text.ends_with('Z'), "{text}");
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"));
}

const ENVELOPE: [&str; 9] = [
    "auth",
    "data",
    "lease_duration",
    "lease_id",
    "mount_type",
    "renewable",
    "request_id",
    "warnings",
    "wrap_info",
];

#[tokio::test]
async fn a_secret_written_through_vault_reads_back_in_vaults_envelope() {
    let app = spawn_app().await;
    let vault = Vault::admin(&app);
    let data =
        json!({ "user": "svc", "password": "hunter2-canary", "port": 5432, "tls": { "on": true } });
    let r = vault.write("app/db", data.clone(), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(field_names(&body), ENVELOPE);
    let written = &body["data"];
    assert_eq!(
        field_names(written),
        [
            "created_time",
            "custom_metadata",
            "deletion_time",
            "destroyed",
            "version"
        ]
    );
    assert_go_time(&written["created_time"]);
    assert_eq!(written["custom_metadata"], Value::Null);
    assert_eq!(written["deletion_time"], "");
    assert_eq!(written["destroyed"], false);
    assert_eq!(written["version"], 1);

    let r = vault.get("secret/data/app/db").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let body = r.json();
    assert_eq!(field_names(&body), ENVELOPE);
    assert_eq!(
        body["request_id"].as_str(),
        r.header("x-request-id").as_deref()
    );
    assert_eq!(
        (
            &body["lease_id"],
            &body["renewable"],
            &body["lease_duration"],
            &body["wrap_info"],
            &body["warnings"],
            &body["auth"]
        ),
        (
            &json!(""),
            &json!(false),
            &json!(0),
            &Value::Null,
            &Value::Null,
            &Value::Null
        )
    );
    assert_eq!(field_names(&body["data"]), ["data", "metadata"]);
    assert_eq!(body["data"]["data"], data);
    let meta = &body["data"]["metadata"];
    assert_eq!(
        field_names(meta),
        [
            "created_time",
            "custom_metadata",
            "deletion_time",
            "destroyed",
            "version"
        ]
    );
    assert_go_time(&meta["created_time"]);
    assert_eq!(
        (
            &meta["custom_metadata"],
            &meta["deletion_time"],
            &meta["destroyed"],
            &meta["version"]
        ),
        (&Value::Null, &json!(""), &json!(false), &json!(1))
    );

    // PUT writes as POST does, and `Authorization: Bearer` carries a key too.
    let r = vault
        .call(
            "PUT",
            "secret/data/app/db",
            Some(json!({ "data": { "a": "b" } })),
        )
        .await;
    assert_eq!((r.status, &r.json()["data"]["version"]), (200, &json!(2)));
    let bearer = app.client.get(app.url("/v1/secret/data/app/db?version=1"));
    let r = app
        .send(bearer, &Cred::Bearer(app.bootstrap_key.clone().unwrap()))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["data"], data);
    let log = app.log_text();
    assert!(!log.contains("hunter2-canary"), "a value in the log");
}

#[tokio::test]
async fn cas_zero_creates_only_and_a_mismatch_is_vaults_400() {
    let app = spawn_app().await;
    let vault = Vault::admin(&app);
    let cas = |n: u64| Some(json!({ "cas": n }));
    let r = vault.write("k", json!({ "a": "1" }), cas(0)).await;
    assert_eq!((r.status, &r.json()["data"]["version"]), (200, &json!(1)));
    let mismatch = ["check-and-set parameter did not match the current version"];
    let r = vault.write("k", json!({ "a": "2" }), cas(0)).await;
    assert_eq!(
        (r.status, errors(&r)),
        (400, mismatch.map(String::from).to_vec())
    );
    let r = vault.write("k", json!({ "a": "2" }), cas(5)).await;
    assert_eq!(
        (r.status, errors(&r)),
        (400, mismatch.map(String::from).to_vec())
    );
    let r = vault.write("k", json!({ "a": "2" }), cas(1)).await;
    assert_eq!((r.status, &r.json()["data"]["version"]), (200, &json!(2)));
    let r = vault
        .write("k", json!({ "a": "3" }), Some(json!({ "cas": "x" })))
        .await;
    assert_eq!(
        (r.status, errors(&r)),
        (
            400,
            vec!["error parsing check-and-set parameter".to_string()]
        )
    );
    // Against the newest version even when it is deleted, as Vault.
    assert_eq!(
        vault.call("DELETE", "secret/data/k", None).await.status,
        204
    );
    let r = vault.write("k", json!({ "a": "3" }), cas(2)).await;
    assert_eq!((r.status, &r.json()["data"]["version"]), (200, &json!(3)));
}

#[tokio::test]
async fn cas_required_refuses_a_write_that_names_no_version() {
    let app = spawn_app().await;
    let vault = Vault::admin(&app);
    assert_eq!(
        vault.write("k", json!({ "a": "1" }), None).await.status,
        200
    );
    let r = vault
        .call(
            "POST",
            "secret/metadata/k",
            Some(json!({ "cas_required": true })),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = vault.write("k", json!({ "a": "2" }), None).await;
    assert_eq!(
        (r.status, errors(&r)),
        (
            400,
            vec!["check-and-set parameter required for this call".to_string()]
        )
    );
    let r = vault
        .write("k", json!({ "a": "2" }), Some(json!({ "cas": 1 })))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = vault.get("secret/metadata/k").await;
    assert_eq!(r.json()["data"]["cas_required"], true);
}

#[tokio::test]
async fn deleted_and_destroyed_versions_read_404_with_their_metadata() {
    let app = spawn_app().await;
    let vault = Vault::admin(&app);
    for v in ["one", "two"] {
        assert_eq!(vault.write("k", json!({ "v": v }), None).await.status, 200);
    }
    assert_eq!(
        vault.call("DELETE", "secret/data/k", None).await.status,
        204
    );
    let r = vault.get("secret/data/k").await;
    assert_eq!(r.status, 404, "{}", r.body);
    let body = r.json();
    assert_eq!(field_names(&body), ENVELOPE);
    assert_eq!(body["data"]["data"], Value::Null);
    let meta = &body["data"]["metadata"];
    assert_eq!(meta["version"], 2);
    assert_eq!(meta["destroyed"], false);
    assert_go_time(&meta["deletion_time"]);
    let r = vault.get("secret/data/k?version=1").await;
    assert_eq!(
        (r.status, &r.json()["data"]["data"]),
        (200, &json!({ "v": "one" }))
    );

    assert_eq!(vault.versions("destroy", "k", json!([1])).await.status, 204);
    let r = vault.get("secret/data/k?version=1").await;
    assert_eq!(r.status, 404, "{}", r.body);
    let meta = &r.json()["data"]["metadata"];
    assert_eq!(
        (&meta["version"], &meta["destroyed"]),
        (&json!(1), &json!(true))
    );
    assert!(!r.body.contains("one"), "a destroyed value: {}", r.body);

    assert_eq!(
        vault.versions("undelete", "k", json!([2])).await.status,
        204
    );
    let r = vault.get("secret/data/k").await;
    assert_eq!(
        (r.status, &r.json()["data"]["data"]),
        (200, &json!({ "v": "two" }))
    );
    assert_eq!(r.json()["data"]["metadata"]["deletion_time"], "");
    assert_eq!(
        vault.versions("delete", "k", json!(["2"])).await.status,
        204
    );
    assert_eq!(vault.get("secret/data/k").await.status, 404);

    // No such key, no such version: a 404 with no errors at all.
    for path in [
        "secret/data/nope",
        "secret/data/k?version=9",
        "secret/metadata/nope",
    ] {
        let r = vault.get(path).await;
        assert_eq!(
            (r.status, errors(&r)),
            (404, Vec::<String>::new()),
            "{path}"
        );
    }
}

#[tokio::test]
async fn changes_of_a_missing_key_are_204_and_need_versions() {
    let app = spawn_app().await;
    let vault = Vault::admin(&app);
    assert_eq!(
        vault.call("DELETE", "secret/data/nope", None).await.status,
        204
    );
    assert_eq!(
        vault
            .call("DELETE", "secret/metadata/nope", None)
            .await
            .status,
        204
    );
    for what in ["delete", "undelete", "destroy"] {
        assert_eq!(vault.versions(what, "nope", json!([1])).await.status, 204);
        let r = vault.versions(what, "nope", json!([])).await;
        assert_eq!(
            (r.status, errors(&r)),
            (400, vec!["no version number provided".to_string()])
        );
    }
    let r = vault
        .call("POST", "secret/data/k", Some(json!({ "options": {} })))
        .await;
    assert_eq!(
        (r.status, errors(&r)),
        (400, vec!["no data provided".to_string()])
    );
    let r = vault
        .call("POST", "secret/data/k", Some(json!({ "data": "text" })))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = vault
        .call("POST", "secret/data/bad..key", Some(json!({ "data": {} })))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    errors(&r);
}

#[tokio::test]
async fn values_cross_between_the_vault_and_quiva_apis() {
    let app = spawn_app().await;
    let admin = app.admin();
    let vault = Vault::admin(&app);
    assert_eq!(
        app.put("plain/text", "line one\nline two", &admin)
            .await
            .status,
        200
    );
    let r = vault.get("secret/data/plain/text").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["data"]["data"],
        json!({ "value": "line one\nline two" })
    );

    let data = json!({ "user": "svc", "n": 7 });
    assert_eq!(
        vault.write("from/vault", data.clone(), None).await.status,
        200
    );
    let r = app.get("from/vault", &admin).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let text = r.json()["value"].as_str().unwrap().to_owned();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), data);

    // A version deleted through Vault is gone from the quiva API too.
    assert_eq!(
        vault
            .write("from/vault", json!({ "n": 8 }), None)
            .await
            .status,
        200
    );
    assert_eq!(
        vault
            .versions("delete", "from/vault", json!([1]))
            .await
            .status,
        204
    );
    assert_eq!(app.get("from/vault?version=1", &admin).await.status, 404);
    assert_eq!(app.get("from/vault?version=2", &admin).await.status, 200);
}

#[tokio::test]
async fn patch_merges_and_takes_only_a_merge_patch() {
    let app = spawn_app().await;
    let vault = Vault::admin(&app);
    assert_eq!(
        vault
            .write("k", json!({ "a": "1", "b": "2" }), None)
            .await
            .status,
        200
    );
    let patch = json!({ "data": { "b": null, "c": "3" } }).to_string();
    let r = vault
        .send(
            vault
                .req("PATCH", "secret/data/k")
                .header("Content-Type", "application/json")
                .body(patch.clone()),
        )
        .await;
    assert_eq!(
        (r.status, errors(&r)),
        (
            415,
            vec![
                "PATCH requires Content-Type of application/merge-patch+json, provided application/json"
                    .to_string()
            ]
        )
    );
    let r = vault
        .send(vault.req("PATCH", "secret/data/k").body(patch.clone()))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let merge = |path: &str| {
        vault
            .req("PATCH", path)
            .header("Content-Type", "application/merge-patch+json")
            .body(patch.clone())
    };
    let r = vault.send(merge("secret/data/k")).await;
    assert_eq!(
        (r.status, &r.json()["data"]["version"]),
        (200, &json!(2)),
        "{}",
        r.body
    );
    let r = vault.get("secret/data/k").await;
    assert_eq!(r.json()["data"]["data"], json!({ "a": "1", "c": "3" }));
    let r = vault.send(merge("secret/data/nope")).await;
    assert_eq!((r.status, errors(&r)), (404, Vec::<String>::new()));
}

#[tokio::test]
async fn metadata_has_vaults_shape_and_takes_its_settings() {
    let app = spawn_app().await;
    let vault = Vault::admin(&app);
    for n in ["1", "2"] {
        assert_eq!(vault.write("k", json!({ "n": n }), None).await.status, 200);
    }
    let settings = json!({
        "max_versions": 5,
        "delete_version_after": "3h",
        "custom_metadata": { "team": "payments" },
    });
    let r = vault
        .call("POST", "secret/metadata/k", Some(settings))
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = vault.get("secret/metadata/k").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(field_names(&body), ENVELOPE);
    let meta = &body["data"];
    assert_eq!(
        field_names(meta),
        [
            "cas_required",
            "created_time",
            "current_version",
            "custom_metadata",
            "delete_version_after",
            "max_versions",
            "oldest_version",
            "updated_time",
            "versions"
        ]
    );
    assert_go_time(&meta["created_time"]);
    assert_go_time(&meta["updated_time"]);
    assert_eq!(meta["cas_required"], false);
    assert_eq!(meta["current_version"], 2);
    assert_eq!(meta["custom_metadata"], json!({ "team": "payments" }));
    assert_eq!(meta["delete_version_after"], "3h0m0s");
    assert_eq!(meta["max_versions"], 5);
    assert_eq!(field_names(&meta["versions"]), ["1", "2"]);
    for v in ["1", "2"] {
        let version = &meta["versions"][v];
        assert_eq!(
            field_names(version),
            ["created_time", "deletion_time", "destroyed"]
        );
        assert_go_time(&version["created_time"]);
        assert_eq!(version["destroyed"], false);
    }
    let r = vault.get("secret/data/k").await;
    assert_eq!(
        r.json()["data"]["metadata"]["custom_metadata"],
        json!({ "team": "payments" })
    );

    // Integer seconds too; a negative duration is refused.
    let r = vault
        .call(
            "PUT",
            "secret/metadata/k",
            Some(json!({ "delete_version_after": 90 })),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = vault.get("secret/metadata/k").await;
    assert_eq!(r.json()["data"]["delete_version_after"], "1m30s");
    let r = vault
        .call(
            "POST",
            "secret/metadata/k",
            Some(json!({ "delete_version_after": "-1h" })),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    errors(&r);

    // A merge patch keeps what it does not name.
    let r = vault
        .send(
            vault
                .req("PATCH", "secret/metadata/k")
                .header("Content-Type", "application/merge-patch+json")
                .body(json!({ "custom_metadata": { "owner": "ann" } }).to_string()),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let meta = vault.get("secret/metadata/k").await.json()["data"].clone();
    assert_eq!(
        meta["custom_metadata"],
        json!({ "team": "payments", "owner": "ann" })
    );
    assert_eq!(meta["max_versions"], 5);

    assert_eq!(
        vault.call("DELETE", "secret/metadata/k", None).await.status,
        204
    );
    for path in ["secret/data/k", "secret/metadata/k"] {
        let r = vault.get(path).await;
        assert_eq!(
            (r.status, errors(&r)),
            (404, Vec::<String>::new()),
            "{path}"
        );
    }
}

#[tokio::test]
async fn list_answers_a_paths_children_by_list_or_get_with_list_true() {
    let app = spawn_app().await;
    let vault = Vault::admin(&app);
    for key in ["a/b", "a/c/d", "e"] {
        assert_eq!(
            vault.write(key, json!({ "x": "y" }), None).await.status,
            200
        );
    }
    let keys = |r: &Reply| r.json()["data"]["keys"].clone();
    for (method, path) in [
        ("LIST", "secret/metadata/"),
        ("LIST", "secret/metadata"),
        ("GET", "secret/metadata/?list=true"),
        ("GET", "secret/metadata?list=true"),
    ] {
        let r = vault.call(method, path, None).await;
        assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
        assert_eq!(field_names(&r.json()), ENVELOPE);
        assert_eq!(keys(&r), json!(["a/", "e"]), "{method} {path}");
    }
    for (method, path) in [
        ("LIST", "secret/metadata/a"),
        ("LIST", "secret/metadata/a/"),
        ("GET", "secret/metadata/a?list=true"),
    ] {
        let r = vault.call(method, path, None).await;
        assert_eq!(
            (r.status, keys(&r)),
            (200, json!(["b", "c/"])),
            "{method} {path}"
        );
    }
    let r = vault
        .call("LIST", "secret/metadata/nothing/here", None)
        .await;
    assert_eq!((r.status, errors(&r)), (404, Vec::<String>::new()));
}

#[tokio::test]
async fn config_reads_and_keeps_what_a_write_does_not_name() {
    let app = spawn_app().await;
    let vault = Vault::admin(&app);
    let r = vault.get("secret/config").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let data = &r.json()["data"];
    assert_eq!(
        field_names(data),
        ["cas_required", "delete_version_after", "max_versions"]
    );
    assert_eq!(data["delete_version_after"], "0s");
    let r = vault
        .call(
            "POST",
            "secret/config",
            Some(json!({ "cas_required": true, "max_versions": 7 })),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = vault
        .call(
            "POST",
            "secret/config",
            Some(json!({ "delete_version_after": "1h" })),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let data = vault.get("secret/config").await.json()["data"].clone();
    assert_eq!(
        data,
        json!({ "cas_required": true, "delete_version_after": "1h0m0s", "max_versions": 7 })
    );
}

#[tokio::test]
async fn credentials_and_namespaces_are_held_to_the_tenant() {
    let app = spawn_app().await;
    let vault = Vault::admin(&app);
    assert_eq!(
        vault.write("k", json!({ "a": "b" }), None).await.status,
        200
    );
    let denied = vec!["permission denied".to_string()];
    for namespace in ["acme", "default/child"] {
        let r = vault
            .send(
                vault
                    .req("GET", "secret/data/k")
                    .header("X-Vault-Namespace", namespace),
            )
            .await;
        assert_eq!((r.status, errors(&r)), (403, denied.clone()), "{namespace}");
    }
    let r = vault
        .send(
            vault
                .req("GET", "secret/data/k")
                .header("X-Vault-Namespace", "default/"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for token in [
        None,
        Some("sr_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ] {
        let anyone = Vault {
            app: &app,
            token: token.map(str::to_owned),
        };
        let r = anyone.get("secret/data/k").await;
        assert_eq!((r.status, errors(&r)), (403, denied.clone()));
        assert!(!r.body.contains("AAAAAAAAAA"), "a key echoed: {}", r.body);
    }
    // Two different credentials are refused; the same one twice is one.
    let key = app.bootstrap_key.clone().unwrap();
    let r = vault
        .send(vault.req("GET", "secret/data/k").header("X-Api-Key", &key))
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = vault
        .send(
            vault
                .req("GET", "secret/data/k")
                .header("Authorization", format!("Bearer {key}")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn another_tenants_path_is_404_exactly_as_through_the_quiva_api() {
    let app = spawn_app().await;
    let acme = app.create_key("acme", &[]);
    let acme_vault = Vault::with(&app, &acme);
    assert_eq!(
        acme_vault
            .write("x/y", json!({ "a": "b" }), None)
            .await
            .status,
        200
    );
    let vault = Vault::admin(&app);
    let r = vault.get("secret/data/x/y").await;
    assert_eq!((r.status, errors(&r)), (404, Vec::<String>::new()));
    let r = vault.get("secret/metadata/x/y").await;
    assert_eq!((r.status, errors(&r)), (404, Vec::<String>::new()));
    let r = vault.call("LIST", "secret/metadata/x", None).await;
    assert_eq!((r.status, errors(&r)), (404, Vec::<String>::new()));
    let r = app.get("x/y", &app.admin()).await;
    assert_eq!((r.status, r.error()), (404, "resource not found".into()));
    // And the owner reads it.
    assert_eq!(acme_vault.get("secret/data/x/y").await.status, 200);
}

#[tokio::test]
async fn what_strongroom_does_not_serve_answers_in_vaults_shape() {
    let app = spawn_app().await;
    let vault = Vault::admin(&app);
    let r = vault.get("kv/data/x").await;
    let e = errors(&r);
    assert_eq!(r.status, 404);
    assert_eq!(
        e[0],
        r#"no handler for route "kv/data/x". route entry not found."#
    );
    assert!(e[1].contains("secret/"), "{e:?}");
    for (method, path) in [("GET", "auth/approle/role"), ("POST", "auth/approle/login")] {
        let r = vault.call(method, path, None).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(errors(&r)[0].starts_with("no handler for route"), "{path}");
    }
    let r = vault.get("secret/subkeys/x").await;
    assert_eq!(r.status, 404);
    errors(&r);
    for (method, path) in [
        ("GET", "sys/policy"),
        ("PUT", "sys/policy/admin"),
        ("GET", "sys/policies/acl/admin"),
    ] {
        let r = vault.call(method, path, Some(json!({}))).await;
        assert_eq!(r.status, 400, "{path}");
        assert!(errors(&r)[0].contains("HCL"), "{path}");
    }
    let wrapping = vec!["response wrapping is not supported".to_string()];
    let r = vault
        .call("POST", "sys/wrapping/wrap", Some(json!({})))
        .await;
    assert_eq!((r.status, errors(&r)), (400, wrapping.clone()));
    let r = vault
        .send(
            vault
                .req("GET", "secret/data/x")
                .header("X-Vault-Wrap-TTL", "60s"),
        )
        .await;
    assert_eq!((r.status, errors(&r)), (400, wrapping.clone()));
    let r = vault.call("POST", "sys/health", None).await;
    assert_eq!(
        (r.status, errors(&r)),
        (405, vec!["unsupported operation".to_string()])
    );
    let r = vault
        .call("POST", "sys/mounts/kv", Some(json!({ "type": "kv" })))
        .await;
    assert_eq!(r.status, 405);
    assert!(errors(&r).len() == 2);
}

#[tokio::test]
async fn sys_endpoints_describe_one_ready_kv_v2_mount() {
    let app = spawn_app().await;
    let vault = Vault::admin(&app);
    let anyone = Vault {
        app: &app,
        token: None,
    };
    let r = anyone.get("sys/health").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let health = r.json();
    for field in [
        "initialized",
        "sealed",
        "standby",
        "performance_standby",
        "replication_performance_mode",
        "replication_dr_mode",
        "server_time_utc",
        "version",
        "cluster_name",
        "cluster_id",
    ] {
        assert!(!health[field].is_null(), "{field} in {health}");
    }
    assert_eq!(
        (
            &health["initialized"],
            &health["sealed"],
            &health["standby"]
        ),
        (&json!(true), &json!(false), &json!(false))
    );
    assert!(health["server_time_utc"].as_i64().unwrap() >= now_secs() - 5);
    assert_eq!(anyone.get("sys/health?activecode=299").await.status, 299);
    assert_eq!(
        anyone
            .get("sys/health?standbyok=true&sealedcode=200")
            .await
            .status,
        200
    );
    assert_eq!(anyone.get("sys/health?activecode=abc").await.status, 400);
    let r = anyone.send(anyone.req("HEAD", "sys/health")).await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));

    let r = anyone.get("sys/seal-status").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seal = r.json();
    assert_eq!(
        (&seal["sealed"], &seal["initialized"]),
        (&json!(false), &json!(true))
    );
    assert_eq!(seal["version"], health["version"]);

    let r = anyone.get("sys/mounts").await;
    assert_eq!(
        (r.status, errors(&r)),
        (403, vec!["permission denied".to_string()])
    );
    let r = vault.get("sys/mounts").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mounts = r.json();
    for table in [&mounts["data"], &mounts] {
        let mount = &table["secret/"];
        assert_eq!(
            (&mount["type"], &mount["options"]),
            (&json!("kv"), &json!({ "version": "2" }))
        );
    }
    let r = vault.get("sys/mounts/secret/tune").await;
    assert_eq!(r.json()["data"]["options"]["version"], "2");

    let r = vault.get("sys/internal/ui/mounts/secret/app/db").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let data = &r.json()["data"];
    assert_eq!(
        (&data["path"], &data["type"], &data["options"]["version"]),
        (&json!("secret/"), &json!("kv"), &json!("2"))
    );
    let r = vault.get("sys/internal/ui/mounts/other/x").await;
    assert_eq!(r.status, 403);
    errors(&r);
}

#[tokio::test]
async fn the_mount_flag_moves_the_kv_routes() {
    let app = spawn_with(Options::default().env("STRONGROOM_VAULT_MOUNT", "kv/prod")).await;
    let vault = Vault::admin(&app);
    let r = vault
        .call(
            "POST",
            "kv/prod/data/a",
            Some(json!({ "data": { "x": "y" } })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        vault.get("kv/prod/data/a").await.json()["data"]["data"],
        json!({ "x": "y" })
    );
    let r = vault.get("secret/data/a").await;
    assert_eq!(r.status, 404);
    assert!(errors(&r)[1].contains("kv/prod/"));
    let r = vault.get("sys/internal/ui/mounts/kv/prod/a").await;
    assert_eq!(r.json()["data"]["path"], "kv/prod/");
}

#[tokio::test]
async fn lookup_self_shows_the_credential_and_never_the_key() {
    let app = spawn_app().await;
    let vault = Vault::admin(&app);
    let key = app.bootstrap_key.clone().unwrap();
    for method in ["GET", "POST"] {
        let r = vault.call(method, "auth/token/lookup-self", None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(!r.body.contains(&key), "the key echoed: {}", r.body);
        let body = r.json();
        assert_eq!(field_names(&body), ENVELOPE);
        let data = &body["data"];
        for field in [
            "accessor",
            "creation_time",
            "creation_ttl",
            "display_name",
            "entity_id",
            "expire_time",
            "explicit_max_ttl",
            "id",
            "issue_time",
            "meta",
            "num_uses",
            "orphan",
            "path",
            "policies",
            "renewable",
            "ttl",
            "type",
        ] {
            assert!(data.get(field).is_some(), "{field} in {data}");
        }
        assert_eq!(data["meta"]["tenant"], "default");
        let id = data["id"].as_str().unwrap();
        assert!(id.contains(key.split('_').nth(1).unwrap()), "{id}");
        assert_eq!(
            (&data["type"], &data["renewable"]),
            (&json!("service"), &json!(false))
        );
        // An API key lapses after 90 days unless told otherwise.
        assert!(data["ttl"].as_i64().unwrap() > 80 * 86_400, "{data}");
        assert_go_time(&data["expire_time"]);
    }
    let r = vault.call("POST", "auth/token/revoke-self", None).await;
    assert_eq!(r.status, 400, "{}", r.body);
    errors(&r);
    // An API key's policies and creation time come from its record.
    let admin = app.admin();
    let b = app
        .client
        .put(app.url("/policies/readers"))
        .header("Content-Type", "application/json")
        .body(json!({ "scopes": ["secrets:read"] }).to_string());
    assert_eq!(app.send(b, &admin).await.status, 200);
    let b = app
        .client
        .post(app.url("/apikeys"))
        .header("Content-Type", "application/json")
        .body(json!({ "name": "by-policy", "policies": ["readers"] }).to_string());
    let r = app.send(b, &admin).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let with_policy = r.json()["key"].as_str().unwrap().to_owned();
    let r = Vault::with(&app, &with_policy)
        .call("GET", "auth/token/lookup-self", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let data = &r.json()["data"];
    assert_eq!(data["policies"], json!(["readers"]), "{data}");
    assert!(
        data["creation_time"].as_i64().unwrap() > 1_700_000_000,
        "{data}"
    );
}

#[tokio::test]
async fn a_jwt_login_gives_a_token_vault_clients_use() {
    let (app, _dir) = crate::identity::app_with_provider(&[]).await;
    crate::identity::set_up_ci(&app).await;
    assert_eq!(
        app.put("prod/db", "s3cret-value", &app.admin())
            .await
            .status,
        200
    );
    let jwt = crate::identity::ci_jwt(&crate::identity::claims());
    let anyone = Vault {
        app: &app,
        token: None,
    };
    let r = anyone
        .call(
            "POST",
            "auth/jwt/login",
            Some(json!({ "role": "ci", "jwt": jwt })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let body = r.json();
    assert_eq!(body["data"], Value::Null);
    let auth = &body["auth"];
    for field in [
        "client_token",
        "accessor",
        "policies",
        "token_policies",
        "metadata",
        "lease_duration",
        "renewable",
        "entity_id",
        "token_type",
        "orphan",
    ] {
        assert!(auth.get(field).is_some(), "{field} in {auth}");
    }
    assert_eq!(auth["policies"], json!(["readers"]));
    assert_eq!(
        auth["metadata"],
        json!({ "role": "ci", "tenant": "default" })
    );
    assert_eq!(auth["renewable"], false);
    let lease = auth["lease_duration"].as_i64().unwrap();
    assert!((590..=600).contains(&lease), "{lease}");
    let token = auth["client_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("srt_"));

    let worker = Vault::with(&app, &token);
    let r = worker.get("secret/data/prod/db").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["data"], json!({ "value": "s3cret-value" }));
    let r = worker.get("auth/token/lookup-self").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let data = &r.json()["data"];
    assert_eq!(
        (&data["path"], &data["meta"]["role"]),
        (&json!("auth/jwt/login"), &json!("ci"))
    );
    assert!(!r.body.contains(&token));
    assert_eq!(
        worker
            .call("POST", "auth/token/revoke-self", None)
            .await
            .status,
        204
    );
    let r = worker.get("secret/data/prod/db").await;
    assert_eq!(
        (r.status, errors(&r)),
        (403, vec!["permission denied".to_string()])
    );

    // A refusal is Vault's 400, naming the binding and never the JWT; a
    // namespace other than the role's tenant finds no role.
    let mut wrong = crate::identity::claims();
    wrong["environment"] = json!("dev");
    let wrong = crate::identity::ci_jwt(&wrong);
    let r = anyone
        .call(
            "POST",
            "auth/jwt/login",
            Some(json!({ "role": "ci", "jwt": wrong })),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!r.body.contains(&wrong) && !errors(&r)[0].is_empty());
    let r = anyone
        .send(
            anyone
                .req("POST", "auth/jwt/login")
                .header("X-Vault-Namespace", "acme")
                .body(json!({ "role": "ci", "jwt": jwt }).to_string()),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = anyone
        .call("POST", "auth/jwt/login", Some(json!({ "role": "ci" })))
        .await;
    assert_eq!(
        (r.status, errors(&r)),
        (400, vec!["missing token".to_string()])
    );
}

#[tokio::test]
async fn a_read_through_either_api_is_one_secrets_read_line_naming_the_key() {
    let app = spawn_app().await;
    let vault = Vault::admin(&app);
    assert_eq!(
        vault
            .write("both/apis", json!({ "a": "b" }), None)
            .await
            .status,
        200
    );
    assert_eq!(vault.get("secret/data/both/apis").await.status, 200);
    assert_eq!(app.get("both/apis", &app.admin()).await.status, 200);
    // Not audited: the sys endpoints.
    vault.get("sys/health").await;
    vault.get("sys/mounts").await;
    let lines = crate::audit::lines(&app);
    let reads: Vec<&Value> = lines
        .iter()
        .filter(|l| l["action"] == "secrets.read" && l["key"] == "both/apis")
        .collect();
    assert_eq!(reads.len(), 2, "{lines:#?}");
    for read in reads {
        assert_eq!(
            (&read["status"], &read["tenant"]),
            (&json!(200), &json!("default"))
        );
    }
    let writes = lines
        .iter()
        .filter(|l| l["action"] == "secrets.write" && l["key"] == "both/apis")
        .count();
    assert_eq!(writes, 1);
    assert!(
        lines
            .iter()
            .all(|l| !l["action"].as_str().unwrap().contains("mount")),
        "{lines:#?}"
    );
}
