//! `spawn_app()`: starts the real `strongroom` binary on port 0 with a fresh
//! temp data dir, captures its stderr (the log), and talks HTTP to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_strongroom");
/// An HS256 secret the JWT tests configure.
pub const JWT_SECRET: &str = "test-hs256-secret-that-is-long-enough-0123456789";

/// How to start a server.
#[derive(Clone, Default)]
pub struct Options {
    /// Reuse this data dir (restarts); a fresh temp dir when `None`.
    pub data_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
}

impl Options {
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }
}

pub struct TestApp {
    pub addr: String,
    pub data_dir: PathBuf,
    /// Held so the temp dir lives as long as the app.
    _temp: Option<tempfile::TempDir>,
    pub child: Child,
    /// Everything the server wrote on stderr so far.
    pub log: Arc<Mutex<String>>,
    /// The bootstrap admin key, when this start printed one.
    pub bootstrap_key: Option<String>,
    pub client: reqwest::Client,
}

/// Starts a server on a fresh data dir with the embedded defaults.
pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

pub fn command(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STRONGROOM_DATA_DIR", data_dir);
    cmd
}

pub async fn spawn_with(options: Options) -> TestApp {
    let (temp, data_dir) = match &options.data_dir {
        Some(dir) => (None, dir.clone()),
        None => {
            let temp = tempfile::tempdir().unwrap();
            let dir = temp.path().join("data");
            (Some(temp), dir)
        }
    };
    let mut cmd = command(&data_dir);
    cmd.arg("serve").arg("--listen").arg("127.0.0.1:0");
    for (name, value) in &options.env {
        cmd.env(name, value);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start strongroom");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
            if let Some(addr) = listening_addr(&line) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(Some(addr));
                }
            }
        }
        if let Some(tx) = tx.take() {
            let _ = tx.send(None);
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(addr)) => addr,
        _ => panic!("server did not start; log:\n{}", log.lock().unwrap()),
    };
    let bootstrap_key = log
        .lock()
        .unwrap()
        .lines()
        .find(|l| l.starts_with("sr_"))
        .map(str::to_owned);
    TestApp {
        addr: format!("http://{addr}"),
        data_dir,
        _temp: temp,
        child,
        log,
        bootstrap_key,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
    }
}

fn listening_addr(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    (fields.get("message")?.as_str()? == "listening")
        .then(|| fields.get("addr")?.as_str().map(str::to_owned))?
}

/// A parsed response: status, headers and body text.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// Credentials a request carries.
#[derive(Clone)]
pub enum Cred {
    None,
    ApiKey(String),
    Bearer(String),
}

impl TestApp {
    pub fn admin(&self) -> Cred {
        Cred::ApiKey(self.bootstrap_key.clone().expect("a bootstrap key"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.addr)
    }

    pub async fn send(&self, builder: reqwest::RequestBuilder, cred: &Cred) -> Reply {
        let builder = match cred {
            Cred::None => builder,
            Cred::ApiKey(k) => builder.header("X-Api-Key", k),
            Cred::Bearer(t) => builder.header("Authorization", format!("Bearer {t}")),
        };
        let response = builder.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn put_raw(&self, body: impl Into<reqwest::Body>, cred: &Cred) -> Reply {
        let b = self
            .client
            .put(self.url("/secrets"))
            .header("Content-Type", "application/json")
            .body(body);
        self.send(b, cred).await
    }

    pub async fn put(&self, key: &str, value: &str, cred: &Cred) -> Reply {
        let body = serde_json::json!({ "key": key, "value": value }).to_string();
        self.put_raw(body, cred).await
    }

    pub async fn get(&self, key_path: &str, cred: &Cred) -> Reply {
        self.send(
            self.client.get(self.url(&format!("/secrets/{key_path}"))),
            cred,
        )
        .await
    }

    pub async fn delete(&self, key_path: &str, cred: &Cred) -> Reply {
        self.send(
            self.client
                .delete(self.url(&format!("/secrets/{key_path}"))),
            cred,
        )
        .await
    }

    /// Issues a key with `strongroom apikey create` against this data dir.
    pub fn create_key(&self, tenant: &str, extra: &[&str]) -> String {
        create_key(&self.data_dir, tenant, extra)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        signal(&self.child, "TERM");
        wait_timeout(&mut self.child, Duration::from_secs(20)).expect("server exits after SIGTERM")
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn create_key(data_dir: &Path, tenant: &str, extra: &[&str]) -> String {
    let out = command(data_dir)
        .args(["apikey", "create", "--tenant", tenant, "--name", "test"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "apikey create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "only the key on stdout: {text:?}");
    text.trim().to_owned()
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A signed HS256 token with the given claims.
pub fn hs256_token(claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Sends raw bytes over one TCP connection and returns everything read back
/// (for requests a client library will not send).
pub fn raw_request(base: &str, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The server may answer (and close) before reading everything.
    let _ = stream.write_all(request);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
