//! Reading and writing KV messages: the one compare-and-set publish every
//! write goes through, and the reads of one key's last message, its whole
//! history, or the last message of every key under a filter.

use async_nats::jetstream::consumer::{push::OrderedConfig, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::jetstream::{self, kv};
use async_nats::HeaderMap;
use futures_util::StreamExt;

use super::records::{op_of, Entry, Op, KV_OPERATION};
use super::{unavailable, REQUEST_TIMEOUT};
use crate::store::engine::WriteError;
use crate::store::StoreError;

const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
const ROLLUP: &str = "Nats-Rollup";
/// Carries the request id of the change a message makes, so the change can
/// be matched with its audit line.
pub(super) const REQUEST_ID: &str = "Strongroom-Request-Id";
/// Most messages read while walking one key's history (history is <= 64).
const MAX_HISTORY_READS: usize = 256;

/// One compare-and-set message: written only if `key`'s last message is
/// still `expected` (0: the key has none).
pub(super) struct Publish<'a> {
    pub key: &'a str,
    pub expected: u64,
    pub op: Op,
    pub payload: Vec<u8>,
}

/// Publishes and waits for the ack; returns the message's stream sequence.
/// A lost race is `WriteError::Conflict`. `request_id` names the request
/// whose change this is.
pub(super) async fn publish(
    js: &jetstream::Context,
    store: &kv::Store,
    message: Publish<'_>,
    request_id: Option<&str>,
) -> Result<u64, WriteError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        EXPECTED_LAST_SUBJECT_SEQUENCE,
        message.expected.to_string().as_str(),
    );
    match message.op {
        Op::Put => {}
        Op::Delete => headers.insert(KV_OPERATION, "DEL"),
        Op::Purge => {
            headers.insert(KV_OPERATION, "PURGE");
            headers.insert(ROLLUP, "sub");
        }
    }
    if let Some(id) = request_id {
        headers.insert(REQUEST_ID, id);
    }
    let subject = format!("{}{}", store.prefix, message.key);
    let ack = match js
        .publish_with_headers(subject, headers, message.payload.into())
        .await
    {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    match ack {
        Ok(ack) => Ok(ack.sequence),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(WriteError::Conflict),
        Err(e) => Err(unavailable("publish", e).into()),
    }
}

/// The last message of `key`, if any.
pub(super) async fn last(
    store: &kv::Store,
    key: &str,
) -> Result<Option<StreamMessage>, StoreError> {
    let subject = format!("{}{key}", store.prefix);
    match store.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(unavailable("read", e)),
    }
}

pub(super) async fn last_entry(store: &kv::Store, key: &str) -> Result<Option<Entry>, StoreError> {
    last(store, key).await?.map(Entry::from_message).transpose()
}

/// Every retained message of `key`, oldest first.
pub(super) async fn history(store: &kv::Store, key: &str) -> Result<Vec<Entry>, StoreError> {
    let subject = format!("{}{key}", store.prefix);
    let mut entries = Vec::new();
    let mut next = 1;
    for _ in 0..MAX_HISTORY_READS {
        match store
            .stream
            .get_first_raw_message_by_subject(&subject, next)
            .await
        {
            Ok(m) => {
                next = m.sequence + 1;
                entries.push(Entry::from_message(m)?);
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(entries),
            Err(e) => return Err(unavailable("read history", e)),
        }
    }
    Err(StoreError::Unavailable(
        "nats history: too many messages for one key".into(),
    ))
}

/// The last message of every key under `filter` (a subject with wildcards),
/// through an ordered consumer; with `headers_only` no values are loaded.
/// Returns (key, op, payload) in no particular order.
pub(super) async fn scan_last(
    client: &async_nats::Client,
    store: &kv::Store,
    filter: &str,
    headers_only: bool,
) -> Result<Vec<(String, Op, Vec<u8>)>, StoreError> {
    let scanned = scan_last_sequenced(client, store, filter, headers_only).await?;
    Ok(scanned
        .into_iter()
        .map(|(key, op, payload, _)| (key, op, payload))
        .collect())
}

/// `scan_last`, with each message's stream sequence (its revision).
pub(super) async fn scan_last_sequenced(
    client: &async_nats::Client,
    store: &kv::Store,
    filter: &str,
    headers_only: bool,
) -> Result<Vec<(String, Op, Vec<u8>, u64)>, StoreError> {
    let scan = async {
        let consumer = store
            .stream
            .create_consumer(OrderedConfig {
                deliver_subject: client.new_inbox(),
                description: Some("strongroom scan".into()),
                filter_subject: format!("{}{filter}", store.prefix),
                headers_only,
                replay_policy: ReplayPolicy::Instant,
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("scan", e))?;
        let mut out = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| unavailable("scan", e))?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| unavailable("scan", e))?;
            let info = message.info().map_err(|e| unavailable("scan", e))?;
            let (pending, sequence) = (info.pending, info.stream_sequence);
            if let Some(key) = message.subject.as_str().strip_prefix(&store.prefix) {
                out.push((
                    key.to_owned(),
                    op_of(message.headers.as_ref()),
                    message.payload.to_vec(),
                    sequence,
                ));
            }
            if pending == 0 {
                return Ok(out);
            }
        }
        Err(StoreError::Unavailable("nats scan: ended early".into()))
    };
    tokio::time::timeout(REQUEST_TIMEOUT * 2, scan)
        .await
        .map_err(|_| StoreError::Unavailable("nats scan: timed out".into()))?
}
