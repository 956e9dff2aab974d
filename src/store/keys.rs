//! The `Store` handle's records beside the secrets: wrapped data keys, API
//! keys (changed through the same retry loop as secrets), the store's named
//! metadata (the master key's check value, the audit key, the chain head),
//! the compare-and-set steps of key rotation, and the dump and load of
//! every record (backup, restore, migrate).

use super::engine::Backend;
use super::{
    again, retry, ApiKeyChange, ApiKeyRecord, Backends, LineBody, SealedVersion, Store, StoreError,
    WrappedDek,
};
use crate::types::TenantId;

impl Store {
    pub async fn deks(&self, tenant: &TenantId) -> Result<Vec<WrappedDek>, StoreError> {
        dispatch!(self.backend, b => b.deks(tenant))
    }

    /// Inserts a DEK unless one with that id exists; true when inserted.
    pub async fn add_dek(&self, tenant: &TenantId, dek: WrappedDek) -> Result<bool, StoreError> {
        dispatch!(self.backend, b => b.add_dek(tenant, dek))
    }

    /// Every tenant's DEKs (start-up checks them all against the keyring).
    pub async fn all_deks(&self) -> Result<Vec<(TenantId, WrappedDek)>, StoreError> {
        dispatch!(self.backend, b => b.all_deks())
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
        dispatch!(self.backend, b => b.replace_dek(tenant, id, old, new))
    }

    /// Sets `name` to `new` if it still holds `old` (`None`: unset); false
    /// when another writer changed it first.
    pub async fn meta_replace(
        &self,
        name: &str,
        old: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        dispatch!(self.backend, b => b.meta_replace(name, old, new))
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

    pub async fn apikey_insert(
        &self,
        record: ApiKeyRecord,
        line: Option<LineBody>,
    ) -> Result<(), StoreError> {
        dispatch!(self.backend, b => b.apikey_insert(record, line))
    }

    pub async fn apikey_get(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        dispatch!(self.backend, b => b.apikey_get(id))
    }

    pub async fn apikey_list(&self, tenant: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        dispatch!(self.backend, b => b.apikey_list(tenant))
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

    async fn apikey_update(
        &self,
        id: &str,
        change: &ApiKeyChange,
        line: Option<LineBody>,
    ) -> Result<(), StoreError> {
        retry((), |()| {
            let line = line.clone();
            async move {
                dispatch!(self.backend, b => b.apikey_update(id, change, line)).map_err(again)
            }
        })
        .await
    }

    pub async fn apikeys_exist(&self) -> Result<bool, StoreError> {
        dispatch!(self.backend, b => b.apikeys_exist())
    }

    /// The value stored under `name` (the master key's check value, the
    /// wrapped audit key, the chain head), if any.
    pub async fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        dispatch!(self.backend, b => b.meta_get(name))
    }

    /// The audit chain heads recorded, by chain: the embedded store's one
    /// (""), or each nats gateway's (and "" for the chain they shared
    /// before).
    pub async fn audit_heads(
        &self,
    ) -> Result<std::collections::BTreeMap<String, super::chain::ChainHead>, StoreError> {
        match &*self.backend {
            Backends::Nats(b) => b.audit_heads().await,
            _ => {
                let stored = self.meta_get(super::lines::AUDIT_HEAD).await?;
                Ok(stored
                    .and_then(|v| super::chain::ChainHead::decode(std::str::from_utf8(&v).ok()?))
                    .map(|head| (String::new(), head))
                    .into_iter()
                    .collect())
            }
        }
    }

    /// Stores `value` under `name` unless set; returns what is stored.
    pub async fn meta_init(&self, name: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        retry((), |()| async {
            dispatch!(self.backend, b => b.meta_init(name, &value)).map_err(again)
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

    /// Ids of API keys changed by anyone (another gateway, the CLI), as they
    /// change, for engines that can watch (nats); `None` for the embedded
    /// engine, whose changes all go through this process or lapse with the
    /// key cache. Starts a task; call inside the runtime.
    pub fn watch_apikey_changes(&self) -> Option<tokio::sync::mpsc::Receiver<String>> {
        if !matches!(&*self.backend, Backends::Nats(_)) {
            return None;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let backend = self.backend.clone();
        // Boxed inside the task: the watch's future is tens of kilobytes.
        tokio::spawn(async move {
            if let Backends::Nats(b) = &*backend {
                Box::pin(b.watch_apikeys(tx)).await;
            }
        });
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
