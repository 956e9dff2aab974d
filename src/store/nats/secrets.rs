//! Secrets on the nats engine: each key is a KV subject in `<bucket>`, each
//! change one compare-and-set message against the key's last revision, and a
//! change's audit line is appended to the trail once its message is stored,
//! so the line records the outcome the request really had.
//!
//! Reads of one key go to the stream leader (`STREAM.MSG.GET`), so a read
//! after an acknowledged write sees it. Listing walks the last message per
//! subject with a headers-only ordered consumer, so no values are loaded.

use super::cache::Miss;
use super::kv::{self, Publish};
use super::messages::{erase, message, Erase};
use super::records::{tenant_key, Entry, Op, Record, State};
use super::NatsBackend;
use crate::clock::now_ms;
use crate::store::engine::{Observed, SecretWrite, Seen, WriteError};
use crate::store::events::Draft;
use crate::store::model::{
    self, Change, Lapsed, ListFilter, ListedSecret, Refusal, SecretMetadata, StoredVersion,
};
use crate::store::StoreError;
use crate::types::{SecretKey, TenantId};

/// A key's head and the record at its current version (what undelete puts
/// back and a delete marker carries), from its last message, reading the
/// history only for a marker that carries no record.
async fn observe(
    backend: &NatsBackend,
    kv_key: &str,
) -> Result<(Observed, Option<Record>), StoreError> {
    let b = backend.conn.buckets().await?;
    let Some(last) = kv::last_entry(&b.secrets, kv_key).await? else {
        return Ok((Observed::default(), None));
    };
    let revision = last.revision;
    let (head, record) = match last.head() {
        Some(head) => (head, last.record),
        None => {
            let state = State::from_history(&kv::history(&b.secrets, kv_key).await?);
            let record = state.current_record();
            (state.head, record)
        }
    };
    let (marks, floor) = record
        .as_ref()
        .map(|r| (r.annex.marks.clone(), r.annex.floor))
        .unwrap_or_default();
    Ok((
        Observed {
            head,
            revision,
            marks,
            floor,
        },
        record,
    ))
}

pub(super) async fn head(
    backend: &NatsBackend,
    tenant: &TenantId,
    key: &SecretKey,
) -> Result<Observed, StoreError> {
    observe(backend, &tenant_key(tenant, key.as_str()))
        .await
        .map(|(observed, _)| observed)
}

/// A read of the current version is answered from the gateway's cache when
/// it may be (`cache.rs`), else from the leader.
pub(super) async fn get(
    backend: &NatsBackend,
    tenant: &TenantId,
    key: &SecretKey,
    version: Option<u64>,
    min_revision: Option<u64>,
) -> Result<Option<StoredVersion>, StoreError> {
    let kv_key = tenant_key(tenant, key.as_str());
    let mut fill = None;
    if version.is_none() {
        match backend
            .cache
            .get(&backend.conn.client, &kv_key, min_revision)
        {
            Ok(hit) => return Ok(Some(hit)),
            Err(Miss::Fill(epoch)) => fill = Some(epoch),
            Err(Miss::Bypass) => {}
        }
    }
    let b = backend.conn.buckets().await?;
    let last = kv::last_entry(&b.secrets, &kv_key).await?;
    let live = last.filter(|e| e.op == Op::Put).and_then(|e| e.record);
    match (version, live) {
        (None, live) => {
            let found = live.map(Record::stored);
            if let (Some(epoch), Some(found)) = (fill, &found) {
                backend.cache.fill(epoch, &kv_key, found);
            }
            Ok(found)
        }
        (Some(n), Some(r)) if r.version == n => Ok(Some(r.stored())),
        (Some(n), _) => {
            let state = State::from_history(&kv::history(&b.secrets, &kv_key).await?);
            Ok(state.versions.get(&n).and_then(|slot| {
                let mut found = slot.live_record()?.clone().stored();
                found.expires_at = slot.expires_at();
                Some(found)
            }))
        }
    }
}

