//! The clustered engine: NATS JetStream KV buckets, so gateways keep no state
//! of their own and any number can run behind a load balancer.
//!
//! Mapping (also in ARCHITECTURE.md, "NATS mapping"):
//!
//! - Secrets live in bucket `<bucket>` under `<hex of tenant>.<key>`; the
//!   bucket's history is `max_versions`, so the server prunes old versions.
//!   Each value is a [`Record`]: `[format=1][version u64][version created_at
//!   i64][key created_at i64][written_at i64][sealed bytes]` (big endian).
//!   The per-key version number lives in the record (KV revisions are
//!   bucket-global).
//! - Soft delete writes a KV delete marker (`KV-Operation: DEL`) whose payload
//!   is the record of the version it deletes, so undelete can re-put it (same
//!   version number) even when the history no longer holds the put itself.
//!   Destroy is a KV purge (a rollup that removes every earlier message of
//!   the key from the stream).
//! - Every write carries `Nats-Expected-Last-Subject-Sequence` (the revision
//!   it read), so check-and-set is atomic on the server; a conflict caused by
//!   a concurrent writer re-reads and tries again.
//! - Data keys live in `<bucket>_deks` under `<hex tenant>.<id>` (create
//!   only), API keys in `<bucket>_apikeys` under their id, meta values in
//!   `<bucket>_meta` under their name.
//!
//! Reads of one key go to the stream leader (`STREAM.MSG.GET`), so a read
//! after an acknowledged write sees it. Listing walks the last message per
//! subject with a headers-only ordered consumer, so no values are loaded.
//!
//! The connection is made in the background: `open` never fails because NATS
//! is down; operations answer `Unavailable` until it is reachable, and the
//! buckets are created (or found) on first use.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{push::OrderedConfig, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::context::KeyValueErrorKind;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{self, DiscardPolicy, LastRawMessageErrorKind, StorageType};
use async_nats::jetstream::{self, kv};
use async_nats::{HeaderMap, ServerAddr};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::{
    ApiKeyRecord, Backend, Hook, ListedSecret, Precondition, Sealer, SecretMetadata, StoreError,
    StoredVersion, VersionInfo, WrappedDek,
};
use crate::clock::now_ms;
use crate::types::{SecretKey, TenantId};

/// Format byte of every value this engine writes.
const FORMAT: u8 = 1;
/// Fixed part of a secret record before the sealed bytes.
const RECORD_HEADER: usize = 1 + 8 * 4;
/// Attempts of a read-modify-write before giving up under contention.
const MAX_ATTEMPTS: usize = 32;
/// Longest a JetStream request or a listing may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `open` waits for the first connection before going on without.
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(2);
/// Upper bound of the reconnect back-off.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// Most messages read while walking one key's history (history is <= 64).
const MAX_HISTORY_READS: usize = 256;

const KV_OPERATION: &str = "KV-Operation";
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
const ROLLUP: &str = "Nats-Rollup";

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
}

struct Buckets {
    secrets: kv::Store,
    deks: kv::Store,
    apikeys: kv::Store,
    meta: kv::Store,
}

pub struct NatsBackend {
    client: async_nats::Client,
    js: jetstream::Context,
    settings: NatsSettings,
    buckets: OnceCell<Buckets>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    // NATS error texts name operations and codes, never payloads.
    StoreError::Unavailable(format!("nats {what}: {e}"))
}

fn valid_bucket_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn hex(bytes: &[u8]) -> String {
    crate::hex::encode(bytes)
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The KV key of a tenant's secret (or data key): hex keeps a tenant that
/// contains '.' from being read as more subject tokens.
fn tenant_key(tenant: &TenantId, rest: &str) -> String {
    format!("{}.{rest}", hex(tenant.as_str().as_bytes()))
}

/// API key ids and meta names become KV keys as they are; anything outside
/// the KV key alphabet cannot be stored, so it is simply absent.
fn is_kv_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'.' | b'/'))
}

/// What a message on a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Delete,
    Purge,
}

fn op_of(headers: Option<&HeaderMap>) -> Op {
    match headers
        .and_then(|h| h.get(KV_OPERATION))
        .map(|v| v.as_str())
    {
        Some("DEL") => Op::Delete,
        Some("PURGE") => Op::Purge,
        _ => Op::Put,
    }
}

