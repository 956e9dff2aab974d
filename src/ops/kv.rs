//! The operations Vault's KV v2 model needs beyond put and get: a version
//! read with its metadata (deleted and destroyed versions included), a
//! merge into KV data, per-version delete, undelete and destroy, a key's
//! settings, and the tenant's KV configuration. Same scopes and audit
//! actions as the quiva API's operations; the rules are the store model's.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::secrets::into_text;
use super::{Call, Expiry, OpError, Ops, PutRequest, Written};
use crate::auth::{Action, Principal};
use crate::store::model::lapsed;
use crate::store::{Change, KeySettings, Precondition, StoreError, VersionAction, VersionInfo};
use crate::types::SecretKey;

/// One version as Vault's metadata shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvVersion {
    pub version: u64,
    /// ms since the epoch.
    pub created_at: i64,
    /// When it was deleted, or when it will be (an expiry or the key's
    /// `delete_version_after`); `None`: never.
    pub deletion_time: Option<i64>,
    pub destroyed: bool,
}

/// A version read with what Vault answers beside it. `value` is `None`
/// for a deleted or destroyed version (Vault's 404 with metadata).
pub struct KvRead {
    pub meta: KvVersion,
    pub value: Option<Zeroizing<String>>,
    /// Written as KV data (a JSON object of strings): Vault answers its
    /// fields; otherwise `{"value": <text>}`.
    pub kv: bool,
    pub custom_metadata: BTreeMap<String, String>,
}

/// A key's settings as they are (0: the default applies): the store
/// model's.
pub type KvSettings = KeySettings;

/// A change of a key's settings (`None` leaves a field as it is), merged
/// by the store with what the key has.
pub type SettingsChange = crate::store::SettingsChange;

/// A change of the tenant's KV configuration: `None` leaves a field as it
/// is.
#[derive(Debug, Clone, Copy, Default)]
pub struct KvConfigChange {
    pub max_versions: Option<u32>,
    pub cas_required: Option<bool>,
    pub delete_version_after_secs: Option<u64>,
}

/// A key's metadata as Vault shows it.
#[derive(Debug, Clone)]
pub struct KvMetadata {
    pub current_version: u64,
    pub oldest_version: u64,
    pub created_at: i64,
    pub updated_at: i64,
    pub settings: KvSettings,
    /// Retained versions, oldest first.
    pub versions: Vec<KvVersion>,
}

/// The tenant's KV configuration (Vault's `secret/config`): the store
/// model's defaults for its keys.
pub type KvConfig = crate::store::Defaults;

/// What to do to the named versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionsChange {
    Delete,
    Undelete,
    Destroy,
}

/// How Vault shows a version: deleted ones with when they were, live ones
/// with when they will lapse (an expiry, or `delete_version_after`).
fn kv_version(info: &VersionInfo) -> KvVersion {
    KvVersion {
        version: info.version,
        created_at: info.created_at,
        deletion_time: info.deleted_at.filter(|_| info.deleted).or(info.expires_at),
        destroyed: info.destroyed,
    }
}

