//! The client commands `put`, `get`, `rm`, `ls`, `history`, `import` and
//! `export`: plain output for people and pipes, JSON with `--json`.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use zeroize::Zeroizing;

use super::args::{ClientArgs, ExportArgs, Format, ImportArgs, KeyArgs, LsArgs, PutArgs};
use super::client::{check_prefix, parse_key, CliError, Client};
use super::dotenv::{self, Entry};
use crate::types::SecretKey;

fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::Other(format!("cannot write to stdout: {e}")))
}

fn print_json(value: &serde_json::Value) -> Result<(), CliError> {
    let mut text = Zeroizing::new(serde_json::to_string_pretty(value).expect("a JSON value"));
    text.push('\n');
    write_stdout(text.as_bytes())
}

/// A progress bar on stderr when stderr is a terminal; hidden otherwise, so
/// logs and pipes get nothing.
fn progress(len: usize, verb: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template(&format!("{verb} {{bar:30}} {{pos}}/{{len}}"))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// `put KEY VALUE|-`.
pub async fn put(common: &ClientArgs, args: PutArgs) -> Result<(), CliError> {
    let key = parse_key(&args.key)?;
    let value = if args.value == "-" {
        let mut bytes = Zeroizing::new(Vec::new());
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| CliError::Other(format!("cannot read the value from stdin: {e}")))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| CliError::Other("the value on stdin is not UTF-8 text".into()))?;
        Zeroizing::new(text.to_owned())
    } else {
        let text = args
            .value
            .to_str()
            .ok_or_else(|| CliError::Usage("the value is not UTF-8 text".into()))?;
        Zeroizing::new(text.to_owned())
    };
    let client = Client::new(common)?;
    let version = client
        .put(&key, &value, args.ttl.map(|ttl| ttl.as_secs()))
        .await?;
    if common.json {
        print_json(&json!({ "key": key.as_str(), "version": version }))
    } else {
        let line = match version {
            Some(v) => format!("{} version {v}\n", key.as_str()),
            None => format!("{}\n", key.as_str()),
        };
        write_stdout(line.as_bytes())
    }
}

/// `get KEY`: the value's exact bytes; a newline follows only when stdout is
/// a terminal, so `$(strongroom get k)` and `> file` see the value alone.
pub async fn get(common: &ClientArgs, args: KeyArgs) -> Result<(), CliError> {
    let key = parse_key(&args.key)?;
    let client = Client::new(common)?;
    let secret = client.get(&key).await?;
    if common.json {
        return print_json(&json!({
            "key": secret.key,
            "value": secret.value.as_str(),
            "version": secret.version,
        }));
    }
    write_stdout(secret.value.as_bytes())?;
    if std::io::stdout().is_terminal() && !secret.value.ends_with('\n') {
        write_stdout(b"\n")?;
    }
    Ok(())
}

/// `rm KEY`: a soft delete.
pub async fn rm(common: &ClientArgs, args: KeyArgs) -> Result<(), CliError> {
    let key = parse_key(&args.key)?;
    let client = Client::new(common)?;
    client.delete(&key).await?;
    if common.json {
        print_json(&json!({ "key": key.as_str(), "deleted": true }))
    } else {
        write_stdout(format!("deleted {}\n", key.as_str()).as_bytes())
    }
}

/// `ls [PREFIX]`: one `KEY<TAB>VERSION<TAB>UPDATED_AT` line per key, and
/// `<TAB>EXPIRES_AT` with `--expiring-within`.
pub async fn ls(common: &ClientArgs, args: LsArgs) -> Result<(), CliError> {
    check_prefix(&args.prefix)?;
    let client = Client::new(common)?;
    let before = args.expiring_within.map(|within| {
        let ms = i64::try_from(within.as_millis()).unwrap_or(i64::MAX);
        crate::clock::rfc3339(crate::clock::now_ms().saturating_add(ms))
    });
    let rows = client
        .list_all(&args.prefix, args.page_size, before.as_deref())
        .await?;
    if common.json {
        return print_json(&json!({ "secrets": rows }));
    }
    let mut text = String::new();
    for row in &rows {
        text.push_str(&format!("{}\t{}\t{}", row.key, row.version, row.updated_at));
        if before.is_some() {
            text.push('\t');
            text.push_str(row.expires_at.as_deref().unwrap_or("-"));
        }
        text.push('\n');
    }
    write_stdout(text.as_bytes())
}

/// `history KEY`: one `VERSION<TAB>CREATED_AT<TAB>STATE` line per version.
pub async fn history(common: &ClientArgs, args: KeyArgs) -> Result<(), CliError> {
    let key = parse_key(&args.key)?;
    let client = Client::new(common)?;
    let meta = client.metadata(&key).await?;
    if common.json {
        return print_json(&serde_json::to_value(&meta).expect("serializable"));
    }
    let mut text = String::new();
    for v in &meta.versions {
        let state = if v.deleted {
            "deleted"
        } else if v.version == meta.current_version {
            "current"
        } else {
            "-"
        };
        text.push_str(&format!("{}\t{}\t{state}\n", v.version, v.created_at));
    }
    write_stdout(text.as_bytes())
}

