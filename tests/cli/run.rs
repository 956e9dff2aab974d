//! `strongroom run`: secrets as environment variables, exit codes passed
//! through, collisions refused, signals forwarded.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use crate::helpers::*;

#[test]
fn the_child_sees_the_secrets_as_variables() {
    let s = Server::start();
    s.ok(&["put", "app/DB_PASSWORD", "p@ss w\"rd\n"]);
    s.ok(&["put", "app/db.url", "postgres://x"]);
    s.ok(&["put", "app/2fa/seed", "s33d"]);
    s.ok(&["put", "other/SKIPPED", "no"]);
    let out = s.ok(&[
        "run",
        "--prefix",
        "app/",
        "--",
        "sh",
        "-c",
        r#"printf '%s|%s|%s|%s|%s' "$DB_PASSWORD" "$db_url" "$_2fa_seed" "${SKIPPED-unset}" "${STRONGROOM_API_KEY-unset}""#,
    ]);
    assert_eq!(stdout(&out), "p@ss w\"rd\n|postgres://x|s33d|unset|unset");
    assert!(out.stderr.is_empty(), "{}", stderr(&out));
}

#[test]
fn stdin_is_inherited() {
    let s = Server::start();
    let out = run_with_stdin(s.cli().args(["run", "--", "cat"]), Some(b"through"));
    assert_eq!(out.stdout, b"through");
}

#[test]
fn the_exit_code_is_the_childs() {
    let s = Server::start();
    assert_eq!(code(&s.run(&["run", "--", "sh", "-c", "exit 7"])), 7);
    assert_eq!(code(&s.run(&["run", "--", "true"])), 0);
    // Killed by a signal: 128 + the signal number.
    assert_eq!(
        code(&s.run(&["run", "--", "sh", "-c", "kill -KILL $$"])),
        137
    );
    // A program that does not exist: 127, as in a shell.
    let out = s.run(&["run", "--", "/no/such/program"]);
    assert_eq!(code(&out), 127);
    assert!(stderr(&out).contains("/no/such/program"));
}

#[test]
fn two_keys_for_one_variable_is_an_error_naming_both() {
    let s = Server::start();
    s.ok(&["put", "app/db.url", "a"]);
    s.ok(&["put", "app/db_url", "b"]);
    let out = s.run(&["run", "--prefix", "app/", "--", "sh", "-c", "echo started"]);
    assert_eq!(code(&out), 1);
    assert!(out.stdout.is_empty(), "the command must not start");
    let err = stderr(&out);
    assert!(
        err.contains("app/db.url") && err.contains("app/db_url"),
        "{err}"
    );
}

#[test]
fn sigterm_is_forwarded_to_the_child() {
    let s = Server::start();
    s.ok(&["put", "x", "1"]);
    for (signal, code_want) in [("TERM", 42), ("INT", 43), ("HUP", 44)] {
        let script =
            format!("trap 'exit {code_want}' {signal}; echo ready; while :; do sleep 0.05; done");
        let mut child = s
            .cli()
            .args(["run", "--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let status = wait_timeout(&mut child, Duration::from_secs(20)).expect("run exits");
        assert_eq!(status.code(), Some(code_want), "{signal}");
    }
}