/// RFC 7396: a null removes a field, an object merges into an object, any
/// other value replaces.
fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    use serde_json::Value;
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let object = target.as_object_mut().expect("made an object");
            for (name, value) in fields {
                if value.is_null() {
                    object.remove(&name);
                } else {
                    merge(object.entry(name).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other,
    }
}

impl Ops {
    /// The current version, or `version` (0: the current), with its
    /// metadata. `NotFound` when the key or the version does not exist; a
    /// deleted or destroyed version is `Ok` with no value.
    pub async fn read(
        &self,
        call: &Call,
        principal: &Principal,
        key: &SecretKey,
        version: Option<u64>,
    ) -> Result<KvRead, OpError> {
        call.key(key.as_str());
        let outcome = self.read_inner(call, principal, key, version.filter(|&v| v > 0));
        let outcome = outcome.await;
        // A deleted or destroyed version is answered as not found (with its
        // metadata), and recorded so, as the quiva API records it.
        if matches!(&outcome, Ok(read) if read.value.is_none()) {
            self.append(call, call.line(404)).await?;
        }
        self.settle(call, outcome).await
    }

    async fn read_inner(
        &self,
        call: &Call,
        principal: &Principal,
        key: &SecretKey,
        version: Option<u64>,
    ) -> Result<KvRead, OpError> {
        if !principal.allows(Action::Read, key.as_str()) {
            return Err(OpError::Forbidden);
        }
        let tenant = &principal.tenant;
        // The current version, as a quiva GET reads it (the cache holds the
        // key's settings once a Vault read asked for them).
        if version.is_none() {
            if let Some(stored) = self.store.get_kv(tenant, key).await? {
                let plaintext = self.open(call, tenant, key, &stored).await?;
                let value = into_text(plaintext)
                    .ok_or_else(|| OpError::Internal("stored value is not UTF-8".into()))?;
                return Ok(KvRead {
                    meta: KvVersion {
                        version: stored.version,
                        created_at: stored.created_at,
                        deletion_time: stored.expires_at,
                        destroyed: false,
                    },
                    value: Some(value),
                    kv: stored.kv,
                    custom_metadata: stored
                        .settings
                        .map(|s| s.custom_metadata.clone())
                        .unwrap_or_default(),
                });
            }
        }
        // A version named, or none live: the metadata says what it is.
        let meta = self
            .store
            .metadata(tenant, key)
            .await?
            .ok_or(OpError::NotFound)?;
        let want = version.unwrap_or(meta.current_version);
        let info = meta
            .versions
            .iter()
            .find(|v| v.version == want)
            .ok_or(OpError::NotFound)?;
        let gone =
            info.deleted || info.destroyed || lapsed(info.expires_at, crate::clock::now_ms());
        let stored = match gone {
            true => None,
            false => self.store.get(tenant, key, Some(want)).await?,
        };
        let value = match stored {
            Some(stored) => {
                let plaintext = self.open(call, tenant, key, &stored).await?;
                Some(
                    into_text(plaintext)
                        .ok_or_else(|| OpError::Internal("stored value is not UTF-8".into()))?,
                )
            }
            None => None,
        };
        Ok(KvRead {
            meta: kv_version(info),
            value,
            kv: info.kv,
            custom_metadata: meta.settings.custom_metadata,
        })
    }

    /// Merges `patch` (JSON merge patch: a null removes a field) into what
    /// a Vault read of the current version shows (its KV data, or
    /// `{"value": <text>}`) and writes the result as the next version, as
    /// long as no other write came between. `NotFound` when there is no
    /// live current version; `cas`: as `Precondition::Cas`.
    pub async fn patch(
        &self,
        call: &Call,
        principal: &Principal,
        key: &SecretKey,
        patch: serde_json::Map<String, serde_json::Value>,
        cas: Option<u64>,
    ) -> Result<Written, OpError> {
        call.key(key.as_str());
        let outcome = async {
            if !principal.allows(Action::Write, key.as_str()) {
                return Err(OpError::Forbidden);
            }
            let tenant = &principal.tenant;
            let stored = self
                .store
                .get_kv(tenant, key)
                .await?
                .ok_or(OpError::NotFound)?;
            if cas.is_some_and(|n| n != stored.version) {
                return Err(OpError::VersionMismatch);
            }
            // A key (or tenant) that requires check-and-set requires it of
            // a patch too, though the patch is made against what it read.
            let required = stored.settings.as_ref().is_some_and(|s| s.cas_required)
                || self.store.kv_config(tenant).await?.cas_required;
            if cas.is_none() && required {
                return Err(StoreError::CasRequired.into());
            }
            let plaintext = self.open(call, tenant, key, &stored).await?;
            let text = into_text(plaintext)
                .ok_or_else(|| OpError::Internal("stored value is not UTF-8".into()))?;
            let mut data = match stored.kv {
                true => serde_json::from_str(&text)
                    .map_err(|_| OpError::Internal("stored KV data is not JSON".into()))?,
                false => serde_json::json!({ "value": text.as_str() }),
            };
            merge(&mut data, serde_json::Value::Object(patch));
            let put = PutRequest {
                key: key.clone(),
                value: Zeroizing::new(data.to_string()),
                expiry: Expiry::Never,
                precondition: Precondition::Cas(stored.version),
                kv: true,
            };
            self.put_inner(call, principal, &put).await
        }
        .await;
        self.settle(call, outcome).await
    }

    /// Deletes, undeletes or destroys the named versions; versions that do
    /// not exist, or are already so, are passed over (and a key that does
    /// not exist: Vault answers all of them alike).
    pub async fn change_versions(
        &self,
        call: &Call,
        principal: &Principal,
        key: &SecretKey,
        change: VersionsChange,
        versions: &[u64],
    ) -> Result<(), OpError> {
        call.key(key.as_str());
        let (needs, action) = match change {
            VersionsChange::Delete => (Action::Delete, VersionAction::Delete),
            VersionsChange::Undelete => (Action::Write, VersionAction::Undelete),
            VersionsChange::Destroy => (Action::Delete, VersionAction::Destroy),
        };
        let outcome = async {
            if !principal.allows(needs, key.as_str()) {
                return Err(OpError::Forbidden);
            }
            if versions.is_empty() {
                return Err(OpError::Invalid("no version number provided".into()));
            }
            let change = Change::Versions {
                action,
                versions: versions.to_vec(),
            };
            let line = Some(call.line(200));
            let tenant = &principal.tenant;
            match self
                .store
                .change(tenant, key, change, Precondition::None, line)
                .await
            {
                Ok(()) => {
                    call.mark_written();
                    Ok(())
                }
                Err(StoreError::NotFound) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        .await;
        self.settle(call, outcome).await
    }

    pub async fn kv_metadata(
        &self,
        call: &Call,
        principal: &Principal,
        key: &SecretKey,
    ) -> Result<KvMetadata, OpError> {
        let meta = self.metadata(call, principal, key).await?;
        Ok(KvMetadata {
            current_version: meta.current_version,
            oldest_version: meta.versions.first().map_or(0, |v| v.version),
            created_at: meta.created_at,
            updated_at: meta.updated_at,
            versions: meta.versions.iter().map(kv_version).collect(),
            settings: meta.settings,
        })
    }

    /// Changes a key's settings, making its metadata when it has none.
    /// `Invalid` past Vault's limits on custom metadata or the store's
    /// number of versions.
    pub async fn set_settings(
        &self,
        call: &Call,
        principal: &Principal,
        key: &SecretKey,
        change: SettingsChange,
    ) -> Result<(), OpError> {
        call.key(key.as_str());
        let outcome = async {
            if !principal.allows(Action::Write, key.as_str()) {
                return Err(OpError::Forbidden);
            }
            self.check_max_versions(change.max_versions)?;
            // Custom metadata's limits are the model's, checked on what the
            // change leaves, in the unit of work (`SettingsChange::apply`).
            let tenant = &principal.tenant;
            let line = Some(call.line(200));
            self.store
                .change(
                    tenant,
                    key,
                    Change::Settings(change),
                    Precondition::None,
                    line,
                )
                .await?;
            call.mark_written();
            Ok(())
        }
        .await;
        self.settle(call, outcome).await
    }

    pub(super) fn check_max_versions(&self, max_versions: Option<u32>) -> Result<(), OpError> {
        let most = self.store.max_versions();
        match max_versions {
            Some(n) if n > most => Err(OpError::Invalid(format!(
                "max_versions may be at most {most} (the server's --max-versions)"
            ))),
            _ => Ok(()),
        }
    }
}