pub(super) async fn write(
    backend: &NatsBackend,
    tenant: &TenantId,
    key: &SecretKey,
    write: SecretWrite,
) -> Result<Option<u64>, WriteError> {
    let b = backend.conn.buckets().await?;
    let kv_key = tenant_key(tenant, key.as_str());
    // A put was sealed against the head `Store` read; the other changes
    // need the current record, which only a read here gives.
    let (seen, record) = match (&write.change, write.seen) {
        (Change::Put { .. }, Seen::Read(seen)) => (seen, None),
        _ => observe(backend, &kv_key).await?,
    };
    let now = now_ms();
    let retained = match &seen.head {
        Some(head) if write.change.needs_versions() => {
            let state = State::from_history(&kv::history(&b.secrets, &kv_key).await?);
            SecretMetadata::from_parts(head, state.versions(), now).versions
        }
        _ => Vec::new(),
    };
    let effect = match model::decide_in(
        seen.head.as_ref(),
        &retained,
        &write.change,
        write.precondition,
        backend.settings.max_versions.into(),
        now,
    ) {
        Ok(effect) => effect,
        Err(Refusal::Answer(e)) => return Err(WriteError::Failed(e)),
        Err(Refusal::Stale) => return Err(WriteError::Stale(Box::new(seen))),
    };
    let draft = Draft::of(
        key.as_str(),
        &write.change,
        &effect,
        seen.head.as_ref(),
        now,
    );
    let history = super::connection::secrets_history(backend.settings.max_versions) as u64;
    let gone = Erase::after(&effect, &seen, history);
    let (op, payload) = message(&seen, record, effect, write.change, now)?;
    let change = Publish {
        key: &kv_key,
        expected: seen.revision,
        op,
        payload,
    };
    let revision = backend
        .change(&b.secrets, change, write.line, Some((tenant, draft)))
        .await?;
    if !gone.is_empty() {
        // The change is made (the versions read as destroyed or pruned); a
        // message that cannot be erased keeps its ciphertext until the
        // key's history moves past it.
        if let Err(e) = erase(&b.secrets, &kv_key, &gone, revision).await {
            tracing::warn!(error = %e, "nats: a destroyed or pruned version's messages were not erased");
        }
    }
    Ok(Some(revision))
}

pub(super) async fn metadata(
    backend: &NatsBackend,
    tenant: &TenantId,
    key: &SecretKey,
) -> Result<Option<SecretMetadata>, StoreError> {
    let b = backend.conn.buckets().await?;
    let kv_key = tenant_key(tenant, key.as_str());
    let state = State::from_history(&kv::history(&b.secrets, &kv_key).await?);
    Ok(state
        .head
        .as_ref()
        .map(|head| SecretMetadata::from_parts(head, state.versions(), now_ms())))
}

pub(super) async fn list(
    backend: &NatsBackend,
    tenant: &TenantId,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    filter: ListFilter,
) -> Result<Vec<ListedSecret>, StoreError> {
    let b = backend.conn.buckets().await?;
    let tenant_hex = hex::encode(tenant.as_str());
    let mut keys: Vec<String> = kv::scan_last(
        &backend.conn.client,
        &b.secrets,
        &format!("{tenant_hex}.>"),
        true,
    )
    .await?
    .into_iter()
    .filter(|(_, op, _)| *op == Op::Put || filter.deleted && *op == Op::Delete)
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
        let entry: Option<Entry> =
            kv::last_entry(&b.secrets, &format!("{tenant_hex}.{name}")).await?;
        if let Some(Entry {
            op,
            record: Some(r),
            ..
        }) = entry
        {
            let shown = op == Op::Put || filter.deleted && op == Op::Delete;
            if shown && filter.admits(r.expires_at) {
                rows.push(ListedSecret {
                    key: name,
                    version: r.version,
                    created_at: r.key_created_at,
                    updated_at: r.written_at,
                    expires_at: r.expires_at,
                });
            }
        }
    }
    Ok(rows)
}

/// Keys whose last message is a put that lapsed by `now`: a scan of every
/// key's last message with its value (only puts can lapse, and the expiry
/// is in the record).
pub(super) async fn lapsed(
    backend: &NatsBackend,
    now: i64,
    limit: usize,
) -> Result<Vec<Lapsed>, StoreError> {
    let b = backend.conn.buckets().await?;
    let mut found = Vec::new();
    for (kv_key, op, payload) in kv::scan_last(&backend.conn.client, &b.secrets, ">", false).await?
    {
        if found.len() >= limit {
            break;
        }
        if op != Op::Put {
            continue;
        }
        let Ok(record) = Record::decode(&payload) else {
            continue;
        };
        let Some(at) = record.expires_at.filter(|&at| at <= now) else {
            continue;
        };
        if let Some((tenant, key)) = super::records::split_tenant_key(&kv_key) {
            found.push(Lapsed {
                tenant,
                key: key.to_owned(),
                expires_at: at,
            });
        }
    }
    found.sort_by_key(|l| l.expires_at);
    Ok(found)
}
