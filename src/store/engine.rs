//! What an engine implements (crate-private: callers use `Store`). An engine
//! reads and writes; what a write means is `model::decide`'s, and what a
//! record beside the secrets says is `records.rs`'s. A write is one
//! attempt: an engine that loses a race to a concurrent writer says so
//! (`WriteError::Stale`), and `Store` tries again, so there is one retry loop
//! for every engine.

use std::future::Future;

use super::dump::{LoadCounts, Records, Sink};
use super::events::{Event, Hub};
use super::lines::LineBody;
use super::model::{
    Change, Head, Lapsed, ListFilter, ListedSecret, Precondition, SealedVersion, SecretMetadata,
    StoredVersion,
};
use super::records::{Kind, Record};
use super::StoreError;
use crate::types::{SecretKey, TenantId};

/// A key's head as read, with the engine's token for that exact state (the
/// NATS subject sequence, which a compare-and-set writes against; 0 where
/// an engine has none). A destroyed key has no head but may have a revision.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub head: Option<Head>,
    pub revision: u64,
    /// The states of other versions an engine carries with its head (nats
    /// carries them forward in each message); empty where an engine keeps
    /// them per version.
    pub marks: std::collections::BTreeMap<u64, super::model::Mark>,
    /// Versions up to this one left the key (nats carries it forward).
    pub floor: u64,
}

impl Observed {
    /// The version a put after this head gets.
    pub fn next_version(&self) -> u64 {
        super::model::next_version(self.head.as_ref())
    }
}

/// What `Store` knows of a key's head when it asks for a write.
#[derive(Debug, Clone)]
pub(crate) enum Seen {
    /// Not read: the engine reads it inside its unit of work.
    Unread,
    /// Read before the change was prepared (a put is sealed for the version
    /// after it).
    Read(Observed),
}

/// A change to one secret, ready to write.
#[derive(Debug, Clone)]
pub(crate) struct SecretWrite {
    pub seen: Seen,
    pub change: Change,
    pub precondition: Precondition,
    /// The request's audit line, written in the same unit of work.
    pub line: Option<LineBody>,
}

/// Why one attempt at a write did not happen.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// A concurrent write changed the key first; try again against the
    /// head the engine found (boxed: a head carries the key's settings).
    Stale(Box<Observed>),
    /// A concurrent write changed the key first; read its head again.
    Conflict,
    /// An answer (not found, version mismatch) or a failure.
    Failed(StoreError),
}

impl From<StoreError> for WriteError {
    fn from(e: StoreError) -> Self {
        WriteError::Failed(e)
    }
}

pub(crate) trait Backend: Send + Sync {
    /// Finishes queued writes and releases the engine; later writes fail.
    fn close(&self) -> impl Future<Output = ()> + Send;

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether the engine can take a change now (`/readyz`): it writes, so
    /// a read-only or full store answers with an error.
    fn ready(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The key's newest version and whether it is deleted.
    fn head(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
    ) -> impl Future<Output = Result<Observed, StoreError>> + Send;

    /// The current version unless soft deleted (`version == None`) or a
    /// given retained, not-deleted version; whether it lapsed is `Store`'s
    /// to check. `min_revision`: the answer reflects every change with a
    /// revision up to it (an engine whose reads are always current ignores
    /// it). `settings`: the answer carries the key's settings.
    fn get(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        version: Option<u64>,
        min_revision: Option<u64>,
        settings: bool,
    ) -> impl Future<Output = Result<Option<StoredVersion>, StoreError>> + Send;

    /// One attempt at a change: reads the head inside the engine's unit of
    /// work, asks the model, writes the effect and the line. Returns the
    /// change's revision where reads can lag (nats), else `None`.
    fn write(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        write: SecretWrite,
    ) -> impl Future<Output = Result<Option<u64>, WriteError>> + Send;

    fn metadata(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
    ) -> impl Future<Output = Result<Option<SecretMetadata>, StoreError>> + Send;

    /// Live keys under `prefix` strictly after `after` that `filter`
    /// admits, in byte order.
    fn list(
        &self,
        tenant: &TenantId,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        filter: ListFilter,
    ) -> impl Future<Output = Result<Vec<ListedSecret>, StoreError>> + Send;

    /// Where this process's watchers take new events from: every change
    /// of the store, made through this process or (nats) any other.
    fn hub(&self) -> &Hub;

    /// Up to `limit` of `tenant`'s events under `prefix` with ids after
    /// `after`, in commit order; `StoreError::Gone` when some of them are no
    /// longer kept (or `after` is no id of this store).
    fn events_after(
        &self,
        tenant: &TenantId,
        prefix: &str,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send;

    /// Drops events beyond the window (where the engine does not itself).
    fn prune_events(&self, now: i64) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Up to `limit` keys, of every tenant, not soft deleted whose current
    /// version lapsed at or before `now`.
    fn lapsed(
        &self,
        now: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Lapsed>, StoreError>> + Send;

    /// Record `id` of `kind`, if stored (`records.rs`).
    fn record_get(
        &self,
        kind: Kind,
        id: &str,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send;

    /// Every record of `kind` whose id starts with `prefix`, in id order.
    fn record_scan(
        &self,
        kind: Kind,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<Record>, StoreError>> + Send;

    /// One compare-and-set: stores `value` as record `id` of `kind` (or,
    /// for `None`, removes it) if its revision is still `expected` (0: there
    /// is none), with `line` in the same unit of work; the new revision (0
    /// once removed). `WriteError::Conflict` when another write came first.
    fn record_put(
        &self,
        kind: Kind,
        id: &str,
        expected: u64,
        value: Option<Vec<u8>>,
        line: Option<LineBody>,
    ) -> impl Future<Output = Result<u64, WriteError>> + Send;

    /// A page of a tenant's retained versions after (key, version).
    fn sealed_versions(
        &self,
        tenant: &TenantId,
        after: Option<(String, u64)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<SealedVersion>, StoreError>> + Send;

    /// Replaces one version's sealed bytes if they are still `old`.
    fn replace_sealed(
        &self,
        tenant: &TenantId,
        key: &str,
        version: u64,
        old: &[u8],
        new: Vec<u8>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Hands every record the store holds to `sink` (`store::dump`).
    fn dump(&self, sink: Sink<'_>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes `records` into the store (`store::dump`).
    fn load(
        &self,
        records: Records,
        force: bool,
        line: Option<LineBody>,
    ) -> impl Future<Output = Result<LoadCounts, StoreError>> + Send;
}
