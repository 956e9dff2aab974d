//! Per-tenant data keys: created on a tenant's first write, stored wrapped by
//! the KEK, unwrapped once per process and cached, so the hot path never
//! unwraps. Values are sealed and opened here; callers get `Zeroizing` text.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aws_lc_rs::hmac;
use zeroize::Zeroizing;

use super::master::MasterKey;
use super::seal::{self, AeadKey, ValueContext};
use super::CryptoError;
use crate::store::chain::AuditKey;
use crate::store::{Store, StoreError, WrappedDek};

/// The meta name of the wrapped audit key.
const AUDIT_KEY: &str = "audit_key";
use crate::types::TenantId;

/// A tenant's unwrapped data keys; `current` seals new values.
struct TenantKeys {
    current: u32,
    keys: HashMap<u32, AeadKey>,
}

/// Why a keyring operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// The KEK and the cache of unwrapped DEKs.
pub struct Keyring {
    master: MasterKey,
    store: Store,
    tenants: RwLock<HashMap<TenantId, Arc<TenantKeys>>>,
}

/// Something that can seal one value for a given version, detached from the
/// keyring so the store's writer can call it once the version is known.
pub struct ValueSealer {
    keys: Arc<TenantKeys>,
    tenant: TenantId,
}

impl ValueSealer {
    pub fn seal(&self, key: &str, version: u64, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let ctx = ValueContext {
            tenant: self.tenant.as_str(),
            key,
            version,
        };
        let dek = self
            .keys
            .keys
            .get(&self.keys.current)
            .ok_or(CryptoError::UnknownDataKey(self.keys.current))?;
        seal::seal_value(dek, self.keys.current, &ctx, plaintext)
    }
}

impl Keyring {
    /// Binds the KEK to the store: the first start records the KEK's check
    /// value; later starts refuse a different KEK before touching any data.
    pub async fn open(master: MasterKey, store: Store) -> Result<Keyring, KeyringError> {
        let keyring = Keyring::new(master, store);
        keyring.bind().await?;
        Ok(keyring)
    }

    /// A keyring not yet checked against the store; call `bind` before use.
    pub fn new(master: MasterKey, store: Store) -> Keyring {
        Keyring {
            master,
            store,
            tenants: RwLock::new(HashMap::new()),
        }
    }

    /// Records the KEK's check value on first start, or refuses a KEK that
    /// differs from the recorded one. Safe to retry.
    pub async fn bind(&self) -> Result<(), KeyringError> {
        let stored = self
            .store
            .meta_init("master_key_check", self.master.check_value().to_vec())
            .await?;
        if !self.master.matches(&stored) {
            return Err(CryptoError::WrongMasterKey.into());
        }
        Ok(())
    }

    /// Whether the store's recorded check value still reads back and
    /// matches this KEK (`/readyz`); writes nothing.
    pub async fn check(&self) -> Result<(), KeyringError> {
        match self.store.meta_get("master_key_check").await? {
            Some(stored) if self.master.matches(&stored) => Ok(()),
            _ => Err(CryptoError::WrongMasterKey.into()),
        }
    }

    /// The key audit lines are chained under. The first start creates it;
    /// it is stored wrapped by the KEK like a DEK, under a tenant name no
    /// tenant can have (""), so only a holder of the KEK can chain or verify.
    /// `None` when the store has none and `create` is false (`audit verify`
    /// on a trail written before keyed lines).
    pub async fn audit_key(&self, create: bool) -> Result<Option<AuditKey>, KeyringError> {
        let stored = match self.store.meta_get(AUDIT_KEY).await? {
            Some(stored) => stored,
            None if create => {
                let raw = seal::random_bytes::<32>();
                let wrapped = seal::wrap_key(&self.master.aead, "", 0, &raw);
                self.store.meta_init(AUDIT_KEY, wrapped).await?
            }
            None => return Ok(None),
        };
        let raw = seal::unwrap_key(&self.master.aead, "", 0, &stored).map_err(|e| match e {
            CryptoError::Tampered => CryptoError::WrongMasterKey,
            other => other,
        })?;
        Ok(Some(AuditKey::new(hmac::Key::new(
            hmac::HMAC_SHA256,
            raw.as_ref(),
        ))))
    }

    /// A sealer for `tenant`'s current DEK, creating the DEK on first use.
    pub async fn sealer(&self, tenant: &TenantId) -> Result<ValueSealer, KeyringError> {
        let keys = self.tenant_keys(tenant, None).await?;
        Ok(ValueSealer {
            keys,
            tenant: tenant.clone(),
        })
    }

    /// Opens a sealed value of `tenant`'s `key` at `version`.
    pub async fn open_value(
        &self,
        tenant: &TenantId,
        key: &str,
        version: u64,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
        let dek_id = seal::sealed_value_dek_id(sealed)?;
        let keys = self.tenant_keys(tenant, Some(dek_id)).await?;
        let dek = keys
            .keys
            .get(&dek_id)
            .ok_or(CryptoError::UnknownDataKey(dek_id))?;
        let ctx = ValueContext {
            tenant: tenant.as_str(),
            key,
            version,
        };
        Ok(seal::open_value(dek, &ctx, sealed)?)
    }

    /// The cached keys, reloaded from the store when the tenant is unknown or
    /// `need` names a DEK the cache lacks (another gateway rotated).
    async fn tenant_keys(
        &self,
        tenant: &TenantId,
        need: Option<u32>,
    ) -> Result<Arc<TenantKeys>, KeyringError> {
        if let Some(keys) = self
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
        {
            if need.is_none_or(|id| keys.keys.contains_key(&id)) {
                return Ok(keys.clone());
            }
        }
        // Boxed: the load's future is large, and inline it would make every
        // request's future (which awaits this one) as large.
        Box::pin(self.load_keys(tenant)).await
    }

    /// `tenant_keys` when the cache cannot answer.
    async fn load_keys(&self, tenant: &TenantId) -> Result<Arc<TenantKeys>, KeyringError> {
        let mut wrapped = self.store.deks(tenant).await?;
        if wrapped.is_empty() {
            // First write for this tenant: make DEK 1. Two gateways racing
            // here both insert-if-absent; the loser reloads the winner's key.
            let dek = seal::random_bytes::<32>();
            let blob = seal::wrap_key(&self.master.aead, tenant.as_str(), 1, &dek);
            self.store
                .add_dek(
                    tenant,
                    WrappedDek {
                        id: 1,
                        wrapped: blob,
                    },
                )
                .await?;
            wrapped = self.store.deks(tenant).await?;
        }
        let mut keys = HashMap::with_capacity(wrapped.len());
        for w in &wrapped {
            // The master key was checked against the store at start, so a
            // DEK it cannot unwrap is a damaged record.
            let raw = seal::unwrap_key(&self.master.aead, tenant.as_str(), w.id, &w.wrapped)
                .map_err(|e| match e {
                    CryptoError::Tampered
                    | CryptoError::Truncated
                    | CryptoError::UnknownFormat(_) => CryptoError::DataKeyCorrupt(w.id),
                    other => other,
                })?;
            keys.insert(w.id, AeadKey::new(&raw));
        }
        let current = wrapped.iter().map(|w| w.id).max().unwrap_or(1);
        let loaded = Arc::new(TenantKeys { current, keys });
        self.tenants
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.clone(), loaded.clone());
        Ok(loaded)
    }
}
