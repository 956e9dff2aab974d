//! `strongroom run [--prefix P] [--watch] -- CMD ARGS...`: starts CMD with
//! the secrets under P as environment variables, forwards SIGINT, SIGTERM
//! and SIGHUP to it, and exits with its exit code (128 + N when signal N
//! killed it). With `--watch` it restarts CMD when a secret under P changes.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::args::{ClientArgs, RunArgs};
use super::client::{check_prefix, parse_key, CliError, Client};
use super::watch::Notice;

/// The environment variable name for a key with the prefix stripped: every
/// character outside `A-Z a-z 0-9 _` becomes `_`, and a leading digit gets a
/// `_` in front, so `db.password` is `db_password` and `2fa/seed` is
/// `_2fa_seed`.
pub fn env_name(rest: &str) -> String {
    let mut name: String = rest
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// Maps keys to variable names; two keys landing on one name is an error
/// naming both.
pub fn env_names<'a>(
    prefix: &str,
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<(&'a str, String)>, CliError> {
    let mut owner: HashMap<String, &'a str> = HashMap::new();
    let mut out = Vec::new();
    for key in keys {
        let rest = key.strip_prefix(prefix).unwrap_or(key);
        if rest.is_empty() {
            return Err(CliError::Other(format!(
                "the key {key:?} is the whole prefix, leaving no variable name; \
                 use a shorter --prefix"
            )));
        }
        let name = env_name(rest);
        if let Some(first) = owner.insert(name.clone(), key) {
            return Err(CliError::Other(format!(
                "the keys {first:?} and {key:?} both map to the variable {name}; \
                 rename one or narrow --prefix"
            )));
        }
        out.push((key, name));
    }
    Ok(out)
}

/// The environment for the command: each secret under the prefix.
async fn fetch(
    client: &Client,
    args: &RunArgs,
) -> Result<Vec<(String, Zeroizing<String>)>, CliError> {
    let rows = client.list_all(&args.prefix, args.page_size, None).await?;
    let names = env_names(&args.prefix, rows.iter().map(|r| r.key.as_str()))?;
    let mut vars = Vec::with_capacity(names.len());
    for (key, name) in names {
        match client.get(&parse_key(key)?).await {
            Ok(secret) => vars.push((name, secret.value)),
            // Deleted between the listing and the read.
            Err(CliError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(vars)
}

fn spawn(
    args: &RunArgs,
    vars: &[(String, Zeroizing<String>)],
) -> Result<tokio::process::Child, CliError> {
    let program = &args.command[0];
    let mut command = tokio::process::Command::new(program);
    command
        .args(&args.command[1..])
        // The child gets the secrets, not the credential that fetched them.
        .env_remove("STRONGROOM_API_KEY")
        .env_remove("STRONGROOM_TOKEN");
    for (name, value) in vars {
        command.env(name, value.as_str());
    }
    command.spawn().map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        };
        CliError::Exec {
            message: format!("cannot start {}: {e}", program.to_string_lossy()),
            code,
        }
    })
}

/// Sends `sig` to the child, if it has not been reaped.
fn signal_child(child: &tokio::process::Child, sig: libc::c_int) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we started and have not reaped yet
        // (`id` is `None` once reaped), so it cannot name another process.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }
}

/// Changes this close together make one restart...
const SETTLE: Duration = Duration::from_millis(500);
/// ...but a key written without pause still restarts within this.
const MAX_SETTLE: Duration = Duration::from_secs(5);
/// How long a failed fetch of the new environment waits to try again.
const RETRY: Duration = Duration::from_secs(2);

/// Starts the change-stream follower of `run --watch`: a message per change
/// (or gap) under the prefix, after one that says it is following.
fn follow_changes(
    common: &ClientArgs,
    prefix: String,
) -> Result<mpsc::UnboundedReceiver<Result<(), CliError>>, CliError> {
    let client = Client::new(common)?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut first = true;
        let outcome = super::watch::follow(&client, &prefix, |notice| {
            // A reconnection resumes by id and misses nothing: only the
            // first one is told, then changes and gaps.
            let tell = match notice {
                Notice::Connected => std::mem::take(&mut first),
                Notice::Change(_) | Notice::Gap => true,
            };
            !tell || tx.send(Ok(())).is_ok()
        })
        .await;
        if let Err(e) = outcome {
            let _ = tx.send(Err(e));
        }
    });
    Ok(rx)
}

