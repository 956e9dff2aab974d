//! People's logins against a real OpenID provider: panva's oidc-provider
//! (`tests/oidc/provider.mjs`, installed from the npm registry into
//! target/oidc-node), with strongroom as its confidential client. The test
//! plays the person at the provider's own login and consent forms.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::identity::put_json;

const REDIRECT: &str = "http://127.0.0.1:8250/oidc/callback";
const PINNED: &str = "oidc-provider@8.8.1";

/// target/oidc-node/node_modules, with oidc-provider installed (once).
fn node_modules() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/oidc-node");
    let modules = root.join("node_modules");
    if !modules.join("oidc-provider/package.json").exists() {
        std::fs::create_dir_all(&root).unwrap();
        let status = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&root)
            .arg(PINNED)
            .status()
            .expect("npm (Node 20) to install oidc-provider");
        assert!(status.success(), "npm install {PINNED} failed");
    }
    modules
}

/// The provider on loopback; killed on drop.
pub struct Idp {
    child: Child,
    pub issuer: String,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_idp(dir: &Path) -> Idp {
    let modules = node_modules();
    let secret = dir.join("client-secret");
    std::fs::write(&secret, "strongroom-client-secret-canary\n").unwrap();
    let port = free_port();
    let mut child = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/provider.mjs"))
        .arg(port.to_string())
        .arg(&secret)
        .env("OIDC_NODE_MODULES", &modules)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let issuer = loop {
        let line = lines.next().expect("the provider's output").unwrap();
        if let Some(issuer) = line.strip_prefix("listening ") {
            break issuer.to_owned();
        }
    };
    // Keep reading: a closed pipe would end the provider at its next line.
    std::thread::spawn(move || for _ in lines {});
    Idp { child, issuer }
}

/// A server whose provider `corp` is `idp`, with strongroom's client.
pub async fn app_with_idp(idp: &Idp, dir: &Path, extra: &[(&str, String)]) -> TestApp {
    let providers = json!([{
        "name": "corp",
        "issuer": idp.issuer,
        "client_id": "strongroom",
        "client_secret_file": dir.join("client-secret"),
    }]);
    let path = dir.join("providers.json");
    std::fs::write(&path, providers.to_string()).unwrap();
    let mut options = Options::default().env("STRONGROOM_OIDC_PROVIDERS", path.to_str().unwrap());
    for (k, v) in extra {
        options = options.env(k, v);
    }
    spawn_with(options).await
}

pub fn people_role() -> Value {
    json!({
        "provider": "corp",
        "bound_audiences": ["strongroom"],
        "bound_claims": { "groups": ["ops"] },
        "user_claim": "email",
        "scopes": ["secrets:read"],
        "allowed_redirect_uris": [REDIRECT],
        "token_ttl_seconds": 600
    })
}

pub async fn post(app: &TestApp, path: &str, body: &Value) -> Reply {
    let b = app
        .client
        .post(app.url(path))
        .header("Content-Type", "application/json")
        .body(body.to_string());
    app.send(b, &Cred::None).await
}

/// A browser for the provider's pages: follows nothing by itself, keeps
/// the provider's cookies.
pub struct Person {
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
    login: String,
}

impl Person {
    pub fn new(login: &str) -> Person {
        Person {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
            login: login.to_owned(),
        }
    }

