//! Clients no one here wrote, against the Vault-compatible API (DESIGN
//! section 12): hvac driving every KV v2, token, system and JWT-login method
//! (tests/vault/hvac_suite.py, run from target/clients-venv), and the
//! External Secrets Operator's vault provider, its requests sent byte for
//! byte as its Go client sends them. Neither may leave a token, JWT or
//! secret value in the log, the audit trail or the metrics.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::identity::{app_with_provider, ci_jwt, claims, put_json, AUDIENCE};

const HVAC: &str = "hvac>=2,<3";

/// target/clients-venv's interpreter, with hvac installed into it when
/// missing (as `scripts/test` does), once per test process.
fn clients_python() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/clients-venv");
    let python = root.join("bin/python");
    let has_hvac = |python: &Path| {
        Command::new(python)
            .args(["-c", "import hvac"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_hvac(&python) {
        if !python.exists() {
            let status = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&root)
                .status()
                .expect("python3 (with venv) to make target/clients-venv");
            assert!(
                status.success(),
                "python3 -m venv {} failed",
                root.display()
            );
        }
        let status = Command::new(root.join("bin/pip"))
            .args(["install", "--quiet", HVAC])
            .status()
            .expect("pip of target/clients-venv");
        assert!(status.success(), "pip install '{HVAC}' failed");
    }
    python
}

/// 32 random hex digits: a value no server could have made up.
fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut bytes,
    )
    .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A request to the Vault API with `X-Vault-Token`, as the set-up of a test
/// sends it (not as a client under test does).
async fn vault(app: &TestApp, method: &str, path: &str, body: Option<Value>, token: &str) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut b = app
        .client
        .request(method, app.url(path))
        .header("X-Vault-Token", token);
    if let Some(body) = body {
        b = b
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    app.send(b, &Cred::None).await
}

