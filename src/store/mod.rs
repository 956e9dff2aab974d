//! Persistence: the `Store` handle the rest of the crate uses, the crate-private
//! `Backend` trait each engine implements, and the records they exchange.
//!
//! Architecture invariant: `store/` never sees a plaintext value or an
//! unwrapped data key. Values arrive as sealed bytes, produced by a `Sealer`
//! closure the backend calls once it knows the version number the write gets
//! (the version is part of the ciphertext's associated data).

mod cache;
pub mod nats;
pub mod sqlite;

use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::types::{SecretKey, TenantId};

/// Errors a backend reports. "Not found" and "precondition failed" are
/// answers, not failures; `Unavailable` means the backend could not do its job.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("version mismatch")]
    VersionMismatch,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("sealing failed")]
    Seal,
}

/// Which engine to run. `FromStr` names the engines that exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Nats,
}

impl FromStr for Engine {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "sqlite" => Ok(Engine::Sqlite),
            "nats" => Ok(Engine::Nats),
            other => Err(format!(
                "unknown store '{other}'; the stores are: sqlite, nats"
            )),
        }
    }
}

/// Everything needed to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub engine: Engine,
    pub data_dir: PathBuf,
    /// Versions kept per key; older ones are pruned on write.
    pub max_versions: u32,
    /// NATS server URL(s), comma separated (nats engine).
    pub nats_url: String,
    /// Name of the secrets bucket; `<name>_deks`, `<name>_apikeys` and
    /// `<name>_meta` hold the rest (nats engine).
    pub nats_bucket: String,
    /// Replicas of each bucket (nats engine; 3 in a cluster).
    pub nats_replicas: usize,
}

/// A condition a write must meet, checked atomically with the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Unconditional.
    None,
    /// `If-Match`: the live current version must be this one.
    Version(u64),
    /// `If-None-Match: *`: no live secret may exist under the key.
    Absent,
}

impl Precondition {
    /// Checks the condition against the live current version (`None` when
    /// no live secret exists: absent, or soft-deleted). Every backend decides
    /// with this, so the engines cannot disagree.
    pub fn check(self, live: Option<u64>) -> Result<(), StoreError> {
        match self {
            Precondition::None => Ok(()),
            Precondition::Version(want) if live == Some(want) => Ok(()),
            Precondition::Absent if live.is_none() => Ok(()),
            _ => Err(StoreError::VersionMismatch),
        }
    }
}

/// Called by a backend once a change is certain (preconditions hold) and
/// before it is durable; an `Err` aborts the change. The API layer writes the
/// request's audit line here, so a request whose audit line cannot be
/// written changes nothing.
///
/// The hook is async because the nats store's trail is a JetStream stream.
/// The sqlite engine calls it on its writer thread and needs it ready at
/// once (the file trail is); one that would wait fails the change.
pub type Hook = Box<dyn FnOnce() -> HookFuture + Send>;

/// What a `Hook` returns.
pub type HookFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// Lets the embedded engine's writer thread bracket each batch it commits:
/// `begin` before the batch's first job, `before_commit` just before its
/// COMMIT. An `Err` from `before_commit` rolls the whole batch back and
/// every job in it fails `Unavailable`. The file audit trail is one: hooks
/// stage their lines and it writes a batch's lines with one write(2) here.
pub trait CommitBarrier: Send + Sync {
    /// Called before the batch's first job; the token goes to `before_commit`.
    fn begin(&self) -> u64;
    fn before_commit(&self, token: u64) -> Result<(), String>;
}

/// A hook that does nothing, for changes made outside a request (the CLI,
/// the bootstrap key, tests).
pub fn no_hook() -> Hook {
    Box::new(|| Box::pin(async { Ok(()) }))
}

/// Produces the sealed bytes for the version number the backend assigns. A
/// backend that retries a write after losing a race (nats) calls it again
/// with the new version; only the last call's bytes are stored.
pub type Sealer = Box<dyn Fn(u64) -> Result<Vec<u8>, StoreError> + Send>;

/// One stored version of a secret, still sealed.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub version: u64,
    pub created_at: i64,
    pub sealed: Vec<u8>,
}

/// A version as shown by metadata: never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: u64,
    pub created_at: i64,
    pub deleted: bool,
}

