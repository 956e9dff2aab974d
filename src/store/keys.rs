//! The `Store` handle's records beside the secrets, written once over the
//! engine's record interface (`records.rs`): wrapped data keys, API keys
//! (changed through the same retry loop as secrets), the store's named
//! metadata (the master key's check value, the audit key, the chain
//! heads), the compare-and-set steps of key rotation, and the dump and
//! load of every record (backup, restore, migrate).

use super::engine::{Backend, WriteError};
use super::lines::AUDIT_HEAD;
use super::records::{self, Kind, Record};
use super::{
    retry, ApiKeyChange, ApiKeyRecord, Attempt, Backends, LineBody, SealedVersion, Store,
    StoreError, WrappedDek,
};
use crate::types::TenantId;

impl Store {
    /// Record `id` of `kind`, if stored.
    pub(super) async fn record(&self, kind: Kind, id: &str) -> Result<Option<Record>, StoreError> {
        dispatch!(self.backend, b => b.record_get(kind, id))
    }

    pub(super) async fn records(
        &self,
        kind: Kind,
        prefix: &str,
    ) -> Result<Vec<Record>, StoreError> {
        dispatch!(self.backend, b => b.record_scan(kind, prefix))
    }

    /// One compare-and-set of a record (`None`: its removal); false when
    /// another write came first.
    pub(super) async fn put_record(
        &self,
        kind: Kind,
        id: &str,
        expected: u64,
        value: impl Into<Option<Vec<u8>>>,
        line: Option<LineBody>,
    ) -> Result<bool, StoreError> {
        let value = value.into();
        match dispatch!(self.backend, b => b.record_put(kind, id, expected, value, line)) {
            Ok(_) => Ok(true),
            Err(WriteError::Conflict | WriteError::Stale(_)) => Ok(false),
            Err(WriteError::Failed(e)) => Err(e),
        }
    }

