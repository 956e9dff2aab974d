//! Everything but secrets on the nats engine, as records
//! (`store::records`): meta values in `<bucket>_meta` under their name, data
//! keys in `<bucket>_deks` under `<hex tenant>.<id>`, API keys in
//! `<bucket>_apikeys` under their id, policies and roles in
//! `<bucket>_policies` and `<bucket>_roles` under `<hex tenant>.<name>`,
//! tokens in `<bucket>_tokens` under their hash; and the watch that tells a
//! gateway which of them anyone changed. The key layout, and the format byte before
//! a meta value or a data key, are the ones this engine has always written.

use std::time::Duration;

use async_nats::jetstream::kv::Store as Bucket;
use futures_util::StreamExt;

use super::connection::Buckets;
use super::kv::{self, Publish};
use super::records::{
    is_kv_key, op_of, split_tenant_key, tenant_key, with_format, without_format, Op,
};
use super::NatsBackend;
use crate::store::engine::WriteError;
use crate::store::lines::LineBody;
use crate::store::records::{dek_id, named_id, parse_dek_id, parse_named_id, Kind, Record};
use crate::store::StoreError;

fn bucket(b: &Buckets, kind: Kind) -> &Bucket {
    match kind {
        Kind::Meta => &b.meta,
        Kind::Dek => &b.deks,
        Kind::ApiKey => &b.apikeys,
        Kind::Policy => &b.policies,
        Kind::Role => &b.roles,
        Kind::Token => &b.tokens,
        Kind::LoginState => &b.login_states,
    }
}

/// The KV key of record `id`; `None` for an id this engine cannot store
/// (outside the KV key alphabet), which is then simply absent.
fn kv_key(kind: Kind, id: &str) -> Option<String> {
    match kind {
        Kind::Dek => {
            let (tenant, n) = parse_dek_id(id).ok()?;
            Some(tenant_key(&tenant, &n.to_string()))
        }
        Kind::Policy | Kind::Role => {
            let (tenant, name) = parse_named_id(id)?;
            let key = tenant_key(&tenant, name);
            is_kv_key(&key).then_some(key)
        }
        _ => is_kv_key(id).then(|| id.to_owned()),
    }
}

/// The record id a KV key stores.
fn record_id(kind: Kind, key: &str) -> Result<String, StoreError> {
    match kind {
        Kind::Dek => split_tenant_key(key)
            .and_then(|(tenant, n)| Some(dek_id(&tenant, n.parse().ok()?)))
            .ok_or_else(|| StoreError::Corrupt("data key with a bad name".into())),
        Kind::Policy | Kind::Role => split_tenant_key(key)
            .map(|(tenant, name)| named_id(&tenant, name))
            .ok_or_else(|| StoreError::Corrupt(format!("a {} with a bad name", kind.name()))),
        _ => Ok(key.to_owned()),
    }
}

fn encode(kind: Kind, value: &[u8]) -> Vec<u8> {
    match kind {
        // These encodings begin with their own format byte.
        Kind::ApiKey | Kind::Policy | Kind::Role | Kind::Token | Kind::LoginState => value.to_vec(),
        _ => with_format(value),
    }
}

fn decode(kind: Kind, payload: &[u8]) -> Result<Vec<u8>, StoreError> {
    match kind {
        Kind::ApiKey | Kind::Policy | Kind::Role | Kind::Token | Kind::LoginState => {
            Ok(payload.to_vec())
        }
        Kind::Meta => without_format("meta value", payload),
        Kind::Dek => without_format("data key", payload),
    }
}

pub(super) async fn get(
    backend: &NatsBackend,
    kind: Kind,
    id: &str,
) -> Result<Option<Record>, StoreError> {
    let b = backend.conn.buckets().await?;
    let Some(key) = kv_key(kind, id) else {
        return Ok(None);
    };
    match kv::last(bucket(b, kind), &key).await? {
        Some(m) if op_of(Some(&m.headers)) == Op::Put => Ok(Some(Record {
            id: id.to_owned(),
            value: decode(kind, &m.payload)?,
            revision: m.sequence,
        })),
        _ => Ok(None),
    }
}

