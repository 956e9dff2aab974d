//! Following the change stream from the client: `strongroom watch PREFIX`
//! prints one line per change, and `run --watch` restarts its command on
//! one. A dropped stream is opened again after the last event seen
//! (`Last-Event-ID`), so a server restart loses nothing; when those events
//! are no longer kept the follower says so and goes on from now.

use std::io::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::args::{ClientArgs, WatchArgs};
use super::client::{check_prefix, CliError, Client};

/// One change, as the stream gives it.
#[derive(Deserialize, Serialize, Debug, Clone)]
pub struct Change {
    #[serde(default)]
    pub id: u64,
    pub key: String,
    pub version: u64,
    pub action: String,
    pub at: String,
}

/// What the follower tells its caller.
#[derive(Debug, Clone)]
pub enum Notice {
    /// The stream is open (first, and after each reconnection).
    Connected,
    Change(Change),
    /// Events were missed (no longer kept): anything may have changed.
    Gap,
}

/// Failures in a row after which following gives up.
const MAX_FAILURES: u32 = 30;

/// The change in one Server-Sent Events frame, if it holds one.
fn parse(frame: &str) -> Option<Change> {
    let (mut id, mut data) = (None, None);
    for line in frame.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse::<u64>().ok();
        } else if let Some(v) = line.strip_prefix("data:") {
            data = serde_json::from_str::<Change>(v.trim()).ok();
        }
    }
    let mut change = data?;
    change.id = id?;
    Some(change)
}

/// Follows the changes under `prefix` until `notify` returns false or the
/// credential is refused.
pub async fn follow(
    client: &Client,
    prefix: &str,
    mut notify: impl FnMut(Notice) -> bool,
) -> Result<(), CliError> {
    let mut after: Option<u64> = None;
    let mut failures = 0;
    let mut connected_before = false;
    loop {
        match client.open_watch(prefix, after).await {
            Ok(Some(mut response)) => {
                failures = 0;
                if !notify(Notice::Connected) {
                    return Ok(());
                }
                // Connected again before any event was seen: there is no id
                // to resume from, so changes in between may be missed.
                if std::mem::replace(&mut connected_before, true)
                    && after.is_none()
                    && !notify(Notice::Gap)
                {
                    return Ok(());
                }
                let mut buffer = String::new();
                while let Ok(Some(bytes)) = response.chunk().await {
                    buffer.push_str(&String::from_utf8_lossy(&bytes));
                    while let Some(end) = buffer.find("\n\n") {
                        let frame: String = buffer.drain(..end + 2).collect();
                        if let Some(change) = parse(&frame) {
                            after = Some(change.id);
                            if !notify(Notice::Change(change)) {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            Ok(None) => {
                after = None;
                if !notify(Notice::Gap) {
                    return Ok(());
                }
                continue;
            }
            Err(e @ (CliError::Unauthorized(_) | CliError::Forbidden(_) | CliError::Usage(_))) => {
                return Err(e)
            }
            Err(e) => {
                failures += 1;
                if failures >= MAX_FAILURES {
                    return Err(e);
                }
                eprintln!("strongroom: {e}; trying again");
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `watch PREFIX`: `AT<TAB>ACTION<TAB>KEY<TAB>VERSION` a line, or JSON lines.
pub async fn watch(common: &ClientArgs, args: WatchArgs) -> Result<(), CliError> {
    check_prefix(&args.prefix)?;
    let client = Client::new(common)?;
    let json = common.json;
    let mut failed = None;
    follow(&client, &args.prefix, |notice| {
        let line = match notice {
            Notice::Connected => return true,
            Notice::Gap => {
                eprintln!(
                    "strongroom: events were missed (no longer kept by the server); \
                     following from now: list again to see what changed"
                );
                return true;
            }
            Notice::Change(c) if json => serde_json::to_string(&c).expect("serializable"),
            Notice::Change(c) => format!("{}\t{}\t{}\t{}", c.at, c.action, c.key, c.version),
        };
        let mut out = std::io::stdout().lock();
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => true,
            // A closed pipe (`| head`) ends the watch.
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })
    .await?;
    match failed {
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Some(e) => Err(CliError::Other(format!("cannot write to stdout: {e}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_gives_its_change_and_a_comment_none() {
        let frame = "id: 7\ndata: {\"key\":\"a/b\",\"version\":2,\"action\":\"put\",\"at\":\"2026-01-01T00:00:00.000Z\"}";
        let c = parse(frame).unwrap();
        assert_eq!(
            (c.id, c.key.as_str(), c.version, c.action.as_str()),
            (7, "a/b", 2, "put")
        );
        assert!(parse(": heartbeat").is_none());
        assert!(parse("data: {\"key\":\"a\"}").is_none());
    }
}