/// How often `needle` occurs in `haystack`.
fn occurrences(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[tokio::test]
async fn hvac_drives_every_kv_v2_method_the_token_and_system_calls_and_jwt_login() {
    let python = tokio::task::spawn_blocking(clients_python).await.unwrap();
    // The suite sends a few refused credentials on purpose.
    let (app, dir) = app_with_provider(&[("STRONGROOM_AUTH_FAILURE_BURST", "100".into())]).await;
    let admin = app.admin();
    let Cred::ApiKey(admin_key) = admin.clone() else {
        unreachable!()
    };

    // Another tenant, with a secret written through the quiva API.
    let other_key = app.create_key("acme", &[]);
    let other_value = format!("acme-{}", random_hex());
    let r = app
        .put(
            "hvac/foreign/db",
            &other_value,
            &Cred::ApiKey(other_key.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // A login role for the workload's JWT: reads under hvac/jwt/ only.
    let policy = json!({ "scopes": ["secrets:read:hvac/jwt/", "secrets:list:hvac/jwt/"] });
    let r = put_json(&app, "/policies/kv-readers", &policy, &admin).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let role = json!({
        "provider": "ci",
        "bound_audiences": [AUDIENCE],
        "bound_subject": "repo:acme/*:ref:refs/heads/main",
        "user_claim": "sub",
        "policies": ["kv-readers"],
        "token_ttl_seconds": 600
    });
    let r = put_json(&app, "/auth/roles/hvac-ci", &role, &admin).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let jwt = ci_jwt(&claims());

    let canary = random_hex();
    let tokens_file = dir.path().join("login-tokens");
    let done_path = "hvac/zz/done";
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vault/hvac_suite.py");
    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(&script)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("HOME", dir.path())
        .env("VAULT_ADDR", &app.addr)
        .env("VAULT_TOKEN", &admin_key)
        .env("CANARY", &canary)
        .env("JWT_ROLE", "hvac-ci")
        .env("JWT_TOKEN", &jwt)
        .env("JWT_POLICIES", "kv-readers")
        .env("JWT_TTL", "600")
        .env("JWT_PREFIX", "hvac/jwt/")
        .env("OTHER_NAMESPACE", "acme")
        .env("OTHER_TOKEN", &other_key)
        .env("OTHER_SECRET_PATH", "hvac/foreign/db")
        .env("OTHER_SECRET_VALUE", &other_value)
        .env("TOKENS_FILE", &tokens_file)
        .env("DONE_PATH", done_path);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("the hvac suite ends within 5 minutes")
        .expect("run the hvac suite");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the hvac suite failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    println!("{stdout}");

    // What hvac wrote is the quiva value's JSON text.
    let r = app.get(done_path, &admin).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let text = r.json()["value"].as_str().unwrap().to_owned();
    let written: Value = serde_json::from_str(&text).expect("a KV v2 value is its JSON text");
    assert_eq!(written, json!({ "k": format!("{canary}-done") }));

    // Every request reached the trail: wait for the suite's last write.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut trail = crate::audit::trail(&app.data_dir);
    while !trail
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|l| l["key"] == done_path)
    {
        assert!(
            Instant::now() < deadline,
            "no audit line for {done_path}:\n{trail}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        trail = crate::audit::trail(&app.data_dir);
    }

    // Vault requests are audited as quiva ones: the login token's read and
    // its refusal under its subject, the login and the revoke-self.
    let lines: Vec<Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let subject = format!("ci:{}", crate::identity::SUBJECT);
    let by_subject = |action: &str, key: &str, status: u16| {
        lines.iter().any(|l| {
            l["action"] == action
                && l["key"] == key
                && l["status"] == status
                && l["subject"] == subject.as_str()
                && l["tenant"] == "default"
        })
    };
    assert!(
        by_subject("secrets.read", "hvac/jwt/app", 200),
        "no secrets.read line for the login token's read:\n{trail}"
    );
    assert!(
        by_subject("secrets.read", "hvac/outside/app", 403),
        "no secrets.read 403 line for the login token's refused read:\n{trail}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "auth.login" && l["key"] == "hvac-ci" && l["status"] == 200),
        "no auth.login line for the Vault login:\n{trail}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "auth.token.revoke" && l["subject"] == subject.as_str()),
        "no auth.token.revoke line for revoke-self:\n{trail}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "secrets.write" && l["key"] == done_path),
        "no secrets.write line for {done_path}"
    );

    // Canaries: no token, JWT or value in the log, the trail or the metrics.
    let metrics = app
        .send(app.client.get(app.url("/metrics")), &Cred::None)
        .await
        .body;
    let log = app.log_text();
    let logins = std::fs::read_to_string(&tokens_file).expect("the suite logged in");
    let mut canaries = vec![
        canary.clone(),
        other_key.clone(),
        other_value.clone(),
        jwt.clone(),
    ];
    for token in logins.lines() {
        canaries.push(token.to_owned());
        canaries.push(token["srt_".len()..].to_owned());
    }
    for c in &canaries {
        assert_eq!(occurrences(&log, c), 0, "a canary in the log");
        assert_eq!(occurrences(&trail, c), 0, "a canary in the trail");
        assert_eq!(occurrences(&metrics, c), 0, "a canary in the metrics");
    }
    // The bootstrap key is printed once, at the first start, and never again.
    assert_eq!(occurrences(&log, &admin_key), 1, "the admin key in the log");
    assert_eq!(
        occurrences(&trail, &admin_key),
        0,
        "the admin key in the trail"
    );
}

// ---------------------------------------------------------------------------
// The External Secrets Operator's vault provider.
//
// Read from external-secrets/external-secrets at commit
// cc5bfbc2234ace9cb0caff4ea89c435cf517b27b:
//   providers/v1/vault/provider.go   NewVaultClient, initClient (namespace
//                                    header, extra headers), getVaultClient
//   providers/v1/vault/client.go     newConfig: vault.DefaultConfig() + Address
//   providers/v1/vault/auth.go       setAuth, checkToken (lookup-self: data.type,
//                                    data.ttl as an integer, data.expire_time)
//   providers/v1/vault/auth_token.go token auth: SetToken from the secret ref
//   providers/v1/vault/validate.go   Validate: checkToken unless an expiry is known
//   providers/v1/vault/client_get.go GetSecret, GetSecretMap (extract),
//                                    readSecret (data.data; nil => NoSecretError),
//                                    getSecretValue (exact key first, then gjson),
//                                    readSecretMetadata (metadataPolicy Fetch),
//                                    buildPath, buildMetadataPath
//   providers/v1/vault/client_get_all_secrets.go  GetAllSecrets (find by name
//                                    or tags), listSecrets (recursive LIST)
// and its Go client, github.com/hashicorp/vault/api v1.22.0
// (providers/v1/vault/go.mod): api/client.go (NewClient adds
// `X-Vault-Request: true`; NewRequest joins the path with path.Join, which
// drops a trailing slash), api/request.go (toRetryableHTTP: the client's
// headers, then `X-Vault-Token`), api/logical.go (ReadWithDataWithContext:
// GET with `?version=`; a 404 is "no secret" unless its JSON body has data or
// warnings; ListWithContext: GET with `?list=true`, not the LIST verb),
// api/auth_token.go (LookupSelfWithContext: GET /v1/auth/token/lookup-self).
// The client sets no User-Agent, so Go's net/http sends
// `Go-http-client/1.1`, writes the headers sorted by name after Host and
// User-Agent, and adds `Accept-Encoding: gzip` last; it keeps connections
// alive and sends no `Connection` header.
// ---------------------------------------------------------------------------

/// A `SecretStore` with `provider.vault`: `server`, `path: secret`,
/// `version: v2`, token auth (or the token a JWT login gave), and
/// `namespace` when set.
struct GoVault {
    host: String,
    /// None before a login: the client sends no X-Vault-Token then.
    token: Option<String>,
    namespace: Option<String>,
    conn: Option<TcpStream>,
    buffered: Vec<u8>,
}

/// One answer: status, header lines, body.
struct GoReply {
    status: u16,
    head: String,
    body: String,
}

impl GoReply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {:?}", self.status, self.body))
    }
}

impl GoVault {
    fn new(app: &TestApp, token: &str, namespace: Option<&str>) -> GoVault {
        GoVault {
            host: app.addr.trim_start_matches("http://").to_owned(),
            token: Some(token.to_owned()).filter(|t| !t.is_empty()),
            namespace: namespace.map(str::to_owned),
            conn: None,
            buffered: Vec::new(),
        }
    }

    /// The bytes Go's net/http writes for the vault client's request:
    /// Host, User-Agent, Content-Length (always for PUT and POST, `0`
    /// without a body; never for GET or DELETE), the client's headers
    /// sorted, Accept-Encoding. The client sets no Content-Type, even on a
    /// JSON body.
    fn request(&self, method: &str, uri: &str, body: Option<&str>) -> String {
        let length = match (method, body) {
            (_, Some(body)) => format!("Content-Length: {}\r\n", body.len()),
            ("PUT" | "POST" | "PATCH", None) => "Content-Length: 0\r\n".to_owned(),
            _ => String::new(),
        };
        let namespace = match &self.namespace {
            Some(ns) => format!("X-Vault-Namespace: {ns}\r\n"),
            None => String::new(),
        };
        let token = match &self.token {
            Some(t) => format!("X-Vault-Token: {t}\r\n"),
            None => String::new(),
        };
        format!(
            "{method} {uri} HTTP/1.1\r\n\
             Host: {host}\r\n\
             User-Agent: Go-http-client/1.1\r\n\
             {length}\
             {namespace}\
             X-Vault-Request: true\r\n\
             {token}\
             Accept-Encoding: gzip\r\n\r\n{body}",
            host = self.host,
            body = body.unwrap_or_default(),
        )
    }

    async fn get(&mut self, uri: &str) -> GoReply {
        self.send("GET", uri, None).await
    }

    /// Sends the request on the kept-alive connection (a new one when the
    /// server closed the last), and reads one answer by its framing.
    async fn send(&mut self, method: &str, uri: &str, body: Option<&str>) -> GoReply {
        let request = self.request(method, uri, body);
        if self.conn.is_none() {
            self.conn = Some(TcpStream::connect(&self.host).await.unwrap());
            self.buffered.clear();
        }
        self.conn
            .as_mut()
            .unwrap()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), self.read_reply())
            .await
            .unwrap_or_else(|_| panic!("no answer to {method} {uri} within 10 s"));
        let lower = reply.head.to_ascii_lowercase();
        assert!(
            !lower.contains("\r\ncontent-encoding:"),
            "{method} {uri}: {}",
            reply.head
        );
        if lower.contains("\r\nconnection: close") {
            self.conn = None;
        }
        reply
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = self.conn.as_mut().unwrap().read(&mut chunk).await.unwrap();
        self.buffered.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buffered.len() < n {
            assert!(self.fill().await, "the connection closed mid-answer");
        }
        self.buffered.drain(..n).collect()
    }

    async fn take_line(&mut self) -> String {
        loop {
            if let Some(i) = self.buffered.windows(2).position(|w| w == b"\r\n") {
                let line = self.take(i + 2).await;
                return String::from_utf8(line[..i].to_vec()).unwrap();
            }
            assert!(self.fill().await, "the connection closed mid-answer");
        }
    }

    async fn read_reply(&mut self) -> GoReply {
        let status_line = self.take_line().await;
        let status: u16 = status_line[9..12].parse().unwrap();
        let mut head = status_line;
        let mut length = None;
        let mut chunked = false;
        loop {
            let line = self.take_line().await;
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = Some(v.trim().parse::<usize>().unwrap());
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
            head.push_str("\r\n");
            head.push_str(&line);
        }
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let size = usize::from_str_radix(self.take_line().await.trim(), 16).unwrap();
                if size == 0 {
                    while !self.take_line().await.is_empty() {}
                    break;
                }
                body.extend(self.take(size).await);
                self.take(2).await;
            }
            body
        } else if let Some(n) = length {
            self.take(n).await
        } else {
            while self.fill().await {}
            self.conn = None;
            std::mem::take(&mut self.buffered)
        };
        GoReply {
            status,
            head,
            body: String::from_utf8(body).unwrap(),
        }
    }
}

