//! A key's settings and its versions' marks: the parts of the store's
//! model that Vault's KV v2 brought (DESIGN §12), which `model::decide`
//! applies. Zero or empty settings mean the default applies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::StoreError;

/// A key's own settings (Vault KV v2's key metadata); zero or empty: the
/// default applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySettings {
    /// Versions kept, at most the store's `--max-versions`; 0: the tenant's
    /// or the store's number.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_versions: u32,
    /// Every write must name the version it replaces (`Precondition::Cas`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cas_required: bool,
    /// Each new version lapses this long after it is written; 0: never.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delete_version_after_secs: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_metadata: BTreeMap<String, String>,
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

impl KeySettings {
    pub fn is_default(&self) -> bool {
        *self == KeySettings::default()
    }

    /// Versions kept: the key's own number, else `tenant`'s, else the
    /// store's, never more than the store's.
    pub fn keep(&self, tenant: u32, store: u64) -> u64 {
        let own = [self.max_versions, tenant].into_iter().find(|&n| n > 0);
        own.map_or(store, |n| u64::from(n).min(store))
    }
}

/// A change of a key's settings, merged in the engine's unit of work with
/// what the key has: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsChange {
    pub max_versions: Option<u32>,
    pub cas_required: Option<bool>,
    pub delete_version_after_secs: Option<u64>,
    /// Replaces the custom metadata.
    pub custom_metadata: Option<BTreeMap<String, String>>,
    /// Merges into the custom metadata (after `custom_metadata`): a `None`
    /// removes the entry.
    pub custom_metadata_patch: Option<BTreeMap<String, Option<String>>>,
    /// The key must have metadata already (a PATCH): `NotFound` if not.
    pub must_exist: bool,
}

impl From<KeySettings> for SettingsChange {
    /// Every field replaced.
    fn from(s: KeySettings) -> Self {
        SettingsChange {
            max_versions: Some(s.max_versions),
            cas_required: Some(s.cas_required),
            delete_version_after_secs: Some(s.delete_version_after_secs),
            custom_metadata: Some(s.custom_metadata),
            ..Default::default()
        }
    }
}

impl SettingsChange {
    /// `settings` with the change made, within Vault's limits.
    pub fn apply(&self, settings: &KeySettings) -> Result<KeySettings, StoreError> {
        let mut s = settings.clone();
        s.max_versions = self.max_versions.unwrap_or(s.max_versions);
        s.cas_required = self.cas_required.unwrap_or(s.cas_required);
        s.delete_version_after_secs = self
            .delete_version_after_secs
            .unwrap_or(s.delete_version_after_secs);
        if let Some(custom) = &self.custom_metadata {
            s.custom_metadata = custom.clone();
        }
        for (name, value) in self.custom_metadata_patch.iter().flatten() {
            match value {
                Some(value) => s.custom_metadata.insert(name.clone(), value.clone()),
                None => s.custom_metadata.remove(name),
            };
        }
        check_custom(&s.custom_metadata)?;
        Ok(s)
    }
}

/// Vault's limits on custom metadata; the error names the limit, never a
/// value.
pub fn check_custom(custom: &BTreeMap<String, String>) -> Result<(), StoreError> {
    let bad = |detail: String| Err(StoreError::Invalid(detail));
    if custom.len() > MAX_CUSTOM_METADATA {
        return bad(format!(
            "custom_metadata may hold at most {MAX_CUSTOM_METADATA} keys"
        ));
    }
    for (name, value) in custom {
        if name.is_empty() || name.len() > MAX_CUSTOM_KEY_BYTES {
            return bad(format!(
                "custom_metadata keys must be 1 to {MAX_CUSTOM_KEY_BYTES} bytes"
            ));
        }
        if value.len() > MAX_CUSTOM_VALUE_BYTES {
            return bad(format!(
                "custom_metadata values must be at most {MAX_CUSTOM_VALUE_BYTES} bytes"
            ));
        }
    }
    Ok(())
}

/// A tenant's defaults for its keys' settings (Vault's `config` of its KV
/// mount); zero: the store's. `cas_required` binds KV (Vault) writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Defaults {
    #[serde(default)]
    pub max_versions: u32,
    #[serde(default)]
    pub cas_required: bool,
    #[serde(default)]
    pub delete_version_after_secs: u64,
}

/// Vault's limits on a key's custom metadata.
pub const MAX_CUSTOM_METADATA: usize = 64;
pub const MAX_CUSTOM_KEY_BYTES: usize = 128;
pub const MAX_CUSTOM_VALUE_BYTES: usize = 512;

/// A version's deletion state, as a per-version change leaves it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// When it was deleted; `None`: live (or lapsing by its expiry).
    pub deleted_at: Option<i64>,
    /// Its value is gone for good.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub destroyed: bool,
    /// When the version was written: an engine that erases a destroyed
    /// version's record still shows it (0: not known).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created_at: i64,
    /// Brought back: it no longer lapses (an undelete clears an expiry).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expiry_cleared: bool,
}

/// What a per-version change does to each version it names (Vault's
/// `delete`, `undelete`, `destroy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionAction {
    Delete,
    Undelete,
    Destroy,
}
