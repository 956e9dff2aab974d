//! Persistence: the `Store` handle the rest of the crate uses, over one of
//! two engines (`sqlite`, embedded; `nats`, JetStream KV for stateless
//! gateways), and the audit trail each engine keeps beside its data.
//!
//! - `model.rs`: the rules (versions, preconditions, soft delete, pruning,
//!   metadata) and the records; written once, used by both engines;
//! - `records.rs`: the records beside secrets (meta values, data keys, API
//!   keys, policies, roles, tokens), their ids and encodings; `keys.rs`:
//!   their rules over the engine's record methods; `identity.rs`: the
//!   policies, roles and tokens of the model;
//! - `engine.rs`: the crate-private trait an engine implements;
//! - `config.rs`: which engine and its settings; `error.rs`: `StoreError`;
//! - `lines.rs`: audit lines as data; `trail.rs`: the `Trail` handle;
//!   `chain.rs`: the line format;
//! - `conformance.rs`: the suite every engine passes.
//!
//! Architecture invariant: `store/` never sees a plaintext value or an
//! unwrapped data key, and never calls up into `ops/`, `api/`, `audit/`,
//! `auth/` or `crypto/`. A put arrives sealed for the version after the head
//! its caller read (`put_once`); when a concurrent write takes that version
//! first, the store says so (`Put::Stale`) and the caller seals again.

mod apikey;
mod cache;
pub mod chain;
mod config;
mod engine;
mod error;
pub mod events;
pub mod identity;
pub mod lines;
pub mod logins;
pub mod model;
pub mod nats;
pub mod records;
pub mod settings;
pub mod sqlite;
pub mod trail;

use std::future::Future;
use std::sync::Arc;

pub use config::{Engine, StoreConfig};
pub use engine::Observed;
use engine::{Backend, SecretWrite, Seen, WriteError};
pub use error::StoreError;
pub use model::{
    ApiKeyChange, ApiKeyRecord, Change, Defaults, Head, KeySettings, Lapsed, ListFilter,
    ListedSecret, Mark, Precondition, SealedVersion, SecretMetadata, SettingsChange, StoredVersion,
    VersionAction, VersionInfo, WrappedDek,
};
pub use trail::{read_trail, LineBody, RecordedTrail, Trail, TrailError, Unfinished};

use crate::types::{SecretKey, TenantId};

/// Attempts of one change while concurrent writers keep winning the race.
pub const MAX_ATTEMPTS: usize = 32;

/// A value sealed for the version after a head (`Store::put_once`), with
/// when it lapses, what must hold, and the request's audit line.
#[derive(Debug, Clone)]
pub struct SealedPut {
    pub sealed: Vec<u8>,
    pub expires_at: Option<i64>,
    pub precondition: Precondition,
    pub line: Option<LineBody>,
    /// The value is KV data (Vault KV v2).
    pub kv: bool,
    /// The tenant's defaults for a key whose settings name none.
    pub defaults: Defaults,
}

