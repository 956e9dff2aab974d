//! The rules of the secret store, written once above the engines: which
//! version a write gets, what a precondition means, what soft delete,
//! undelete and destroy do, how many versions are kept, and what metadata
//! shows. An engine reads a key's `Head` inside its unit of work, asks
//! `decide` what to do, and writes the `Effect` it is given; it never decides
//! anything itself, so two engines cannot disagree.

use super::StoreError;
use crate::types::TenantId;

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
    /// no live secret exists: absent, or soft-deleted).
    pub fn check(self, live: Option<u64>) -> Result<(), StoreError> {
        match self {
            Precondition::None => Ok(()),
            Precondition::Version(want) if live == Some(want) => Ok(()),
            Precondition::Absent if live.is_none() => Ok(()),
            _ => Err(StoreError::VersionMismatch),
        }
    }
}

/// A key's state as an engine read it: its newest version and whether that
/// version is soft deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub version: u64,
    pub deleted: bool,
    /// When the key was created; kept by soft delete, reset by destroy.
    pub key_created_at: i64,
    pub updated_at: i64,
}

impl Head {
    /// The version a reader of the key sees, if any.
    pub fn live(&self) -> Option<u64> {
        (!self.deleted).then_some(self.version)
    }
}

/// The version the next write of a key gets: one past its newest, whether
/// that one is live or soft deleted (Vault KV v2); 1 for a new key.
pub fn next_version(head: Option<&Head>) -> u64 {
    head.map_or(1, |h| h.version + 1)
}

/// What a request asks of one key. A put carries its value already sealed
/// for the version it expects to get (the version is bound into the
/// ciphertext).
#[derive(Debug, Clone)]
pub enum Change {
    Put { version: u64, sealed: Vec<u8> },
    Delete,
    Undelete,
    Destroy,
}

/// What an engine must write, decided by `decide` from the head it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Store `version` as the new live current version; versions up to
    /// `prune_through` leave the key's history.
    Put {
        version: u64,
        key_created_at: i64,
        prune_through: Option<u64>,
    },
    /// Mark the current `version` soft deleted (`deleted`) or live again.
    SetDeleted { version: u64, deleted: bool },
    /// Remove the key and every version for good.
    Destroy,
}

/// Why `decide` did not give an effect.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// An answer for the caller: not found, or a precondition failed.
    Answer(StoreError),
    /// The put was sealed for another version than the key gets now (a
    /// concurrent write won): seal again for `next_version` of this head.
    Stale,
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Answer(e)
    }
}

/// The one decision every engine makes inside its unit of work.
pub fn decide(
    head: Option<&Head>,
    change: &Change,
    precondition: Precondition,
    max_versions: u64,
    now: i64,
) -> Result<Effect, Refusal> {
    match change {
        Change::Put { version, .. } => {
            precondition.check(head.and_then(Head::live))?;
            if *version != next_version(head) {
                return Err(Refusal::Stale);
            }
            Ok(Effect::Put {
                version: *version,
                key_created_at: head.map_or(now, |h| h.key_created_at),
                prune_through: version.checked_sub(max_versions).filter(|&v| v > 0),
            })
        }
        Change::Delete => {
            let version = head.and_then(Head::live).ok_or(StoreError::NotFound)?;
            precondition.check(Some(version))?;
            Ok(Effect::SetDeleted {
                version,
                deleted: true,
            })
        }
        Change::Undelete => match head {
            Some(h) if h.deleted => Ok(Effect::SetDeleted {
                version: h.version,
                deleted: false,
            }),
            _ => Err(StoreError::NotFound.into()),
        },
        Change::Destroy => match head {
            Some(_) => Ok(Effect::Destroy),
            None => Err(StoreError::NotFound.into()),
        },
    }
}

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
    /// The data key it is sealed under (`sealed_dek_id`).
    pub dek_id: Option<u32>,
}

/// The DEK id a sealed value names: its stored form is a format byte and
/// the id (u32, big endian) before the ciphertext (DESIGN §3).
pub fn sealed_dek_id(sealed: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(sealed.get(1..5)?.try_into().ok()?))
}