/// What ESO's readSecret makes of an answer to `GET secret/data/<key>`.
#[derive(Debug, PartialEq)]
enum EsoRead {
    /// The secret's data map (`data.data`).
    Secret(Map<String, Value>),
    /// esv1.NoSecretError: ESO reports the secret as gone.
    NoSecret,
    /// Any other error: the ExternalSecret fails with it.
    Error(String),
}

/// logical.ParseRawResponseAndCloseBody, then readSecret for `version: v2`.
fn eso_read(reply: &GoReply) -> EsoRead {
    let secret = if reply.status == 404 {
        if reply.body.is_empty() {
            return EsoRead::NoSecret;
        }
        let Ok(body) = serde_json::from_str::<Value>(&reply.body) else {
            return EsoRead::Error(format!("404 body is not JSON: {:?}", reply.body));
        };
        let data_len = body["data"].as_object().map_or(0, Map::len);
        let warnings = body["warnings"].as_array().map_or(0, Vec::len);
        if data_len == 0 && warnings == 0 {
            return EsoRead::NoSecret;
        }
        body
    } else if reply.status >= 400 {
        return EsoRead::Error(format!("{} {}", reply.status, reply.body));
    } else {
        reply.json()
    };
    let Some(data) = secret["data"].as_object() else {
        return EsoRead::NoSecret;
    };
    match data.get("data") {
        None => EsoRead::Error("failed to find data field".into()),
        Some(Value::Null) => EsoRead::NoSecret,
        Some(Value::Object(map)) => EsoRead::Secret(map.clone()),
        Some(other) => EsoRead::Error(format!("failed to unmarshall JSON: {other}")),
    }
}

