//! Key lifecycle (DESIGN §3): new DEKs on demand and after 2^30 seals,
//! rewrapping every stored key under the active KEK (`rekey`), and
//! re-encrypting a tenant's retained versions under its current DEK
//! (`reseal`). Each step is one compare-and-set on one record, so any of
//! them can run beside serving gateways, and stopped half-way, run again.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::keyring::{KeyringError, TenantKeys, AUDIT_KEY, CHECK};
use super::{seal, CryptoError, Keyring};
use crate::store::StoreError;
use crate::types::TenantId;

/// Seals reserved from a DEK's stored count at a time: one store write per
/// block, so the count costs the write path nothing measurable. A gateway
/// that stops loses the rest of its block, which only counts high.
const SEAL_BLOCK: u64 = 4096;

/// Attempts of one compare-and-set while other writers keep winning.
const ATTEMPTS: usize = 16;

/// The meta name counting the seals reserved under one DEK.
fn seal_counter(tenant: &TenantId, id: u32) -> String {
    format!("dek_seals.{}.{id}", hex::encode(tenant.as_str()))
}

fn busy(what: &str) -> KeyringError {
    StoreError::Unavailable(format!("{what}: too many concurrent changes")).into()
}

impl Keyring {
    /// Starts a new DEK for `tenant` (`POST /keys/rotate`, `rotate-dek`);
    /// new writes seal under it. Returns its id.
    pub async fn rotate(&self, tenant: &TenantId) -> Result<u32, KeyringError> {
        for _ in 0..ATTEMPTS {
            let newest = self.store.deks(tenant).await?.iter().map(|d| d.id).max();
            if self.add_dek(tenant, newest.unwrap_or(0) + 1).await? {
                return Ok(self.load_keys(tenant).await?.current);
            }
        }
        Err(busy("rotate"))
    }

    /// Reserves a block of seals under the tenant's current DEK, first
    /// rotating when that DEK has used its `max_seals`; returns the keys to
    /// seal with, one seal already taken. One reservation at a time per
    /// process: the others wait and take from the block it reserved.
    pub(super) async fn reserve_seals(
        &self,
        tenant: &TenantId,
    ) -> Result<Arc<TenantKeys>, KeyringError> {
        let _one = self.reserving.lock().await;
        let mut keys = self.tenant_keys(tenant, None).await?;
        for _ in 0..ATTEMPTS {
            if keys.take_seal() {
                return Ok(keys);
            }
            let name = seal_counter(tenant, keys.current);
            let stored = self.store.meta_get(&name).await?;
            let used = match stored.as_deref().map(<[u8; 8]>::try_from) {
                None => 0,
                Some(Ok(bytes)) => u64::from_be_bytes(bytes),
                Some(Err(_)) => {
                    return Err(StoreError::Corrupt(format!("{name} is not a count")).into())
                }
            };
            if used >= self.max_seals {
                // Only the first to see the DEK spent adds the next one; a
                // gateway that finds it added already just reloads.
                let newest = self.store.deks(tenant).await?.iter().map(|d| d.id).max();
                if newest == Some(keys.current) {
                    self.add_dek(tenant, keys.current + 1).await?;
                    tracing::info!(tenant = %tenant, dek_id = keys.current + 1, "data key rotated: the previous one reached its seal limit");
                }
                keys = self.load_keys(tenant).await?;
                continue;
            }
            let grant = SEAL_BLOCK.min(self.max_seals - used);
            let next = (used + grant).to_be_bytes();
            if self
                .store
                .meta_replace(&name, stored.as_deref(), &next)
                .await?
            {
                keys.budget.fetch_add(grant - 1, Ordering::AcqRel);
                return Ok(keys);
            }
        }
        Err(busy("reserving seals"))
    }

    /// Rewraps every stored DEK, the audit key and the check value under
    /// the active KEK; returns how many DEKs it rewrapped. Keys already
    /// under it are skipped, so a rekey stopped half-way finishes when run
    /// again.
    pub async fn rekey(&self) -> Result<usize, KeyringError> {
        let keks = self.keks();
        let mut rewrapped = 0;
        for (tenant, dek) in self.store.all_deks().await? {
            if keks.is_active(&dek.wrapped) {
                continue;
            }
            let raw = keks.unwrap(tenant.as_str(), dek.id, &dek.wrapped)?;
            let new = keks.wrap(tenant.as_str(), dek.id, &raw);
            if self
                .store
                .replace_dek(&tenant, dek.id, &dek.wrapped, new)
                .await?
            {
                rewrapped += 1;
                crate::failpoint::stop_here("rekey-after-one");
            }
        }
        if let Some(stored) = self.store.meta_get(AUDIT_KEY).await? {
            if !keks.is_active(&stored) {
                let raw = keks.unwrap("", 0, &stored)?;
                let new = keks.wrap("", 0, &raw);
                self.store
                    .meta_replace(AUDIT_KEY, Some(&stored), &new)
                    .await?;
            }
        }
        // Last: until every key is rewrapped the old KEK stays required,
        // and the check value still naming it says so.
        let check = self.store.meta_get(CHECK).await?;
        let active = keks.active().check_value();
        if check.as_deref() != Some(active.as_slice()) {
            self.store
                .meta_replace(CHECK, check.as_deref(), active)
                .await?;
        }
        Ok(rewrapped)
    }

    /// Re-encrypts every retained version of `tenant` that is not under its
    /// current DEK, `batch` versions a read; returns how many. A version is
    /// replaced only if it still holds the bytes read, so a concurrent
    /// write is never undone.
    pub async fn reseal(&self, tenant: &TenantId, batch: usize) -> Result<usize, KeyringError> {
        let mut after = None;
        let mut resealed = 0;
        loop {
            let page = self.store.sealed_versions(tenant, after, batch).await?;
            let Some(last) = page.last() else {
                return Ok(resealed);
            };
            after = Some((last.key.clone(), last.version));
            for v in &page {
                let sealer = self.sealer(tenant).await?;
                if seal::sealed_value_dek_id(&v.sealed)? == sealer.dek_id() {
                    continue;
                }
                let plain = self
                    .open_value(tenant, &v.key, v.version, &v.sealed)
                    .await?;
                let new = sealer
                    .seal(&v.key, v.version, &plain)
                    .map_err(|_| CryptoError::Aead)?;
                if self
                    .store
                    .replace_sealed(tenant, &v.key, v.version, &v.sealed, new)
                    .await?
                {
                    resealed += 1;
                }
            }
        }
    }
}