/// One stored version of a secret, as written in a KV value.
#[derive(Debug, Clone)]
struct Record {
    version: u64,
    /// When this version was written first.
    created_at: i64,
    /// When the key was created (survives soft delete, not destroy).
    key_created_at: i64,
    /// When this message was written (put, delete, undelete): `updated_at`.
    written_at: i64,
    sealed: Vec<u8>,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_HEADER + self.sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.extend_from_slice(&self.key_created_at.to_be_bytes());
        out.extend_from_slice(&self.written_at.to_be_bytes());
        out.extend_from_slice(&self.sealed);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Record, StoreError> {
        if bytes.len() < RECORD_HEADER || bytes[0] != FORMAT {
            return Err(StoreError::Corrupt(format!(
                "secret record of {} bytes with an unknown format",
                bytes.len()
            )));
        }
        let word = |i: usize| {
            let start = 1 + 8 * i;
            <[u8; 8]>::try_from(&bytes[start..start + 8]).expect("8 bytes")
        };
        Ok(Record {
            version: u64::from_be_bytes(word(0)),
            created_at: i64::from_be_bytes(word(1)),
            key_created_at: i64::from_be_bytes(word(2)),
            written_at: i64::from_be_bytes(word(3)),
            sealed: bytes[RECORD_HEADER..].to_vec(),
        })
    }

    fn stored(self) -> StoredVersion {
        StoredVersion {
            version: self.version,
            created_at: self.created_at,
            sealed: self.sealed,
        }
    }
}

/// One message of a secret's history, decoded.
#[derive(Debug, Clone)]
struct Entry {
    revision: u64,
    op: Op,
    /// The record of a put, or of the version a delete marker deleted
    /// (absent for markers written by other tools).
    record: Option<Record>,
    /// Server time of the message, for markers without a record.
    time_ms: i64,
}

fn entry_from(message: jetstream::message::StreamMessage) -> Result<Entry, StoreError> {
    let op = op_of(Some(&message.headers));
    let record = match op {
        Op::Put => Some(Record::decode(&message.payload)?),
        Op::Delete if !message.payload.is_empty() => Some(Record::decode(&message.payload)?),
        _ => None,
    };
    Ok(Entry {
        revision: message.sequence,
        op,
        record,
        time_ms: (message.time.unix_timestamp_nanos() / 1_000_000) as i64,
    })
}

/// A key's state derived from its history.
#[derive(Debug, Default)]
struct State {
    /// Retained versions: (created_at, deleted, record of its latest put).
    versions: BTreeMap<u64, (i64, bool, Option<Record>)>,
    /// The latest version and whether it is soft deleted.
    current: Option<(u64, bool)>,
    key_created_at: i64,
    updated_at: i64,
}

impl State {
    fn from_history(entries: &[Entry]) -> State {
        let mut s = State::default();
        for e in entries {
            match (e.op, &e.record) {
                (Op::Purge, _) => s = State::default(),
                (Op::Put, Some(r)) => {
                    s.versions
                        .insert(r.version, (r.created_at, false, Some(r.clone())));
                    s.current = Some((r.version, false));
                    s.key_created_at = r.key_created_at;
                    s.updated_at = r.written_at;
                }
                (Op::Delete, Some(r)) => {
                    let slot = s
                        .versions
                        .entry(r.version)
                        .or_insert((r.created_at, true, None));
                    slot.1 = true;
                    s.current = Some((r.version, true));
                    s.key_created_at = r.key_created_at;
                    s.updated_at = r.written_at;
                }
                (Op::Delete, None) => {
                    if let Some((v, _)) = s.current {
                        if let Some(slot) = s.versions.get_mut(&v) {
                            slot.1 = true;
                        }
                        s.current = Some((v, true));
                        s.updated_at = e.time_ms;
                    }
                }
                (Op::Put, None) => {}
            }
        }
        s
    }

    /// The last record put before the current (deleted) state, for undelete
    /// after a marker that carries none.
    fn last_put(&self) -> Option<Record> {
        let (v, _) = self.current?;
        self.versions.get(&v).and_then(|(_, _, r)| r.clone())
    }
}

/// Outcome of a conditional publish.
enum Written {
    Ok,
    Conflict,
}