/// A key's metadata and its retained versions, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMetadata {
    pub current_version: u64,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted: bool,
    pub versions: Vec<VersionInfo>,
}

impl SecretMetadata {
    /// What metadata shows: the head's numbers and the retained versions in
    /// order, the current one flagged as the head says (an engine may hold
    /// the flag in two places; the head's wins).
    pub fn from_parts(head: &Head, mut versions: Vec<VersionInfo>) -> SecretMetadata {
        versions.sort_by_key(|v| v.version);
        for v in &mut versions {
            if v.version == head.version {
                v.deleted = head.deleted;
            }
        }
        SecretMetadata {
            current_version: head.version,
            created_at: head.key_created_at,
            updated_at: head.updated_at,
            deleted: head.deleted,
            versions,
        }
    }
}

/// One row of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSecret {
    pub key: String,
    pub version: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One retained version's sealed bytes, as reseal reads them.
#[derive(Debug, Clone)]
pub struct SealedVersion {
    pub key: String,
    pub version: u64,
    pub sealed: Vec<u8>,
}

/// A data key as stored: wrapped by the KEK.
#[derive(Debug, Clone, PartialEq, Eq)]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: u64, deleted: bool) -> Head {
        Head {
            version,
            deleted,
            key_created_at: 5,
            updated_at: 6,
        }
    }

    fn put(version: u64) -> Change {
        Change::Put {
            version,
            sealed: Vec::new(),
        }
    }

    #[test]
    fn a_put_gets_the_next_version_and_prunes_beyond_the_limit() {
        assert_eq!(
            decide(None, &put(1), Precondition::None, 10, 99).unwrap(),
            Effect::Put {
                version: 1,
                key_created_at: 99,
                prune_through: None
            }
        );
        assert_eq!(
            decide(Some(&head(12, true)), &put(13), Precondition::None, 10, 99).unwrap(),
            Effect::Put {
                version: 13,
                key_created_at: 5,
                prune_through: Some(3)
            }
        );
        assert!(matches!(
            decide(Some(&head(2, false)), &put(2), Precondition::None, 10, 0),
            Err(Refusal::Stale)
        ));
    }

    #[test]
    fn preconditions_see_a_soft_deleted_key_as_absent() {
        let deleted = head(3, true);
        assert!(decide(Some(&deleted), &put(4), Precondition::Absent, 10, 0).is_ok());
        assert!(matches!(
            decide(Some(&deleted), &put(4), Precondition::Version(3), 10, 0),
            Err(Refusal::Answer(StoreError::VersionMismatch))
        ));
        assert!(matches!(
            decide(Some(&deleted), &Change::Delete, Precondition::None, 10, 0),
            Err(Refusal::Answer(StoreError::NotFound))
        ));
        assert_eq!(
            decide(Some(&deleted), &Change::Undelete, Precondition::None, 10, 0).unwrap(),
            Effect::SetDeleted {
                version: 3,
                deleted: false
            }
        );
        assert!(matches!(
            decide(
                Some(&head(3, false)),
                &Change::Undelete,
                Precondition::None,
                10,
                0
            ),
            Err(Refusal::Answer(StoreError::NotFound))
        ));
        assert!(matches!(
            decide(None, &Change::Destroy, Precondition::None, 10, 0),
            Err(Refusal::Answer(StoreError::NotFound))
        ));
    }

    #[test]
    fn a_key_is_revoked_once_and_only_by_its_tenant() {
        let t = TenantId::parse("t").unwrap();
        let record = ApiKeyRecord {
            id: "id".into(),
            tenant: t.clone(),
            name: "n".into(),
            scopes: vec![],
            hash: [0; 32],
            created_at: 1,
            expires_at: None,
            revoked_at: None,
            last_used_at: Some(10),
        };
        let revoked = record.revoked(&t, 7).unwrap();
        assert_eq!(revoked.revoked_at, Some(7));
        assert!(revoked.revoked(&t, 8).is_err());
        assert!(record.revoked(&TenantId::parse("u").unwrap(), 7).is_err());
        assert!(record.touched(9).is_none());
        assert_eq!(record.touched(11).unwrap().last_used_at, Some(11));
    }
}