/// Why one attempt at a put did not happen.
#[derive(Debug)]
pub enum Put {
    /// A concurrent write took the version first; this is the head it
    /// left.
    Stale(Observed),
    Failed(StoreError),
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

/// Calls the engine. The nats engine's futures are boxed: they are many
/// kilobytes, and unboxed they would size every caller's future and stack
/// frame, the embedded engine's request path included, for a network round
/// trip that dwarfs the allocation.
macro_rules! dispatch {
    ($backend:expr, $b:ident => $call:expr) => {
        match &*$backend {
            Backends::Sqlite($b) => $call.await,
            Backends::Nats($b) => Box::pin($call).await,
        }
    };
}

// After `dispatch!`, which they use.
pub mod dump;
mod keys;
mod kv_config;

/// Runs `attempt` until it is not beaten by a concurrent writer; each
/// attempt gets the state the last one left (`Err(Again(state))`).
async fn retry<S, T, F, Fut>(mut state: S, mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut(S) -> Fut,
    Fut: Future<Output = Result<T, Attempt<S>>>,
{
    for _ in 0..MAX_ATTEMPTS {
        match attempt(state).await {
            Ok(done) => return Ok(done),
            Err(Attempt::Again(next)) => state = next,
            Err(Attempt::Failed(e)) => return Err(e),
        }
    }
    Err(StoreError::Unavailable(
        "too many concurrent writers on one key".into(),
    ))
}

/// How an attempt of `retry` ended when it did not succeed.
enum Attempt<S> {
    Again(S),
    Failed(StoreError),
}

impl<S> From<StoreError> for Attempt<S> {
    fn from(e: StoreError) -> Self {
        Attempt::Failed(e)
    }
}

/// What a server opens: the store and the trail its engine keeps.
pub struct Opened {
    pub store: Store,
    pub trail: Trail,
}

impl Store {
    /// Opens the configured engine without its trail, for tools that change
    /// nothing a request would audit (the offline `apikey` commands).
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let backend = match config.engine {
            Engine::Sqlite => Backends::Sqlite(sqlite::SqliteBackend::open(
                &config.data_dir.join("strongroom.db"),
                config.max_versions,
                None,
            )?),
            Engine::Nats => Backends::Nats(Box::new(
                nats::NatsBackend::open(nats::NatsSettings::from(config), false).await?,
            )),
        };
        Ok(Store::over(backend, config))
    }

    /// Opens the configured engine and its trail (`<data-dir>/audit.log`,
    /// or the stream `<bucket>_audit`), as a server needs them.
    pub async fn open_with_trail(config: &StoreConfig) -> Result<Opened, StoreError> {
        let (backend, trail) = match config.engine {
            Engine::Sqlite => {
                // One server per embedded store: its audit chain and its
                // read cache both assume this process makes every change.
                let lock = sqlite::lock_data_dir(&config.data_dir)?;
                let file = Arc::new(
                    sqlite::FileTrail::open(
                        &config.data_dir.join("audit.log"),
                        config.audit_max_bytes,
                    )
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?,
                );
                let backend = sqlite::SqliteBackend::open(
                    &config.data_dir.join("strongroom.db"),
                    config.max_versions,
                    Some(file.clone()),
                )?
                .with_event_window(config.events)
                .holding(lock);
                (Backends::Sqlite(backend), Trail::file(file))
            }
            Engine::Nats => {
                let backend =
                    nats::NatsBackend::open(nats::NatsSettings::from(config), true).await?;
                let trail = Trail::stream(backend.trail().expect("opened with its trail"));
                (Backends::Nats(Box::new(backend)), trail)
            }
        };
        let store = Store::over(backend, config);
        // Following the change stream from the start, before anyone can
        // watch (nats; the embedded engine feeds watchers from its writer).
        store.start_following();
        Ok(Opened { store, trail })
    }

    fn over(backend: Backends, config: &StoreConfig) -> Store {
        Store {
            backend: Arc::new(backend),
            max_versions: config.max_versions,
        }
    }

    /// The engine's name, as `--store` spells it.
    pub fn engine_name(&self) -> &'static str {
        match &*self.backend {
            Backends::Sqlite(_) => "sqlite",
            Backends::Nats(_) => "nats",
        }
    }

    pub fn max_versions(&self) -> u32 {
        self.max_versions
    }

