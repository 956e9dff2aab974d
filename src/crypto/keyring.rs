//! Per-tenant data keys: created on a tenant's first write, stored wrapped by
//! the KEK, unwrapped once per process and cached, so the hot path never
//! unwraps. Values are sealed and opened here; callers get `Zeroizing` text.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use zeroize::Zeroizing;

use super::master::MasterKeys;
use super::seal::{self, AeadKey, ValueContext};
use super::CryptoError;
use crate::store::chain::AuditKey;
use crate::store::{Store, StoreError, WrappedDek};
use crate::types::TenantId;

/// The meta name of the wrapped audit key.
pub(super) const AUDIT_KEY: &str = "audit_key";
/// The meta name of the active KEK's check value.
pub(super) const CHECK: &str = "master_key_check";
/// How long a tenant's cached key list is trusted for sealing before it is
/// read again, so a rotation made elsewhere (another gateway, the CLI)
/// reaches new writes within about this long.
const REFRESH: Duration = Duration::from_secs(1);

/// A tenant's unwrapped data keys; `current` seals new values, and
/// `budget` is how many seals under it are reserved and not yet used.
pub(super) struct TenantKeys {
    pub current: u32,
    keys: HashMap<u32, Arc<AeadKey>>,
    /// Shared by every load of the tenant's keys while `current` stays.
    pub budget: Arc<AtomicU64>,
    loaded: Instant,
}

impl TenantKeys {
    /// Takes one reserved seal; false when none is left.
    pub(super) fn take_seal(&self) -> bool {
        self.budget
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(1))
            .is_ok()
    }
}

/// Why a keyring operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// The KEKs and the cache of unwrapped DEKs.
pub struct Keyring {
    keks: RwLock<Arc<MasterKeys>>,
    pub(super) store: Store,
    tenants: RwLock<HashMap<TenantId, Arc<TenantKeys>>>,
    /// Seals a DEK may make before it is rotated (DESIGN §3: 2^30).
    pub(super) max_seals: u64,
    /// Held while seals are reserved, so requests of this process wait for
    /// one reservation instead of racing each other for the stored count.
    pub(super) reserving: tokio::sync::Mutex<()>,
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

    /// The id of the DEK this sealer seals under.
    pub fn dek_id(&self) -> u32 {
        self.keys.current
    }
}

/// The most seals a DEK may make (AES-GCM with random nonces stays far
/// below 2^32 per key).
pub const MAX_SEALS: u64 = 1 << 30;

impl Keyring {
    /// Checks the KEKs against the store (`bind`) and returns the keyring.
    pub async fn open(keks: MasterKeys, store: Store) -> Result<Keyring, KeyringError> {
        let keyring = Keyring::new(keks, store);
        keyring.bind().await?;
        Ok(keyring)
    }

    /// A keyring not yet checked against the store; call `bind` before use.
    pub fn new(keks: MasterKeys, store: Store) -> Keyring {
        Keyring {
            keks: RwLock::new(Arc::new(keks)),
            store,
            tenants: RwLock::new(HashMap::new()),
            max_seals: MAX_SEALS,
            reserving: tokio::sync::Mutex::new(()),
        }
    }

    /// Rotates DEKs after `max` seals instead of 2^30 (a lower bound only
    /// rotates sooner; tests use it to reach the bound).
    pub fn with_max_seals(mut self, max: u64) -> Keyring {
        self.max_seals = max.clamp(1, MAX_SEALS);
        self
    }

    pub fn keks(&self) -> Arc<MasterKeys> {
        self.keks.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the active KEK's check value on a new store, refuses KEKs
    /// none of which the store was bound to, and refuses a keyring that
    /// cannot unwrap every stored key (naming the KEK it lacks). Safe to
    /// retry; writes nothing unless the store is new.
    pub async fn bind(&self) -> Result<(), KeyringError> {
        let keks = self.keks();
        let stored = self
            .store
            .meta_init(CHECK, keks.active().check_value().to_vec())
            .await?;
        self.verify(&keks, &stored).await
    }

    /// Takes a new set of KEKs (SIGHUP) once it is checked as `bind` checks
    /// at start; on error the keyring keeps the KEKs it had.
    pub async fn replace_keks(&self, keks: MasterKeys) -> Result<(), KeyringError> {
        let stored = self.store.meta_get(CHECK).await?.unwrap_or_default();
        self.verify(&keks, &stored).await?;
        *self.keks.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keks);
        Ok(())
    }

    /// Whether `keks` holds the KEK the check value names and every KEK a
    /// stored key is wrapped by. A keyring none of whose KEKs opens anything
    /// is the wrong master key; one that opens some keys but lacks the KEK of
    /// another names that KEK. A key that fails to open under a present KEK
    /// of a bound keyring is a damaged record: reads of it answer 502 and
    /// name it, the rest of the store still serves.
    async fn verify(&self, keks: &MasterKeys, check: &[u8]) -> Result<(), KeyringError> {
        let bound = keks.by_check(check).is_some();
        let mut wrapped: Vec<(String, WrappedDek)> = (self.store.all_deks().await?)
            .into_iter()
            .map(|(tenant, dek)| (tenant.as_str().to_owned(), dek))
            .collect();
        if let Some(stored) = self.store.meta_get(AUDIT_KEY).await? {
            wrapped.push((
                String::new(),
                WrappedDek {
                    id: 0,
                    wrapped: stored,
                },
            ));
        }
        let (mut opened, mut missing, mut damaged) = (false, None, None);
        for (tenant, dek) in &wrapped {
            match keks.unwrap(tenant, dek.id, &dek.wrapped) {
                Ok(_) => opened = true,
                Err(CryptoError::MissingKek(id)) => missing = missing.or(Some(id)),
                Err(e) => damaged = damaged.or(Some(corrupt(e, dek.id))),
            }
        }
        if !bound && !opened {
            return Err(CryptoError::WrongMasterKey.into());
        }
        if let Some(id) = missing {
            return Err(CryptoError::MissingKek(id).into());
        }
        match damaged {
            Some(e) if !bound => Err(e.into()),
            Some(e) => {
                tracing::warn!(error = %e, "a stored data key is damaged; its secrets answer 502");
                Ok(())
            }
            None if !bound => Err(CryptoError::WrongMasterKey.into()),
            None => Ok(()),
        }
    }

