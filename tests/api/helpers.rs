//! `spawn_app()`: starts the real `strongroom` binary on port 0 with a fresh
//! temp data dir, captures its stderr (the log), and talks HTTP to it.
//!
//! The store is chosen by `STRONGROOM_TEST_STORE` (`sqlite`, the default, or
//! `nats`). On nats every test process shares one `nats-server -js`, started
//! on first use, and each data dir gets its own bucket named after it, so a
//! restart on the same data dir (and `strongroom apikey create` against it)
//! finds the same data. The data dir still holds the generated master key.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../common/server.rs"]
mod server;
pub use server::{hs256_token, now_secs, wait_timeout, TestClock, BIN, JWT_SECRET};

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
    /// Runs the server on `clock`, which the test moves on.
    pub fn clock(self, clock: &TestClock) -> Self {
        let (name, value) = clock.env();
        self.env(name, &value)
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
    /// Set once the server's stderr reached its end.
    log_closed: Arc<std::sync::atomic::AtomicBool>,
    /// The bootstrap admin key, when this start printed one.
    pub bootstrap_key: Option<String>,
    pub client: reqwest::Client,
}

/// Starts a server on a fresh data dir with the embedded defaults.
pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

/// A `strongroom` command on `data_dir` and, on nats, on its bucket.
pub fn command(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STRONGROOM_DATA_DIR", data_dir);
    if on_nats() {
        cmd.env("STRONGROOM_STORE", "nats")
            .env("STRONGROOM_NATS_URL", shared_nats_url())
            .env("STRONGROOM_NATS_BUCKET", bucket_for(data_dir));
    }
    cmd
}

/// True when this run tests the nats store (`STRONGROOM_TEST_STORE=nats`).
pub fn on_nats() -> bool {
    match std::env::var("STRONGROOM_TEST_STORE").as_deref() {
        Ok("nats") => true,
        Ok("sqlite") | Ok("") | Err(_) => false,
        Ok(other) => panic!("STRONGROOM_TEST_STORE must be sqlite or nats, not {other:?}"),
    }
}

/// Returns early, with the reason on stderr, from a test of several
/// gateways on one store when this run tests sqlite (one process per file).
macro_rules! nats_only {
    ($reason:expr) => {
        if !$crate::helpers::on_nats() {
            eprintln!("skipped on sqlite: {}", $reason);
            return;
        }
    };
}

/// Returns early, with the reason on stderr, from a test of the embedded
/// engine's files when this run tests nats.
macro_rules! sqlite_only {
    ($reason:expr) => {
        if $crate::helpers::on_nats() {
            eprintln!("skipped on nats: {}", $reason);
            return;
        }
    };
}

/// The bucket of a data dir: stable across restarts, distinct per dir.
pub fn bucket_for(data_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut h);
    format!("t{:016x}", h.finish())
}

/// The nats-server binary: `STRONGROOM_NATS_SERVER`, else `nats-server` on
/// the PATH, else Debian's `/usr/sbin/nats-server`.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("STRONGROOM_NATS_SERVER") {
        return path.into();
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("nats-server"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, limit: Duration) {
    assert!(listens(port, limit), "nothing listens on {port}");
}

/// Whether something accepts connections on `port` within `limit`.
pub fn listens(port: u16, limit: Duration) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    true
}

