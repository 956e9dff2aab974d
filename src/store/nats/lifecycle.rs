//! Key rotation and backup on the nats engine: compare-and-set updates of
//! wrapped keys and meta values, a dump that reads every bucket (not one
//! instant: JetStream has no snapshot across subjects), and a load that
//! writes each secret's versions in order. Reseal is refused: a key's
//! history in JetStream cannot be rewritten in place.

use std::collections::BTreeMap;

use async_nats::jetstream::consumer::{push::OrderedConfig, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::kv;
use futures_util::{StreamExt, TryStreamExt};

use super::kv::{self as kvops, Publish};
use super::records::{
    decode_apikey, encode_apikey, is_kv_key, op_of, tenant_key, with_format, without_format, Entry,
    Op, Record, State,
};
use super::{unavailable, NatsBackend, REQUEST_TIMEOUT};
use crate::store::dump::{
    is_local_meta, not_empty, Dumped, DumpedVersion, LoadCounts, Records, SecretDump, Sink,
};
use crate::store::engine::WriteError;
use crate::store::model::WrappedDek;
use crate::store::StoreError;
use crate::types::TenantId;

/// Secrets written at once by a load.
const LOAD_CONCURRENCY: usize = 64;

/// Splits a `<hex tenant>.<rest>` KV key.
pub(super) fn split_tenant_key(key: &str) -> Option<(TenantId, &str)> {
    let (hex_tenant, rest) = key.split_once('.')?;
    let tenant = String::from_utf8(hex::decode(hex_tenant).ok()?).ok()?;
    Some((TenantId::parse(&tenant).ok()?, rest))
}

pub(super) async fn all_deks(
    backend: &NatsBackend,
) -> Result<Vec<(TenantId, WrappedDek)>, StoreError> {
    let b = backend.conn.buckets().await?;
    let mut deks = Vec::new();
    for (key, op, payload) in kvops::scan_last(&backend.conn.client, &b.deks, ">", false).await? {
        if op != Op::Put {
            continue;
        }
        let (tenant, id) = split_tenant_key(&key)
            .and_then(|(t, id)| Some((t, id.parse::<u32>().ok()?)))
            .ok_or_else(|| StoreError::Corrupt("data key with a bad name".into()))?;
        let wrapped = without_format("data key", &payload)?;
        deks.push((tenant, WrappedDek { id, wrapped }));
    }
    deks.sort_by(|a, b| (a.0.as_str(), a.1.id).cmp(&(b.0.as_str(), b.1.id)));
    Ok(deks)
}

/// Writes `new` over `key` if its last message is a put of `old` (`None`:
/// no live value).
async fn replace(
    backend: &NatsBackend,
    store: &kv::Store,
    key: &str,
    old: Option<&[u8]>,
    new: &[u8],
) -> Result<bool, StoreError> {
    let last = kvops::last(store, key).await?;
    let expected = match (&last, old) {
        (Some(m), Some(old))
            if op_of(Some(&m.headers)) == Op::Put && m.payload[..] == with_format(old)[..] =>
        {
            m.sequence
        }
        (Some(m), None) if op_of(Some(&m.headers)) != Op::Put => m.sequence,
        (None, None) => 0,
        _ => return Ok(false),
    };
    let message = Publish {
        key,
        expected,
        op: Op::Put,
        payload: with_format(new),
    };
    match kvops::publish(&backend.conn.js, store, message, None).await {
        Ok(_) => Ok(true),
        Err(WriteError::Conflict | WriteError::Stale(_)) => Ok(false),
        Err(WriteError::Failed(e)) => Err(e),
    }
}

pub(super) async fn replace_dek(
    backend: &NatsBackend,
    tenant: &TenantId,
    id: u32,
    old: &[u8],
    new: &[u8],
) -> Result<bool, StoreError> {
    let b = backend.conn.buckets().await?;
    let key = tenant_key(tenant, &id.to_string());
    replace(backend, &b.deks, &key, Some(old), new).await
}

pub(super) async fn meta_replace(
    backend: &NatsBackend,
    name: &str,
    old: Option<&[u8]>,
    new: &[u8],
) -> Result<bool, StoreError> {
    let b = backend.conn.buckets().await?;
    if !is_kv_key(name) {
        return Err(StoreError::Unavailable(
            "nats: meta name outside the key alphabet".into(),
        ));
    }
    replace(backend, &b.meta, name, old, new).await
}

pub(super) fn reseal_refused() -> StoreError {
    StoreError::Refused(
        "reseal needs the embedded store: JetStream keeps each key's history as it was written. \
         To reseal a nats store, migrate it to sqlite, reseal there, and migrate it back"
            .into(),
    )
}

/// Every message of the secrets bucket in stream order, grouped by key.
async fn secret_histories(
    backend: &NatsBackend,
    store: &kv::Store,
) -> Result<BTreeMap<String, Vec<Entry>>, StoreError> {
    let consumer = store
        .stream
        .create_consumer(OrderedConfig {
            deliver_subject: backend.conn.client.new_inbox(),
            description: Some("strongroom backup".into()),
            filter_subject: format!("{}>", store.prefix),
            replay_policy: ReplayPolicy::Instant,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable("backup", e))?;
    let mut keys: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(keys);
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| unavailable("backup", e))?;
    loop {
        let next = tokio::time::timeout(REQUEST_TIMEOUT, messages.next()).await;
        let message = match next {
            Ok(Some(m)) => m.map_err(|e| unavailable("backup", e))?,
            Ok(None) => return Err(StoreError::Unavailable("nats backup: ended early".into())),
            Err(_) => return Err(StoreError::Unavailable("nats backup: timed out".into())),
        };
        let info = message.info().map_err(|e| unavailable("backup", e))?;
        let (sequence, pending) = (info.stream_sequence, info.pending);
        let time_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
        if let Some(key) = message.subject.as_str().strip_prefix(&store.prefix) {
            let entry = Entry::from_parts(
                sequence,
                message.headers.as_ref(),
                &message.payload,
                time_ms,
            )?;
            keys.entry(key.to_owned()).or_default().push(entry);
        }
        if pending == 0 {
            return Ok(keys);
        }
    }
}

pub(super) async fn dump(backend: &NatsBackend, sink: Sink<'_>) -> Result<(), StoreError> {
    let b = backend.conn.buckets().await?;
    let mut emit = |record| sink(record).map_err(StoreError::Refused);
    let client = &backend.conn.client;
    let mut meta = kvops::scan_last(client, &b.meta, ">", false).await?;
    meta.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, op, payload) in meta {
        if op == Op::Put && !is_local_meta(&name) {
            let value = without_format("meta value", &payload)?;
            emit(Dumped::Meta { name, value })?;
        }
    }
    for (tenant, dek) in all_deks(backend).await? {
        emit(Dumped::Dek { tenant, dek })?;
    }
    let mut apikeys = kvops::scan_last(client, &b.apikeys, ">", false).await?;
    apikeys.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, op, payload) in apikeys {
        if op == Op::Put {
            emit(Dumped::ApiKey(decode_apikey(&id, &payload)?))?;
        }
    }
    let mut secrets = Vec::new();
    for (kv_key, entries) in secret_histories(backend, &b.secrets).await? {
        let state = State::from_history(&entries);
        let Some(head) = state.head.clone() else {
            continue;
        };
        let (tenant, key) = split_tenant_key(&kv_key)
            .ok_or_else(|| StoreError::Corrupt("secret with a bad name".into()))?;
        let versions = state
            .versions
            .into_iter()
            .filter_map(|(version, (created_at, deleted, record))| {
                let record = record?;
                Some(DumpedVersion {
                    version,
                    created_at,
                    deleted,
                    expires_at: record.expires_at,
                    sealed: record.sealed,
                })
            })
            .collect();
        secrets.push(SecretDump {
            tenant,
            key: key.to_owned(),
            head,
            versions,
        });
    }
    // (tenant, key) order, as the embedded engine gives it.
    secrets.sort_by(|a, b| (a.tenant.as_str(), &a.key).cmp(&(b.tenant.as_str(), &b.key)));
    for secret in secrets {
        emit(Dumped::Secret(secret))?;
    }
    Ok(())
}

