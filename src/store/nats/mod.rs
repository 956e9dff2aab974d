//! The clustered engine: NATS JetStream KV buckets, so gateways keep no state
//! of their own and any number can run behind a load balancer.
//!
//! - `connection.rs`: the client and the buckets (`<bucket>` for secrets,
//!   with history `max_versions`, which prunes old versions; `_deks`,
//!   `_apikeys`, `_meta`);
//! - `records.rs`: the bytes of every value, and a key's state from its
//!   history;
//! - `kv.rs`: the one compare-and-set publish, and the reads;
//! - `secrets.rs`, `apikeys.rs`: the operations;
//! - `trail.rs`: the audit stream `<bucket>_audit`; `head.rs`: its recorded
//!   head; `unfinished.rs`: the changes whose gateway stopped before their
//!   line.
//!
//! A write is one compare-and-set attempt (`Nats-Expected-Last-Subject-
//! Sequence` of the message it read); a lost race is reported to `Store`,
//! which reads and tries again.

mod cache;
mod connection;
mod events;
mod head;
mod kv;
mod lifecycle;
mod messages;
mod named;
mod recorded;
mod records;
mod secrets;
mod trail;
mod unfinished;

use std::sync::Arc;
use std::time::Duration;

use super::dump::{LoadCounts, Records, Sink};
use super::engine::{Backend, Observed, SecretWrite, WriteError};
use super::events::{Draft, Event, EventWindow, Hub};
use super::lines::LineBody;
use super::model::{
    Lapsed, ListFilter, ListedSecret, SealedVersion, SecretMetadata, StoredVersion,
};
use super::records::{Kind, Record};
use super::{StoreConfig, StoreError};
use crate::types::{SecretKey, TenantId};
use connection::Connection;
pub use recorded::{read_all, Recorded};
pub use trail::{Intent, StreamTrail};
pub use unfinished::unfinished;

/// Longest a JetStream request or a listing may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What `open` needs.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// Server URL(s), comma separated.
    pub url: String,
    /// Name of the secrets bucket; the other buckets are named after it.
    pub bucket: String,
    pub replicas: usize,
    /// History of the secrets bucket, 1..=64.
    pub max_versions: u32,
    /// What the events stream keeps.
    pub events: EventWindow,
}

impl From<&StoreConfig> for NatsSettings {
    fn from(config: &StoreConfig) -> Self {
        NatsSettings {
            url: config.nats_url.clone(),
            bucket: config.nats_bucket.clone(),
            replicas: config.nats_replicas,
            max_versions: config.max_versions,
            events: config.events,
        }
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    // NATS error texts name operations and codes, never payloads.
    StoreError::Unavailable(format!("nats {what}: {e}"))
}

pub struct NatsBackend {
    conn: Connection,
    settings: NatsSettings,
    trail: Option<Arc<StreamTrail>>,
    /// Where this gateway's watchers take events from (`events::feed`).
    hub: Arc<Hub>,
    /// Current versions this gateway has read (`cache.rs`).
    cache: cache::GatewayCache,
}

impl NatsBackend {
    /// Starts connecting in the background; with `trail`, also starts the
    /// audit stream's publisher (call inside the runtime).
    pub async fn open(settings: NatsSettings, trail: bool) -> Result<Self, StoreError> {
        let conn = Connection::connect(settings.clone()).await?;
        let trail = trail.then(|| {
            Arc::new(StreamTrail::new(
                conn.client.clone(),
                &settings.bucket,
                settings.replicas,
            ))
        });
        Ok(NatsBackend {
            conn,
            settings,
            trail,
            hub: Arc::default(),
            cache: Default::default(),
        })
    }

    pub(super) fn client(&self) -> async_nats::Client {
        self.conn.client.clone()
    }

    pub(super) fn trail(&self) -> Option<Arc<StreamTrail>> {
        self.trail.clone()
    }

    /// Feeds this gateway's watchers from the events stream (a task).
    pub(super) async fn feed_events(&self) {
        events::feed(self, self.hub.clone()).await
    }

    /// Keeps the read cache coherent with every gateway's changes (a task).
    pub(super) async fn follow_for_cache(&self) {
        cache::follow(self).await
    }

    pub(super) async fn watch_records(
        &self,
        kind: Kind,
        tx: tokio::sync::mpsc::Sender<(Kind, String)>,
    ) {
        named::watch(self, kind, tx).await
    }