    /// Finishes queued writes and flushes; call once at shutdown.
    pub async fn close(&self) {
        dispatch!(self.backend, b => b.close())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self.backend, b => b.ping())
    }

    /// Whether a change could be stored now; it writes a probe record.
    pub async fn ready(&self) -> Result<(), StoreError> {
        dispatch!(self.backend, b => b.ready())
    }

    pub async fn get(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        version: Option<u64>,
    ) -> Result<Option<StoredVersion>, StoreError> {
        self.get_fresh(tenant, key, version, None).await
    }

    /// `get`, reflecting every change up to `min_revision` (a revision a
    /// write answered with): a nats gateway may otherwise answer from its
    /// cache before it has seen another gateway's change.
    pub async fn get_fresh(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        version: Option<u64>,
        min_revision: Option<u64>,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let found = dispatch!(self.backend, b => b.get(tenant, key, version, min_revision, false))?;
        // Exact to the millisecond, whatever the sweep has done; the clock
        // is read only for a value that can lapse.
        Ok(found.filter(|v| v.expires_at.is_none_or(|at| at > crate::clock::now_ms())))
    }

    /// The current version with the key's settings (a Vault read), from the
    /// read cache when it holds them.
    pub async fn get_kv(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
    ) -> Result<Option<StoredVersion>, StoreError> {
        let found = dispatch!(self.backend, b => b.get(tenant, key, None, None, true))?;
        Ok(found.filter(|v| v.expires_at.is_none_or(|at| at > crate::clock::now_ms())))
    }

    /// The key's head as it stands: what a put is sealed for
    /// (`Observed::next_version`).
    pub async fn head(&self, tenant: &TenantId, key: &SecretKey) -> Result<Observed, StoreError> {
        dispatch!(self.backend, b => b.head(tenant, key))
    }

    /// One attempt at writing `sealed` as the version after `seen`, with
    /// `line` in the same unit of work; returns the version and, where
    /// reads can lag, the change's revision. A concurrent write that took
    /// that version first answers `Put::Stale` with the head it left: the
    /// caller seals again for the version after it and tries again (the
    /// store never seals, so it takes data, not a sealing callback).
    pub async fn put_once(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        seen: Observed,
        put: SealedPut,
    ) -> Result<(u64, Option<u64>), Put> {
        let version = seen.next_version();
        let write = SecretWrite {
            seen: Seen::Read(seen),
            change: Change::Put {
                version,
                sealed: put.sealed,
                expires_at: put.expires_at,
                kv: put.kv,
                defaults: put.defaults,
            },
            precondition: put.precondition,
            line: put.line,
        };
        match self.write_once(tenant, key, write).await {
            Ok(revision) => Ok((version, revision)),
            Err(Attempt::Again(found)) => Err(Put::Stale(found)),
            Err(Attempt::Failed(e)) => Err(Put::Failed(e)),
        }
    }

    /// Soft delete (`Change::Delete`), undelete or destroy of `key`.
    pub async fn change(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        change: Change,
        precondition: Precondition,
        line: Option<LineBody>,
    ) -> Result<(), StoreError> {
        retry(Seen::Unread, |seen| {
            let write = SecretWrite {
                seen,
                change: change.clone(),
                precondition,
                line: line.clone(),
            };
            async move {
                self.write_once(tenant, key, write)
                    .await
                    .map(|_| ())
                    .map_err(|attempt| match attempt {
                        Attempt::Again(found) => Attempt::Again(Seen::Read(found)),
                        Attempt::Failed(e) => Attempt::Failed(e),
                    })
            }
        })
        .await
    }

    /// One attempt at a secret's change, a lost race made into `Again`.
    async fn write_once(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        write: SecretWrite,
    ) -> Result<Option<u64>, Attempt<Observed>> {
        match dispatch!(self.backend, b => b.write(tenant, key, write)) {
            Ok(revision) => Ok(revision),
            Err(WriteError::Stale(found)) => Err(Attempt::Again(*found)),
            Err(WriteError::Conflict) => {
                let found = dispatch!(self.backend, b => b.head(tenant, key))?;
                Err(Attempt::Again(found))
            }
            Err(WriteError::Failed(e)) => Err(Attempt::Failed(e)),
        }
    }

    pub async fn metadata(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
    ) -> Result<Option<SecretMetadata>, StoreError> {
        dispatch!(self.backend, b => b.metadata(tenant, key))
    }

    /// Live keys under `prefix` strictly after `after`, in byte order; with
    /// `expiring_before`, only those that lapse before it.
    pub async fn list(
        &self,
        tenant: &TenantId,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        expiring_before: Option<i64>,
    ) -> Result<Vec<ListedSecret>, StoreError> {
        let filter = ListFilter {
            now: crate::clock::now_ms(),
            expiring_before,
            deleted: false,
        };
        dispatch!(self.backend, b => b.list(tenant, prefix, after, limit, filter))
    }

    /// Every key under `prefix` strictly after `after` that has metadata,
    /// its current version live or not, in byte order (Vault's LIST).
    pub async fn list_with_deleted(
        &self,
        tenant: &TenantId,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ListedSecret>, StoreError> {
        let filter = ListFilter {
            now: crate::clock::now_ms(),
            expiring_before: None,
            deleted: true,
        };
        dispatch!(self.backend, b => b.list(tenant, prefix, after, limit, filter))
    }

    /// Every event committed from now on, through this process or (nats)
    /// any gateway of the store.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<events::Event>> {
        match &*self.backend {
            Backends::Sqlite(b) => b.hub().subscribe(),
            Backends::Nats(b) => b.hub().subscribe(),
        }
    }

    /// `tenant`'s events under `prefix` after id `after`, up to `limit`, in
    /// commit order (`StoreError::Gone` when no longer all kept).
    pub async fn events_after(
        &self,
        tenant: &TenantId,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<events::Event>, StoreError> {
        dispatch!(self.backend, b => b.events_after(tenant, prefix, after, limit))
    }

    /// Drops events beyond the window.
    pub async fn prune_events(&self, now: i64) -> Result<(), StoreError> {
        dispatch!(self.backend, b => b.prune_events(now))
    }

    /// Keys whose current version lapsed by `now` and that the sweep has
    /// not yet marked, up to `limit`.
    pub async fn lapsed(&self, now: i64, limit: usize) -> Result<Vec<Lapsed>, StoreError> {
        dispatch!(self.backend, b => b.lapsed(now, limit))
    }
}

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod conformance_identity;
#[cfg(test)]
mod conformance_kv;
#[cfg(test)]
pub(crate) mod nats_fixture;