pub(super) async fn scan(
    backend: &NatsBackend,
    kind: Kind,
    prefix: &str,
) -> Result<Vec<Record>, StoreError> {
    let b = backend.conn.buckets().await?;
    // One tenant's data keys are one subject prefix; the server filters.
    let filter = match (kind, prefix.strip_suffix('/')) {
        (Kind::Dek | Kind::Policy | Kind::Role, Some(tenant)) if !tenant.contains('/') => {
            format!("{}.>", hex::encode(tenant))
        }
        _ => ">".to_owned(),
    };
    let mut found = Vec::new();
    for (key, op, payload, revision) in
        kv::scan_last_sequenced(&backend.conn.client, bucket(b, kind), &filter, false).await?
    {
        if op != Op::Put {
            continue;
        }
        let id = record_id(kind, &key)?;
        if id.starts_with(prefix) {
            let value = decode(kind, &payload)?;
            found.push(Record {
                id,
                value,
                revision,
            });
        }
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

/// One compare-and-set against the key's last message (`value` `None`: a
/// delete marker); a change with a line goes through `NatsBackend::change`
/// (intent, publish, line).
pub(super) async fn put(
    backend: &NatsBackend,
    kind: Kind,
    id: &str,
    expected: u64,
    value: Option<&[u8]>,
    line: Option<LineBody>,
) -> Result<u64, WriteError> {
    let b = backend.conn.buckets().await?;
    let store = bucket(b, kind);
    let Some(key) = kv_key(kind, id) else {
        return Err(StoreError::Unavailable(format!(
            "nats: a {} id outside the key alphabet",
            kind.name()
        ))
        .into());
    };
    // "No record" may still be a key whose last message is a delete.
    let expected = match expected {
        0 => match kv::last(store, &key).await? {
            Some(m) if op_of(Some(&m.headers)) == Op::Put => return Err(WriteError::Conflict),
            Some(m) => m.sequence,
            None => 0,
        },
        revision => revision,
    };
    let message = match value {
        Some(value) => Publish {
            key: &key,
            expected,
            op: Op::Put,
            payload: encode(kind, value),
        },
        // Removing what is not there is a lost race, as on sqlite.
        None if expected == 0 => return Err(WriteError::Conflict),
        None => Publish {
            key: &key,
            expected,
            op: Op::Delete,
            payload: Vec::new(),
        },
    };
    let published = match line {
        Some(line) => backend.change(store, message, Some(line), None).await,
        None => kv::publish(&backend.conn.js, store, message, None).await,
    };
    published.map_err(|e| match e {
        WriteError::Stale(_) => WriteError::Conflict,
        other => other,
    })
}

/// Sends `(kind, id)` of every record of `kind` written (by any gateway or
/// the CLI) from now on, until `tx` closes. The watch is an ordered
/// consumer; when it fails (NATS down, a leader change) it is made again. A
/// change missed meanwhile still lapses with the caches' TTL.
pub(super) async fn watch(
    backend: &NatsBackend,
    kind: Kind,
    tx: tokio::sync::mpsc::Sender<(Kind, String)>,
) {
    while !tx.is_closed() {
        if let Ok(b) = backend.conn.buckets().await {
            match bucket(b, kind).watch_all().await {
                Ok(mut watch) => {
                    while let Some(entry) = watch.next().await {
                        match entry {
                            Ok(entry) => {
                                let Ok(id) = record_id(kind, &entry.key) else {
                                    continue;
                                };
                                if tx.send((kind, id)).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, kind = kind.name(), "record watch failed; watching again");
                                break;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, kind = kind.name(), "cannot watch records; trying again")
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
