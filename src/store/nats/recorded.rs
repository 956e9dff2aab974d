//! Reading a nats trail back whole: every chain's lines in stream order and
//! the intents beside them, for `audit verify`, `audit export`, the audit
//! API and the start of a chain over a trail written before keyed lines.

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, ErrorCode};

use super::trail::{failed, names, Intent};
use super::REQUEST_TIMEOUT;
use crate::store::lines::{chain_named, TrailError};

/// Everything the trail of `bucket` holds, oldest first.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Every chain's lines in stream order, each without a newline, with
    /// the chain it is on.
    pub lines: Vec<(String, Vec<u8>)>,
    pub intents: Vec<Intent>,
}

/// The trail stream of `bucket` and its state; `None` when it holds no
/// message (never made, deleted, or empty).
async fn open(
    client: async_nats::Client,
    bucket: &str,
) -> Result<Option<(jetstream::stream::Stream, jetstream::stream::State)>, TrailError> {
    let (stream_name, _, _) = names(bucket);
    let js = jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .build(client);
    let mut stream = match js.get_stream(&stream_name).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(failed(&format!("open stream {stream_name}"), e)),
    };
    let state = stream
        .info()
        .await
        .map_err(|e| failed("stream info", e))?
        .state
        .clone();
    Ok((state.messages > 0).then_some((stream, state)))
}

/// The stream's message at `sequence`.
async fn message(
    stream: &jetstream::stream::Stream,
    sequence: u64,
) -> Result<jetstream::message::StreamMessage, TrailError> {
    stream
        .get_raw_message(sequence)
        .await
        .map_err(|e| failed(&format!("read line at sequence {sequence}"), e))
}

/// Reads the whole trail of `bucket`.
pub async fn read_all(client: async_nats::Client, bucket: &str) -> Result<Recorded, TrailError> {
    let (_, subject, intent_subject) = names(bucket);
    let mut recorded = Recorded::default();
    let Some((stream, state)) = open(client, bucket).await? else {
        return Ok(recorded);
    };
    for sequence in state.first_sequence..=state.last_sequence {
        let m = message(&stream, sequence).await?;
        let parts = m.payload.split(|&b| b == b'\n');
        if let Some(chain) = chain_named(&subject, m.subject.as_str()) {
            recorded
                .lines
                .extend(parts.map(|line| (chain.to_owned(), line.to_vec())));
        } else if m.subject.as_str() == intent_subject {
            for part in parts {
                let intent = serde_json::from_slice(part).map_err(|_| {
                    TrailError(format!("intent at sequence {sequence} is unreadable"))
                })?;
                recorded.intents.push(intent);
            }
        }
    }
    Ok(recorded)
}

/// Where each message of lines begins among a trail's lines, learned as the
/// stream grows, so a page of the audit API reads the messages appended
/// since the last page and the ones it shows, not the whole stream.
#[derive(Debug, Default)]
pub struct LineIndex {
    /// (stream sequence, place of the message's first line), in order.
    messages: Vec<(u64, u64)>,
    /// The last stream sequence looked at.
    scanned: u64,
    /// Lines counted so far: the place of the last one.
    places: u64,
}

/// Offers the lines numbered (by place, from 1) after `after`, in order, to
/// `offer` until it says it has enough.
pub async fn read_page(
    client: async_nats::Client,
    bucket: &str,
    index: &tokio::sync::Mutex<LineIndex>,
    after: u64,
    offer: &mut (dyn FnMut(u64, &[u8]) -> bool + Send),
) -> Result<(), TrailError> {
    let (_, subject, _) = names(bucket);
    let mut index = index.lock().await;
    let Some((stream, state)) = open(client, bucket).await? else {
        *index = LineIndex::default();
        return Ok(());
    };
    // A stream made anew under the same name (a forced restore): start over.
    if state.last_sequence < index.scanned {
        *index = LineIndex::default();
    }
    let from = (index.scanned + 1).max(state.first_sequence);
    for sequence in from..=state.last_sequence {
        let m = message(&stream, sequence).await?;
        if chain_named(&subject, m.subject.as_str()).is_some() {
            let first = index.places + 1;
            index.messages.push((sequence, first));
            index.places += m.payload.split(|&b| b == b'\n').count() as u64;
        }
        index.scanned = sequence;
    }
    // The message holding line `after + 1`, then on in order.
    let start = index
        .messages
        .partition_point(|&(_, first)| first <= after.saturating_add(1))
        .saturating_sub(1);
    for &(sequence, first) in &index.messages[start..] {
        let m = message(&stream, sequence).await?;
        for (place, line) in (first..).zip(m.payload.split(|&b| b == b'\n')) {
            if place > after && !offer(place, line) {
                return Ok(());
            }
        }
    }
    Ok(())
}