/// esutils.GetByteValueFromMap: a string as is, anything else as JSON.
fn eso_bytes(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// getSecretValue: an exact key wins over gjson; a gjson path of plain
/// `.`-separated names walks nested objects.
fn eso_property(data: &Map<String, Value>, property: &str) -> Result<String, String> {
    if let Some(v) = data.get(property) {
        return Ok(eso_bytes(v));
    }
    let mut at = &Value::Object(data.clone());
    for name in property.split('.') {
        at = at
            .get(name)
            .ok_or_else(|| format!("cannot find secret data for key: {property:?}"))?;
    }
    Ok(eso_bytes(at))
}

/// checkToken: whether ESO takes the token as valid, and its expiry.
fn eso_check_token(reply: &GoReply) -> Result<(bool, Option<i64>), String> {
    if reply.status >= 400 {
        return Err(format!("{} {}", reply.status, reply.body));
    }
    let body = reply.json();
    let data = &body["data"];
    let token_type = data
        .get("type")
        .ok_or("could not assert token type")?
        .as_str()
        .ok_or("data.type is not a string (Go's type assertion panics)")?;
    if token_type == "batch" {
        return Ok((false, None));
    }
    let ttl = data
        .get("ttl")
        .ok_or("no TTL found in response")?
        .as_i64()
        .ok_or_else(|| format!("invalid token TTL: {}", data["ttl"]))?;
    let expire = data
        .get("expire_time")
        .ok_or("no expiration time found in response")?;
    if ttl < 60 && !expire.is_null() {
        return Ok((false, None));
    }
    let Some(text) = expire.as_str() else {
        return if expire.is_null() {
            Ok((true, None))
        } else {
            Err(format!("expire time is not a string but is: {expire}"))
        };
    };
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("invalid token expiration time: {text}: {e}"))?;
    Ok((true, Some(at.unix_timestamp())))
}

