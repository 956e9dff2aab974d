//! An API key as the store keeps it (the hash of its text, never the
//! text), and the changes it takes after it is made: the rules of the
//! model for API keys.

use super::StoreError;
use crate::types::TenantId;

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
    /// Policies whose scopes it holds as well, as they are at each request.
    pub policies: Vec<String>,
}

impl ApiKeyRecord {
    /// The record revoked at `at`, if `tenant` may revoke it: a tenant only
    /// sees its own keys, and a revoked key is gone.
    pub fn revoked(&self, tenant: &TenantId, at: i64) -> Result<ApiKeyRecord, StoreError> {
        if self.tenant != *tenant || self.revoked_at.is_some() {
            return Err(StoreError::NotFound);
        }
        Ok(ApiKeyRecord {
            revoked_at: Some(at),
            ..self.clone()
        })
    }

    /// The record with its last use moved to `at`, unless it already shows
    /// a later one (uses are recorded out of order by several gateways).
    pub fn touched(&self, at: i64) -> Option<ApiKeyRecord> {
        (self.last_used_at.is_none_or(|t| t < at)).then(|| ApiKeyRecord {
            last_used_at: Some(at),
            ..self.clone()
        })
    }
}

/// A change to an API key record after it is created.
#[derive(Debug, Clone)]
pub enum ApiKeyChange {
    /// Revoke it, on behalf of `tenant`.
    Revoke { tenant: TenantId, at: i64 },
    /// Record a use at `at`.
    Touch { at: i64 },
}

impl ApiKeyChange {
    /// The record to write instead of `record`; `None` when there is
    /// nothing to write (a use older than the one recorded).
    pub fn apply(&self, record: &ApiKeyRecord) -> Result<Option<ApiKeyRecord>, StoreError> {
        match self {
            ApiKeyChange::Revoke { tenant, at } => record.revoked(tenant, *at).map(Some),
            ApiKeyChange::Touch { at } => Ok(record.touched(*at)),
        }
    }
}
