//! Starts the real `strongroom` server on port 0 with a temp data dir (as in
//! tests/api/helpers.rs) and runs the real binary's client commands against it.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_strongroom");
/// An HS256 secret the token tests configure.
pub const JWT_SECRET: &str = "test-hs256-secret-that-is-long-enough-0123456789";

/// A running server; killed on drop.
pub struct Server {
    pub addr: String,
    pub data_dir: PathBuf,
    pub key: Option<String>,
    _temp: tempfile::TempDir,
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// A server on a fresh data dir, with the bootstrap admin key.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> Server {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().join("data");
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STRONGROOM_DATA_DIR", &data_dir)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start strongroom serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<Option<String>>();
        let sink = log.clone();
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
            if let Some(tx) = tx.take() {
                let _ = tx.send(None);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(addr)) => addr,
            _ => panic!("server did not start; log:\n{}", log.lock().unwrap()),
        };
        let key = log
            .lock()
            .unwrap()
            .lines()
            .find(|l| l.starts_with("sr_"))
            .map(str::to_owned);
        Server {
            addr: format!("http://{addr}"),
            data_dir,
            key,
            _temp: temp,
            child,
            log,
        }
    }

    /// The bootstrap admin key.
    pub fn admin_key(&self) -> &str {
        self.key.as_deref().expect("a bootstrap key")
    }

    /// `strongroom` with a clean environment pointing at this server with the
    /// admin key.
    pub fn cli(&self) -> Command {
        let mut cmd = bare_cli();
        cmd.env("STRONGROOM_ADDR", &self.addr);
        if let Some(key) = &self.key {
            cmd.env("STRONGROOM_API_KEY", key);
        }
        cmd
    }

    /// Runs `strongroom ARGS` as the admin and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        run_with_stdin(self.cli().args(args), None)
    }

    /// Runs `strongroom ARGS` and asserts it succeeded.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert_success(&out, args);
        out
    }

    /// Issues another API key with `strongroom apikey create`.
    pub fn create_key(&self, tenant: &str, extra: &[&str]) -> String {
        let out = Command::new(BIN)
            .env_clear()
            .env("STRONGROOM_DATA_DIR", &self.data_dir)
            .args(["apikey", "create", "--tenant", tenant, "--name", "test"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening_addr(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    (fields.get("message")?.as_str()? == "listening")
        .then(|| fields.get("addr")?.as_str().map(str::to_owned))?
}

/// `strongroom` with only `PATH` in its environment.
pub fn bare_cli() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

/// Runs a command, feeding `stdin` (or nothing), and collects its output.
pub fn run_with_stdin(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start strongroom");
    let mut pipe = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        pipe.write_all(bytes).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

pub fn assert_success(out: &Output, what: &[&str]) {
    assert!(
        out.status.success(),
        "strongroom {what:?} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

pub fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
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

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