/// listSecrets: LIST `secret/metadata/<path>` (GET `?list=true` after
/// path.Join, so without a trailing slash) and into every folder.
async fn eso_list(go: &mut GoVault, path: &str) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    let mut folders = vec![path.to_owned()];
    while let Some(path) = folders.pop() {
        let joined = format!("/v1/secret/metadata/{path}");
        let uri = format!("{}?list=true", joined.trim_end_matches('/'));
        let reply = go.get(&uri).await;
        let secret = match reply.status {
            404 => return Err(format!("NoSecretError from GET {uri}: {}", reply.body)),
            200 => reply.json(),
            _ => return Err(format!("GET {uri}: {} {}", reply.status, reply.body)),
        };
        let keys = secret["data"]["keys"]
            .as_array()
            .ok_or_else(|| format!("GET {uri}: no data.keys in {}", reply.body))?;
        for key in keys {
            let key = key.as_str().expect("a key is a string");
            let full = format!("{path}{key}");
            if key.ends_with('/') {
                folders.push(full);
            } else {
                found.push(full);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// readSecretMetadata: the system keys ESO copies (as `%v`) and custom_metadata.
fn eso_metadata(reply: &GoReply) -> Result<Map<String, Value>, String> {
    if reply.status == 404 {
        return Err("secret not found".into());
    }
    if reply.status >= 400 {
        return Err(format!("{} {}", reply.status, reply.body));
    }
    let body = reply.json();
    let mut out = Map::new();
    for key in ["created_time", "current_version", "delete_version_after"] {
        match &body["data"][key] {
            Value::Null => {}
            v => {
                out.insert(key.into(), Value::String(eso_bytes(v)));
            }
        }
    }
    if let Some(custom) = body["data"]["custom_metadata"].as_object() {
        for (k, v) in custom {
            out.insert(k.clone(), Value::String(eso_bytes(v)));
        }
    }
    Ok(out)
}

#[tokio::test]
async fn the_external_secrets_vault_provider_validates_reads_extracts_finds_and_sees_404_when_gone()
{
    let app = spawn_app().await;
    let Cred::ApiKey(admin) = app.admin() else {
        unreachable!()
    };
    app.create_key("acme", &[]);
    // The operator's token (the `tokenSecretRef`): reads and lists k8s/.
    let token = app.create_key(
        "default",
        &["--scopes", "secrets:read:k8s/,secrets:list:k8s/"],
    );
    let canary = random_hex();
    let pw = |n: u32| format!("{canary}-pw{n}");
    let put = |path: &'static str, data: Value| {
        let app = &app;
        let admin = admin.clone();
        async move {
            let r = vault(
                app,
                "POST",
                &format!("/v1/secret/data/{path}"),
                Some(json!({ "data": data })),
                &admin,
            )
            .await;
            assert_eq!(r.status, 200, "POST {path}: {}", r.body);
        }
    };
    put(
        "k8s/app/db",
        json!({ "username": "app", "password": pw(1) }),
    )
    .await;
    let v2 = json!({
        "username": "app",
        "password": pw(2),
        "tls.crt": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "config.json": "{\"a\":{\"b\":\"c\"}}"
    });
    put("k8s/app/db", v2.clone()).await;
    put("k8s/app/cache", json!({ "url": "redis://cache:6379" })).await;
    // Nested data, as a property's gjson path reaches it.
    put(
        "k8s/nested",
        json!({ "db": { "password": pw(9), "port": 5432 }, "tls.crt": "whole" }),
    )
    .await;
    put(
        "k8s/other/sub/token",
        json!({ "token": format!("{canary}-t") }),
    )
    .await;
    put("outside/x", json!({ "v": "outside" })).await;
    let r = vault(
        &app,
        "POST",
        "/v1/secret/metadata/k8s/app/db",
        Some(json!({ "custom_metadata": { "owner": "team-a", "env": "prod" } })),
        &admin,
    )
    .await;
    assert!(matches!(r.status, 200 | 204), "{} {}", r.status, r.body);

    let mut go = GoVault::new(&app, &token, None);

    // The SecretStore's validation: lookup-self, as checkToken reads it.
    let reply = go.get("/v1/auth/token/lookup-self").await;
    assert_eq!(reply.status, 200, "lookup-self: {}", reply.body);
    let (valid, expiry) = eso_check_token(&reply)
        .unwrap_or_else(|e| panic!("ESO refuses lookup-self ({e}): {}", reply.body));
    assert!(valid, "ESO takes the token as expired: {}", reply.body);
    // An API key lives 90 days unless told otherwise.
    let expiry = expiry.expect("an API key's expire_time");
    let in_90_days = now_secs() + 90 * 86_400;
    assert!(
        (in_90_days - 120..=in_90_days + 60).contains(&expiry),
        "{}",
        reply.body
    );
    let ttl = reply.json()["data"]["ttl"].as_i64().unwrap();
    assert!(
        (expiry - now_secs() - ttl).abs() <= 5,
        "ttl and expire_time agree: {}",
        reply.body
    );

    // `namespace: default` sends X-Vault-Namespace; another tenant is 403.
    let mut in_default = GoVault::new(&app, &token, Some("default"));
    let reply = in_default.get("/v1/auth/token/lookup-self").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut in_acme = GoVault::new(&app, &token, Some("acme"));
    for uri in ["/v1/auth/token/lookup-self", "/v1/secret/data/k8s/app/db"] {
        let reply = in_acme.get(uri).await;
        assert_eq!(
            (reply.status, reply.json()),
            (403, json!({ "errors": ["permission denied"] })),
            "GET {uri} with X-Vault-Namespace: acme"
        );
    }
    let mut unknown = GoVault::new(&app, &format!("sr_{}", "A".repeat(43)), None);
    let reply = unknown.get("/v1/auth/token/lookup-self").await;
    assert_eq!(
        (reply.status, reply.json()),
        (403, json!({ "errors": ["permission denied"] })),
        "lookup-self with an unknown token"
    );

    // data[].remoteRef {key: k8s/app/db, property: password}: with the
    // store's `path: secret` and `version: v2`, buildPath makes
    // secret/data/k8s/app/db.
    for go in [&mut go, &mut in_default] {
        let reply = go.get("/v1/secret/data/k8s/app/db").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let EsoRead::Secret(data) = eso_read(&reply) else {
            panic!("ESO reads no secret: {}", reply.body)
        };
        assert_eq!(eso_property(&data, "password"), Ok(pw(2)));
        // A key with a dot is taken whole before any gjson path.
        assert_eq!(
            eso_property(&data, "tls.crt").as_deref(),
            Ok(v2["tls.crt"].as_str().unwrap())
        );
        assert_eq!(
            eso_property(&data, "config.json").as_deref(),
            Ok("{\"a\":{\"b\":\"c\"}}")
        );
        assert!(eso_property(&data, "no.such").is_err());
        // The version ESO's metrics and events report.
        assert_eq!(reply.json()["data"]["metadata"]["version"], 2);

        // dataFrom.extract {key: k8s/app/db}: the whole map, each value as is.
        let extracted: Map<String, Value> = data
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(eso_bytes(v))))
            .collect();
        assert_eq!(Value::Object(extracted), v2);
    }

    // remoteRef.property "db.password" walks nested data (gjson); a
    // property naming an object gets its JSON; an exact key wins.
    let reply = go.get("/v1/secret/data/k8s/nested").await;
    let EsoRead::Secret(data) = eso_read(&reply) else {
        panic!("nested: {} {}", reply.status, reply.body)
    };
    assert_eq!(eso_property(&data, "db.password"), Ok(pw(9)));
    assert_eq!(eso_property(&data, "db.port").as_deref(), Ok("5432"));
    let db: Value = serde_json::from_str(&eso_property(&data, "db").unwrap()).unwrap();
    assert_eq!(db, json!({ "password": pw(9), "port": 5432 }));
    assert_eq!(eso_property(&data, "tls.crt").as_deref(), Ok("whole"));

    // remoteRef.version: "1" is sent as ?version=1.
    let reply = go.get("/v1/secret/data/k8s/app/db?version=1").await;
    let EsoRead::Secret(data) = eso_read(&reply) else {
        panic!("version 1: {} {}", reply.status, reply.body)
    };
    assert_eq!(eso_property(&data, "password"), Ok(pw(1)));

    // metadataPolicy: Fetch reads secret/metadata/<key>.
    let reply = go.get("/v1/secret/metadata/k8s/app/db").await;
    let meta = eso_metadata(&reply).unwrap_or_else(|e| panic!("{e}: {}", reply.body));
    assert_eq!(meta["owner"], "team-a", "{}", reply.body);
    assert_eq!(meta["env"], "prod");
    assert_eq!(meta["current_version"], "2", "{}", reply.body);
    assert!(meta.contains_key("created_time"), "{}", reply.body);
    assert!(
        !reply.body.contains(&canary),
        "no value in the metadata: {}",
        reply.body
    );

    // dataFrom.find {path: k8s, name: {regexp: "(db|token)$"}}: LIST through
    // secret/metadata/, then a read of each name that matches.
    let names = eso_list(&mut go, "k8s/").await.unwrap();
    assert_eq!(
        names,
        [
            "k8s/app/cache",
            "k8s/app/db",
            "k8s/nested",
            "k8s/other/sub/token"
        ]
    );
    let mut found = Map::new();
    for name in names
        .iter()
        .filter(|n| n.ends_with("db") || n.ends_with("token"))
    {
        let reply = go.get(&format!("/v1/secret/data/{name}")).await;
        let EsoRead::Secret(data) = eso_read(&reply) else {
            panic!("find: {name}: {} {}", reply.status, reply.body)
        };
        found.insert(name.clone(), Value::Object(data));
    }
    assert_eq!(found["k8s/app/db"], v2);
    assert_eq!(found["k8s/other/sub/token"]["token"], format!("{canary}-t"));
    // dataFrom.find {tags: {owner: team-a}}: the metadata of every candidate.
    let mut tagged = Vec::new();
    for name in &names {
        let reply = go.get(&format!("/v1/secret/metadata/{name}")).await;
        let meta = eso_metadata(&reply).unwrap_or_else(|e| panic!("{name}: {e}"));
        if meta.get("owner").and_then(Value::as_str) == Some("team-a") {
            tagged.push(name.clone());
        }
    }
    assert_eq!(tagged, ["k8s/app/db"]);
    // A folder with nothing in it: 404, which ESO takes as no secret.
    let reply = go.get("/v1/secret/metadata/k8s/empty?list=true").await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert_eq!(eso_read(&reply), EsoRead::NoSecret, "{}", reply.body);
    // The mount's root, as a find without a path lists it (with the admin key).
    let mut root = GoVault::new(&app, &admin, None);
    let reply = root.get("/v1/secret/metadata?list=true").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let keys = reply.json()["data"]["keys"].clone();
    assert!(
        keys.as_array()
            .is_some_and(|k| k.contains(&json!("k8s/")) && k.contains(&json!("outside/"))),
        "{}",
        reply.body
    );

    // Outside the token's scopes: 403 with Vault's errors, an error in ESO.
    let reply = go.get("/v1/secret/data/outside/x").await;
    assert_eq!(
        (reply.status, reply.json()),
        (403, json!({ "errors": ["permission denied"] }))
    );

    // Gone: the newest version deleted, then every version destroyed, and a
    // key that never was: 404 bodies ESO reads as NoSecretError.
    let r = vault(&app, "DELETE", "/v1/secret/data/k8s/app/db", None, &admin).await;
    assert!(matches!(r.status, 200 | 204), "{} {}", r.status, r.body);
    let reply = go.get("/v1/secret/data/k8s/app/db").await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert_eq!(eso_read(&reply), EsoRead::NoSecret, "{}", reply.body);
    assert_eq!(
        reply.json()["data"]["metadata"]["version"],
        2,
        "{}",
        reply.body
    );
    let reply = go.get("/v1/secret/data/k8s/app/db?version=1").await;
    assert!(
        matches!(eso_read(&reply), EsoRead::Secret(_)),
        "version 1 still reads: {}",
        reply.body
    );
    let r = vault(
        &app,
        "DELETE",
        "/v1/secret/metadata/k8s/app/db",
        None,
        &admin,
    )
    .await;
    assert!(matches!(r.status, 200 | 204), "{} {}", r.status, r.body);
    for uri in [
        "/v1/secret/data/k8s/app/db",
        "/v1/secret/data/k8s/app/db?version=1",
        "/v1/secret/data/k8s/never",
    ] {
        let reply = go.get(uri).await;
        assert_eq!(reply.status, 404, "GET {uri}: {}", reply.body);
        assert_eq!(
            eso_read(&reply),
            EsoRead::NoSecret,
            "GET {uri}: {}",
            reply.body
        );
    }
    let reply = go.get("/v1/secret/metadata/k8s/app/db").await;
    assert_eq!(
        eso_metadata(&reply),
        Err("secret not found".into()),
        "{}",
        reply.body
    );
    let names = eso_list(&mut go, "k8s/").await.unwrap();
    assert_eq!(
        names,
        ["k8s/app/cache", "k8s/nested", "k8s/other/sub/token"]
    );

    // No token or value in the log or the trail.
    let trail = crate::audit::trail(&app.data_dir);
    let log = app.log_text();
    for c in [token.as_str(), canary.as_str()] {
        assert_eq!(occurrences(&log, c), 0, "a canary in the log");
        assert_eq!(occurrences(&trail, c), 0, "a canary in the trail");
    }
}

