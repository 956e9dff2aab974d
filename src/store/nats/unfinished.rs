//! Changes whose gateway stopped between the intent and the line: an intent
//! with no line of its request in the chain. Whether the change was made is
//! read from the KV stream: the message right after the intent's revision on
//! its subject carries the request id of the change that wrote it.

use std::collections::HashSet;

use async_nats::jetstream::{self, stream::LastRawMessageErrorKind};

use super::kv::REQUEST_ID;
use super::recorded::Recorded;
use super::trail::Intent;
use super::REQUEST_TIMEOUT;
use crate::store::lines::{TrailError, Unfinished};

/// The intents of `recorded` that no line answers, oldest first, each with
/// whether its change was made (`None` when history pruning took the
/// messages that would tell).
pub async fn unfinished(
    client: async_nats::Client,
    recorded: &Recorded,
) -> Result<Vec<Unfinished>, TrailError> {
    let answered: HashSet<&str> = recorded
        .lines
        .iter()
        .filter_map(|(_, line)| request_id_of(line))
        .collect();
    let js = jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .build(client);
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    for intent in &recorded.intents {
        if answered.contains(intent.request_id.as_str())
            || !seen.insert((&intent.request_id, &intent.subject))
        {
            continue;
        }
        found.push(Unfinished {
            request_id: intent.request_id.clone(),
            subject: intent.subject.clone(),
            made: made(&js, intent).await?,
        });
    }
    Ok(found)
}

/// The `request_id` field of a chain line.
fn request_id_of(line: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(line).ok()?;
    let rest = &text[text.find("\"request_id\":\"")? + 14..];
    // Request ids are plain (the API accepts no quotes or escapes in them).
    Some(&rest[..rest.find('"')?])
}

/// Whether the message after the intent's revision on its subject is the
/// intent's change.
async fn made(js: &jetstream::Context, intent: &Intent) -> Result<Option<bool>, TrailError> {
    let failed = |e: &dyn std::fmt::Display| TrailError(format!("reading {}: {e}", intent.subject));
    // `$KV.<bucket>.<key>` is stored in the stream `KV_<bucket>`.
    let Some(bucket) = intent
        .subject
        .strip_prefix("$KV.")
        .and_then(|rest| rest.split('.').next())
    else {
        return Ok(None);
    };
    let stream = js
        .get_stream_no_info(format!("KV_{bucket}"))
        .await
        .map_err(|e| failed(&e))?;
    // The next message on the subject is the change only while the one it
    // was written against is still kept (pruning drops the oldest first).
    if intent.after > 0 {
        match stream.get_raw_message(intent.after).await {
            Ok(_) => {}
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(failed(&e)),
        }
    }
    let next = stream
        .raw_message_builder()
        .sequence(intent.after + 1)
        .next_by_subject(intent.subject.clone())
        .send()
        .await;
    let next = match next {
        Ok(next) => next,
        // Nothing after it: the change was not made.
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(Some(false)),
        Err(e) => return Err(failed(&e)),
    };
    let by = next.headers.get(REQUEST_ID).map(|v| v.as_str());
    Ok(match by {
        Some(id) if id == intent.request_id => Some(true),
        _ if intent.after > 0 => Some(false),
        // A first write's message may have been pruned.
        _ => None,
    })
}