/// The JSON body of an API key value, after the format byte.
#[derive(Serialize, Deserialize)]
struct ApiKeyDoc {
    tenant: String,
    name: String,
    scopes: Vec<String>,
    hash: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

fn encode_apikey(r: &ApiKeyRecord) -> Vec<u8> {
    let doc = ApiKeyDoc {
        tenant: r.tenant.as_str().to_owned(),
        name: r.name.clone(),
        scopes: r.scopes.clone(),
        hash: hex(&r.hash),
        created_at: r.created_at,
        expires_at: r.expires_at,
        revoked_at: r.revoked_at,
        last_used_at: r.last_used_at,
    };
    let mut out = vec![FORMAT];
    out.extend(serde_json::to_vec(&doc).expect("serializable"));
    out
}

fn decode_apikey(id: &str, bytes: &[u8]) -> Result<ApiKeyRecord, StoreError> {
    let corrupt = || StoreError::Corrupt("api key record is unreadable".into());
    let (&format, body) = bytes.split_first().ok_or_else(corrupt)?;
    if format != FORMAT {
        return Err(corrupt());
    }
    let doc: ApiKeyDoc = serde_json::from_slice(body).map_err(|_| corrupt())?;
    let hash = unhex(&doc.hash)
        .and_then(|h| <[u8; 32]>::try_from(h).ok())
        .ok_or_else(corrupt)?;
    Ok(ApiKeyRecord {
        id: id.to_owned(),
        tenant: TenantId::parse(&doc.tenant).map_err(|_| corrupt())?,
        name: doc.name,
        scopes: doc.scopes,
        hash,
        created_at: doc.created_at,
        expires_at: doc.expires_at,
        revoked_at: doc.revoked_at,
        last_used_at: doc.last_used_at,
    })
}

fn with_format(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 1);
    out.push(FORMAT);
    out.extend_from_slice(value);
    out
}

fn without_format(what: &str, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => Ok(rest.to_vec()),
        _ => Err(StoreError::Corrupt(format!("{what} has an unknown format"))),
    }
}

