//! `strongroom login` and `strongroom logout`: a person signs in through the
//! role's identity provider (the browser flow, its redirect received on a
//! loopback listener, as Vault's CLI does; or `--device`), and the token is
//! kept at `$XDG_CONFIG_HOME/strongroom/token` (mode 0600), where the
//! client commands find it when no key or token is given.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

use super::args::ClientArgs;
use super::client::{CliError, Client};
use super::flags::LoginArgs;

/// Where the token is kept: `$XDG_CONFIG_HOME/strongroom/token`, else
/// `~/.config/strongroom/token`.
pub fn token_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("strongroom").join("token"))
}

/// The kept token, if there is one and it was issued by the server at
/// `addr`: it is never sent to another server.
pub fn saved_token(addr: &str) -> Option<Zeroizing<String>> {
    let text = Zeroizing::new(std::fs::read_to_string(token_path()?).ok()?);
    // The file: the server's address on the first line, the token on the
    // second.
    let (issuer, token) = text.split_once('\n')?;
    let token = token.trim();
    (issuer.trim() == addr && !token.is_empty()).then(|| Zeroizing::new(token.to_owned()))
}

fn save_token(addr: &str, token: &str) -> Result<PathBuf, CliError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = token_path()
        .ok_or_else(|| CliError::Other("neither XDG_CONFIG_HOME nor HOME is set".into()))?;
    let dir = path.parent().expect("a file in a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", dir.display())))?;
    let temp = path.with_extension("new");
    // Made new, so its mode is ours whatever a stale one had.
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", temp.display())))?;
    let text = Zeroizing::new(format!("{addr}\n{token}\n"));
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", temp.display())))?;
    std::fs::rename(&temp, &path)
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

/// `strongroom login`.
pub async fn login(common: &ClientArgs, args: LoginArgs) -> Result<(), CliError> {
    let client = Client::new(common)?;
    let answer = if args.device {
        device(&client, &args).await?
    } else {
        browser(&client, &args).await?
    };
    let token = answer["token"]
        .as_str()
        .ok_or_else(|| CliError::Other("the server answered no token".into()))?;
    let path = save_token(client.addr(), token)?;
    eprintln!(
        "Signed in as {} (tenant {}) until {}; the token is in {}.",
        answer["subject"].as_str().unwrap_or("?"),
        answer["tenant"].as_str().unwrap_or("?"),
        answer["expires_at"].as_str().unwrap_or("?"),
        path.display()
    );
    Ok(())
}

/// The browser flow: the URL, the redirect on a loopback listener, the
/// callback.
async fn browser(client: &Client, args: &LoginArgs) -> Result<Value, CliError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| CliError::Other(format!("cannot listen on 127.0.0.1:{}: {e}", args.port)))?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(args.port);
    let redirect_uri = format!("http://127.0.0.1:{port}/oidc/callback");
    let nonce = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(*crate::crypto::seal::random_bytes::<16>());
    let begun = client
        .json(
            Method::POST,
            &["auth", "oidc", "auth_url"],
            Some(json!({
                "tenant": args.tenant, "role": args.role,
                "redirect_uri": redirect_uri, "client_nonce": nonce,
            })),
            "login",
        )
        .await?;
    let url = begun["auth_url"]
        .as_str()
        .ok_or_else(|| CliError::Other("the server answered no auth_url".into()))?;
    // Only the redirect that carries this login's state ends the wait.
    let state = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "state")
                .map(|(_, v)| v.into_owned())
        })
        .ok_or_else(|| CliError::Other("the server's auth_url has no state".into()))?;
    eprintln!("Open this URL to sign in:\n\n    {url}\n\nWaiting for the provider to send you back to {redirect_uri} ...");
    if let Some(browser) = std::env::var_os("BROWSER").filter(|b| !b.is_empty()) {
        let _ = std::process::Command::new(browser)
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    let (code, state) = receive_redirect(&listener, &state).await?;
    client
        .json(
            Method::POST,
            &["auth", "oidc", "callback"],
            Some(json!({ "state": state.as_str(), "code": code.as_str(), "client_nonce": nonce })),
            "login",
        )
        .await
}