    /// Publishes a change with its audit line: first the request's intent
    /// (a trail that cannot take it stops the change before it happens),
    /// then the change, whose message carries the request's id, then the
    /// line, so the line records only a change that happened. If the line
    /// cannot be appended, the change stands and the request answers 503;
    /// the intent without a line is what `audit verify` then reports.
    async fn change(
        &self,
        store: &async_nats::jetstream::kv::Store,
        message: kv::Publish<'_>,
        line: Option<LineBody>,
        event: Option<(&TenantId, Draft)>,
    ) -> Result<u64, WriteError> {
        let trail = match (&line, &self.trail) {
            (None, _) => None,
            (Some(_), Some(trail)) => Some(trail),
            (Some(_), None) => {
                return Err(StoreError::Unavailable(
                    "a change with an audit line on a store opened without its trail".into(),
                )
                .into())
            }
        };
        let request_id = line.as_ref().map(|l| &*l.request_id);
        if let (Some(trail), Some(id)) = (trail, request_id) {
            let intent = Intent {
                request_id: id.to_owned(),
                subject: format!("{}{}", store.prefix, message.key),
                after: message.expected,
            };
            trail
                .intend(intent)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        }
        let kv_key = message.key;
        let sequence = kv::publish(&self.conn.js, store, message, request_id).await?;
        // This gateway's next read of the key goes to the leader.
        self.cache.forget(kv_key);
        crate::failpoint::stop_here("after-change");
        // The change is made: its event and its line go out together (two
        // streams, no order between them; both stored before the answer),
        // and a lost event must not cost the line (watchers that missed it
        // are told nothing; docs/decisions.md).
        let event = async {
            if let Some((tenant, draft)) = event {
                if let Err(e) = events::publish(self, tenant, draft).await {
                    tracing::error!(error = %e, "a change's event could not be published; watchers miss it");
                }
            }
        };
        let line = async {
            match (trail, line) {
                (Some(trail), Some(line)) => trail
                    .append(line)
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("{e}; the change was made"))),
                _ => Ok(()),
            }
        };
        let ((), appended) = tokio::join!(event, line);
        appended?;
        Ok(sequence)
    }
}

impl Backend for NatsBackend {
    async fn close(&self) {
        if self.conn.connected().is_ok() {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, self.conn.client.flush()).await;
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let b = self.conn.buckets().await?;
        b.secrets
            .stream
            .get_info()
            .await
            .map(|_| ())
            .map_err(|e| unavailable("ping", e))
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.ping().await?;
        // The shared state every gateway needs (the master key's check
        // value) is readable.
        named::get(self, Kind::Meta, "master_key_check")
            .await
            .map(|_| ())
    }

    async fn head(&self, tenant: &TenantId, key: &SecretKey) -> Result<Observed, StoreError> {
        secrets::head(self, tenant, key).await
    }

    async fn get(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        version: Option<u64>,
        min_revision: Option<u64>,
        // Every record carries the key's settings.
        _settings: bool,
    ) -> Result<Option<StoredVersion>, StoreError> {
        secrets::get(self, tenant, key, version, min_revision).await
    }

    async fn write(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        write: SecretWrite,
    ) -> Result<Option<u64>, WriteError> {
        secrets::write(self, tenant, key, write).await
    }

    async fn metadata(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
    ) -> Result<Option<SecretMetadata>, StoreError> {
        secrets::metadata(self, tenant, key).await
    }

    async fn list(
        &self,
        tenant: &TenantId,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        filter: ListFilter,
    ) -> Result<Vec<ListedSecret>, StoreError> {
        secrets::list(self, tenant, prefix, after, limit, filter).await
    }

    async fn lapsed(&self, now: i64, limit: usize) -> Result<Vec<Lapsed>, StoreError> {
        secrets::lapsed(self, now, limit).await
    }

    fn hub(&self) -> &Hub {
        &self.hub
    }

    async fn events_after(
        &self,
        tenant: &TenantId,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        events::after(self, tenant, prefix, after, limit).await
    }

    /// The events stream keeps its window itself (`max_messages`,
    /// `max_age`).
    async fn prune_events(&self, _now: i64) -> Result<(), StoreError> {
        Ok(())
    }

    async fn record_get(&self, kind: Kind, id: &str) -> Result<Option<Record>, StoreError> {
        named::get(self, kind, id).await
    }

    async fn record_scan(&self, kind: Kind, prefix: &str) -> Result<Vec<Record>, StoreError> {
        named::scan(self, kind, prefix).await
    }

    async fn record_put(
        &self,
        kind: Kind,
        id: &str,
        expected: u64,
        value: Option<Vec<u8>>,
        line: Option<LineBody>,
    ) -> Result<u64, WriteError> {
        named::put(self, kind, id, expected, value.as_deref(), line).await
    }

    async fn sealed_versions(
        &self,
        _tenant: &TenantId,
        _after: Option<(String, u64)>,
        _limit: usize,
    ) -> Result<Vec<SealedVersion>, StoreError> {
        Err(lifecycle::reseal_refused())
    }

    async fn replace_sealed(
        &self,
        _tenant: &TenantId,
        _key: &str,
        _version: u64,
        _old: &[u8],
        _new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        Err(lifecycle::reseal_refused())
    }

    async fn dump(&self, sink: Sink<'_>) -> Result<(), StoreError> {
        lifecycle::dump(self, sink).await
    }

    /// The line follows the load: JetStream has no unit of work across
    /// buckets and the trail.
    async fn load(
        &self,
        records: Records,
        force: bool,
        line: Option<LineBody>,
    ) -> Result<LoadCounts, StoreError> {
        let counts = lifecycle::load(self, records, force).await?;
        if let (Some(trail), Some(line)) = (&self.trail, line) {
            trail
                .append(line)
                .await
                .map_err(|e| StoreError::Unavailable(format!("{e}; the store was restored")))?;
        }
        Ok(counts)
    }
}
