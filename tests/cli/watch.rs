//! `strongroom watch`, `run --watch` and `completions` against a real
//! server.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// Lines a child prints, read on a thread.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn watch_prints_a_line_per_change_and_json_on_request_never_a_value() {
    let s = Server::start();
    let mut plain = s
        .cli()
        .args(["watch", "app/"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut json = s
        .cli()
        .args(["watch", "app/", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (plain_lines, json_lines) = (lines_of(&mut plain), lines_of(&mut json));
    // Both streams are open once the server has logged both answers (it
    // logs a stream's when its head goes out): then no change can be missed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.log_text().matches("\"route\":\"/watch\"").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "the watchers never connected:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    s.ok(&["put", "app/a", "watch-cli-canary"]);
    s.ok(&["put", "other/b", "not watched"]);
    s.ok(&["rm", "app/a"]);
    let wait = Duration::from_secs(10);
    let first: Vec<String> = (0..2)
        .map(|_| plain_lines.recv_timeout(wait).unwrap())
        .collect();
    let fields: Vec<Vec<&str>> = first.iter().map(|l| l.split('\t').collect()).collect();
    assert_eq!(fields[0][1..], ["put", "app/a", "1"], "{first:?}");
    assert_eq!(fields[1][1..], ["delete", "app/a", "1"], "{first:?}");
    assert!(fields[0][0].ends_with('Z'));
    let j: Vec<serde_json::Value> = (0..2)
        .map(|_| serde_json::from_str(&json_lines.recv_timeout(wait).unwrap()).unwrap())
        .collect();
    assert_eq!(
        (j[0]["action"].as_str(), j[1]["action"].as_str()),
        (Some("put"), Some("delete"))
    );
    assert!(j[0]["id"].as_u64().unwrap() < j[1]["id"].as_u64().unwrap());
    assert!(
        plain_lines
            .recv_timeout(Duration::from_millis(300))
            .is_err(),
        "other/b is not under app/"
    );
    for child in [&mut plain, &mut json] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(!first.join("").contains("canary"));
}

#[test]
fn run_watch_restarts_the_command_once_per_burst_with_the_new_environment() {
    let s = Server::start();
    s.ok(&["put", "svc/TOKEN", "one"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("starts");
    let pids = dir.path().join("pids");
    // Each start appends its TOKEN; SIGTERM is trapped and ends it cleanly.
    let script = format!(
        "trap 'exit 0' TERM; echo $$ >> {}; echo \"$TOKEN\" >> {}; while true; do sleep 0.1; done",
        pids.display(),
        log.display()
    );
    let _killed = KillLogged(pids.clone());
    let mut run = s
        .cli()
        .args([
            "run",
            "--prefix",
            "svc/",
            "--watch",
            "--restart-grace",
            "5s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _stop = Stop(run.id());
    let starts = |n: usize| lines_in(&log, n);
    assert_eq!(starts(1), "one\n");
    // Three changes close together: one restart, with the last value.
    for value in ["two", "three", "four"] {
        s.ok(&["put", "svc/TOKEN", value]);
    }
    assert_eq!(starts(2), "one\nfour\n");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(starts(2), "one\nfour\n", "one restart for the burst");
    // A change elsewhere restarts nothing.
    s.ok(&["put", "elsewhere/X", "y"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(starts(2), "one\nfour\n");
    // SIGTERM reaches the command, which ends, and `run` with it.
    terminate(run.id());
    let status =
        wait_timeout(&mut run, Duration::from_secs(10)).expect("run ends with its command");
    assert_eq!(status.code(), Some(0));
}

/// The text of the file at `path` once it has `n` lines, or as it is
/// after 15 s.
fn lines_in(path: &std::path::Path, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM to a process.
fn terminate(pid: u32) {
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

/// Kills `run` when a test ends, passed or not (`KillLogged` its commands:
/// one left running would hold the test harness's output open).
struct Stop(u32);

impl Drop for Stop {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0 as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// Kills the commands whose pids a file lists, one a line.
struct KillLogged(std::path::PathBuf);

impl Drop for KillLogged {
    fn drop(&mut self) {
        for line in std::fs::read_to_string(&self.0).unwrap_or_default().lines() {
            if let Ok(pid) = line.trim().parse::<i32>() {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

#[test]
fn run_watch_kills_a_command_that_ignores_sigterm_after_the_grace() {
    let s = Server::start();
    s.ok(&["put", "stubborn/V", "a"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("starts");
    let pids = dir.path().join("pids");
    let script = format!(
        "trap '' TERM; echo $$ >> {}; echo \"$V\" >> {}; while true; do sleep 0.1; done",
        pids.display(),
        log.display()
    );
    let _killed = KillLogged(pids.clone());
    let mut run = s
        .cli()
        .args([
            "run",
            "--prefix",
            "stubborn/",
            "--watch",
            "--restart-grace",
            "1s",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _stop = Stop(run.id());
    assert_eq!(lines_in(&log, 1), "a\n");
    let changed = Instant::now();
    s.ok(&["put", "stubborn/V", "b"]);
    assert_eq!(lines_in(&log, 2), "a\nb\n");
    assert!(
        changed.elapsed() >= Duration::from_secs(1),
        "SIGKILL only after the grace"
    );
    // The first command is gone: it was killed, not left behind.
    let first_pid: i32 = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{first_pid}")).exists());
    run.kill().unwrap();
    run.wait().unwrap();
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete"),
        ("zsh", "#compdef strongroom"),
        ("fish", "complete -c strongroom"),
    ] {
        let out = bare_cli().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(marker) && text.contains("watch"),
            "{shell}: {}",
            &text[..200.min(text.len())]
        );
    }
    assert!(!bare_cli()
        .args(["completions", "tcsh"])
        .output()
        .unwrap()
        .status
        .success());
}

/// Reproduction (issue 32, item 1): with the server's stream cut at the
/// header timeout, `run --watch` restarted its command about every 11 s on
/// a quiet prefix and `watch` printed "events were missed" as often. Here
/// the header timeout is 1 s: over 4 s of quiet neither happens, and the
/// one change that follows restarts the command once.
#[test]
fn run_watch_and_watch_stay_quiet_on_a_quiet_prefix_past_the_header_timeout() {
    let s = Server::start_with(&[
        ("STRONGROOM_HEADER_TIMEOUT", "1"),
        ("STRONGROOM_WATCH_HEARTBEAT", "1s"),
    ]);
    s.ok(&["put", "quiet/V", "one"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("starts");
    let pids = dir.path().join("pids");
    let script = format!(
        "trap 'exit 0' TERM; echo $$ >> {}; echo \"$V\" >> {}; while true; do sleep 0.1; done",
        pids.display(),
        log.display()
    );
    let _killed = KillLogged(pids.clone());
    let mut run = s
        .cli()
        .args([
            "run", "--prefix", "quiet/", "--watch", "--", "sh", "-c", &script,
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _stop = Stop(run.id());
    let mut watch = s
        .cli()
        .args(["watch", "quiet/"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stop_watch = Stop(watch.id());
    let watched = lines_of(&mut watch);
    assert_eq!(lines_in(&log, 1), "one\n");
    // Four header timeouts of quiet: time itself is what is tested here.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(lines_in(&log, 1), "one\n", "restarted with no change");
    s.ok(&["put", "quiet/V", "two"]);
    assert_eq!(lines_in(&log, 2), "one\ntwo\n");
    let line = watched.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(line.contains("\tput\tquiet/V\t2"), "{line}");
    watch.kill().unwrap();
    let out = watch.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("missed"), "watch said: {err}");
    run.kill().unwrap();
    run.wait().unwrap();
}