/// The URL of the nats-server this test process shares, started on first
/// use. It runs under a small shell that holds a pipe from this process:
/// when the test process exits (however it ends) the pipe closes, and the
/// shell kills the server and removes its storage, so no server outlives
/// `cargo test`.
pub fn shared_nats_url() -> &'static str {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("strongroom-nats-")
            .tempdir()
            .unwrap()
            .keep();
        let script = r#"dir=$1; shift; "$0" "$@" </dev/null >/dev/null 2>&1 & pid=$!; cat >/dev/null; kill $pid; wait $pid; rm -rf "$dir""#;
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(nats_server_binary())
            .arg(&dir)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        // The pipe's write end stays open until this process exits.
        std::mem::forget(child);
        wait_for_port(port, Duration::from_secs(10));
        format!("nats://127.0.0.1:{port}")
    })
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
    for (name, value) in &options.env {
        cmd.env(name, value);
    }
    let started = server::start(cmd);
    TestApp {
        addr: started.addr,
        data_dir,
        _temp: temp,
        child: started.child,
        log: started.log,
        log_closed: started.log_closed,
        bootstrap_key: started.bootstrap_key,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap(),
    }
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

    /// The value of the unlabelled counter `name` in `/metrics`.
    pub async fn counter(&self, name: &str) -> u64 {
        let metrics = self
            .send(self.client.get(self.url("/metrics")), &Cred::None)
            .await
            .body;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"))
            .parse()
            .unwrap()
    }

    /// Issues a key with `strongroom apikey create` against this data dir.
    pub fn create_key(&self, tenant: &str, extra: &[&str]) -> String {
        create_key(&self.data_dir, tenant, extra)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the log shows `needle` within a few seconds: a running
    /// server's lines reach the log through its writer and a pipe.
    pub async fn log_shows(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log_text().contains(needle) {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Sends SIGTERM and waits for the exit, and for its last log lines.
    pub fn terminate(&mut self) -> ExitStatus {
        signal(&self.child, "TERM");
        let status = wait_timeout(&mut self.child, Duration::from_secs(20))
            .expect("server exits after SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log_closed.load(std::sync::atomic::Ordering::SeqCst)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        status
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

/// Runs `cmd serve` where it must not start: asserts that it exits, and
/// not successfully, within 20 s, and returns what it wrote on stderr.
pub fn refused_start(mut cmd: Command) -> String {
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(20));
    let _ = child.kill();
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    err
}

pub fn create_key(data_dir: &Path, tenant: &str, extra: &[&str]) -> String {
    server::create_key(command(data_dir), tenant, extra)
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
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

/// The latest value of `key` in bucket `<bucket of data_dir><suffix>` on the
/// shared nats-server, for tests that edit stored records out of band.
pub async fn nats_kv_get(data_dir: &Path, suffix: &str, key: &str) -> Vec<u8> {
    let kv = nats_kv(data_dir, suffix).await;
    kv.get(key).await.unwrap().expect("a value").to_vec()
}

/// Puts `value` under `key` in bucket `<bucket of data_dir><suffix>`.
pub async fn nats_kv_put(data_dir: &Path, suffix: &str, key: &str, value: Vec<u8>) {
    let kv = nats_kv(data_dir, suffix).await;
    kv.put(key, value.into()).await.unwrap();
}

async fn nats_kv(data_dir: &Path, suffix: &str) -> async_nats::jetstream::kv::Store {
    let client = async_nats::connect(shared_nats_url()).await.unwrap();
    async_nats::jetstream::new(client)
        .get_key_value(format!("{}{suffix}", bucket_for(data_dir)))
        .await
        .unwrap()
}

/// How many keys of bucket `<bucket of data_dir><suffix>` hold a value
/// (not a delete marker).
pub async fn nats_live_keys(data_dir: &Path, suffix: &str) -> usize {
    use futures_util::StreamExt;
    let kv = nats_kv(data_dir, suffix).await;
    let mut keys = match kv.keys().await {
        Ok(keys) => keys,
        Err(_) => return 0,
    };
    let mut n = 0;
    while let Some(key) = keys.next().await {
        if kv.get(key.unwrap()).await.unwrap().is_some() {
            n += 1;
        }
    }
    n
}

/// The KV key of a secret on nats: hex of the tenant, '.', the key.
pub fn nats_secret_key(tenant: &str, key: &str) -> String {
    let hex: String = tenant.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.{key}")
}

/// (stream, messages, last sequence) of every stream of a data dir's bucket
/// on the shared nats-server: equal before and after means nothing changed.
pub async fn nats_state(data_dir: &Path) -> Vec<(String, u64, u64)> {
    let client = async_nats::connect(shared_nats_url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let bucket = bucket_for(data_dir);
    let mut out = Vec::new();
    for name in ["", "_deks", "_apikeys", "_meta"]
        .map(|s| format!("KV_{bucket}{s}"))
        .into_iter()
        .chain([format!("{bucket}_audit")])
    {
        if let Ok(mut stream) = js.get_stream(&name).await {
            let state = stream.info().await.unwrap().state.clone();
            out.push((name, state.messages, state.last_sequence));
        }
    }
    out
}

/// The payloads of every message the stream retains for `key` in bucket
/// `<bucket of data_dir><suffix>`, oldest first.
pub async fn nats_kv_history(data_dir: &Path, suffix: &str, key: &str) -> Vec<Vec<u8>> {
    use futures_util::StreamExt;
    let kv = nats_kv(data_dir, suffix).await;
    let mut history = kv.history(key).await.unwrap();
    let mut out = Vec::new();
    while let Some(entry) = history.next().await {
        out.push(entry.unwrap().value.to_vec());
    }
    out
}

/// The field names of a JSON object, sorted: for asserting a body's shape.
pub fn field_names(value: &serde_json::Value) -> Vec<&str> {
    let mut names: Vec<&str> = value
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    names.sort();
    names
}
