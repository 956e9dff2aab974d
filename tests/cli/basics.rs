//! put, get, rm, ls, history with plain and `--json` output, credentials by
//! flag or environment, API key or bearer token.

use crate::helpers::*;

#[test]
fn put_then_get_prints_the_exact_value() {
    let s = Server::start();
    s.ok(&["put", "team/app/db.password", "hunter2"]);
    // Piped stdout: the value alone, no newline added.
    let out = s.ok(&["get", "team/app/db.password"]);
    assert_eq!(out.stdout, b"hunter2");
    assert!(out.stderr.is_empty());
}

#[test]
fn put_from_stdin_keeps_every_byte() {
    let s = Server::start();
    for value in [
        "two lines\nand a trailing newline\n",
        "no newline",
        "",
        "\n\n",
        " \t x \r\n",
    ] {
        let out = run_with_stdin(s.cli().args(["put", "k=1/v", "-"]), Some(value.as_bytes()));
        assert_success(&out, &["put", "-"]);
        let out = s.ok(&["get", "k=1/v"]);
        assert_eq!(out.stdout, value.as_bytes(), "{value:?}");
    }
}

#[test]
fn put_prints_the_version_and_json_on_request() {
    let s = Server::start();
    assert_eq!(stdout(&s.ok(&["put", "a", "1"])), "a version 1\n");
    let out = s.ok(&["put", "a", "2", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, serde_json::json!({"key": "a", "version": 2}));
    let out = s.ok(&["get", "a", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"key": "a", "value": "2", "version": 2})
    );
}

#[test]
fn rm_then_get_is_not_found() {
    let s = Server::start();
    s.ok(&["put", "gone", "x"]);
    assert_eq!(stdout(&s.ok(&["rm", "gone"])), "deleted gone\n");
    let out = s.run(&["get", "gone"]);
    assert_eq!(code(&out), 3);
    assert!(out.stdout.is_empty());
    assert_eq!(code(&s.run(&["rm", "gone"])), 3);
    s.ok(&["put", "gone", "again"]);
    let v: serde_json::Value =
        serde_json::from_slice(&s.ok(&["rm", "gone", "--json"]).stdout).unwrap();
    assert_eq!(v, serde_json::json!({"key": "gone", "deleted": true}));
}

#[test]
fn ls_follows_pages_and_never_prints_values() {
    let s = Server::start();
    for i in 0..7 {
        s.ok(&["put", &format!("app/k{i}"), &format!("value-canary-{i}")]);
    }
    s.ok(&["put", "other/x", "value-canary-x"]);
    let out = s.ok(&["ls", "app/", "--page-size", "2"]);
    let text = stdout(&out);
    let keys: Vec<&str> = text
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        (0..7).map(|i| format!("app/k{i}")).collect::<Vec<_>>()
    );
    assert!(text.lines().all(|l| l.split('\t').count() == 3), "{text}");
    assert!(!text.contains("canary"));

    let out = s.ok(&["ls", "--json", "--page-size", "3"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["secrets"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    assert_eq!(rows[7]["key"], "other/x");
    assert!(rows[0]["updated_at"].is_string());
    assert!(!stdout(&out).contains("canary"));

    assert_eq!(stdout(&s.ok(&["ls", "nothing/"])), "");
}

#[test]
fn history_shows_versions_and_deletion() {
    let s = Server::start();
    s.ok(&["put", "h", "one"]);
    s.ok(&["put", "h", "two"]);
    s.ok(&["rm", "h"]);
    let text = stdout(&s.ok(&["history", "h"]));
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "{text}");
    let v2 = lines.iter().find(|l| l[0] == "2").unwrap();
    assert_eq!(v2[2], "deleted");
    let out = s.ok(&["history", "h", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["current_version"], 2);
    assert_eq!(v["deleted"], true);
    assert_eq!(v["versions"].as_array().unwrap().len(), 2);
    assert!(!stdout(&out).contains("one") && !stdout(&out).contains("two"));
    assert_eq!(code(&s.run(&["history", "never"])), 3);
}

#[test]
fn flags_work_as_well_as_the_environment() {
    let s = Server::start();
    let out = bare_cli()
        .args([
            "put",
            "f",
            "v",
            "--addr",
            &s.addr,
            "--api-key",
            s.admin_key(),
        ])
        .output()
        .unwrap();
    assert_success(&out, &["put", "--addr", "--api-key"]);
    // An address without a scheme means http.
    let out = bare_cli()
        .env("STRONGROOM_API_KEY", s.admin_key())
        .args(["get", "f", "--addr", s.addr.trim_start_matches("http://")])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"v");
}

#[test]
fn a_bearer_token_is_sent_as_authorization() {
    let s = Server::start_with(&[("STRONGROOM_JWT_HS256_SECRET", JWT_SECRET)]);
    let token = hs256_token(&serde_json::json!({
        "sub": "ci", "tenant": "acme", "exp": now_secs() + 600,
    }));
    let with_token = |args: &[&str]| {
        bare_cli()
            .env("STRONGROOM_ADDR", &s.addr)
            .env("STRONGROOM_TOKEN", &token)
            .args(args)
            .output()
            .unwrap()
    };
    assert_success(&with_token(&["put", "t", "tok"]), &["put"]);
    assert_eq!(with_token(&["get", "t"]).stdout, b"tok");
    let out = bare_cli()
        .args(["get", "t", "--addr", &s.addr, "--token", &token])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"tok");
}

#[test]
fn put_with_a_ttl_shows_in_ls_expiring_within_and_lapses() {
    let clock = TestClock::new();
    let (name, value) = clock.env();
    let s = Server::start_with(&[(name, &value)]);
    s.ok(&["put", "soon/a", "lapses-canary", "--ttl", "2s"]);
    s.ok(&["put", "soon/b", "in-a-day", "--ttl", "1d"]);
    s.ok(&["put", "soon/c", "never"]);
    let text = stdout(&s.ok(&["ls", "soon/", "--expiring-within", "1h"]));
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!(rows[0][0], "soon/a");
    assert!(rows[0][3].ends_with('Z'), "{text}");
    let week = stdout(&s.ok(&["ls", "soon/", "--expiring-within", "7d"]));
    assert_eq!(week.lines().count(), 2, "{week}");
    let out = s.ok(&["ls", "soon/", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["secrets"][2]["expires_at"].is_null(), "{v}");
    assert!(v["secrets"][0]["expires_at"].is_string(), "{v}");
    assert_eq!(code(&s.run(&["put", "soon/x", "v", "--ttl", "later"])), 2);
    clock.advance(std::time::Duration::from_millis(2500));
    assert_eq!(code(&s.run(&["get", "soon/a"])), 3);
    assert_eq!(stdout(&s.ok(&["get", "soon/b"])), "in-a-day");
}