    async fn go(&mut self, request: reqwest::RequestBuilder) -> (u16, Option<String>, String) {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let r = request
            .header("Cookie", cookie.join("; "))
            .send()
            .await
            .unwrap();
        for set in r.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            if let Some((k, v)) = pair.split_once('=') {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        (
            r.status().as_u16(),
            location,
            r.text().await.unwrap_or_default(),
        )
    }

    /// Signs in at the provider from `url` (and consents), following its
    /// redirects until one leaves for `redirect`; that redirect's query.
    pub async fn sign_in(
        &mut self,
        url: &str,
        redirect: &str,
        consent: bool,
    ) -> BTreeMap<String, String> {
        let mut next = url.to_owned();
        for _ in 0..20 {
            if next.starts_with(redirect) {
                let url = reqwest::Url::parse(&next).unwrap();
                return url.query_pairs().into_owned().collect();
            }
            let (status, location, body) = self.go(self.http.get(&next)).await;
            if let Some(location) = location {
                next = absolute(url, &location);
                continue;
            }
            assert_eq!(status, 200, "{next}: {body}");
            // A prompt: the login form or the consent form.
            let action = next.clone();
            let form: Vec<(&str, &str)> = if body.contains(r#"name="prompt" value="login""#) {
                vec![
                    ("prompt", "login"),
                    ("login", self.login.as_str()),
                    ("password", "x"),
                ]
            } else if consent {
                vec![("prompt", "consent")]
            } else {
                let abort = format!("{}/abort", action.trim_end_matches('/'));
                let (_, location, _) = self.go(self.http.get(&abort)).await;
                next = absolute(url, &location.expect("abort redirects"));
                continue;
            };
            let (_, location, body) = self.go(self.http.post(&action).form(&form)).await;
            next = absolute(
                url,
                &location.unwrap_or_else(|| panic!("no redirect after the form: {body}")),
            );
        }
        panic!("the provider never sent the person back");
    }
}

impl Person {
    /// Approves (or, `approve` false, aborts) a device login at the
    /// provider's verification page, signing in on the way; the last page.
    pub async fn confirm_device(
        &mut self,
        verification_uri_complete: &str,
        approve: bool,
    ) -> String {
        let base = verification_uri_complete.to_owned();
        let action = absolute(&base, "/device");
        // The code's page (its form submits the user code), then the
        // confirmation page (Continue, or Abort), then sign-in and consent.
        let (mut status, mut location, mut body) = self.go(self.http.get(&base)).await;
        let mut next = base.clone();
        for _ in 0..20 {
            if let Some(to) = location.take() {
                next = absolute(&base, &to);
                (status, location, body) = self.go(self.http.get(&next)).await;
                continue;
            }
            assert_eq!(status, 200, "{body}");
            let hidden = |name: &str| {
                let marker = format!(r#"name="{name}" value=""#);
                body.find(&marker).map(|at| {
                    let rest = &body[at + marker.len()..];
                    rest[..rest.find('"').unwrap()].to_owned()
                })
            };
            let form: Vec<(String, String)> = if body.contains(r#"name="prompt" value="login""#) {
                vec![
                    ("prompt".into(), "login".into()),
                    ("login".into(), self.login.clone()),
                    ("password".into(), "x".into()),
                ]
            } else if body.contains(r#"name="prompt" value="consent""#) {
                vec![("prompt".into(), "consent".into())]
            } else if let (Some(xsrf), Some(code)) = (hidden("xsrf"), hidden("user_code")) {
                let mut form = vec![("xsrf".to_owned(), xsrf), ("user_code".to_owned(), code)];
                if body.contains("op.deviceConfirmForm") {
                    form.push(("confirm".into(), "yes".into()));
                    if !approve {
                        form.push(("abort".into(), "yes".into()));
                    }
                }
                next = action.clone();
                form
            } else {
                return body;
            };
            (status, location, body) = self.go(self.http.post(&next).form(&form)).await;
        }
        panic!("the provider never finished the device login");
    }
}

fn absolute(base: &str, location: &str) -> String {
    reqwest::Url::parse(base)
        .unwrap()
        .join(location)
        .unwrap()
        .to_string()
}

/// Begins a login at strongroom; (auth_url, the login's state).
async fn begin(app: &TestApp, role: &str, nonce: &str) -> String {
    let r = post(
        app,
        "/auth/oidc/auth_url",
        &json!({ "tenant": "default", "role": role, "redirect_uri": REDIRECT, "client_nonce": nonce }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["auth_url"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_with_pkce_and_every_misuse_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let idp = start_idp(dir.path());
    let clock = TestClock::new();
    let app = app_with_idp(&idp, dir.path(), &[(clock.env().0, clock.env().1)]).await;
    let admin = app.admin();
    assert_eq!(
        put_json(&app, "/auth/roles/people", &people_role(), &admin)
            .await
            .status,
        200
    );
    assert_eq!(app.put("team/db", "s3cret", &admin).await.status, 200);

    // The whole round trip: strongroom's URL, the provider's forms, back.
    let url = begin(&app, "people", "nonce-1").await;
    let parsed = reqwest::Url::parse(&url).unwrap();
    let q: BTreeMap<String, String> = parsed.query_pairs().into_owned().collect();
    assert!(url.starts_with(&idp.issuer), "{url}");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["client_id"], "strongroom");
    assert!(q["code_challenge"].len() == 43 && !q.contains_key("code_verifier"));
    let back = Person::new("alice").sign_in(&url, REDIRECT, true).await;
    let (code, state) = (back["code"].clone(), back["state"].clone());
    assert_eq!(state, q["state"]);
    let done = post(
        &app,
        "/auth/oidc/callback",
        &json!({ "state": state, "code": code, "client_nonce": "nonce-1" }),
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.json()["subject"], "corp:alice@example.test");
    let token = Cred::Bearer(done.json()["token"].as_str().unwrap().to_owned());
    assert_eq!(app.get("team/db", &token).await.json()["value"], "s3cret");

    // The same state again: used once.
    let r = post(
        &app,
        "/auth/oidc/callback",
        &json!({ "state": state, "code": code, "client_nonce": "nonce-1" }),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["detail"].as_str().unwrap().starts_with("state"),
        "{}",
        r.body
    );

    // A wrong client nonce.
    let url = begin(&app, "people", "nonce-2").await;
    let back = Person::new("alice").sign_in(&url, REDIRECT, true).await;
    let r = post(
        &app,
        "/auth/oidc/callback",
        &json!({ "state": back["state"], "code": back["code"], "client_nonce": "another" }),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .starts_with("client_nonce"),
        "{}",
        r.body
    );

    // A code the provider issued to another application.
    let url = begin(&app, "people", "nonce-3").await;
    let ours: BTreeMap<String, String> = reqwest::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let mut theirs = reqwest::Url::parse(&url).unwrap();
    theirs
        .query_pairs_mut()
        .clear()
        .extend_pairs(ours.iter().map(|(k, v)| {
            (
                k.as_str(),
                if k == "client_id" {
                    "other"
                } else {
                    v.as_str()
                },
            )
        }));
    let back = Person::new("alice")
        .sign_in(theirs.as_str(), REDIRECT, true)
        .await;
    let r = post(
        &app,
        "/auth/oidc/callback",
        &json!({ "state": ours["state"], "code": back["code"], "client_nonce": "nonce-3" }),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.json()["detail"].as_str().unwrap().starts_with("code"),
        "{}",
        r.body
    );

    // A person the role's bindings refuse (not in group ops).
    let url = begin(&app, "people", "nonce-4").await;
    let back = Person::new("bob").sign_in(&url, REDIRECT, true).await;
    let r = post(
        &app,
        "/auth/oidc/callback",
        &json!({ "state": back["state"], "code": back["code"], "client_nonce": "nonce-4" }),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .starts_with("bound_claims"),
        "{}",
        r.body
    );

    // A role whose audience is not the ID token's.
    let mut elsewhere = people_role();
    elsewhere["bound_audiences"] = json!(["https://other.example"]);
    assert_eq!(
        put_json(&app, "/auth/roles/elsewhere", &elsewhere, &admin)
            .await
            .status,
        200
    );
    let url = begin(&app, "elsewhere", "nonce-5").await;
    let back = Person::new("alice").sign_in(&url, REDIRECT, true).await;
    let r = post(
        &app,
        "/auth/oidc/callback",
        &json!({ "state": back["state"], "code": back["code"], "client_nonce": "nonce-5" }),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["detail"].as_str().unwrap().starts_with("aud"),
        "{}",
        r.body
    );

    // A redirect the role does not allow.
    let r = post(
        &app,
        "/auth/oidc/auth_url",
        &json!({ "tenant": "default", "role": "people",
        "redirect_uri": "http://evil.example/oidc/callback", "client_nonce": "n" }),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["detail"]
            .as_str()
            .unwrap()
            .starts_with("redirect_uri"),
        "{}",
        r.body
    );

    // A state older than 5 minutes.
    let url = begin(&app, "people", "nonce-6").await;
    let back = Person::new("alice").sign_in(&url, REDIRECT, true).await;
    clock.advance(Duration::from_secs(301));
    let r = post(
        &app,
        "/auth/oidc/callback",
        &json!({ "state": back["state"], "code": back["code"], "client_nonce": "nonce-6" }),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["detail"].as_str().unwrap().starts_with("state"),
        "{}",
        r.body
    );

    // Consent denied: the provider sends the person back with an error and
    // no code; strongroom has nothing to exchange.
    let url = begin(&app, "people", "nonce-7").await;
    let back = Person::new("alice").sign_in(&url, REDIRECT, false).await;
    assert_eq!(back.get("error").map(String::as_str), Some("access_denied"));
    assert!(!back.contains_key("code"));

    // Every step is audited: one finished login, each begun one (noted),
    // seven refusals (state twice, client nonce, code, bindings, audience,
    // redirect URI), none with a code, the client secret or a token.
    let lines = crate::audit::lines(&app);
    let logins: Vec<&Value> = lines
        .iter()
        .filter(|l| l["action"] == "auth.login")
        .collect();
    let begun = |l: &Value| l["note"].as_str().is_some_and(|n| n.starts_with("begun"));
    let ok = |l: &&&Value| l["status"] == 200;
    assert_eq!(logins.iter().filter(ok).filter(|l| !begun(l)).count(), 1);
    assert_eq!(logins.iter().filter(ok).filter(|l| begun(l)).count(), 7);
    assert_eq!(logins.iter().filter(|l| l["status"] == 401).count(), 7);
    let trail = crate::audit::trail(&app.data_dir);
    let log = app.log_text();
    for canary in [
        code.as_str(),
        "strongroom-client-secret-canary",
        done.json()["token"].as_str().unwrap(),
    ] {
        assert!(!trail.contains(canary), "a credential in the trail");
        assert!(!log.contains(canary), "a credential in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_approves_a_device_login_and_a_denial_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let idp = start_idp(dir.path());
    let clock = TestClock::new();
    let app = app_with_idp(&idp, dir.path(), &[(clock.env().0, clock.env().1)]).await;
    let admin = app.admin();
    assert_eq!(
        put_json(&app, "/auth/roles/people", &people_role(), &admin)
            .await
            .status,
        200
    );
    let body = json!({ "tenant": "default", "role": "people" });
    let r = post(&app, "/auth/oidc/device", &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let device = r.json();
    for field in [
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "interval",
        "expires_in",
    ] {
        assert!(!device[field].is_null(), "{field}: {device}");
    }
    let code = device["device_code"].as_str().unwrap().to_owned();
    let r = poll(&app, &code).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        ["authorization_pending", "slow_down"].contains(&r.error().as_str()),
        "{}",
        r.body
    );
    let page = Person::new("alice")
        .confirm_device(device["verification_uri_complete"].as_str().unwrap(), true)
        .await;
    assert!(page.contains("Sign-in Success"), "{page}");
    // Polled at the provider's interval until the token comes.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let token = loop {
        let r = poll(&app, &code).await;
        if r.status == 200 {
            break r.json()["token"].as_str().unwrap().to_owned();
        }
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(
            ["authorization_pending", "slow_down"].contains(&r.error().as_str()),
            "{}",
            r.body
        );
        assert!(std::time::Instant::now() < deadline, "no token within 30 s");
        tokio::time::sleep(Duration::from_secs(device["interval"].as_u64().unwrap())).await;
    };
    assert!(token.starts_with("srt_"));
    assert_eq!(app.get("missing", &Cred::Bearer(token)).await.status, 404);
    // Used once.
    let r = poll(&app, &code).await;
    assert_eq!(
        (r.status, r.error()),
        (400, "expired_token".to_owned()),
        "{}",
        r.body
    );

    // A person who aborts: access_denied.
    let denied = post(&app, "/auth/oidc/device", &body).await.json();
    Person::new("alice")
        .confirm_device(denied["verification_uri_complete"].as_str().unwrap(), false)
        .await;
    let code = denied["device_code"].as_str().unwrap().to_owned();
    let r = poll(&app, &code).await;
    assert_eq!(
        (r.status, r.error()),
        (400, "access_denied".to_owned()),
        "{}",
        r.body
    );
    // A device code older than a login may take (5 minutes).
    let late = post(&app, "/auth/oidc/device", &body).await.json();
    clock.advance(Duration::from_secs(301));
    let r = poll(&app, late["device_code"].as_str().unwrap()).await;
    assert_eq!(
        (r.status, r.error()),
        (400, "expired_token".to_owned()),
        "{}",
        r.body
    );
    // An unknown device code.
    let r = poll(&app, "not-a-code").await;
    assert_eq!(
        (r.status, r.error()),
        (400, "expired_token".to_owned()),
        "{}",
        r.body
    );
    assert!(!crate::audit::trail(&app.data_dir).contains(denied["device_code"].as_str().unwrap()));
}

async fn poll(app: &TestApp, code: &str) -> Reply {
    post(
        app,
        "/auth/oidc/device/token",
        &json!({ "device_code": code }),
    )
    .await
}

/// `strongroom` as a client of `app` with its own config dir (where
/// `login` keeps the token) and no key.
fn cli(app: &TestApp, config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strongroom"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STRONGROOM_ADDR", &app.addr)
        .env("XDG_CONFIG_HOME", config);
    cmd
}

/// Runs `cmd` (a login), handing each stderr line to `on_line` until it
/// returns a value; then the value and the child.
fn spawn_reading(mut cmd: Command, on_line: impl Fn(&str) -> Option<String>) -> (String, Child) {
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let found = loop {
        let line = lines.next().expect("the CLI's output").unwrap();
        if let Some(found) = on_line(&line) {
            break found;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (found, child)
}

fn wait_ok(mut child: Child) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "login exited {status}");
            return;
        }
        assert!(std::time::Instant::now() < deadline, "login did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_logs_in_through_the_browser_and_the_device_flow_and_logs_out() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let idp = start_idp(dir.path());
    let app = app_with_idp(&idp, dir.path(), &[]).await;
    let admin = app.admin();
    assert_eq!(
        put_json(&app, "/auth/roles/people", &people_role(), &admin)
            .await
            .status,
        200
    );
    assert_eq!(app.put("team/db", "s3cret", &admin).await.status, 200);
    let config = dir.path().join("config");

    // The browser flow: the CLI prints the URL and listens on a loopback
    // port (any port: the role allows 8250's URL, RFC 8252 lets it vary).
    let port = free_port();
    let mut login = cli(&app, &config);
    login.args([
        "login",
        "--tenant",
        "default",
        "--role",
        "people",
        "--port",
        &port.to_string(),
    ]);
    let (url, child) = spawn_reading(login, |line| {
        line.trim_start()
            .starts_with("http")
            .then(|| line.trim().to_owned())
    });
    let redirect = format!("http://127.0.0.1:{port}/oidc/callback");
    let back = Person::new("alice").sign_in(&url, &redirect, true).await;
    let mut to_cli = reqwest::Url::parse(&redirect).unwrap();
    to_cli.query_pairs_mut().extend_pairs(back.iter());
    let page = reqwest::get(to_cli).await.unwrap().text().await.unwrap();
    assert!(page.contains("Signed in"), "{page}");
    wait_ok(child);
    let file = config.join("strongroom/token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The server's address, then the token: it is sent to no other server.
    let kept = std::fs::read_to_string(&file).unwrap();
    let (issuer, token) = kept.split_once('\n').unwrap();
    assert_eq!(issuer, app.addr);
    let token = token.trim().to_owned();
    assert!(token.starts_with("srt_"));
    // Another server gets no token: a listener of the test's, as that
    // server, sees the request without one.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_addr = format!("http://{}", other.local_addr().unwrap());
    let mut get_elsewhere = cli(&app, &config);
    get_elsewhere.args(["get", "team/db", "--addr", &other_addr]);
    let running = get_elsewhere
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut conn, _) = other.accept().unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        use std::io::Read;
        conn.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(
        !head.contains("authorization") && !head.contains("srt_"),
        "{head}"
    );
    use std::io::Write;
    conn.write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .unwrap();
    drop(conn);
    let out = running.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    // Client commands use it when no key is given.
    let out = cli(&app, &config)
        .args(["get", "team/db"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"s3cret");
    // Logout revokes it and removes the file.
    let out = cli(&app, &config).arg("logout").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!file.exists());
    assert_eq!(
        app.get("team/db", &Cred::Bearer(token.clone()))
            .await
            .status,
        401
    );
    let out = cli(&app, &config)
        .args(["get", "team/db"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));

    // The device flow: the CLI shows the code and polls.
    let mut login = cli(&app, &config);
    login.args([
        "login", "--tenant", "default", "--role", "people", "--device",
    ]);
    let (complete, child) = spawn_reading(login, |line| {
        line.trim_start()
            .strip_prefix("(or open ")
            .map(|rest| rest.trim_end_matches(')').to_owned())
    });
    Person::new("alice").confirm_device(&complete, true).await;
    wait_ok(child);
    let out = cli(&app, &config)
        .args(["get", "team/db"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"s3cret");
    // Neither token reached the CLI's output or the server's log.
    assert!(!app.log_text().contains(token.trim()));
}