impl NatsBackend {
    /// Starts connecting in the background and returns at once (after a short
    /// wait for the first connection); fails only on a bad configuration.
    pub async fn open(settings: NatsSettings) -> Result<Self, StoreError> {
        let config = |m: &str| StoreError::Unavailable(format!("nats store configuration: {m}"));
        for name in ["", "_deks", "_apikeys", "_meta"] {
            if !valid_bucket_name(&format!("{}{name}", settings.bucket)) {
                return Err(config("the bucket name may only contain A-Z a-z 0-9 - _"));
            }
        }
        if !(1..=64).contains(&settings.max_versions) {
            return Err(config("max versions must be 1 to 64"));
        }
        let addrs = settings
            .url
            .split(',')
            .map(|u| u.trim().parse::<ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            // The URL may hold credentials: never echo it.
            .map_err(|_| config("the NATS URL is not valid"))?;
        if addrs.is_empty() {
            return Err(config("no NATS URL"));
        }
        let options = async_nats::ConnectOptions::new()
            .name("strongroom")
            .retry_on_initial_connect()
            .connection_timeout(REQUEST_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT))
            .reconnect_delay_callback(|attempts| {
                let millis = 50u64.saturating_mul(1 << attempts.min(10));
                Duration::from_millis(millis).min(MAX_RECONNECT_DELAY)
            });
        let client = async_nats::connect_with_options(addrs, options)
            .await
            .map_err(|e| unavailable("connect", e))?;
        let deadline = tokio::time::Instant::now() + FIRST_CONNECT_WAIT;
        while client.connection_state() != async_nats::connection::State::Connected
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if client.connection_state() != async_nats::connection::State::Connected {
            tracing::warn!("NATS is not reachable yet; the store answers unavailable until it is");
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        Ok(NatsBackend {
            client,
            js,
            settings,
            buckets: OnceCell::new(),
        })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Sends the id of every API key written in `<bucket>_apikeys` (by any
    /// gateway or the CLI) from now on, until `tx` closes. The watch is an
    /// ordered consumer; when it fails (NATS down, a leader change) it is
    /// made again. A change missed meanwhile still lapses with the cache TTL.
    pub(crate) async fn watch_apikeys(&self, tx: tokio::sync::mpsc::Sender<String>) {
        while !tx.is_closed() {
            if let Ok(b) = self.buckets().await {
                match b.apikeys.watch_all().await {
                    Ok(mut watch) => {
                        while let Some(entry) = watch.next().await {
                            match entry {
                                Ok(entry) => {
                                    if tx.send(entry.key).await.is_err() {
                                        return;
                                    }
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "api key watch failed; watching again");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot watch api keys; trying again"),
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn connected(&self) -> Result<(), StoreError> {
        if self.client.connection_state() == async_nats::connection::State::Connected {
            Ok(())
        } else {
            Err(StoreError::Unavailable("not connected to NATS".into()))
        }
    }

    /// The buckets, created or found on first use while connected.
    async fn buckets(&self) -> Result<&Buckets, StoreError> {
        self.connected()?;
        self.buckets
            .get_or_try_init(|| async {
                let base = &self.settings.bucket;
                Ok(Buckets {
                    secrets: self
                        .bucket(base.clone(), i64::from(self.settings.max_versions))
                        .await?,
                    deks: self.bucket(format!("{base}_deks"), 1).await?,
                    apikeys: self.bucket(format!("{base}_apikeys"), 1).await?,
                    meta: self.bucket(format!("{base}_meta"), 1).await?,
                })
            })
            .await
    }

    /// Finds or creates a bucket. The stream is created directly rather than
    /// through `create_key_value`, whose account-info step does not parse
    /// the answer of a 2.9 server; the configuration is the KV one.
    async fn bucket(&self, name: String, history: i64) -> Result<kv::Store, StoreError> {
        let config = stream::Config {
            name: format!("KV_{name}"),
            description: Some("strongroom".into()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: history,
            max_bytes: -1,
            max_message_size: -1,
            storage: StorageType::File,
            num_replicas: self.settings.replicas.max(1),
            allow_rollup: true,
            deny_delete: true,
            deny_purge: false,
            allow_direct: true,
            discard: DiscardPolicy::New,
            ..Default::default()
        };
        match self.js.get_key_value(name.clone()).await {
            Ok(store) => {
                let have = store.stream.cached_info().config.max_messages_per_subject;
                if have == history {
                    return Ok(store);
                }
                // The history is what prunes old versions: follow the
                // configured max_versions.
                let mut updated = store.stream.cached_info().config.clone();
                updated.max_messages_per_subject = history;
                self.js
                    .update_stream(updated)
                    .await
                    .map_err(|e| unavailable("update bucket", e))?;
            }
            Err(e) if e.kind() == KeyValueErrorKind::InvalidStoreName => {
                return Err(unavailable("open bucket", e))
            }
            Err(_) => {
                // Another gateway may create it at the same time; creating
                // an identical stream twice succeeds.
                self.js
                    .create_stream(config)
                    .await
                    .map_err(|e| unavailable("create bucket", e))?;
            }
        }
        self.js
            .get_key_value(name)
            .await
            .map_err(|e| unavailable("open bucket", e))
    }

    /// Publishes `payload` on `key` if the key's last revision is still
    /// `expected` (0: the key has no message).
    async fn publish(
        &self,
        store: &kv::Store,
        key: &str,
        expected: u64,
        op: Op,
        payload: Vec<u8>,
    ) -> Result<Written, StoreError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
        match op {
            Op::Put => {}
            Op::Delete => headers.insert(KV_OPERATION, "DEL"),
            Op::Purge => {
                headers.insert(KV_OPERATION, "PURGE");
                headers.insert(ROLLUP, "sub");
            }
        }
        let subject = format!("{}{key}", store.prefix);
        let ack = match self
            .js
            .publish_with_headers(subject, headers, payload.into())
            .await
        {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match ack {
            Ok(_) => Ok(Written::Ok),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(Written::Conflict),
            Err(e) => Err(unavailable("publish", e)),
        }
    }

    /// The last message of `key`, if any.
    async fn last(
        &self,
        store: &kv::Store,
        key: &str,
    ) -> Result<Option<jetstream::message::StreamMessage>, StoreError> {
        let subject = format!("{}{key}", store.prefix);
        match store.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable("read", e)),
        }
    }

    async fn last_entry(&self, store: &kv::Store, key: &str) -> Result<Option<Entry>, StoreError> {
        self.last(store, key).await?.map(entry_from).transpose()
    }

    /// Every retained message of `key`, oldest first.
    async fn history(&self, store: &kv::Store, key: &str) -> Result<Vec<Entry>, StoreError> {
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
                    entries.push(entry_from(m)?);
                }
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(entries)
                }
                Err(e) => return Err(unavailable("read history", e)),
            }
        }
        Err(StoreError::Unavailable(
            "nats history: too many messages for one key".into(),
        ))
    }

    /// The last message of every key under `filter` (a subject with
    /// wildcards), through an ordered consumer; with `headers_only` no
    /// values are loaded. Returns (key, op, payload) in no particular order.
    async fn scan_last(
        &self,
        store: &kv::Store,
        filter: &str,
        headers_only: bool,
    ) -> Result<Vec<(String, Op, Vec<u8>)>, StoreError> {
        let scan = async {
            let consumer = store
                .stream
                .create_consumer(OrderedConfig {
                    deliver_subject: self.client.new_inbox(),
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
                let pending = message.info().map_err(|e| unavailable("scan", e))?.pending;
                if let Some(key) = message.subject.as_str().strip_prefix(&store.prefix) {
                    out.push((
                        key.to_owned(),
                        op_of(message.headers.as_ref()),
                        message.payload.to_vec(),
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

    /// The key's state at its last message: `(revision, current version,
    /// deleted, key created_at)`, reading the history only for a marker that
    /// carries no record.
    async fn head(
        &self,
        store: &kv::Store,
        key: &str,
    ) -> Result<(u64, Option<(u64, bool, i64)>), StoreError> {
        let Some(last) = self.last_entry(store, key).await? else {
            return Ok((0, None));
        };
        let current = match (last.op, &last.record) {
            (Op::Purge, _) => None,
            (op, Some(r)) => Some((r.version, op == Op::Delete, r.key_created_at)),
            (_, None) => {
                let state = State::from_history(&self.history(store, key).await?);
                state
                    .current
                    .map(|(v, deleted)| (v, deleted, state.key_created_at))
            }
        };
        Ok((last.revision, current))
    }
}

impl Backend for NatsBackend {
    async fn close(&self) {
        if self.connected().is_ok() {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, self.client.flush()).await;
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let b = self.buckets().await?;
        b.secrets
            .stream
            .get_info()
            .await
            .map(|_| ())
            .map_err(|e| unavailable("ping", e))
    }

    async fn get(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        version: Option<u64>,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let b = self.buckets().await?;
        let kv_key = tenant_key(tenant, key.as_str());
        let last = self.last_entry(&b.secrets, &kv_key).await?;
        let live = last.filter(|e| e.op == Op::Put).and_then(|e| e.record);
        match (version, live) {
            (None, live) => Ok(live.map(Record::stored)),
            (Some(n), Some(r)) if r.version == n => Ok(Some(r.stored())),
            (Some(n), _) => {
                let state = State::from_history(&self.history(&b.secrets, &kv_key).await?);
                Ok(match state.versions.get(&n) {
                    Some((_, false, Some(r))) => Some(r.clone().stored()),
                    _ => None,
                })
            }
        }
    }

    async fn put(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        precondition: Precondition,
        sealer: Sealer,
        hook: Hook,
    ) -> Result<u64, StoreError> {
        let mut hook = Some(hook);
        let b = self.buckets().await?;
        let kv_key = tenant_key(tenant, key.as_str());
        for _ in 0..MAX_ATTEMPTS {
            let (revision, current) = self.head(&b.secrets, &kv_key).await?;
            let live = current.filter(|c| !c.1).map(|c| c.0);
            precondition.check(live)?;
            let version = current.map_or(1, |c| c.0 + 1);
            let now = now_ms();
            let record = Record {
                version,
                created_at: now,
                key_created_at: current.map_or(now, |c| c.2),
                written_at: now,
                sealed: sealer(version)?,
            };
            // The audit line is written before the first attempt; a retry after
            // a lost race does not write it again.
            if let Some(hook) = hook.take() {
                hook().await?;
            }
            match self
                .publish(&b.secrets, &kv_key, revision, Op::Put, record.encode())
                .await?
            {
                Written::Ok => return Ok(version),
                Written::Conflict => continue,
            }
        }
        Err(StoreError::Unavailable(
            "nats put: too many concurrent writers on one key".into(),
        ))
    }

    async fn delete(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        precondition: Precondition,
        hook: Hook,
    ) -> Result<(), StoreError> {
        let mut hook = Some(hook);
        let b = self.buckets().await?;
        let kv_key = tenant_key(tenant, key.as_str());
        for _ in 0..MAX_ATTEMPTS {
            let Some(last) = self.last_entry(&b.secrets, &kv_key).await? else {
                return Err(StoreError::NotFound);
            };
            let Some(mut record) = last.record.filter(|_| last.op == Op::Put) else {
                return Err(StoreError::NotFound);
            };
            precondition.check(Some(record.version))?;
            record.written_at = now_ms();
            // The audit line is written before the first attempt; a retry after
            // a lost race does not write it again.
            if let Some(hook) = hook.take() {
                hook().await?;
            }
            match self
                .publish(
                    &b.secrets,
                    &kv_key,
                    last.revision,
                    Op::Delete,
                    record.encode(),
                )
                .await?
            {
                Written::Ok => return Ok(()),
                Written::Conflict => continue,
            }
        }
        Err(StoreError::Unavailable(
            "nats delete: too many concurrent writers on one key".into(),
        ))
    }

    async fn undelete(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        hook: Hook,
    ) -> Result<(), StoreError> {
        let mut hook = Some(hook);
        let b = self.buckets().await?;
        let kv_key = tenant_key(tenant, key.as_str());
        for _ in 0..MAX_ATTEMPTS {
            let Some(last) = self.last_entry(&b.secrets, &kv_key).await? else {
                return Err(StoreError::NotFound);
            };
            if last.op != Op::Delete {
                return Err(StoreError::NotFound);
            }
            let record = match last.record {
                Some(r) => Some(r),
                None => State::from_history(&self.history(&b.secrets, &kv_key).await?).last_put(),
            };
            let Some(mut record) = record else {
                return Err(StoreError::NotFound);
            };
            record.written_at = now_ms();
            // The audit line is written before the first attempt; a retry after
            // a lost race does not write it again.
            if let Some(hook) = hook.take() {
                hook().await?;
            }
            match self
                .publish(&b.secrets, &kv_key, last.revision, Op::Put, record.encode())
                .await?
            {
                Written::Ok => return Ok(()),
                Written::Conflict => continue,
            }
        }
        Err(StoreError::Unavailable(
            "nats undelete: too many concurrent writers on one key".into(),
        ))
    }

    async fn destroy(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        hook: Hook,
    ) -> Result<(), StoreError> {
        let mut hook = Some(hook);
        let b = self.buckets().await?;
        let kv_key = tenant_key(tenant, key.as_str());
        for _ in 0..MAX_ATTEMPTS {
            let last = match self.last_entry(&b.secrets, &kv_key).await? {
                Some(e) if e.op != Op::Purge => e,
                _ => return Err(StoreError::NotFound),
            };
            // The audit line is written before the first attempt; a retry after
            // a lost race does not write it again.
            if let Some(hook) = hook.take() {
                hook().await?;
            }
            match self
                .publish(&b.secrets, &kv_key, last.revision, Op::Purge, Vec::new())
                .await?
            {
                Written::Ok => return Ok(()),
                Written::Conflict => continue,
            }
        }
        Err(StoreError::Unavailable(
            "nats destroy: too many concurrent writers on one key".into(),
        ))
    }

    async fn metadata(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
    ) -> Result<Option<SecretMetadata>, StoreError> {
        let b = self.buckets().await?;
        let kv_key = tenant_key(tenant, key.as_str());
        let state = State::from_history(&self.history(&b.secrets, &kv_key).await?);
        let Some((current_version, deleted)) = state.current else {
            return Ok(None);
        };
        Ok(Some(SecretMetadata {
            current_version,
            created_at: state.key_created_at,
            updated_at: state.updated_at,
            deleted,
            versions: state
                .versions
                .iter()
                .map(|(&version, &(created_at, deleted, _))| VersionInfo {
                    version,
                    created_at,
                    deleted,
                })
                .collect(),
        }))
    }

    async fn list(
        &self,
        tenant: &TenantId,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ListedSecret>, StoreError> {
        let b = self.buckets().await?;
        let tenant_hex = hex(tenant.as_str().as_bytes());
        let mut keys: Vec<String> = self
            .scan_last(&b.secrets, &format!("{tenant_hex}.>"), true)
            .await?
            .into_iter()
            .filter(|(_, op, _)| *op == Op::Put)
            .filter_map(|(k, _, _)| {
                k.strip_prefix(&tenant_hex)
                    .and_then(|k| k.strip_prefix('.'))
                    .map(str::to_owned)
            })
            .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
            .collect();
        keys.sort_unstable();
        let mut rows = Vec::with_capacity(limit.min(keys.len()));
        for name in keys {
            if rows.len() >= limit {
                break;
            }
            // The scan loaded no values; the latest record gives the numbers
            // (and skips a key deleted since the scan).
            let Some(entry) = self
                .last_entry(&b.secrets, &format!("{tenant_hex}.{name}"))
                .await?
            else {
                continue;
            };
            if let (Op::Put, Some(r)) = (entry.op, entry.record) {
                rows.push(ListedSecret {
                    key: name,
                    version: r.version,
                    created_at: r.key_created_at,
                    updated_at: r.written_at,
                });
            }
        }
        Ok(rows)
    }

    async fn deks(&self, tenant: &TenantId) -> Result<Vec<WrappedDek>, StoreError> {
        let b = self.buckets().await?;
        let tenant_hex = hex(tenant.as_str().as_bytes());
        let mut deks = Vec::new();
        for (key, op, payload) in self
            .scan_last(&b.deks, &format!("{tenant_hex}.>"), false)
            .await?
        {
            if op != Op::Put {
                continue;
            }
            let id = key
                .strip_prefix(&tenant_hex)
                .and_then(|k| k.strip_prefix('.'))
                .and_then(|id| id.parse::<u32>().ok())
                .ok_or_else(|| StoreError::Corrupt("data key with a bad id".into()))?;
            deks.push(WrappedDek {
                id,
                wrapped: without_format("data key", &payload)?,
            });
        }
        deks.sort_by_key(|d| d.id);
        Ok(deks)
    }

    async fn add_dek(&self, tenant: &TenantId, dek: WrappedDek) -> Result<bool, StoreError> {
        let b = self.buckets().await?;
        let key = tenant_key(tenant, &dek.id.to_string());
        match self
            .publish(&b.deks, &key, 0, Op::Put, with_format(&dek.wrapped))
            .await?
        {
            Written::Ok => Ok(true),
            Written::Conflict => Ok(false),
        }
    }

    async fn apikey_insert(&self, record: ApiKeyRecord, hook: Hook) -> Result<(), StoreError> {
        let mut hook = Some(hook);
        let b = self.buckets().await?;
        if !is_kv_key(&record.id) {
            return Err(StoreError::Unavailable(
                "nats: api key id outside the key alphabet".into(),
            ));
        }
        // The audit line is written before the first attempt; a retry after
        // a lost race does not write it again.
        if let Some(hook) = hook.take() {
            hook().await?;
        }
        match self
            .publish(&b.apikeys, &record.id, 0, Op::Put, encode_apikey(&record))
            .await?
        {
            Written::Ok => Ok(()),
            Written::Conflict => Err(StoreError::Unavailable(
                "nats: api key id already exists".into(),
            )),
        }
    }

    async fn apikey_get(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let b = self.buckets().await?;
        if !is_kv_key(id) {
            return Ok(None);
        }
        match self.last(&b.apikeys, id).await? {
            Some(m) if op_of(Some(&m.headers)) == Op::Put => {
                decode_apikey(id, &m.payload).map(Some)
            }
            _ => Ok(None),
        }
    }

    async fn apikey_list(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let b = self.buckets().await?;
        let mut keys = Vec::new();
        for (id, op, payload) in self.scan_last(&b.apikeys, ">", false).await? {
            if op != Op::Put {
                continue;
            }
            let record = decode_apikey(&id, &payload)?;
            if record.tenant == *tenant && record.revoked_at.is_none() {
                keys.push(record);
            }
        }
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    async fn apikey_revoke(
        &self,
        tenant: &TenantId,
        id: &str,
        at: i64,
        hook: Hook,
    ) -> Result<(), StoreError> {
        let mut hook = Some(hook);
        let b = self.buckets().await?;
        if !is_kv_key(id) {
            return Err(StoreError::NotFound);
        }
        for _ in 0..MAX_ATTEMPTS {
            let Some(m) = self.last(&b.apikeys, id).await? else {
                return Err(StoreError::NotFound);
            };
            if op_of(Some(&m.headers)) != Op::Put {
                return Err(StoreError::NotFound);
            }
            let mut record = decode_apikey(id, &m.payload)?;
            if record.tenant != *tenant || record.revoked_at.is_some() {
                return Err(StoreError::NotFound);
            }
            record.revoked_at = Some(at);
            // The audit line is written before the first attempt; a retry after
            // a lost race does not write it again.
            if let Some(hook) = hook.take() {
                hook().await?;
            }
            match self
                .publish(&b.apikeys, id, m.sequence, Op::Put, encode_apikey(&record))
                .await?
            {
                Written::Ok => return Ok(()),
                Written::Conflict => continue,
            }
        }
        Err(StoreError::Unavailable(
            "nats revoke: too many concurrent writers on one key".into(),
        ))
    }

    async fn apikey_touch(&self, uses: Vec<(String, i64)>) -> Result<(), StoreError> {
        let b = self.buckets().await?;
        for (id, at) in uses {
            if !is_kv_key(&id) {
                continue;
            }
            for _ in 0..MAX_ATTEMPTS {
                let Some(m) = self.last(&b.apikeys, &id).await? else {
                    break;
                };
                if op_of(Some(&m.headers)) != Op::Put {
                    break;
                }
                let mut record = decode_apikey(&id, &m.payload)?;
                if record.last_used_at.is_some_and(|t| t >= at) {
                    break;
                }
                record.last_used_at = Some(at);
                match self
                    .publish(&b.apikeys, &id, m.sequence, Op::Put, encode_apikey(&record))
                    .await?
                {
                    Written::Ok => break,
                    Written::Conflict => continue,
                }
            }
        }
        Ok(())
    }

    async fn apikeys_exist(&self) -> Result<bool, StoreError> {
        let b = self.buckets().await?;
        let info = b
            .apikeys
            .stream
            .get_info()
            .await
            .map_err(|e| unavailable("bucket info", e))?;
        Ok(info.state.messages > 0)
    }

    async fn meta_init(&self, name: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let b = self.buckets().await?;
        if !is_kv_key(name) {
            return Err(StoreError::Unavailable(
                "nats: meta name outside the key alphabet".into(),
            ));
        }
        for _ in 0..MAX_ATTEMPTS {
            let last = self.last(&b.meta, name).await?;
            let revision = match &last {
                Some(m) if op_of(Some(&m.headers)) == Op::Put => {
                    return without_format("meta value", &m.payload)
                }
                Some(m) => m.sequence,
                None => 0,
            };
            match self
                .publish(&b.meta, name, revision, Op::Put, with_format(&value))
                .await?
            {
                Written::Ok => return Ok(value),
                Written::Conflict => continue,
            }
        }
        Err(StoreError::Unavailable(
            "nats meta: too many concurrent writers".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = Record {
            version: 7,
            created_at: -1,
            key_created_at: 2,
            written_at: 3,
            sealed: b"sealed".to_vec(),
        };
        let back = Record::decode(&r.encode()).unwrap();
        assert_eq!(
            (
                back.version,
                back.created_at,
                back.key_created_at,
                back.written_at
            ),
            (7, -1, 2, 3)
        );
        assert_eq!(back.sealed, b"sealed");
        assert!(Record::decode(&[2; 40]).is_err());
        assert!(Record::decode(&[1; 10]).is_err());
    }

    #[test]
    fn tenant_keys_are_unambiguous() {
        let t = TenantId::parse("a.b").unwrap();
        assert_eq!(tenant_key(&t, "x/y"), "612e62.x/y");
        assert_eq!(unhex("612e62").unwrap(), b"a.b");
    }

    #[test]
    fn history_marks_deleted_versions() {
        let rec = |v: u64| Record {
            version: v,
            created_at: v as i64,
            key_created_at: 1,
            written_at: v as i64,
            sealed: vec![],
        };
        let e = |revision, op, r: Option<Record>| Entry {
            revision,
            op,
            record: r,
            time_ms: 0,
        };
        let s = State::from_history(&[
            e(1, Op::Put, Some(rec(1))),
            e(2, Op::Put, Some(rec(2))),
            e(3, Op::Delete, Some(rec(2))),
            e(4, Op::Put, Some(rec(3))),
        ]);
        let flags: Vec<_> = s.versions.iter().map(|(v, x)| (*v, x.1)).collect();
        assert_eq!(flags, [(1, false), (2, true), (3, false)]);
        assert_eq!(s.current, Some((3, false)));
        let s = State::from_history(&[e(5, Op::Delete, Some(rec(4))), e(6, Op::Put, Some(rec(4)))]);
        assert_eq!(s.current, Some((4, false)));
        assert!(!s.versions[&4].1);
        let s = State::from_history(&[e(1, Op::Put, Some(rec(1))), e(2, Op::Purge, None)]);
        assert!(s.current.is_none() && s.versions.is_empty());
    }
}