/// The messages that give a secret its versions, deleted flags and head:
/// each version put in order, a delete marker after each deleted one.
async fn load_secret(
    backend: &NatsBackend,
    store: &kv::Store,
    s: SecretDump,
) -> Result<(), StoreError> {
    let kv_key = tenant_key(&s.tenant, &s.key);
    let mut expected = 0;
    let last = s.versions.len().saturating_sub(1);
    for (i, v) in s.versions.into_iter().enumerate() {
        let record = Record {
            version: v.version,
            created_at: v.created_at,
            key_created_at: s.head.key_created_at,
            written_at: if i == last {
                s.head.updated_at
            } else {
                v.created_at
            },
            sealed: v.sealed,
            expires_at: v.expires_at,
        };
        let mut ops = vec![Op::Put];
        if v.deleted {
            ops.push(Op::Delete);
        }
        for op in ops {
            let message = Publish {
                key: &kv_key,
                expected,
                op,
                payload: record.encode(),
            };
            expected = kvops::publish(&backend.conn.js, store, message, None)
                .await
                .map_err(|e| match e {
                    WriteError::Failed(e) => e,
                    _ => StoreError::Refused(format!(
                        "{} changed while it was being restored",
                        s.key
                    )),
                })?;
        }
    }
    Ok(())
}

