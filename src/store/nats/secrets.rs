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
use super::records::{tenant_key, Annex, Entry, Op, Record, State};
use super::NatsBackend;
use crate::clock::now_ms;
use crate::store::engine::{Observed, SecretWrite, Seen, WriteError};
use crate::store::events::Draft;
use crate::store::model::{
    self, Change, Effect, Head, Lapsed, ListFilter, ListedSecret, Mark, Refusal, SecretMetadata,
    StoredVersion,
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
    // What must leave the stream once the message is stored: the earlier
    // messages of a version this one restates (so a key holds about one
    // message a version and its history keeps every retained version), a
    // destroyed version's values, and the versions a key's own number
    // prunes below the bucket's history (which prunes the rest).
    let history = super::connection::secrets_history(backend.settings.max_versions) as u64;
    let current = seen.head.as_ref().map(|h| h.version);
    let gone = match &effect {
        Effect::Marks { marks, .. } => Erase {
            superseded: current,
            destroyed: marks
                .iter()
                .filter(|(_, m)| m.destroyed)
                .map(|(v, _)| *v)
                .collect(),
            through: None,
        },
        Effect::SetDeleted { .. } | Effect::Settings { .. } => Erase {
            superseded: current,
            ..Erase::default()
        },
        Effect::Put {
            version,
            prune_through: Some(through),
            ..
        } if through + history > *version + 1 => Erase {
            through: Some(*through),
            ..Erase::default()
        },
        _ => Erase::default(),
    };
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

/// The message that writes `effect`: its operation and payload.
fn message(
    seen: &Observed,
    record: Option<Record>,
    effect: Effect,
    change: Change,
    now: i64,
) -> Result<(Op, Vec<u8>), StoreError> {
    // The current record, rewritten now; a key whose settings came before
    // any value has a version-0 record.
    let current = |record: Option<Record>, head: Option<&Head>| {
        let mut record = record
            .or_else(|| {
                head.filter(|h| h.version == 0)
                    .map(|h| empty_record(h.key_created_at, now))
            })
            .ok_or(StoreError::NotFound)?;
        record.written_at = now;
        Ok::<_, StoreError>(record)
    };
    // A message on a key keeps its operation unless it changes the head.
    let op_now = |head: Option<&Head>| match head {
        Some(h) if h.deleted => Op::Delete,
        _ => Op::Put,
    };
    // A deleted current version keeps the time it was deleted through
    // messages that restate it (its mark; the first marker's own time).
    let kept_mark = seen.head.as_ref().filter(|h| h.deleted).and_then(|h| {
        let r = record.as_ref()?;
        let first = Mark {
            deleted_at: Some(r.written_at),
            destroyed: r.destroyed,
            created_at: r.created_at,
            expiry_cleared: false,
        };
        Some(seen.marks.get(&h.version).copied().unwrap_or(first))
    });
    // The current version's mark as the message's operation leaves it.
    let settle = |record: &mut Record, op: Op, changed: Option<Mark>| {
        match (op, changed.or(kept_mark)) {
            (Op::Delete, Some(mark)) => record.annex.marks.insert(record.version, mark),
            _ => record.annex.marks.remove(&record.version),
        };
    };
    Ok(match (effect, change) {
        (
            Effect::Put {
                version,
                key_created_at,
                expires_at,
                kv,
                previous,
                prune_through,
            },
            Change::Put { sealed, .. },
        ) => {
            // The bucket's history prunes old versions; the marks of the
            // versions kept travel on.
            let mut marks = seen.marks.clone();
            // The previous version's own mark, if it kept one, knows when
            // it was deleted better than the head does.
            if let Some((v, mark)) = previous {
                marks.entry(v).or_insert(mark);
            }
            if let Some(through) = prune_through {
                marks.retain(|&v, _| v > through);
            }
            let settings = seen
                .head
                .as_ref()
                .map(|h| h.settings.clone())
                .unwrap_or_default();
            let record = Record {
                version,
                created_at: now,
                key_created_at,
                written_at: now,
                sealed,
                expires_at,
                kv,
                destroyed: false,
                annex: Annex {
                    settings,
                    marks,
                    // Never lower: a version once pruned stays so.
                    floor: seen.floor.max(prune_through.unwrap_or(0)),
                },
            };
            (Op::Put, record.encode())
        }
        // Brought back, a version keeps no expiry; soft deleted, the marker
        // keeps the one it lapsed at.
        // Deleted now (its marker's time is when), or back.
        (Effect::SetDeleted { deleted, .. }, _) => {
            let mut record = current(record, seen.head.as_ref())?;
            record.annex.marks.remove(&record.version);
            if deleted {
                (Op::Delete, record.encode())
            } else {
                record.expires_at = None;
                (Op::Put, record.encode())
            }
        }
        (Effect::Destroy, _) => (Op::Purge, Vec::new()),
        (
            Effect::Marks {
                marks,
                current: now_deleted,
            },
            _,
        ) => {
            let mut record = current(record, seen.head.as_ref())?;
            let mut op = op_now(seen.head.as_ref());
            let mut changed = None;
            for (v, mark) in marks {
                if v == record.version {
                    changed = Some(mark);
                    if mark.destroyed {
                        record.destroyed = true;
                        record.sealed = Vec::new();
                    }
                    match now_deleted {
                        Some(true) => op = Op::Delete,
                        Some(false) => {
                            op = Op::Put;
                            record.expires_at = None;
                        }
                        None => {}
                    }
                } else {
                    record.annex.marks.insert(v, mark);
                }
            }
            settle(&mut record, op, changed);
            (op, record.encode())
        }
        (Effect::Settings { settings, .. }, _) => {
            let mut record = match &seen.head {
                None => empty_record(now, now),
                head => current(record, head.as_ref())?,
            };
            record.annex.settings = settings;
            let op = match &seen.head {
                None => Op::Delete,
                head => op_now(head.as_ref()),
            };
            if seen.head.is_some() {
                settle(&mut record, op, None);
            }
            (op, record.encode())
        }
        (Effect::Put { .. }, _) => unreachable!("the model puts only for a put"),
    })
}

/// The record of a key that has settings and no version yet.
fn empty_record(key_created_at: i64, now: i64) -> Record {
    Record {
        version: 0,
        created_at: now,
        key_created_at,
        written_at: now,
        sealed: Vec::new(),
        expires_at: None,
        kv: false,
        destroyed: false,
        annex: Annex::default(),
    }
}

/// The messages a change makes obsolete.
#[derive(Default)]
struct Erase {
    /// Every earlier message of this version (the new one restates it).
    superseded: Option<u64>,
    /// Those that hold a value of these versions.
    destroyed: Vec<u64>,
    /// Every message of a version up to this one.
    through: Option<u64>,
}

impl Erase {
    fn is_empty(&self) -> bool {
        self.superseded.is_none() && self.destroyed.is_empty() && self.through.is_none()
    }

    fn obsolete(&self, r: &Record) -> bool {
        self.superseded == Some(r.version)
            || (self.destroyed.contains(&r.version) && !r.sealed.is_empty())
            || self.through.is_some_and(|t| r.version <= t)
    }
}

/// Erases (JetStream overwrites them) the messages before `revision` that
/// `gone` names.
async fn erase(
    store: &async_nats::jetstream::kv::Store,
    kv_key: &str,
    gone: &Erase,
    revision: u64,
) -> Result<(), StoreError> {
    for entry in kv::history(store, kv_key).await? {
        let obsolete = entry.record.as_ref().is_some_and(|r| gone.obsolete(r));
        if obsolete && entry.revision < revision {
            store
                .stream
                .delete_message(entry.revision)
                .await
                .map_err(|e| StoreError::Unavailable(format!("nats: erase a message: {e}")))?;
        }
    }
    Ok(())
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