#[tokio::test]
async fn the_external_secrets_vault_provider_logs_in_with_a_jwt_and_revokes_its_token_on_close() {
    let (app, _dir) = app_with_provider(&[]).await;
    let admin_cred = app.admin();
    let Cred::ApiKey(admin) = admin_cred.clone() else {
        unreachable!()
    };
    let policy = json!({ "scopes": ["secrets:read:k8s/"] });
    let r = put_json(&app, "/policies/eso-readers", &policy, &admin_cred).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let role = json!({
        "provider": "ci",
        "bound_audiences": [AUDIENCE],
        "bound_subject": "repo:acme/*:ref:refs/heads/main",
        "user_claim": "sub",
        "policies": ["eso-readers"],
        "token_ttl_seconds": 600
    });
    let r = put_json(&app, "/auth/roles/eso", &role, &admin_cred).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let canary = random_hex();
    let r = vault(
        &app,
        "POST",
        "/v1/secret/data/k8s/app/db",
        Some(json!({ "data": { "password": canary } })),
        &admin,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // auth.jwt {path: jwt, role: eso, secretRef} (auth_jwt.go,
    // requestTokenWithJwtAuth): Logical().WriteWithContext("auth/jwt/login"),
    // a PUT of json.Marshal's map (keys sorted), with no Content-Type and,
    // before the login, no token.
    let jwt = ci_jwt(&claims());
    let mut go = GoVault::new(&app, "", Some("default"));
    let signed = &jwt[..jwt.len() - 4];
    let bad = format!("{{\"jwt\":\"{signed}AAAA\",\"role\":\"eso\"}}");
    let reply = go.send("PUT", "/v1/auth/jwt/login", Some(&bad)).await;
    assert!(
        (400..500).contains(&reply.status),
        "a bad signature: {} {}",
        reply.status,
        reply.body
    );
    assert!(
        reply.json()["errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "Vault's errors: {}",
        reply.body
    );
    assert!(!reply.body.contains(signed), "the JWT echoed");
    let login = format!("{{\"jwt\":\"{jwt}\",\"role\":\"eso\"}}");
    let reply = go.send("PUT", "/v1/auth/jwt/login", Some(&login)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Secret.TokenID(): auth.client_token.
    let token = reply.json()["auth"]["client_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no auth.client_token: {}", reply.body))
        .to_owned();
    assert!(token.starts_with("srt_"));
    go.token = Some(token.clone());

    let reply = go.get("/v1/secret/data/k8s/app/db").await;
    let EsoRead::Secret(data) = eso_read(&reply) else {
        panic!("{} {}", reply.status, reply.body)
    };
    assert_eq!(eso_property(&data, "password"), Ok(canary.clone()));

    // Validate, and a cached client's next setAuth: checkToken.
    let reply = go.get("/v1/auth/token/lookup-self").await;
    let (valid, expiry) = eso_check_token(&reply)
        .unwrap_or_else(|e| panic!("ESO refuses lookup-self ({e}): {}", reply.body));
    assert!(valid, "{}", reply.body);
    let expiry = expiry.expect("a login token's expire_time");
    assert!(
        (now_secs() + 540..=now_secs() + 600).contains(&expiry),
        "{}",
        reply.body
    );

    // Close, without the token cache (auth.go, revokeTokenIfValid):
    // checkToken, then RevokeSelfWithContext, a PUT with no body.
    let reply = go.send("PUT", "/v1/auth/token/revoke-self", None).await;
    assert!(
        matches!(reply.status, 200 | 204),
        "revoke-self: {} {}",
        reply.status,
        reply.body
    );
    for uri in ["/v1/auth/token/lookup-self", "/v1/secret/data/k8s/app/db"] {
        let reply = go.get(uri).await;
        assert_eq!(
            (reply.status, reply.json()),
            (403, json!({ "errors": ["permission denied"] })),
            "GET {uri} with the revoked token"
        );
    }

    let trail = crate::audit::trail(&app.data_dir);
    let log = app.log_text();
    for c in [
        token.as_str(),
        &token["srt_".len()..],
        &jwt,
        signed,
        &canary,
    ] {
        assert_eq!(occurrences(&log, c), 0, "a canary in the log");
        assert_eq!(occurrences(&trail, c), 0, "a canary in the trail");
    }
}

#[tokio::test]
async fn the_external_secrets_vault_provider_pushes_with_check_and_set_and_deletes_what_it_manages()
{
    let app = spawn_app().await;
    let Cred::ApiKey(admin) = app.admin() else {
        unreachable!()
    };
    let token = app.create_key(
        "default",
        &[
            "--scopes",
            "secrets:read:k8s/,secrets:list:k8s/,secrets:write:k8s/,secrets:delete:k8s/",
        ],
    );
    // A SecretStore with `checkAndSet: {required: true}`; a PushSecret of a
    // whole Secret (no secretKey) to remoteKey k8s/pushed (client_push.go).
    let mut go = GoVault::new(&app, &token, None);
    let canary = random_hex();
    let data_uri = "/v1/secret/data/k8s/pushed";
    let meta_uri = "/v1/secret/metadata/k8s/pushed";
    let label = r#"{"custom_metadata":{"managed-by":"external-secrets"}}"#;
    let push = |n: u32, cas: i64| {
        format!(
            "{{\"data\":{{\"password\":\"{canary}-{n}\",\"user\":\"app\"}},\"options\":{{\"cas\":{cas}}}}}"
        )
    };

    // The first push: readSecret finds nothing, getCASVersion is 0, the
    // label goes to the metadata before any value, then the data.
    let reply = go.get(data_uri).await;
    assert_eq!(eso_read(&reply), EsoRead::NoSecret, "{}", reply.body);
    let reply = go.send("PUT", meta_uri, Some(label)).await;
    assert!(
        matches!(reply.status, 200 | 204),
        "the label before any value: {} {}",
        reply.status,
        reply.body
    );
    let reply = go.send("PUT", data_uri, Some(&push(1, 0))).await;
    assert_eq!(reply.status, 200, "the first push, cas 0: {}", reply.body);
    assert_eq!(reply.json()["data"]["version"], 1, "{}", reply.body);

    // A second push of a changed Secret: readSecret, readSecretMetadata
    // (managed-by must be external-secrets), getCASVersion (the metadata's
    // current_version, an integer), the label again, the data.
    let reply = go.get(data_uri).await;
    let EsoRead::Secret(existing) = eso_read(&reply) else {
        panic!("{} {}", reply.status, reply.body)
    };
    assert_eq!(existing["password"], format!("{canary}-1"));
    let reply = go.get(meta_uri).await;
    let meta = eso_metadata(&reply).unwrap_or_else(|e| panic!("{e}: {}", reply.body));
    assert_eq!(meta["managed-by"], "external-secrets", "{}", reply.body);
    let reply = go.get(meta_uri).await;
    let current = reply.json()["data"]["current_version"]
        .as_i64()
        .unwrap_or_else(|| panic!("current_version is no integer: {}", reply.body));
    assert_eq!(current, 1);
    let reply = go.send("PUT", meta_uri, Some(label)).await;
    assert!(matches!(reply.status, 200 | 204), "{}", reply.body);
    let reply = go.send("PUT", data_uri, Some(&push(2, current))).await;
    assert_eq!(reply.status, 200, "the second push: {}", reply.body);
    assert_eq!(reply.json()["data"]["version"], 2);
    // A push that read version 1 before someone else wrote: refused.
    let reply = go.send("PUT", data_uri, Some(&push(3, 1))).await;
    assert_eq!(reply.status, 400, "a stale cas: {}", reply.body);
    assert!(
        reply
            .body
            .contains("check-and-set parameter did not match the current version"),
        "{}",
        reply.body
    );
    let reply = go.get(data_uri).await;
    let EsoRead::Secret(now) = eso_read(&reply) else {
        panic!("{} {}", reply.status, reply.body)
    };
    assert_eq!(now["password"], format!("{canary}-2"));

    // A secret someone else wrote carries no managed-by: ESO leaves it be.
    let r = vault(
        &app,
        "POST",
        "/v1/secret/data/k8s/manual",
        Some(json!({ "data": { "v": "x" } })),
        &admin,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let reply = go.get("/v1/secret/metadata/k8s/manual").await;
    let meta = eso_metadata(&reply).unwrap_or_else(|e| panic!("{e}: {}", reply.body));
    assert!(!meta.contains_key("managed-by"), "{}", reply.body);

    // DeleteSecret: readSecret, readSecretMetadata, DELETE the data, DELETE
    // the metadata.
    assert!(matches!(
        eso_read(&go.get(data_uri).await),
        EsoRead::Secret(_)
    ));
    assert!(eso_metadata(&go.get(meta_uri).await).is_ok());
    for uri in [data_uri, meta_uri] {
        let reply = go.send("DELETE", uri, None).await;
        assert!(
            matches!(reply.status, 200 | 204),
            "DELETE {uri}: {} {}",
            reply.status,
            reply.body
        );
    }
    let reply = go.get(data_uri).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert_eq!(eso_read(&reply), EsoRead::NoSecret, "{}", reply.body);
    let reply = go.get(meta_uri).await;
    assert_eq!(eso_metadata(&reply), Err("secret not found".into()));

    let trail = crate::audit::trail(&app.data_dir);
    let log = app.log_text();
    for c in [token.as_str(), canary.as_str()] {
        assert_eq!(occurrences(&log, c), 0, "a canary in the log");
        assert_eq!(occurrences(&trail, c), 0, "a canary in the trail");
    }
}
