//! `import` and `export` through a real server: nasty values round-trip,
//! validation happens before anything is written, JSON works too.

use std::collections::BTreeMap;

use strongroom::cli::dotenv;

use crate::helpers::*;

const NASTY: &[&str] = &[
    "",
    "plain",
    "a=b=c",
    "it's",
    "say \"hi\"",
    "both ' and \" quotes",
    "  spaces around  ",
    "line1\nline2\n",
    "crlf\r\n",
    "# not a comment",
    "value # with hash",
    "back\\slash \\n not a newline",
    "\\",
    "$HOME ${PATH} `cmd`",
    "tab\tinside",
    "unicode ✓ 🔑",
];

fn nasty_map() -> BTreeMap<String, String> {
    NASTY
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("VAR_{i:02}"), v.to_string()))
        .collect()
}

fn exported(out: &std::process::Output) -> BTreeMap<String, String> {
    dotenv::parse_dotenv(&stdout(out))
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.value.to_string()))
        .collect()
}

#[test]
fn dotenv_import_then_export_round_trips_nasty_values() {
    let s = Server::start();
    let want = nasty_map();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.env");
    let text = dotenv::write_dotenv(want.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    std::fs::write(&file, format!("# written by a test\n\n{}", *text)).unwrap();

    let out = s.ok(&["import", file.to_str().unwrap(), "--prefix", "prod/app/"]);
    assert_eq!(stdout(&out), format!("imported {} secrets\n", want.len()));
    // Not a terminal: no progress bar, nothing on stderr.
    assert!(out.stderr.is_empty(), "{}", stderr(&out));

    for (name, value) in &want {
        let out = s.ok(&["get", &format!("prod/app/{name}")]);
        assert_eq!(out.stdout, value.as_bytes(), "{name}");
    }

    let out = s.ok(&["export", "--prefix", "prod/app/"]);
    assert!(out.stderr.is_empty());
    assert_eq!(exported(&out), want);

    // And the exported text imports again, under another prefix.
    let again = dir.path().join("again.env");
    std::fs::write(&again, &out.stdout).unwrap();
    s.ok(&["import", again.to_str().unwrap(), "--prefix", "copy/"]);
    assert_eq!(exported(&s.ok(&["export", "--prefix", "copy/"])), want);
}

#[test]
fn json_import_and_export() {
    let s = Server::start();
    let want = nasty_map();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets.json");
    std::fs::write(&file, serde_json::to_string(&want).unwrap()).unwrap();
    // The .json extension picks the format.
    let out = s.ok(&["import", file.to_str().unwrap(), "--prefix", "j/", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["imported"], want.len());

    let out = s.ok(&["export", "--prefix", "j/", "--format", "json"]);
    let got: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got, want);
    let out = s.ok(&["export", "--prefix", "j/", "--json"]);
    let got: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got, want);

    // From stdin, with an explicit format.
    let out = run_with_stdin(
        s.cli()
            .args(["import", "-", "--format", "json", "--prefix", "s/"]),
        Some(br#"{"A": "1", "B": "two"}"#),
    );
    assert_success(&out, &["import", "-"]);
    assert_eq!(s.ok(&["get", "s/B"]).stdout, b"two");
}

fn assert_nothing_written(s: &Server) {
    assert_eq!(stdout(&s.ok(&["ls"])), "", "import wrote something");
}

#[test]
fn a_bad_line_stops_the_import_before_anything_is_written() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let long_prefix = "x".repeat(256);
    let cases: &[(&str, &str, &str)] = &[
        ("A=1\nB=2\n# c\nnot a pair\nD=4\n", "", "line 4"),
        ("A=1\nB=\"open quote\nC=3\n", "", "line 2"),
        ("A=1\nB='x' trailing\n", "", "line 2"),
        ("A=1\nBAD$NAME=x\n", "", "line 2"),
        // A name that makes an invalid key with the prefix: ends with '.'.
        ("A=1\nB=2\nC.=3\n", "p/", "line 3"),
        ("A=1\nB=2\nA=3\n", "", "line 3"),
        // 256 bytes of prefix and one of name: too long a key.
        ("L=x\n", &long_prefix, "line 1"),
    ];
    for (text, prefix, want) in cases {
        let file = dir.path().join("bad.env");
        std::fs::write(&file, text).unwrap();
        let out = s.run(&["import", file.to_str().unwrap(), "--prefix", prefix]);
        assert_eq!(code(&out), 1, "{text:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("strongroom: ") && err.contains(want),
            "{text:?}: {err}"
        );
        assert!(err.contains("bad.env"), "{err}");
        assert_nothing_written(&s);
    }
    let file = dir.path().join("bad.json");
    std::fs::write(&file, r#"{"A": "1", "B": ["not", "a", "string"]}"#).unwrap();
    let out = s.run(&["import", file.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("\"B\""));
    assert_nothing_written(&s);
    let out = s.run(&["import", "/no/such/file.env"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("/no/such/file.env"));
}

#[test]
fn export_refuses_keys_that_cannot_be_dotenv_names() {
    let s = Server::start();
    s.ok(&["put", "e/a=b", "v"]);
    let out = s.run(&["export", "--prefix", "e/"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("e/a=b") && stderr(&out).contains("json"));
    let out = s.ok(&["export", "--prefix", "e/", "--format", "json"]);
    let got: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["a=b"], "v");
}