/// Empties the data buckets for `--force`, keeping the trail's meta values;
/// the change stream's events (of the data replaced) go too, so a watcher
/// resuming from before them gets 410.
async fn purge(backend: &NatsBackend) -> Result<(), StoreError> {
    let b = backend.conn.buckets().await?;
    for bucket in [&b.secrets, &b.deks, &b.apikeys] {
        bucket
            .stream
            .purge()
            .await
            .map_err(|e| unavailable("purge", e))?;
    }
    b.events
        .purge()
        .await
        .map_err(|e| unavailable("purge events", e))?;
    let names = kvops::scan_last(&backend.conn.client, &b.meta, ">", true).await?;
    for (name, _, _) in names {
        if !is_local_meta(&name) {
            b.meta
                .stream
                .purge()
                .filter(format!("{}{name}", b.meta.prefix))
                .await
                .map_err(|e| unavailable("purge", e))?;
        }
    }
    Ok(())
}

pub(super) async fn load(
    backend: &NatsBackend,
    records: Records,
    force: bool,
) -> Result<LoadCounts, StoreError> {
    let b = backend.conn.buckets().await?;
    let mut holds = false;
    for bucket in [&b.secrets, &b.deks, &b.apikeys] {
        let info = bucket
            .stream
            .get_info()
            .await
            .map_err(|e| unavailable("bucket info", e))?;
        holds |= info.state.messages > 0;
    }
    if holds && !force {
        return Err(not_empty());
    }
    if holds {
        purge(backend).await?;
    }
    let mut counts = LoadCounts::default();
    let mut records = records.peekable();
    while records.peek().is_some() {
        // Secrets a chunk at a time, written concurrently; the rest as read.
        let mut chunk = Vec::new();
        for record in records.by_ref() {
            let record = record.map_err(StoreError::Refused)?;
            counts.count(&record);
            match record {
                Dumped::Secret(s) => {
                    chunk.push(s);
                    if chunk.len() == 1024 {
                        break;
                    }
                }
                Dumped::Meta { name, value } => {
                    if !replace(backend, &b.meta, &name, None, &value).await? {
                        let stored = kvops::last(&b.meta, &name).await?;
                        let old = stored
                            .map(|m| without_format("meta value", &m.payload))
                            .transpose()?;
                        replace(backend, &b.meta, &name, old.as_deref(), &value).await?;
                    }
                }
                Dumped::Dek { tenant, dek } => {
                    let key = tenant_key(&tenant, &dek.id.to_string());
                    if !replace(backend, &b.deks, &key, None, &dek.wrapped).await? {
                        return Err(StoreError::Refused("a data key was written twice".into()));
                    }
                }
                Dumped::ApiKey(r) => {
                    b.apikeys
                        .put(&r.id, encode_apikey(&r).into())
                        .await
                        .map_err(|e| unavailable("restore api key", e))?;
                }
            }
        }
        futures_util::stream::iter(chunk.into_iter().map(Ok))
            .try_for_each_concurrent(LOAD_CONCURRENCY, |s| load_secret(backend, &b.secrets, s))
            .await?;
    }
    Ok(counts)
}