/// Waits (at most 5 minutes, a state's life) for the provider's redirect
/// to `/oidc/callback`; its code and state, or the error it carries.
async fn receive_redirect(
    listener: &tokio::net::TcpListener,
    expected_state: &str,
) -> Result<(Zeroizing<String>, Zeroizing<String>), CliError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let accepted = tokio::time::timeout_at(deadline, listener.accept())
            .await
            .map_err(|_| CliError::Other("no sign-in within 5 minutes".into()))?;
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let mut buf = Zeroizing::new(vec![0u8; 8192]);
        let mut read = 0;
        // A client that connects and says nothing is dropped, not waited for.
        let head_read = tokio::time::timeout(Duration::from_secs(10), async {
            while read < buf.len() && !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf[read..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => read += n,
                }
            }
        })
        .await;
        if head_read.is_err() {
            continue;
        }
        let head = String::from_utf8_lossy(&buf[..read]);
        let target = head.split_whitespace().nth(1).unwrap_or("");
        let Ok(url) = reqwest::Url::parse(&format!("http://127.0.0.1{target}")) else {
            continue;
        };
        let state_matches = url
            .query_pairs()
            .any(|(k, v)| k == "state" && v == expected_state);
        if url.path() != "/oidc/callback" || !state_matches {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            continue;
        }
        let query = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| Zeroizing::new(v.into_owned()))
        };
        let (page, outcome) = match (query("code"), query("state"), query("error")) {
            (Some(code), Some(state), None) => (
                "Signed in to strongroom: you can close this tab.",
                Ok((code, state)),
            ),
            (_, _, error) => {
                // The provider's words, reduced to an error code's alphabet.
                let error = error.map_or("no code".to_owned(), |e| {
                    e.chars()
                        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .take(64)
                        .collect()
                });
                (
                    "The sign-in did not finish: the provider sent no code. See the terminal.",
                    Err(CliError::Unauthorized(format!(
                        "login: the provider refused the sign-in ({error})"
                    ))),
                )
            }
        };
        let body = format!("<!doctype html><title>strongroom</title><p>{page}</p>");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        return outcome;
    }
}

/// The device flow: show the code and URL, poll at the provider's interval
/// (slower after `slow_down`) until the person approves.
async fn device(client: &Client, args: &LoginArgs) -> Result<Value, CliError> {
    let started = client
        .json(
            Method::POST,
            &["auth", "oidc", "device"],
            Some(json!({ "tenant": args.tenant, "role": args.role })),
            "login",
        )
        .await?;
    let code = Zeroizing::new(
        started["device_code"]
            .as_str()
            .ok_or_else(|| CliError::Other("the server answered no device code".into()))?
            .to_owned(),
    );
    eprintln!(
        "Open {} and enter the code {}\n(or open {})\n\nWaiting for you to approve ...",
        started["verification_uri"].as_str().unwrap_or("?"),
        started["user_code"].as_str().unwrap_or("?"),
        started["verification_uri_complete"]
            .as_str()
            .unwrap_or("the URL above"),
    );
    let mut interval = Duration::from_secs(started["interval"].as_u64().unwrap_or(5).max(1));
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(started["expires_in"].as_u64().unwrap_or(600));
    loop {
        tokio::time::sleep(interval).await;
        match client
            .poll_json(
                &["auth", "oidc", "device", "token"],
                json!({ "device_code": code.as_str() }),
            )
            .await?
        {
            Ok(answer) => return Ok(answer),
            Err(pending) => match pending.as_str() {
                "authorization_pending" => {}
                // RFC 8628 3.5: five seconds more from now on.
                "slow_down" => interval += Duration::from_secs(5),
                "access_denied" => {
                    return Err(CliError::Unauthorized(
                        "login: the sign-in was denied".into(),
                    ))
                }
                "expired_token" => {
                    return Err(CliError::Unauthorized(
                        "login: the code expired before it was approved; run login again".into(),
                    ))
                }
                other => return Err(CliError::Other(format!("login: the provider said {other}"))),
            },
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CliError::Unauthorized(
                "login: the code expired before it was approved; run login again".into(),
            ));
        }
    }
}

/// `strongroom logout`: revokes the kept token and removes it.
pub async fn logout(common: &ClientArgs) -> Result<(), CliError> {
    let Some(path) = token_path().filter(|p| p.exists()) else {
        eprintln!("Not signed in.");
        return Ok(());
    };
    // The kept token itself, whatever key the environment holds.
    let mut args = common.clone();
    args.api_key = None;
    args.token = Client::new(common)
        .ok()
        .and_then(|c| saved_token(c.addr()))
        .map(|t| t.as_str().to_owned());
    let client = Client::new(&args)?;
    // A token the server refuses (expired, revoked) is gone anyway.
    match client
        .json(Method::DELETE, &["auth", "token"], None, "logout")
        .await
    {
        Ok(_) | Err(CliError::Unauthorized(_)) => {}
        Err(e) => return Err(e),
    }
    std::fs::remove_file(&path)
        .map_err(|e| CliError::Other(format!("cannot remove {}: {e}", path.display())))?;
    eprintln!("Signed out; {} removed.", path.display());
    Ok(())
}
