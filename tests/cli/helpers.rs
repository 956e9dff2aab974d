//! Starts the real `strongroom` server on port 0 with a temp data dir (with
//! tests/common/server.rs, as tests/api does) and runs the real binary's
//! client commands against it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

#[path = "../common/server.rs"]
mod server;
pub use server::{hs256_token, now_secs, wait_timeout, TestClock, BIN, JWT_SECRET};

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
        let mut cmd = bare_cli();
        cmd.env("STRONGROOM_DATA_DIR", &data_dir)
            .envs(env.iter().copied());
        let started = server::start(cmd);
        Server {
            addr: started.addr,
            data_dir,
            key: started.bootstrap_key,
            _temp: temp,
            child: started.child,
            log: started.log,
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
        let mut cmd = Command::new(BIN);
        cmd.env_clear().env("STRONGROOM_DATA_DIR", &self.data_dir);
        server::create_key(cmd, tenant, extra)
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
