//! Everything but secrets on the nats engine: data keys in `<bucket>_deks`
//! under `<hex tenant>.<id>` (create only), API keys in `<bucket>_apikeys`
//! under their id, meta values in `<bucket>_meta` under their name, and the
//! watch that tells a gateway which API keys anyone changed.

use std::time::Duration;

use futures_util::StreamExt;

use super::kv::{self, Publish};
use super::records::{
    decode_apikey, encode_apikey, is_kv_key, op_of, tenant_key, with_format, without_format, Op,
};
use super::{unavailable, NatsBackend};
use crate::store::engine::WriteError;
use crate::store::lines::LineBody;
use crate::store::model::{ApiKeyChange, ApiKeyRecord, WrappedDek};
use crate::store::StoreError;
use crate::types::TenantId;

pub(super) async fn deks(
    backend: &NatsBackend,
    tenant: &TenantId,
) -> Result<Vec<WrappedDek>, StoreError> {
    let b = backend.conn.buckets().await?;
    let tenant_hex = hex::encode(tenant.as_str());
    let mut deks = Vec::new();
    for (key, op, payload) in kv::scan_last(
        &backend.conn.client,
        &b.deks,
        &format!("{tenant_hex}.>"),
        false,
    )
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

pub(super) async fn add_dek(
    backend: &NatsBackend,
    tenant: &TenantId,
    dek: WrappedDek,
) -> Result<bool, StoreError> {
    let b = backend.conn.buckets().await?;
    let key = tenant_key(tenant, &dek.id.to_string());
    let create = Publish {
        key: &key,
        expected: 0,
        op: Op::Put,
        payload: with_format(&dek.wrapped),
    };
    match kv::publish(&backend.conn.js, &b.deks, create, None).await {
        Ok(_) => Ok(true),
        Err(WriteError::Conflict) => Ok(false),
        Err(WriteError::Stale(_)) => unreachable!("a publish is never stale"),
        Err(WriteError::Failed(e)) => Err(e),
    }
}

pub(super) async fn insert(
    backend: &NatsBackend,
    record: ApiKeyRecord,
    line: Option<LineBody>,
) -> Result<(), StoreError> {
    let b = backend.conn.buckets().await?;
    if !is_kv_key(&record.id) {
        return Err(StoreError::Unavailable(
            "nats: api key id outside the key alphabet".into(),
        ));
    }
    let create = Publish {
        key: &record.id,
        expected: 0,
        op: Op::Put,
        payload: encode_apikey(&record),
    };
    match backend.change(&b.apikeys, create, line, None).await {
        Ok(_) => Ok(()),
        Err(WriteError::Failed(e)) => Err(e),
        Err(_) => Err(StoreError::Unavailable(
            "nats: api key id already exists".into(),
        )),
    }
}

pub(super) async fn get(
    backend: &NatsBackend,
    id: &str,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    let b = backend.conn.buckets().await?;
    if !is_kv_key(id) {
        return Ok(None);
    }
    match kv::last(&b.apikeys, id).await? {
        Some(m) if op_of(Some(&m.headers)) == Op::Put => decode_apikey(id, &m.payload).map(Some),
        _ => Ok(None),
    }
}

pub(super) async fn list(
    backend: &NatsBackend,
    tenant: &TenantId,
) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let b = backend.conn.buckets().await?;
    let mut keys = Vec::new();
    for (id, op, payload) in kv::scan_last(&backend.conn.client, &b.apikeys, ">", false).await? {
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

/// One attempt at changing a stored record against its last revision.
pub(super) async fn update(
    backend: &NatsBackend,
    id: &str,
    change: &ApiKeyChange,
    line: Option<LineBody>,
) -> Result<(), WriteError> {
    let b = backend.conn.buckets().await?;
    if !is_kv_key(id) {
        return Err(StoreError::NotFound.into());
    }
    let Some(m) = kv::last(&b.apikeys, id)
        .await?
        .filter(|m| op_of(Some(&m.headers)) == Op::Put)
    else {
        return Err(StoreError::NotFound.into());
    };
    let Some(updated) = change.apply(&decode_apikey(id, &m.payload)?)? else {
        return Ok(());
    };
    let write = Publish {
        key: id,
        expected: m.sequence,
        op: Op::Put,
        payload: encode_apikey(&updated),
    };
    backend
        .change(&b.apikeys, write, line, None)
        .await
        .map(|_| ())
}

pub(super) async fn any(backend: &NatsBackend) -> Result<bool, StoreError> {
    let b = backend.conn.buckets().await?;
    let info = b
        .apikeys
        .stream
        .get_info()
        .await
        .map_err(|e| unavailable("bucket info", e))?;
    Ok(info.state.messages > 0)
}

pub(super) async fn meta_get(
    backend: &NatsBackend,
    name: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let b = backend.conn.buckets().await?;
    if !is_kv_key(name) {
        return Ok(None);
    }
    match kv::last(&b.meta, name).await? {
        Some(m) if op_of(Some(&m.headers)) == Op::Put => {
            Ok(Some(without_format("meta value", &m.payload)?))
        }
        _ => Ok(None),
    }
}

/// One attempt at storing `value` under `name` unless set.
pub(super) async fn meta_init(
    backend: &NatsBackend,
    name: &str,
    value: &[u8],
) -> Result<Vec<u8>, WriteError> {
    let b = backend.conn.buckets().await?;
    if !is_kv_key(name) {
        return Err(
            StoreError::Unavailable("nats: meta name outside the key alphabet".into()).into(),
        );
    }
    let expected = match kv::last(&b.meta, name).await? {
        Some(m) if op_of(Some(&m.headers)) == Op::Put => {
            return Ok(without_format("meta value", &m.payload)?)
        }
        Some(m) => m.sequence,
        None => 0,
    };
    let create = Publish {
        key: name,
        expected,
        op: Op::Put,
        payload: with_format(value),
    };
    kv::publish(&backend.conn.js, &b.meta, create, None).await?;
    Ok(value.to_vec())
}

/// Sends the id of every API key written in `<bucket>_apikeys` (by any
/// gateway or the CLI) from now on, until `tx` closes. The watch is an
/// ordered consumer; when it fails (NATS down, a leader change) it is made
/// again. A change missed meanwhile still lapses with the cache TTL.
pub(super) async fn watch(backend: &NatsBackend, tx: tokio::sync::mpsc::Sender<String>) {
    while !tx.is_closed() {
        if let Ok(b) = backend.conn.buckets().await {
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
