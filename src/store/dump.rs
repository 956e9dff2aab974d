//! Everything a store holds, as records: what `backup` writes and `restore`
//! and `migrate` load, the same for both engines. Values stay sealed.

use super::model::{ApiKeyRecord, Head, WrappedDek};
use super::StoreError;
use crate::types::TenantId;

/// One record of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dumped {
    /// A named meta value (the check value, seal counts; never the audit
    /// key or head, which belong to the trail of the store they are in).
    Meta {
        name: String,
        value: Vec<u8>,
    },
    Dek {
        tenant: TenantId,
        dek: WrappedDek,
    },
    ApiKey(ApiKeyRecord),
    /// A policy, role or token (`records::Kind`), as its kind encodes it:
    /// JSON that holds no credential (a token's is its hash).
    Record {
        kind: super::records::Kind,
        id: String,
        value: Vec<u8>,
    },
    Secret(SecretDump),
}

/// One secret: its head and every retained version, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretDump {
    pub tenant: TenantId,
    pub key: String,
    pub head: Head,
    pub versions: Vec<DumpedVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedVersion {
    pub version: u64,
    pub created_at: i64,
    pub deleted: bool,
    pub sealed: Vec<u8>,
    /// When the version lapses, if it was written with an expiry.
    pub expires_at: Option<i64>,
    /// When it was deleted, if it is.
    pub deleted_at: Option<i64>,
    /// Its value is gone (`sealed` is empty).
    pub destroyed: bool,
    /// KV data (Vault KV v2).
    pub kv: bool,
}

/// Where a dump goes: an error stops the dump and is returned as
/// `StoreError::Refused`.
pub type Sink<'a> = &'a mut (dyn FnMut(Dumped) -> Result<(), String> + Send);

/// What a load reads: an error (a backup that fails its check) undoes the
/// load where the engine can (sqlite) and is returned as
/// `StoreError::Refused`.
pub type Records = Box<dyn Iterator<Item = Result<Dumped, String>> + Send>;

/// How many records a load wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadCounts {
    pub secrets: u64,
    pub versions: u64,
    pub deks: u64,
    pub apikeys: u64,
    /// Policies, roles and tokens.
    pub identity: u64,
}

impl LoadCounts {
    pub fn count(&mut self, record: &Dumped) {
        match record {
            Dumped::Meta { .. } => {}
            Dumped::Dek { .. } => self.deks += 1,
            Dumped::ApiKey(_) => self.apikeys += 1,
            Dumped::Record { .. } => self.identity += 1,
            Dumped::Secret(s) => {
                self.secrets += 1;
                self.versions += s.versions.len() as u64;
            }
        }
    }
}

/// Meta values that belong to the store's own trail or probes, not to its
/// data: never dumped, and kept by a forced load.
pub const LOCAL_META: &[&str] = &[
    "audit_key",
    super::lines::AUDIT_HEAD,
    "ready_probe",
    super::events::PRUNED_THROUGH,
];

/// Whether the meta value `name` is the store's own (`LOCAL_META`, or a
/// nats gateway's chain head, `audit_head.<gateway>`).
pub fn is_local_meta(name: &str) -> bool {
    LOCAL_META.contains(&name)
        || super::lines::chain_named(super::lines::AUDIT_HEAD, name).is_some()
}

/// The refusal a load gives when the store holds data and `force` is off.
pub fn not_empty() -> StoreError {
    StoreError::Refused(
        "the target store is not empty: restore into an empty store, or pass --force to replace its data".into(),
    )
}