/// Runs the command; `Ok` carries the exit code to leave with.
pub async fn run(common: &ClientArgs, args: RunArgs) -> Result<u8, CliError> {
    use tokio::signal::unix::{signal, SignalKind};

    check_prefix(&args.prefix)?;
    let client = Client::new(common)?;
    // Following starts before the first fetch, so no change in between is
    // missed; its first message says it is following.
    let mut changes = if args.watch {
        let mut rx = follow_changes(common, args.prefix.clone())?;
        match rx.recv().await {
            Some(Ok(())) => Some(rx),
            Some(Err(e)) => return Err(e),
            None => return Err(CliError::Other("the change stream ended".into())),
        }
    } else {
        None
    };
    let mut vars = fetch(&client, &args).await?;

    // Listen before the child exists, so no signal meant for it is missed
    // (or kills us by its default action).
    let listen = |kind: SignalKind| {
        signal(kind).map_err(|e| CliError::Other(format!("cannot handle signals: {e}")))
    };
    let mut sigint = listen(SignalKind::interrupt())?;
    let mut sigterm = listen(SignalKind::terminate())?;
    let mut sighup = listen(SignalKind::hangup())?;

    let mut child = spawn(&args, &vars)?;
    vars.clear();
    // A restart owed since a fetch of the new environment failed.
    let mut owed = false;
    let status = loop {
        let changed = async {
            if owed {
                tokio::time::sleep(RETRY).await;
                return Some(Ok(()));
            }
            match changes.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = child.wait() => {
                break status.map_err(|e| CliError::Other(format!("waiting for the command: {e}")))?;
            }
            _ = sigint.recv() => signal_child(&child, libc::SIGINT),
            _ = sigterm.recv() => signal_child(&child, libc::SIGTERM),
            _ = sighup.recv() => signal_child(&child, libc::SIGHUP),
            change = changed => {
                let rx = changes.as_mut().expect("only when watching");
                match change {
                    Some(Ok(())) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Err(CliError::Other("the change stream ended".into())),
                }
                // Let a burst of changes settle into one restart.
                let settling = tokio::time::Instant::now() + MAX_SETTLE;
                while let Ok(Some(more)) =
                    tokio::time::timeout(SETTLE.min(settling - tokio::time::Instant::now()), rx.recv()).await
                {
                    more?;
                    if tokio::time::Instant::now() >= settling {
                        break;
                    }
                }
                // The new environment first: if it cannot be had, the
                // command keeps running as it is and the restart is tried
                // again.
                let fresh = match fetch(&client, &args).await {
                    Ok(fresh) => fresh,
                    Err(e) => {
                        eprintln!("strongroom: not restarting yet: {e}");
                        owed = true;
                        continue;
                    }
                };
                owed = false;
                signal_child(&child, libc::SIGTERM);
                if tokio::time::timeout(args.restart_grace, child.wait()).await.is_err() {
                    signal_child(&child, libc::SIGKILL);
                    let _ = child.wait().await;
                }
                child = spawn(&args, &fresh)?;
            }
        }
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => (128 + sig) as u8,
        (None, None) => 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shell_safe() {
        assert_eq!(env_name("DB_PASSWORD"), "DB_PASSWORD");
        assert_eq!(env_name("db.password"), "db_password");
        assert_eq!(env_name("a/b-c=d"), "a_b_c_d");
        assert_eq!(env_name("2fa"), "_2fa");
    }

    #[test]
    fn collisions_name_both_keys() {
        let e = env_names("app/", ["app/db.url", "app/db_url"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("app/db.url") && e.contains("app/db_url") && e.contains("db_url"));
        assert!(env_names("app/", ["app/a", "app/b"]).is_ok());
    }
}
