//! The one way the integration suites start the real `strongroom` server and
//! issue API keys with it: `tests/api` and `tests/cli` both include this file
//! (`#[path]`), and add only what their own tests talk.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_strongroom");
/// An HS256 secret the JWT tests configure.
pub const JWT_SECRET: &str = "test-hs256-secret-that-is-long-enough-0123456789";

/// A started `strongroom serve`: its address, process and log so far.
pub struct Started {
    /// `http://127.0.0.1:<port>`.
    pub addr: String,
    pub child: Child,
    /// Everything the server wrote on stderr so far.
    pub log: Arc<Mutex<String>>,
    /// Set once stderr reached its end: every line is in `log`. (The CLI
    /// tests kill their servers and never read it.)
    #[allow(dead_code)]
    pub log_closed: Arc<std::sync::atomic::AtomicBool>,
    /// The bootstrap admin key, when this start printed one.
    pub bootstrap_key: Option<String>,
}

/// Runs `cmd serve --listen 127.0.0.1:0` and waits for its "listening" line;
/// panics with the log when it does not start within 30 s.
pub fn start(mut cmd: Command) -> Started {
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start strongroom serve");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let sink = log.clone();
    let log_closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closed = log_closed.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            if let Some(addr) = listening_addr(&line) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(Some(addr));
                }
            }
        }
        closed.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(tx) = tx.take() {
            let _ = tx.send(None);
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(addr)) => addr,
        _ => {
            let _ = child.kill();
            panic!("server did not start; log:\n{}", log.lock().unwrap())
        }
    };
    let bootstrap_key = log
        .lock()
        .unwrap()
        .lines()
        .find(|l| l.starts_with("sr_"))
        .map(str::to_owned);
    Started {
        addr: format!("http://{addr}"),
        child,
        log,
        log_closed,
        bootstrap_key,
    }
}

fn listening_addr(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    (fields.get("message")?.as_str()? == "listening")
        .then(|| fields.get("addr")?.as_str().map(str::to_owned))?
}

/// Issues an API key for `tenant` with `cmd apikey create` (the offline
/// command, on the store `cmd` points at) and returns its text.
pub fn create_key(mut cmd: Command, tenant: &str, extra: &[&str]) -> String {
    let out = cmd
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

/// The child's exit status, or `None` if it is still running after `limit`.
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

/// A clock a test moves on: the file a server started with
/// `STRONGROOM_TEST_CLOCK` reads (a debug build only) for how many
/// milliseconds to add to the wall clock. Expiries and lifetimes then pass
/// when the test says, not after a sleep.
pub struct TestClock {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl TestClock {
    pub fn new() -> TestClock {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clock");
        TestClock { _dir: dir, path }
    }

    /// The variable and value that put a server on this clock.
    pub fn env(&self) -> (&'static str, String) {
        ("STRONGROOM_TEST_CLOCK", self.path.display().to_string())
    }

    /// Moves the clock on by `by`; the server's next reading of the time
    /// sees it. Written whole and renamed into place, so a reading never
    /// sees half a number.
    pub fn advance(&self, by: Duration) {
        let now: i64 = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let next = now + i64::try_from(by.as_millis()).unwrap();
        let temp = self.path.with_extension("next");
        std::fs::write(&temp, next.to_string()).unwrap();
        std::fs::rename(&temp, &self.path).unwrap();
    }
}