/// A key's metadata and its retained versions, oldest first.
#[derive(Debug, Clone)]
pub struct SecretMetadata {
    pub current_version: u64,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted: bool,
    pub versions: Vec<VersionInfo>,
}

/// One row of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSecret {
    pub key: String,
    pub version: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A data key as stored: wrapped by the KEK.
#[derive(Debug, Clone)]
pub struct WrappedDek {
    pub id: u32,
    pub wrapped: Vec<u8>,
}

/// An API key as stored: the hash of its text, never the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant: TenantId,
    pub name: String,
    pub scopes: Vec<String>,
    pub hash: [u8; 32],
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// What an engine implements. Crate-private: callers use `Store`.
pub(crate) trait Backend: Send + Sync {
    /// Finishes queued writes and releases the backend; later writes fail.
    fn close(&self) -> impl Future<Output = ()> + Send;

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The live current version (`version == None`) or a given retained,
    /// not-deleted version.
    fn get(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        version: Option<u64>,
    ) -> impl Future<Output = Result<Option<StoredVersion>, StoreError>> + Send;

    /// Writes the next version; returns its number.
    fn put(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        precondition: Precondition,
        sealer: Sealer,
        hook: Hook,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Soft delete of the live secret.
    fn delete(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        precondition: Precondition,
        hook: Hook,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Restores a soft-deleted secret to its last version.
    fn undelete(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        hook: Hook,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes every version for good.
    fn destroy(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        hook: Hook,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn metadata(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
    ) -> impl Future<Output = Result<Option<SecretMetadata>, StoreError>> + Send;

    /// Live keys under `prefix` strictly after `after`, in byte order.
    fn list(
        &self,
        tenant: &TenantId,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ListedSecret>, StoreError>> + Send;

    fn deks(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<Vec<WrappedDek>, StoreError>> + Send;

    /// Inserts a DEK unless one with that id exists; true when inserted.
    fn add_dek(
        &self,
        tenant: &TenantId,
        dek: WrappedDek,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn apikey_insert(
        &self,
        record: ApiKeyRecord,
        hook: Hook,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn apikey_get(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ApiKeyRecord>, StoreError>> + Send;
    fn apikey_list(
        &self,
        tenant: &TenantId,
    ) -> impl Future<Output = Result<Vec<ApiKeyRecord>, StoreError>> + Send;
    /// Marks a key revoked; `NotFound` when the tenant has no such live key.
    fn apikey_revoke(
        &self,
        tenant: &TenantId,
        id: &str,
        at: i64,
        hook: Hook,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn apikey_touch(
        &self,
        uses: Vec<(String, i64)>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn apikeys_exist(&self) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Stores `value` under `name` unless set; returns what is stored.
    fn meta_init(
        &self,
        name: &str,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, StoreError>> + Send;
}

enum Backends {
    Sqlite(sqlite::SqliteBackend),
    /// Boxed: the NATS client and stream infos are large.
    Nats(Box<nats::NatsBackend>),
}

/// The handle every other module holds. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<Backends>,
    max_versions: u32,
}

/// Calls the backend. The nats engine's futures are boxed: they are many
/// kilobytes (retry loops over the client's requests), and unboxed they
/// would size every caller's future and stack frame, the embedded engine's
/// request path included, for a network round trip that dwarfs the
/// allocation.
macro_rules! dispatch {
    ($self:ident, $b:ident => $call:expr) => {
        match &*$self.backend {
            Backends::Sqlite($b) => $call.await,
            Backends::Nats($b) => Box::pin($call).await,
        }
    };
}

impl Store {
    /// Opens (creating if needed) the configured engine.
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let backend = match config.engine {
            Engine::Sqlite => Backends::Sqlite(sqlite::SqliteBackend::open(
                &config.data_dir.join("strongroom.db"),
                config.max_versions,
            )?),
            Engine::Nats => Backends::Nats(Box::new(
                nats::NatsBackend::open(nats::NatsSettings {
                    url: config.nats_url.clone(),
                    bucket: config.nats_bucket.clone(),
                    replicas: config.nats_replicas,
                    max_versions: config.max_versions,
                })
                .await?,
            )),
        };
        Ok(Store {
            backend: Arc::new(backend),
            max_versions: config.max_versions,
        })
    }

    /// Installs the barrier the embedded engine's writer calls around each
    /// batch (see `CommitBarrier`); the nats engine has no batches and
    /// ignores it. At most once; returns whether it was installed.
    pub fn set_commit_barrier(&self, barrier: Arc<dyn CommitBarrier>) -> bool {
        match &*self.backend {
            Backends::Sqlite(b) => b.set_commit_barrier(barrier),
            Backends::Nats(_) => false,
        }
    }

    /// The NATS connection of the nats engine, shared with the audit stream
    /// and the API-key watch; `None` for the embedded engine.
    pub fn nats_client(&self) -> Option<async_nats::Client> {
        match &*self.backend {
            Backends::Sqlite(_) => None,
            Backends::Nats(b) => Some(b.client().clone()),
        }
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
        // Boxed inside the task: the watch's future is tens of kilobytes, and
        // built in place it would size the stack frame of every caller.
        tokio::spawn(async move {
            if let Backends::Nats(b) = &*backend {
                Box::pin(b.watch_apikeys(tx)).await;
            }
        });
        Some(rx)
    }

    pub fn max_versions(&self) -> u32 {
        self.max_versions
    }

    /// Finishes queued writes and flushes; call once at shutdown.
    pub async fn close(&self) {
        dispatch!(self, b => b.close())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, b => b.ping())
    }
    pub async fn get(
        &self,
        t: &TenantId,
        k: &SecretKey,
        v: Option<u64>,
    ) -> Result<Option<StoredVersion>, StoreError> {
        dispatch!(self, b => b.get(t, k, v))
    }
    pub async fn put(
        &self,
        t: &TenantId,
        k: &SecretKey,
        p: Precondition,
        s: Sealer,
        h: Hook,
    ) -> Result<u64, StoreError> {
        dispatch!(self, b => b.put(t, k, p, s, h))
    }
    pub async fn delete(
        &self,
        t: &TenantId,
        k: &SecretKey,
        p: Precondition,
        h: Hook,
    ) -> Result<(), StoreError> {
        dispatch!(self, b => b.delete(t, k, p, h))
    }
    pub async fn undelete(&self, t: &TenantId, k: &SecretKey, h: Hook) -> Result<(), StoreError> {
        dispatch!(self, b => b.undelete(t, k, h))
    }
    pub async fn destroy(&self, t: &TenantId, k: &SecretKey, h: Hook) -> Result<(), StoreError> {
        dispatch!(self, b => b.destroy(t, k, h))
    }
    pub async fn metadata(
        &self,
        t: &TenantId,
        k: &SecretKey,
    ) -> Result<Option<SecretMetadata>, StoreError> {
        dispatch!(self, b => b.metadata(t, k))
    }
    pub async fn list(
        &self,
        t: &TenantId,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ListedSecret>, StoreError> {
        dispatch!(self, b => b.list(t, prefix, after, limit))
    }
    pub async fn deks(&self, t: &TenantId) -> Result<Vec<WrappedDek>, StoreError> {
        dispatch!(self, b => b.deks(t))
    }
    pub async fn add_dek(&self, t: &TenantId, dek: WrappedDek) -> Result<bool, StoreError> {
        dispatch!(self, b => b.add_dek(t, dek))
    }
    pub async fn apikey_insert(&self, record: ApiKeyRecord, h: Hook) -> Result<(), StoreError> {
        dispatch!(self, b => b.apikey_insert(record, h))
    }
    pub async fn apikey_get(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        dispatch!(self, b => b.apikey_get(id))
    }
    pub async fn apikey_list(&self, t: &TenantId) -> Result<Vec<ApiKeyRecord>, StoreError> {
        dispatch!(self, b => b.apikey_list(t))
    }
    pub async fn apikey_revoke(
        &self,
        t: &TenantId,
        id: &str,
        at: i64,
        h: Hook,
    ) -> Result<(), StoreError> {
        dispatch!(self, b => b.apikey_revoke(t, id, at, h))
    }
    pub async fn apikey_touch(&self, uses: Vec<(String, i64)>) -> Result<(), StoreError> {
        dispatch!(self, b => b.apikey_touch(uses))
    }
    pub async fn apikeys_exist(&self) -> Result<bool, StoreError> {
        dispatch!(self, b => b.apikeys_exist())
    }
    pub async fn meta_init(&self, name: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        dispatch!(self, b => b.meta_init(name, value))
    }
}

#[cfg(test)]
mod conformance;
#[cfg(test)]
pub(crate) mod nats_fixture;
