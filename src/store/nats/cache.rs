//! A gateway's read cache on the nats engine: the sealed current versions it
//! has read, served without a round trip to the stream leader, and kept
//! coherent by a watch of the secrets bucket (headers only, every subject).
//!
//! - Every message the watch delivers forgets its key and advances `seen`,
//!   the stream sequence this gateway has seen changes through. A change
//!   this gateway makes forgets its key as soon as it is acknowledged, so
//!   the gateway's next read sees its own write.
//! - A read that asks for at least revision R is served from the cache only
//!   once `seen` >= R; before that it goes to the leader, which has R.
//! - While the watch is down (not yet started, disconnected, or failed) the
//!   cache is empty and nothing fills it: a gateway never serves what it
//!   cannot keep coherent. A read that began before the watch came back
//!   cannot fill either (the cache's epoch).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{push::OrderedConfig, DeliverPolicy};
use futures_util::StreamExt;

use super::connection::is_connected;
use super::NatsBackend;
use crate::store::cache::ReadCache;
use crate::store::StoredVersion;

/// How often the watch checks that the connection is still up.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// Wait before watching again after a failure.
const RETRY_AFTER: Duration = Duration::from_millis(200);

#[derive(Default)]
pub(super) struct GatewayCache {
    entries: ReadCache,
    /// The watch is running and has seen every change since the cache was
    /// last emptied.
    live: AtomicBool,
    /// The last stream sequence of the secrets bucket the watch delivered.
    seen: AtomicU64,
    /// The client's count of connections when the watch began: a
    /// reconnection the watch has not yet noticed still stops the cache.
    connects: AtomicU64,
}

fn connects(client: &async_nats::Client) -> u64 {
    client.statistics().connects.load(Ordering::Acquire)
}

/// What a read does when the cache cannot answer.
pub(super) enum Miss {
    /// Read from the leader, then `fill` with this epoch.
    Fill(u64),
    /// Read from the leader and keep nothing.
    Bypass,
}

impl GatewayCache {
    /// The cached current version of `kv_key`, if the cache may answer a
    /// read that needs at least `min_revision`.
    pub(super) fn get(
        &self,
        client: &async_nats::Client,
        kv_key: &str,
        min_revision: Option<u64>,
    ) -> Result<StoredVersion, Miss> {
        // A connection that just dropped may not have reached the watch yet.
        let usable = self.live.load(Ordering::Acquire)
            && is_connected(client)
            && connects(client) == self.connects.load(Ordering::Acquire)
            && min_revision.is_none_or(|r| r <= self.seen.load(Ordering::Acquire));
        let found = if usable {
            self.entries.get("", kv_key).map_err(Miss::Fill)
        } else {
            Err(Miss::Bypass)
        };
        if found.is_ok() {
            crate::counters::GATEWAY_CACHE_HITS.add();
        } else {
            crate::counters::GATEWAY_CACHE_MISSES.add();
        }
        found
    }

    pub(super) fn fill(&self, epoch: u64, kv_key: &str, found: &StoredVersion) {
        self.entries.fill(epoch, "", kv_key, found);
    }

    /// Forgets `kv_key`: a change to it was made or seen.
    pub(super) fn forget(&self, kv_key: &str) {
        self.entries.invalidate("", kv_key);
    }

    fn go_dark(&self) {
        self.live.store(false, Ordering::Release);
        self.entries.clear();
    }

    /// The watch delivers everything after `through` on the connection
    /// made `connects`-th: reads may fill again.
    fn go_live(&self, through: u64, connects: u64) {
        self.seen.fetch_max(through, Ordering::AcqRel);
        self.connects.store(connects, Ordering::Release);
        self.entries.clear();
        self.live.store(true, Ordering::Release);
    }
}

/// Keeps `backend.cache` coherent for as long as the gateway runs (a task).
pub(super) async fn follow(backend: &NatsBackend) {
    loop {
        let stopped = watch(backend).await;
        // At once: until a new watch runs, changes go unseen.
        backend.cache.go_dark();
        if let Err(e) = stopped {
            tracing::warn!(error = %e, "the read cache's watch stopped; reads go to the leader until it is back");
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

/// One watch, from the bucket's last sequence now until it fails or the
/// connection drops.
async fn watch(backend: &NatsBackend) -> Result<(), String> {
    let client = &backend.conn.client;
    let connected = connects(client);
    let b = backend.conn.buckets().await.map_err(|e| e.to_string())?;
    let stream = &b.secrets.stream;
    let mut info_stream = stream.clone();
    let last = info_stream
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .last_sequence;
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_subject: client.new_inbox(),
            description: Some("strongroom read cache".into()),
            filter_subject: format!("{}>", b.secrets.prefix),
            headers_only: true,
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    backend.cache.go_live(last, connected);
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            message = messages.next() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("the watch ended".into()),
                };
                if let Some(kv_key) = message.subject.as_str().strip_prefix(&b.secrets.prefix) {
                    backend.cache.forget(kv_key);
                }
                let sequence = message.info().map_err(|e| e.to_string())?.stream_sequence;
                backend.cache.seen.fetch_max(sequence, Ordering::AcqRel);
            }
            _ = check.tick() => {
                if !is_connected(client) || connects(client) != connected {
                    return Err("the connection to NATS dropped".into());
                }
            }
        }
    }
}