    /// Removes each record of `kind` for which `stale(id, bytes)` holds,
    /// by compare-and-set (one another writer changed meanwhile is left
    /// for the next call); how many it removed. The sweeps of tokens and
    /// of logins in progress.
    pub(super) async fn remove_records_where(
        &self,
        kind: Kind,
        stale: impl Fn(&str, &[u8]) -> bool,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        for r in self.records(kind, "").await? {
            if stale(&r.id, &r.value)
                && self.put_record(kind, &r.id, r.revision, None, None).await?
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Sets record `id` to `new` if it still holds `old` (`None`: there is
    /// none); false when it holds something else.
    async fn replace_record(
        &self,
        kind: Kind,
        id: &str,
        old: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let stored = self.record(kind, id).await?;
        let expected = match (&stored, old) {
            (None, None) => 0,
            (Some(r), Some(old)) if r.value == old => r.revision,
            _ => return Ok(false),
        };
        self.put_record(kind, id, expected, new, None).await
    }

    pub async fn deks(&self, tenant: &TenantId) -> Result<Vec<WrappedDek>, StoreError> {
        let prefix = format!("{}/", tenant.as_str());
        self.records(Kind::Dek, &prefix)
            .await?
            .into_iter()
            .map(|r| {
                let (_, id) = records::parse_dek_id(&r.id)?;
                Ok(WrappedDek {
                    id,
                    wrapped: r.value,
                })
            })
            .collect()
    }

    /// Inserts a DEK unless one with that id exists; true when inserted.
    pub async fn add_dek(&self, tenant: &TenantId, dek: WrappedDek) -> Result<bool, StoreError> {
        let id = records::dek_id(tenant, dek.id);
        self.put_record(Kind::Dek, &id, 0, dek.wrapped, None).await
    }

    /// Every tenant's DEKs (start-up checks them all against the keyring).
    pub async fn all_deks(&self) -> Result<Vec<(TenantId, WrappedDek)>, StoreError> {
        self.records(Kind::Dek, "")
            .await?
            .into_iter()
            .map(|r| {
                let (tenant, id) = records::parse_dek_id(&r.id)?;
                let wrapped = r.value;
                Ok((tenant, WrappedDek { id, wrapped }))
            })
            .collect()
    }

    /// Replaces DEK `id`'s wrapped bytes if they are still `old`; false when
    /// they changed meanwhile.
    pub async fn replace_dek(
        &self,
        tenant: &TenantId,
        id: u32,
        old: &[u8],
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        let id = records::dek_id(tenant, id);
        self.replace_record(Kind::Dek, &id, Some(old), new).await
    }

    /// Sets `name` to `new` if it still holds `old` (`None`: unset); false
    /// when another writer changed it first.
    pub async fn meta_replace(
        &self,
        name: &str,
        old: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        self.replace_record(Kind::Meta, name, old, new.to_vec())
            .await
    }

    /// Up to `limit` of `tenant`'s retained versions after `after` (key,
    /// version), in that order, with their sealed bytes.
    pub async fn sealed_versions(
        &self,
        tenant: &TenantId,
        after: Option<(String, u64)>,
        limit: usize,
    ) -> Result<Vec<SealedVersion>, StoreError> {
        dispatch!(self.backend, b => b.sealed_versions(tenant, after, limit))
    }

    /// Replaces one version's sealed bytes if they are still `old`.
    pub async fn replace_sealed(
        &self,
        tenant: &TenantId,
        key: &str,
        version: u64,
        old: &[u8],
        new: Vec<u8>,
    ) -> Result<bool, StoreError> {
        dispatch!(self.backend, b => b.replace_sealed(tenant, key, version, old, new))
    }

    /// Stores a new API key's record, with `line` in the same unit of work;
    /// refused when its id is taken.
    pub async fn apikey_insert(
        &self,
        record: ApiKeyRecord,
        line: Option<LineBody>,
    ) -> Result<(), StoreError> {
        let value = records::encode_apikey(&record);
        if self
            .put_record(Kind::ApiKey, &record.id, 0, value, line)
            .await?
        {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "an api key id already exists".into(),
            ))
        }
    }

    pub async fn apikey_get(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.record(Kind::ApiKey, id)
            .await?
            .map(|r| records::decode_apikey(&r.id, &r.value))
            .transpose()
    }

    /// `tenant`'s live (unrevoked) keys, oldest first.
    pub async fn apikey_list(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut keys = Vec::new();
        for r in self.records(Kind::ApiKey, "").await? {
            let key = records::decode_apikey(&r.id, &r.value)?;
            if key.tenant == *tenant && key.revoked_at.is_none() {
                keys.push(key);
            }
        }
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    /// Revokes `tenant`'s key `id`; `NotFound` when it has no such live key.
    pub async fn apikey_revoke(
        &self,
        tenant: &TenantId,
        id: &str,
        at: i64,
        line: Option<LineBody>,
    ) -> Result<(), StoreError> {
        let change = ApiKeyChange::Revoke {
            tenant: tenant.clone(),
            at,
        };
        self.apikey_update(id, &change, line).await
    }

    /// Records the last use of each key (id, time), skipping ids that are
    /// gone.
    pub async fn apikey_touch(&self, uses: Vec<(String, i64)>) -> Result<(), StoreError> {
        for (id, at) in uses {
            match self
                .apikey_update(&id, &ApiKeyChange::Touch { at }, None)
                .await
            {
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Applies `change` to key `id`'s record by compare-and-set, again
    /// while concurrent writers win.
    async fn apikey_update(
        &self,
        id: &str,
        change: &ApiKeyChange,
        line: Option<LineBody>,
    ) -> Result<(), StoreError> {
        retry((), |()| {
            let line = line.clone();
            async move {
                let stored = self
                    .record(Kind::ApiKey, id)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                let record = records::decode_apikey(id, &stored.value)?;
                let Some(updated) = change.apply(&record)? else {
                    return Ok(());
                };
                let value = records::encode_apikey(&updated);
                if self
                    .put_record(Kind::ApiKey, id, stored.revision, value, line)
                    .await?
                {
                    Ok(())
                } else {
                    Err(Attempt::Again(()))
                }
            }
        })
        .await
    }

    pub async fn apikeys_exist(&self) -> Result<bool, StoreError> {
        Ok(!self.records(Kind::ApiKey, "").await?.is_empty())
    }

    /// The value stored under `name` (the master key's check value, the
    /// wrapped audit key, the chain head), if any.
    pub async fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.record(Kind::Meta, name).await?.map(|r| r.value))
    }

    /// The audit chain heads recorded, by chain: the embedded store's one
    /// (""), or each nats gateway's (and "" for the chain they shared
    /// before).
    pub async fn audit_heads(
        &self,
    ) -> Result<std::collections::BTreeMap<String, super::chain::ChainHead>, StoreError> {
        let mut heads = std::collections::BTreeMap::new();
        for r in self.records(Kind::Meta, AUDIT_HEAD).await? {
            let Some(chain) = super::lines::chain_named(AUDIT_HEAD, &r.id) else {
                continue;
            };
            // A head that does not parse records nothing to check against.
            if let Some(head) = std::str::from_utf8(&r.value)
                .ok()
                .and_then(super::chain::ChainHead::decode)
            {
                heads.insert(chain.to_owned(), head);
            }
        }
        Ok(heads)
    }

    /// Stores `value` under `name` unless set; returns what is stored.
    pub async fn meta_init(&self, name: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        retry((), |()| async {
            if let Some(stored) = self.record(Kind::Meta, name).await? {
                return Ok(stored.value);
            }
            if self
                .put_record(Kind::Meta, name, 0, value.clone(), None)
                .await?
            {
                Ok(value.clone())
            } else {
                Err(Attempt::Again(()))
            }
        })
        .await
    }

    /// Starts following what other gateways change (nats): feeding this
    /// process's watchers from the events stream every gateway publishes
    /// to, and keeping the read cache coherent. The embedded engine learns
    /// both from its writer. Call inside the runtime.
    pub fn start_following(&self) {
        if !matches!(&*self.backend, Backends::Nats(_)) {
            return;
        }
        let backend = self.backend.clone();
        tokio::spawn(async move {
            if let Backends::Nats(b) = &*backend {
                Box::pin(b.feed_events()).await;
            }
        });
        let backend = self.backend.clone();
        tokio::spawn(async move {
            if let Backends::Nats(b) = &*backend {
                Box::pin(b.follow_for_cache()).await;
            }
        });
    }

    /// The kind and id of each API key, policy, role and token changed by
    /// anyone (another gateway, the CLI), as they change, for engines that
    /// can watch (nats); `None` for the embedded engine, whose changes all
    /// go through this process or lapse with the caches. Starts tasks;
    /// call inside the runtime.
    pub fn watch_record_changes(&self) -> Option<tokio::sync::mpsc::Receiver<(Kind, String)>> {
        if !matches!(&*self.backend, Backends::Nats(_)) {
            return None;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        for kind in [Kind::ApiKey, Kind::Policy, Kind::Role, Kind::Token] {
            let backend = self.backend.clone();
            let tx = tx.clone();
            // Boxed inside the task: the watch's future is tens of kilobytes.
            tokio::spawn(async move {
                if let Backends::Nats(b) = &*backend {
                    Box::pin(b.watch_records(kind, tx)).await;
                }
            });
        }
        Some(rx)
    }
}

impl Store {
    /// Hands every record to `sink`: meta, DEKs, API keys, then secrets in
    /// (tenant, key) order. On sqlite it is one read transaction.
    pub async fn dump(&self, sink: super::dump::Sink<'_>) -> Result<(), StoreError> {
        dispatch!(self.backend, b => b.dump(sink))
    }

    /// Loads `records` into an empty store (`force`: replaces its data, and
    /// keeps its audit trail and key); `line` is appended to the trail in
    /// the same unit of work where the engine has one (sqlite).
    pub async fn load(
        &self,
        records: super::dump::Records,
        force: bool,
        line: Option<LineBody>,
    ) -> Result<super::dump::LoadCounts, StoreError> {
        dispatch!(self.backend, b => b.load(records, force, line))
    }
}
