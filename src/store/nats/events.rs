//! The change stream on nats: each change's event is published to the
//! stream `<bucket>_events` (subject `<bucket>_events.<tenant hex>`) right
//! after the change is stored and before its audit line, and every gateway
//! feeds its watchers from one ordered consumer of that stream, so a change
//! through any gateway reaches watchers on all of them. The stream keeps the
//! window (`EventWindow`): its sequence numbers are the event ids.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{push::OrderedConfig, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{unavailable, NatsBackend};
use crate::store::events::{action_from, Draft, Event, Hub};
use crate::store::StoreError;
use crate::types::TenantId;

#[derive(Serialize, Deserialize)]
struct Body {
    key: String,
    version: u64,
    action: String,
    at: i64,
}

fn subject(bucket: &str, tenant: &TenantId) -> String {
    format!("{bucket}_events.{}", hex::encode(tenant.as_str()))
}

/// The event a stream message holds, if it is one.
fn decode(bucket: &str, subject: &str, payload: &[u8], id: u64) -> Option<Event> {
    let tenant_hex = subject.strip_prefix(bucket)?.strip_prefix("_events.")?;
    let tenant = String::from_utf8(hex::decode(tenant_hex).ok()?).ok()?;
    let body: Body = serde_json::from_slice(payload).ok()?;
    Some(Event {
        id,
        tenant: TenantId::parse(&tenant).ok()?,
        key: body.key,
        version: body.version,
        action: action_from(&body.action)?,
        at: body.at,
    })
}

/// Publishes `draft` of `tenant` and waits for the stream to store it.
pub(super) async fn publish(
    backend: &NatsBackend,
    tenant: &TenantId,
    draft: Draft,
) -> Result<(), StoreError> {
    let body = Body {
        key: draft.key,
        version: draft.version,
        action: draft.action.to_owned(),
        at: draft.at,
    };
    let payload = serde_json::to_vec(&body).expect("serializable");
    let subject = subject(&backend.settings.bucket, tenant);
    backend
        .conn
        .js
        .publish(subject, payload.into())
        .await
        .map_err(|e| unavailable("publish event", e))?
        .await
        .map_err(|e| unavailable("publish event", e))?;
    Ok(())
}

/// `tenant`'s events under `prefix` after `after`, up to `limit`.
pub(super) async fn after(
    backend: &NatsBackend,
    tenant: &TenantId,
    prefix: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<Event>, StoreError> {
    let b = backend.conn.buckets().await?;
    let mut stream = b.events.clone();
    let state = stream
        .info()
        .await
        .map_err(|e| unavailable("events", e))?
        .state
        .clone();
    if after > state.last_sequence
        || (state.first_sequence > 0 && after.saturating_add(1) < state.first_sequence)
    {
        return Err(StoreError::Gone);
    }
    let bucket = &backend.settings.bucket;
    let subject = subject(bucket, tenant);
    let mut out = Vec::new();
    let mut next = after + 1;
    // Until `limit` under the prefix or the end: a short page means the end
    // (the watcher then goes live), however many other keys' it skipped.
    while out.len() < limit {
        match stream
            .get_first_raw_message_by_subject(&subject, next)
            .await
        {
            Ok(m) => {
                next = m.sequence + 1;
                if let Some(event) = decode(bucket, &m.subject, &m.payload, m.sequence) {
                    if event.key.starts_with(prefix) {
                        out.push(event);
                    }
                }
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(unavailable("read events", e)),
        }
    }
    Ok(out)
}

/// Feeds `hub` with every event any gateway publishes from now on, for as
/// long as the process lives; after a lost connection it goes on from the
/// last event it passed, so live watchers miss none.
pub(super) async fn feed(backend: &NatsBackend, hub: Arc<Hub>) {
    let bucket = backend.settings.bucket.clone();
    let mut last: Option<u64> = None;
    loop {
        if let Ok(b) = backend.conn.buckets().await {
            let deliver_policy = match last {
                Some(seq) => DeliverPolicy::ByStartSequence {
                    start_sequence: seq + 1,
                },
                None => DeliverPolicy::New,
            };
            let consumer = b
                .events
                .create_consumer(OrderedConfig {
                    deliver_subject: backend.conn.client.new_inbox(),
                    description: Some("strongroom watchers".into()),
                    filter_subject: format!("{bucket}_events.>"),
                    replay_policy: ReplayPolicy::Instant,
                    deliver_policy,
                    ..Default::default()
                })
                .await;
            match consumer {
                Ok(consumer) => match consumer.messages().await {
                    Ok(mut messages) => {
                        while let Some(message) = messages.next().await {
                            let Ok(message) = message else { break };
                            let Ok(info) = message.info() else { continue };
                            let seq = info.stream_sequence;
                            last = Some(seq);
                            let subject = message.subject.as_str();
                            if let Some(event) = decode(&bucket, subject, &message.payload, seq) {
                                hub.publish(event);
                            }
                        }
                        tracing::warn!("change stream feed ended; following it again");
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot follow the change stream"),
                },
                Err(e) => tracing::warn!(error = %e, "cannot follow the change stream"),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