fn read_input(path: &Path) -> Result<Zeroizing<String>, CliError> {
    let mut bytes = Zeroizing::new(Vec::new());
    let result = if path == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    result.map_err(|e| CliError::Other(format!("cannot read {}: {e}", path.display())))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| CliError::Other(format!("{} is not UTF-8 text", path.display())))?;
    Ok(Zeroizing::new(text.to_owned()))
}

/// Parses and validates the whole file: every name, every resulting key,
/// no name twice. Nothing is sent unless all of it is good.
fn plan_import(
    text: &str,
    format: Format,
    prefix: &str,
    path: &Path,
) -> Result<Vec<(SecretKey, Entry)>, CliError> {
    let at = |line: Option<usize>| match line {
        Some(n) => format!("{}: line {n}", path.display()),
        None => path.display().to_string(),
    };
    let entries = match format {
        Format::Dotenv => dotenv::parse_dotenv(text),
        Format::Json => dotenv::parse_json(text),
    }
    .map_err(|e| CliError::Other(format!("{}: {}", at(e.line), e.message)))?;
    let mut seen: std::collections::HashMap<String, Option<usize>> = Default::default();
    let mut plan = Vec::with_capacity(entries.len());
    for entry in entries {
        let full = format!("{prefix}{}", entry.name);
        let key = SecretKey::parse(&full).map_err(|e| {
            CliError::Other(format!(
                "{}: {:?} makes the key {full:?}, which is invalid: {e}",
                at(entry.line),
                entry.name
            ))
        })?;
        if let Some(first) = seen.insert(entry.name.clone(), entry.line) {
            let first = first
                .map(|n| format!(" (first on line {n})"))
                .unwrap_or_default();
            return Err(CliError::Other(format!(
                "{}: {} is set twice{first}",
                at(entry.line),
                entry.name
            )));
        }
        plan.push((key, entry));
    }
    Ok(plan)
}

/// `import FILE`: validate everything, then write each secret.
pub async fn import(common: &ClientArgs, args: ImportArgs) -> Result<(), CliError> {
    check_prefix(&args.prefix)?;
    let format = args.format.unwrap_or_else(|| {
        if args.file.extension().is_some_and(|e| e == "json") {
            Format::Json
        } else {
            Format::Dotenv
        }
    });
    let client = Client::new(common)?;
    let text = read_input(&args.file)?;
    let plan = plan_import(&text, format, &args.prefix, &args.file)?;
    let bar = progress(plan.len(), "importing");
    let mut written = Vec::with_capacity(plan.len());
    for (key, entry) in &plan {
        if let Err(e) = client.put(key, &entry.value, None).await {
            bar.abandon();
            let done = written.len();
            let note = if done == 0 {
                "nothing was written".to_owned()
            } else {
                format!("{done} of {} secrets were written before it", plan.len())
            };
            return Err(e.with_note(&note));
        }
        written.push(key.as_str().to_owned());
        bar.inc(1);
    }
    bar.finish_and_clear();
    if common.json {
        print_json(&json!({ "imported": written.len(), "keys": written }))
    } else {
        write_stdout(format!("imported {} secrets\n", written.len()).as_bytes())
    }
}

/// `export`: every secret under the prefix, prefix stripped from the names.
/// `--json` is the same as `--format json`.
pub async fn export(common: &ClientArgs, args: ExportArgs) -> Result<(), CliError> {
    check_prefix(&args.prefix)?;
    let format = if common.json {
        Format::Json
    } else {
        args.format
    };
    let client = Client::new(common)?;
    let rows = client.list_all(&args.prefix, args.page_size, None).await?;
    for row in &rows {
        let name = row.key.strip_prefix(&args.prefix).unwrap_or(&row.key);
        if format == Format::Dotenv && !dotenv::is_dotenv_name(name) {
            return Err(CliError::Other(format!(
                "the key {:?} cannot be a dotenv name ({name:?} holds '=' or is empty); \
                 use --format json or a shorter --prefix",
                row.key
            )));
        }
    }
    let bar = progress(rows.len(), "exporting");
    let mut pairs: Vec<(&str, Zeroizing<String>)> = Vec::with_capacity(rows.len());
    for row in &rows {
        let key = parse_key(&row.key)?;
        match client.get(&key).await {
            Ok(secret) => {
                let name = row.key.strip_prefix(&args.prefix).unwrap_or(&row.key);
                pairs.push((name, secret.value));
            }
            // Deleted between the listing and the read: not exported.
            Err(CliError::NotFound(_)) => {}
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let pairs = pairs.iter().map(|(n, v)| (*n, v.as_str()));
    let text = match format {
        Format::Dotenv => dotenv::write_dotenv(pairs),
        Format::Json => dotenv::write_json(pairs),
    };
    write_stdout(text.as_bytes())
}