    /// Whether the store's recorded check value still reads back and
    /// names one of these KEKs (`/readyz`); writes nothing.
    pub async fn check(&self) -> Result<(), KeyringError> {
        match self.store.meta_get(CHECK).await? {
            Some(stored) if self.keks().by_check(&stored).is_some() => Ok(()),
            _ => Err(CryptoError::WrongMasterKey.into()),
        }
    }

    /// The key audit lines are chained under. The first start creates it;
    /// it is stored wrapped by the KEK like a DEK, under a tenant name no
    /// tenant can have (""), so only a holder of the KEK can chain or verify.
    /// `None` when the store has none and `create` is false (`audit verify`
    /// on a trail written before keyed lines).
    pub async fn audit_key(&self, create: bool) -> Result<Option<AuditKey>, KeyringError> {
        let keks = self.keks();
        let stored = match self.store.meta_get(AUDIT_KEY).await? {
            Some(stored) => stored,
            None if create => {
                let raw = seal::random_bytes::<32>();
                let wrapped = keks.wrap("", 0, &raw);
                self.store.meta_init(AUDIT_KEY, wrapped).await?
            }
            None => return Ok(None),
        };
        let raw = match keks.unwrap("", 0, &stored) {
            Ok(raw) => raw,
            // A keyring that is not the store's at all is the wrong master
            // key, not a missing one of several.
            Err(e @ CryptoError::MissingKek(_)) if self.check().await.is_ok() => {
                return Err(e.into())
            }
            Err(CryptoError::Tampered | CryptoError::MissingKek(_)) => {
                return Err(CryptoError::WrongMasterKey.into())
            }
            Err(other) => return Err(other.into()),
        };
        Ok(Some(AuditKey::new(hmac::Key::new(
            hmac::HMAC_SHA256,
            raw.as_ref(),
        ))))
    }

    /// A sealer for `tenant`'s current DEK, creating the DEK on first use,
    /// with one seal taken from the DEK's budget (`reserve_seals`).
    pub async fn sealer(&self, tenant: &TenantId) -> Result<ValueSealer, KeyringError> {
        let mut keys = self.tenant_keys(tenant, None).await?;
        if keys.loaded.elapsed() >= REFRESH {
            keys = Box::pin(self.load_keys(tenant)).await?;
        }
        if !keys.take_seal() {
            keys = Box::pin(self.reserve_seals(tenant)).await?;
        }
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
    pub(super) async fn tenant_keys(
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

    /// Reads the tenant's DEKs again (`tenant_keys` when the cache cannot
    /// answer, a refresh, a rotation). Keys already unwrapped are kept, and
    /// so is the unused budget while the current DEK stays the same.
    pub(super) async fn load_keys(
        &self,
        tenant: &TenantId,
    ) -> Result<Arc<TenantKeys>, KeyringError> {
        let mut wrapped = self.store.deks(tenant).await?;
        if wrapped.is_empty() {
            // First write for this tenant: make DEK 1. Two gateways racing
            // here both insert-if-absent; the loser reloads the winner's key.
            self.add_dek(tenant, 1).await?;
            wrapped = self.store.deks(tenant).await?;
        }
        let previous = self
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .cloned();
        let keks = self.keks();
        let mut keys = HashMap::with_capacity(wrapped.len());
        for w in &wrapped {
            if let Some(known) = previous.as_ref().and_then(|p| p.keys.get(&w.id)) {
                keys.insert(w.id, known.clone());
                continue;
            }
            let raw = keks
                .unwrap(tenant.as_str(), w.id, &w.wrapped)
                .map_err(|e| corrupt(e, w.id))?;
            keys.insert(w.id, Arc::new(AeadKey::new(&raw)));
        }
        let current = wrapped.iter().map(|w| w.id).max().unwrap_or(1);
        let budget = previous
            .filter(|p| p.current == current)
            .map(|p| p.budget.clone())
            .unwrap_or_default();
        let loaded = Arc::new(TenantKeys {
            current,
            keys,
            budget,
            loaded: Instant::now(),
        });
        self.tenants
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.clone(), loaded.clone());
        Ok(loaded)
    }

    /// Stores a new DEK `id` for `tenant`, wrapped under the active KEK;
    /// false when a DEK with that id exists already.
    pub(super) async fn add_dek(&self, tenant: &TenantId, id: u32) -> Result<bool, KeyringError> {
        let raw = seal::random_bytes::<32>();
        let wrapped = self.keks().wrap(tenant.as_str(), id, &raw);
        Ok(self
            .store
            .add_dek(tenant, WrappedDek { id, wrapped })
            .await?)
    }
}

/// A key the (verified) keyring cannot open: a missing KEK stays named; a
/// key that fails to unwrap is a damaged record.
fn corrupt(e: CryptoError, id: u32) -> CryptoError {
    match e {
        CryptoError::Tampered | CryptoError::Truncated | CryptoError::UnknownFormat(_) => {
            CryptoError::DataKeyCorrupt(id)
        }
        other => other,
    }
}
