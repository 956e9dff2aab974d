//! One line on stderr, `strongroom: ` first, a distinct exit code per kind,
//! and never a secret value on stderr.

use std::process::Output;

use crate::helpers::*;

fn one_line(out: &Output) -> String {
    let text = stderr(out);
    assert!(text.starts_with("strongroom: "), "{text:?}");
    assert_eq!(text.lines().count(), 1, "{text:?}");
    text
}

#[test]
fn not_found_is_3() {
    let s = Server::start();
    let out = s.run(&["get", "no/such/key"]);
    assert_eq!(code(&out), 3);
    assert!(one_line(&out).contains("no/such/key"));
}

#[test]
fn unauthorized_is_4_and_names_the_variables() {
    let s = Server::start();
    let out = bare_cli()
        .env("STRONGROOM_ADDR", &s.addr)
        .args(["get", "k"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 4);
    let text = one_line(&out);
    assert!(text.contains("STRONGROOM_API_KEY") && text.contains("STRONGROOM_TOKEN"));

    let wrong = "sr_wrong_key_that_must_not_be_echoed";
    let out = bare_cli()
        .env("STRONGROOM_ADDR", &s.addr)
        .env("STRONGROOM_API_KEY", wrong)
        .args(["ls"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 4);
    let text = one_line(&out);
    assert!(text.contains("STRONGROOM_API_KEY") && text.contains("STRONGROOM_TOKEN"));
    assert!(!text.contains(wrong));
}

#[test]
fn forbidden_is_5() {
    let s = Server::start();
    let reader = s.create_key("default", &["--scopes", "secrets:read"]);
    let out = s
        .cli()
        .env("STRONGROOM_API_KEY", &reader)
        .args(["put", "k", "v"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 5);
    assert!(one_line(&out).contains("forbidden"));
}

#[test]
fn unreachable_is_6_and_names_the_address() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("http://127.0.0.1:{port}");
    let out = bare_cli()
        .env("STRONGROOM_ADDR", &addr)
        .env("STRONGROOM_API_KEY", "sr_x")
        .args(["get", "k"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 6);
    assert!(one_line(&out).contains(&addr));
}

#[test]
fn the_default_address_is_local_8210() {
    let out = bare_cli().args(["ls"]).output().unwrap();
    // Unreachable unless a server happens to run there; either way the
    // message names the default address.
    if code(&out) == 6 {
        assert!(one_line(&out).contains("http://127.0.0.1:8210"));
    }
}

#[test]
fn usage_errors_are_2() {
    let s = Server::start();
    for args in [
        &["get"][..],
        &["put", "k"],
        &["get", "bad..key"],
        &["get", "/lead"],
        &["ls", "bad prefix"],
        &["frobnicate"],
        &["run", "--"][..],
    ] {
        let out = s.run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
    }
    let out = s
        .cli()
        .env("STRONGROOM_TOKEN", "t")
        .args(["get", "k"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(one_line(&out).contains("only one"));
}

#[test]
fn a_bad_ca_cert_path_is_a_clear_error() {
    let s = Server::start();
    let out = s.run(&["get", "k", "--ca-cert", "/no/such/ca.pem"]);
    assert_eq!(code(&out), 2);
    let text = one_line(&out);
    assert!(
        text.contains("--ca-cert") && text.contains("/no/such/ca.pem"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let out = s.run(&["get", "k", "--ca-cert", junk.to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    assert!(one_line(&out).contains("junk.pem"));
}

/// A valid private CA loads and plain http keeps working with it (https
/// through a private CA is tested below, behind a TLS proxy).
#[test]
fn a_valid_ca_cert_is_accepted() {
    let s = Server::start();
    s.ok(&["put", "k", "v"]);
    let pem = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/cli/fixtures/test-ca.pem"
    );
    let out = s.ok(&["get", "k", "--ca-cert", pem]);
    assert_eq!(out.stdout, b"v");
}

#[test]
fn help_hides_credential_values() {
    let out = bare_cli()
        .env("STRONGROOM_API_KEY", "sr_help_canary")
        .env("STRONGROOM_TOKEN", "jwt_help_canary")
        .args(["get", "--help"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(text.contains("STRONGROOM_API_KEY") && text.contains("--ca-cert"));
    assert!(!text.contains("help_canary"), "{text}");
}

/// A canary value goes in; then commands fail in every way we can provoke,
/// and none of them shows it on stderr.
#[test]
fn no_secret_value_ever_reaches_stderr() {
    const CANARY: &str = "canary-value-7f3a9c";
    let s = Server::start();
    s.ok(&["put", "app/DB_PASSWORD", CANARY]);
    s.ok(&["put", "app/db_password", CANARY]);
    let reader = s.create_key("default", &["--scopes", "secrets:list"]);
    let dir = tempfile::tempdir().unwrap();
    let bad_env = dir.path().join("bad.env");
    std::fs::write(&bad_env, format!("A={CANARY}\nB=\"{CANARY}\nC\n")).unwrap();
    let bad_key = dir.path().join("bad-key.env");
    std::fs::write(&bad_key, format!("OK=1\nbad..name={CANARY}\n")).unwrap();
    let bad_json = dir.path().join("bad.json");
    std::fs::write(&bad_json, format!("{{\"A\": \"{CANARY}\", \"B\": 5}}")).unwrap();

    let mut outs = vec![
        s.run(&["put", "bad..key", CANARY]),
        s.run(&["put", "", CANARY]),
        s.run(&["import", bad_env.to_str().unwrap()]),
        s.run(&["import", bad_key.to_str().unwrap()]),
        s.run(&["import", bad_json.to_str().unwrap()]),
        s.run(&["get", "app/DB_PASSWORD", "--addr", "http://127.0.0.1:1"]),
        s.run(&["get", "app/DB_PASSWORD", "--ca-cert", "/nope"]),
        s.run(&["run", "--prefix", "app/", "--", "/no/such/program"]),
        s.run(&["run", "--prefix", "app/", "--", "sh", "-c", "exit 3"]),
    ];
    // app/db.password and app/db_password both map to db_password.
    s.ok(&["put", "app/db.password", CANARY]);
    outs.push(s.run(&["run", "--prefix", "app/", "--", "true"]));
    for args in [
        &["get", "app/DB_PASSWORD"][..],
        &["export"],
        &["run", "--", "true"],
    ] {
        outs.push(
            s.cli()
                .env("STRONGROOM_API_KEY", &reader)
                .args(args)
                .output()
                .unwrap(),
        );
        outs.push(
            s.cli()
                .env("STRONGROOM_API_KEY", "sr_bad")
                .args(args)
                .output()
                .unwrap(),
        );
    }
    let huge = format!("{CANARY}{}", "x".repeat(70_000));
    outs.push(run_with_stdin(
        s.cli().args(["put", "big", "-"]),
        Some(huge.as_bytes()),
    ));
    for out in &outs {
        assert!(!out.status.success(), "each of these fails");
        assert!(!stderr(out).contains(CANARY), "{}", stderr(out));
    }
    assert!(!s.log_text().contains(CANARY));
}

/// A TLS-terminating proxy in front of a test server, with a certificate
/// from a private CA (`fixtures/tls/`).
struct TlsProxy {
    child: std::process::Child,
    port: u16,
}

impl TlsProxy {
    fn start(backend: &str) -> TlsProxy {
        use std::io::BufRead;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli/fixtures");
        let backend_port = backend.rsplit(':').next().unwrap();
        let mut child = std::process::Command::new("python3")
            .arg(format!("{dir}/tls_proxy.py"))
            .arg(format!("{dir}/tls/server.pem"))
            .arg(format!("{dir}/tls/server.key"))
            .arg(backend_port)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the TLS proxy");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        TlsProxy {
            child,
            port: line.trim().parse().expect("the proxy prints its port"),
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_with_a_private_ca_works_with_ca_cert_and_fails_without() {
    let s = Server::start();
    let proxy = TlsProxy::start(&s.addr);
    let addr = format!("https://127.0.0.1:{}", proxy.port);
    let ca = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli/fixtures/tls/ca.pem");
    let put = s.run(&[
        "put",
        "tls/k",
        "over-tls-canary",
        "--addr",
        &addr,
        "--ca-cert",
        ca,
    ]);
    assert_success(&put, &["put over https"]);
    let get = s.run(&["get", "tls/k", "--addr", &addr, "--ca-cert", ca]);
    assert_success(&get, &["get over https"]);
    assert_eq!(get.stdout, b"over-tls-canary");
    // Without the private CA the server's certificate is not trusted.
    let refused = s.run(&["get", "tls/k", "--addr", &addr]);
    assert_ne!(code(&refused), 0);
    let text = stderr(&refused);
    assert!(
        text.contains(&addr) || text.to_lowercase().contains("certificate"),
        "{text}"
    );
    assert!(!text.contains("over-tls-canary"));
}
