//! Backup on the nats engine: a dump that reads every bucket (not one
//! instant: JetStream has no snapshot across subjects), and a load that
//! writes each secret's versions in order. Reseal is refused: a key's
//! history in JetStream cannot be rewritten in place.

use std::collections::BTreeMap;

use async_nats::jetstream::consumer::{push::OrderedConfig, DeliverPolicy, ReplayPolicy};
use async_nats::jetstream::kv;
use futures_util::{StreamExt, TryStreamExt};

use super::kv::{self as kvops, Publish};
use super::records::{split_tenant_key, tenant_key, Annex, Entry, Op, Record, State};
use super::{unavailable, NatsBackend, REQUEST_TIMEOUT};
use crate::store::dump::{
    is_local_meta, not_empty, Dumped, DumpedVersion, LoadCounts, Records, SecretDump, Sink,
};
use crate::store::engine::WriteError;
use crate::store::model::Mark;
use crate::store::records::{self, Kind};
use crate::store::StoreError;

/// Secrets written at once by a load.
const LOAD_CONCURRENCY: usize = 64;

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
    // Meta values, data keys and API keys, as the model reads them.
    for kind in Kind::ALL {
        for r in super::named::scan(backend, kind, "").await? {
            if let Some(record) = records::to_dumped(kind, &r.id, r.value)? {
                emit(record)?;
            }
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
        // The head's flags win for the current version, as in metadata.
        let infos = crate::store::model::SecretMetadata::from_parts(&head, state.versions(), 0);
        let versions = infos
            .versions
            .into_iter()
            .filter_map(|info| {
                // A destroyed version has no value to carry (its messages
                // may be erased); any other has its record.
                let sealed = match info.destroyed {
                    true => Vec::new(),
                    false => state
                        .versions
                        .get(&info.version)?
                        .record
                        .as_ref()?
                        .sealed
                        .clone(),
                };
                Some(DumpedVersion {
                    version: info.version,
                    created_at: info.created_at,
                    deleted: info.deleted,
                    expires_at: info.expires_at,
                    sealed,
                    deleted_at: info.deleted_at,
                    destroyed: info.destroyed,
                    kv: info.kv,
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

/// The messages that give a secret its versions, their states and head:
/// each version put in order, the last carrying the key's settings and the
/// other versions' marks (a delete marker in place of its put when it is
/// deleted).
async fn load_secret(
    backend: &NatsBackend,
    store: &kv::Store,
    s: SecretDump,
) -> Result<(), StoreError> {
    let kv_key = tenant_key(&s.tenant, &s.key);
    let mut expected = 0;
    let newest = s.versions.last().map(|v| v.version);
    // The current version's own mark only when deleted (the time it was).
    let marks: std::collections::BTreeMap<u64, Mark> = s
        .versions
        .iter()
        .filter(|v| Some(v.version) != newest || s.head.deleted)
        .filter(|v| v.deleted || v.destroyed)
        .map(|v| {
            // A destroyed version may never have been deleted; a deleted
            // one always was (a backup without the time: its creation).
            let mark = Mark {
                deleted_at: match v.destroyed {
                    true => v.deleted_at,
                    false => v.deleted_at.or(Some(v.created_at)),
                },
                destroyed: v.destroyed,
                created_at: v.created_at,
                expiry_cleared: false,
            };
            (v.version, mark)
        })
        .collect();
    let mut messages = Vec::new();
    for v in s.versions {
        let last = Some(v.version) == newest;
        let record = Record {
            version: v.version,
            created_at: v.created_at,
            key_created_at: s.head.key_created_at,
            written_at: if last {
                s.head.updated_at
            } else {
                v.created_at
            },
            sealed: v.sealed,
            expires_at: v.expires_at,
            kv: v.kv,
            destroyed: v.destroyed && last,
            annex: if last {
                Annex {
                    settings: s.head.settings.clone(),
                    marks: marks.clone(),
                    floor: 0,
                }
            } else {
                Annex::default()
            },
        };
        // A deleted (or destroyed) current version is only its marker,
        // which carries its record: one message a version, so the key's
        // history holds every version restored.
        if last && s.head.deleted {
            messages.push((Op::Delete, record.encode()));
        } else {
            messages.push((Op::Put, record.encode()));
        }
    }
    if newest.is_none() {
        // Settings before any value: a version-0 marker.
        let record = Record {
            version: 0,
            created_at: s.head.key_created_at,
            key_created_at: s.head.key_created_at,
            written_at: s.head.updated_at,
            sealed: Vec::new(),
            expires_at: None,
            kv: false,
            destroyed: false,
            annex: Annex {
                settings: s.head.settings.clone(),
                marks: Default::default(),
                floor: 0,
            },
        };
        messages.push((Op::Delete, record.encode()));
    }
    for (op, payload) in messages {
        let message = Publish {
            key: &kv_key,
            expected,
            op,
            payload,
        };
        expected = kvops::publish(&backend.conn.js, store, message, None)
            .await
            .map_err(|e| match e {
                WriteError::Failed(e) => e,
                _ => StoreError::Refused(format!("{} changed while it was being restored", s.key)),
            })?;
    }
    Ok(())
}

/// Empties the data buckets for `--force`, keeping the trail's meta values;
/// the change stream's events (of the data replaced) go too, so a watcher
/// resuming from before them gets 410.
async fn purge(backend: &NatsBackend) -> Result<(), StoreError> {
    let b = backend.conn.buckets().await?;
    for bucket in [
        &b.secrets,
        &b.deks,
        &b.apikeys,
        &b.policies,
        &b.roles,
        &b.tokens,
    ] {
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
    for bucket in [
        &b.secrets,
        &b.deks,
        &b.apikeys,
        &b.policies,
        &b.roles,
        &b.tokens,
    ] {
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
                other => {
                    let Some((kind, id, value)) = records::from_dumped(&other) else {
                        continue;
                    };
                    // A meta value replaces the target's own; a data key or
                    // API key written twice is refused.
                    let stored = match kind {
                        Kind::Meta => super::named::get(backend, kind, &id).await?,
                        _ => None,
                    };
                    let expected = stored.map_or(0, |r| r.revision);
                    match super::named::put(backend, kind, &id, expected, Some(&value), None).await
                    {
                        Ok(_) => {}
                        Err(WriteError::Failed(e)) => return Err(e),
                        Err(_) => {
                            return Err(StoreError::Refused(format!(
                                "a {} was written twice",
                                kind.name()
                            )))
                        }
                    }
                }
            }
        }
        futures_util::stream::iter(chunk.into_iter().map(Ok))
            .try_for_each_concurrent(LOAD_CONCURRENCY, |s| load_secret(backend, &b.secrets, s))
            .await?;
    }
    Ok(counts)
}
