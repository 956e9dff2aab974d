//! The rules of the secret store, written once above the engines: which
//! version a write gets, what a precondition means, what soft delete,
//! undelete and destroy do, how many versions are kept, and what metadata
//! shows. An engine reads a key's `Head` inside its unit of work, asks
//! `decide` what to do, and writes the `Effect` it is given; it never decides
//! anything itself, so two engines cannot disagree.

pub use super::apikey::{ApiKeyChange, ApiKeyRecord};
pub use super::settings::{Defaults, KeySettings, Mark, SettingsChange, VersionAction};
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
    /// Both of them: "exists at version n" and "does not exist" cannot both
    /// hold, so the write never happens.
    Never,
    /// Vault's check-and-set: the newest version, live or deleted, must be
    /// this one (0: the key has no version at all).
    Cas(u64),
}

impl Precondition {
    /// Checks the condition against the live current version (`None` when
    /// no live secret exists: absent, or soft-deleted).
    pub fn check(self, live: Option<u64>) -> Result<(), StoreError> {
        match self {
            Precondition::None | Precondition::Cas(_) => Ok(()),
            Precondition::Version(want) if live == Some(want) => Ok(()),
            Precondition::Absent if live.is_none() => Ok(()),
            _ => Err(StoreError::VersionMismatch),
        }
    }

    /// Checks a put against the head: `Cas` against the newest version
    /// whether live or not, a key (or, for `cas_required`, a KV write's
    /// tenant) that requires one refusing `None`, the rest as `check`.
    pub fn check_put(
        self,
        head: Option<&Head>,
        cas_required: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        let newest = head.map_or(0, |h| h.version);
        let required = cas_required || head.is_some_and(|h| h.settings.cas_required);
        match self {
            Precondition::Cas(want) if want == newest => Ok(()),
            Precondition::Cas(_) => Err(StoreError::VersionMismatch),
            Precondition::None if required => Err(StoreError::CasRequired),
            other => other.check(head.and_then(|h| h.live(now))),
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
    /// When the current version lapses (unix ms), if it was written with an
    /// expiry. From that instant the key reads as soft deleted, whether or
    /// not the sweep has marked it yet.
    pub expires_at: Option<i64>,
    /// The current version was destroyed (and so is deleted too).
    pub destroyed: bool,
    pub settings: KeySettings,
}

/// Whether a value written to lapse at `expires_at` has lapsed at `now`.
pub fn lapsed(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_some_and(|at| at <= now)
}

impl Head {
    /// The version a reader of the key sees at `now`, if any.
    pub fn live(&self, now: i64) -> Option<u64> {
        (!self.deleted && !lapsed(self.expires_at, now)).then_some(self.version)
    }
}

/// The version the next write of a key gets: one past its newest, whether
/// that one is live or soft deleted (Vault KV v2); 1 for a new key. (A key
/// whose settings were written before any value has version 0.)
pub fn next_version(head: Option<&Head>) -> u64 {
    head.map_or(1, |h| h.version + 1)
}

/// What a request asks of one key. A put carries its value already sealed
/// for the version it expects to get (the version is bound into the
/// ciphertext), and when it lapses, if ever.
#[derive(Debug, Clone)]
pub enum Change {
    Put {
        version: u64,
        sealed: Vec<u8>,
        expires_at: Option<i64>,
        /// The value is KV data (Vault KV v2's JSON object).
        kv: bool,
        /// The tenant's defaults for a key whose settings name none.
        defaults: Defaults,
    },
    Delete,
    /// Brings back a soft-deleted (or lapsed) key without its expiry.
    Undelete,
    Destroy,
    /// The sweep marks a lapsed key soft deleted: only if its current
    /// version still lapses at `at` (a rewrite with a later expiry or none
    /// is left alone).
    Expire {
        at: i64,
    },
    /// Deletes, undeletes or destroys the named versions (the engine reads
    /// the retained versions for `decide`); unknown ones are passed over.
    Versions {
        action: VersionAction,
        versions: Vec<u64>,
    },
    /// Changes the key's settings, making its metadata if it has none
    /// (unless the change says it must exist).
    Settings(SettingsChange),
}

impl Change {
    /// Whether `decide` needs the key's retained versions.
    pub fn needs_versions(&self) -> bool {
        matches!(self, Change::Versions { .. })
    }
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
        expires_at: Option<i64>,
        kv: bool,
        /// The previous current version's state when it was not live: it
        /// stays so as an older version.
        previous: Option<(u64, Mark)>,
    },
    /// Mark the current `version` soft deleted (`deleted`) or live again;
    /// live again also clears its expiry.
    SetDeleted { version: u64, deleted: bool },
    /// Remove the key and every version for good.
    Destroy,
    /// Give these versions these states (a destroyed one loses its value);
    /// `current` says what becomes of the key's head when its version is
    /// among them: `Some(false)` live again (its expiry cleared),
    /// `Some(true)` deleted.
    Marks {
        marks: Vec<(u64, Mark)>,
        current: Option<bool>,
    },
    /// Store these settings; `create`: the key has no head yet (it gets
    /// version 0, deleted).
    Settings { settings: KeySettings, create: bool },
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

/// The one decision every engine makes inside its unit of work, for a
/// change that does not need the retained versions (`decide_in`).
pub fn decide(
    head: Option<&Head>,
    change: &Change,
    precondition: Precondition,
    max_versions: u64,
    now: i64,
) -> Result<Effect, Refusal> {
    decide_in(head, &[], change, precondition, max_versions, now)
}

/// `decide`, given the key's retained versions as metadata shows them
/// (read by the engine when `Change::needs_versions`).
pub fn decide_in(
    head: Option<&Head>,
    retained: &[VersionInfo],
    change: &Change,
    precondition: Precondition,
    max_versions: u64,
    now: i64,
) -> Result<Effect, Refusal> {
    match change {
        Change::Put {
            version,
            expires_at,
            kv,
            defaults,
            ..
        } => {
            precondition.check_put(head, *kv && defaults.cas_required, now)?;
            if *version != next_version(head) {
                return Err(Refusal::Stale);
            }
            let settings = head.map(|h| &h.settings);
            let keep = settings.map_or(
                KeySettings::default().keep(defaults.max_versions, max_versions),
                |s| s.keep(defaults.max_versions, max_versions),
            );
            let after = settings
                .map(|s| s.delete_version_after_secs)
                .filter(|&s| s > 0)
                .unwrap_or(defaults.delete_version_after_secs);
            let lapse =
                (after > 0).then(|| now.saturating_add((after as i64).saturating_mul(1000)));
            let expires_at = match (*expires_at, lapse) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let previous = head
                .filter(|h| h.version > 0 && h.live(now).is_none())
                .map(|h| {
                    let at = if h.deleted {
                        h.updated_at
                    } else {
                        h.expires_at.unwrap_or(h.updated_at)
                    };
                    (
                        h.version,
                        Mark {
                            deleted_at: Some(at),
                            destroyed: h.destroyed,
                            created_at: 0,
                            expiry_cleared: false,
                        },
                    )
                });
            Ok(Effect::Put {
                version: *version,
                key_created_at: head.map_or(now, |h| h.key_created_at),
                prune_through: version.checked_sub(keep).filter(|&v| v > 0),
                expires_at,
                kv: *kv,
                previous,
            })
        }
        Change::Versions { action, versions } => {
            let head = head.ok_or(StoreError::NotFound)?;
            marks(head, retained, *action, versions, now)
        }
        Change::Settings(change) => match head {
            None if change.must_exist => Err(StoreError::NotFound.into()),
            _ => Ok(Effect::Settings {
                settings: change.apply(&head.map(|h| h.settings.clone()).unwrap_or_default())?,
                create: head.is_none(),
            }),
        },
        Change::Delete => {
            let version = head.and_then(|h| h.live(now)).ok_or(StoreError::NotFound)?;
            precondition.check(Some(version))?;
            Ok(Effect::SetDeleted {
                version,
                deleted: true,
            })
        }
        Change::Undelete => match head {
            Some(h) if h.live(now).is_none() && !h.destroyed && h.version > 0 => {
                Ok(Effect::SetDeleted {
                    version: h.version,
                    deleted: false,
                })
            }
            _ => Err(StoreError::NotFound.into()),
        },
        Change::Destroy => match head {
            Some(_) => Ok(Effect::Destroy),
            None => Err(StoreError::NotFound.into()),
        },
        Change::Expire { at } => match head {
            Some(h) if !h.deleted && h.expires_at == Some(*at) && lapsed(Some(*at), now) => {
                Ok(Effect::SetDeleted {
                    version: h.version,
                    deleted: true,
                })
            }
            _ => Err(StoreError::NotFound.into()),
        },
    }
}

/// What a per-version change does to the retained versions it names:
/// delete marks a live one deleted now, undelete brings back a deleted (or
/// lapsed) one, destroy drops any one's value; a destroyed version stays
/// so. `NotFound` when nothing changes.
fn marks(
    head: &Head,
    retained: &[VersionInfo],
    action: VersionAction,
    versions: &[u64],
    now: i64,
) -> Result<Effect, Refusal> {
    let mut marks = Vec::new();
    let mut current = None;
    for v in retained.iter().filter(|v| versions.contains(&v.version)) {
        let deleted = v.deleted || lapsed(v.expires_at, now);
        let mark = match action {
            _ if v.destroyed => continue,
            VersionAction::Delete if !deleted => Mark {
                deleted_at: Some(now),
                destroyed: false,
                created_at: v.created_at,
                expiry_cleared: false,
            },
            VersionAction::Undelete if deleted => Mark {
                created_at: v.created_at,
                expiry_cleared: true,
                ..Mark::default()
            },
            VersionAction::Destroy => Mark {
                deleted_at: v.deleted_at.or(deleted.then_some(now)),
                destroyed: true,
                created_at: v.created_at,
                expiry_cleared: false,
            },
            _ => continue,
        };
        if v.version == head.version {
            current = Some(mark.deleted_at.is_some() || mark.destroyed);
        }
        marks.push((v.version, mark));
    }
    if marks.is_empty() {
        return Err(StoreError::NotFound.into());
    }
    Ok(Effect::Marks { marks, current })
}

/// One stored version of a secret, still sealed.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub version: u64,
    pub created_at: i64,
    pub sealed: Vec<u8>,
    /// When this version lapses, if it was written with an expiry: it is
    /// never served after (`Store::get`).
    pub expires_at: Option<i64>,
    /// The value is KV data (Vault KV v2's JSON object).
    pub kv: bool,
    /// The key's settings, when the read asked for them (`Store::get_kv`).
    pub settings: Option<std::sync::Arc<KeySettings>>,
}

/// A version as shown by metadata: never the value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: u64,
    pub created_at: i64,
    pub deleted: bool,
    /// The data key it is sealed under (`sealed_dek_id`).
    pub dek_id: Option<u32>,
    /// When it was deleted, if it is.
    pub deleted_at: Option<i64>,
    pub destroyed: bool,
    /// When it lapses, if written with an expiry.
    pub expires_at: Option<i64>,
    pub kv: bool,
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
    /// Soft deleted, or lapsed (whether or not the sweep marked it yet).
    pub deleted: bool,
    pub expires_at: Option<i64>,
    pub versions: Vec<VersionInfo>,
    pub settings: KeySettings,
}

impl SecretMetadata {
    /// What metadata shows: the head's numbers and the retained versions in
    /// order, the current one flagged as the head says (an engine may hold
    /// the flag in two places; the head's wins).
    pub fn from_parts(head: &Head, mut versions: Vec<VersionInfo>, now: i64) -> SecretMetadata {
        versions.sort_by_key(|v| v.version);
        let deleted = head.live(now).is_none();
        for v in &mut versions {
            if v.version == head.version {
                v.deleted = deleted;
                v.destroyed = head.destroyed;
                if !head.deleted {
                    v.deleted_at = None;
                }
            }
        }
        SecretMetadata {
            current_version: head.version,
            created_at: head.key_created_at,
            updated_at: head.updated_at,
            deleted,
            expires_at: head.expires_at,
            versions,
            settings: head.settings.clone(),
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
    pub expires_at: Option<i64>,
}

/// Which live keys a listing wants, besides its prefix and page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListFilter {
    /// Keys that lapse at or before this are not live and never listed.
    pub now: i64,
    /// Only keys that lapse before this (`?expiring_before=`).
    pub expiring_before: Option<i64>,
    /// Every key with metadata, its current version deleted or not
    /// (Vault's LIST); the other fields are then not looked at.
    pub deleted: bool,
}

impl ListFilter {
    /// Whether a live key with this expiry belongs in the listing.
    pub fn admits(&self, expires_at: Option<i64>) -> bool {
        self.deleted
            || !lapsed(expires_at, self.now)
                && self
                    .expiring_before
                    .is_none_or(|before| expires_at.is_some_and(|at| at < before))
    }
}

/// A key the sweep found lapsed, with the instant it lapsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lapsed {
    pub tenant: TenantId,
    pub key: String,
    pub expires_at: i64,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: u64, deleted: bool) -> Head {
        Head {
            version,
            deleted,
            key_created_at: 5,
            updated_at: 6,
            expires_at: None,
            destroyed: false,
            settings: KeySettings::default(),
        }
    }

    fn put(version: u64) -> Change {
        Change::Put {
            version,
            sealed: Vec::new(),
            expires_at: None,
            kv: false,
            defaults: Defaults::default(),
        }
    }

    /// A key lapses at 100: from then on it reads as soft deleted, before
    /// any sweep; the sweep marks it only while it still lapses at 100.
    #[test]
    fn a_lapsed_key_is_deleted_for_every_rule_and_the_sweep_marks_only_that_lapse() {
        let lapsing = Head {
            expires_at: Some(100),
            ..head(4, false)
        };
        assert_eq!(lapsing.live(99), Some(4));
        assert_eq!(lapsing.live(100), None);
        let decide_at = |change: &Change, precondition, now| {
            decide(Some(&lapsing), change, precondition, 10, now)
        };
        assert!(decide_at(&put(5), Precondition::Absent, 100).is_ok());
        assert!(decide_at(&put(5), Precondition::Absent, 99).is_err());
        assert!(matches!(
            decide_at(&put(5), Precondition::Version(4), 100),
            Err(Refusal::Answer(StoreError::VersionMismatch))
        ));
        assert!(matches!(
            decide_at(&Change::Delete, Precondition::None, 100),
            Err(Refusal::Answer(StoreError::NotFound))
        ));
        let back = Effect::SetDeleted {
            version: 4,
            deleted: false,
        };
        assert_eq!(
            decide_at(&Change::Undelete, Precondition::None, 100).unwrap(),
            back
        );
        let marked = Effect::SetDeleted {
            version: 4,
            deleted: true,
        };
        let expire = |at| Change::Expire { at };
        assert_eq!(
            decide_at(&expire(100), Precondition::None, 100).unwrap(),
            marked
        );
        // Too early, another lapse (rewritten since the sweep looked), or
        // already marked: left alone.
        for (change, now) in [(expire(100), 99), (expire(90), 100)] {
            assert!(decide_at(&change, Precondition::None, now).is_err());
        }
        let rewritten = Head {
            expires_at: None,
            ..head(5, false)
        };
        assert!(decide(Some(&rewritten), &expire(100), Precondition::None, 10, 200).is_err());
        let marked_head = Head {
            deleted: true,
            ..lapsing.clone()
        };
        assert!(decide(
            Some(&marked_head),
            &expire(100),
            Precondition::None,
            10,
            200
        )
        .is_err());
        // A put carries its expiry into the effect.
        let lapsing_put = Change::Put {
            version: 5,
            sealed: Vec::new(),
            expires_at: Some(500),
            kv: false,
            defaults: Defaults::default(),
        };
        assert!(matches!(
            decide_at(&lapsing_put, Precondition::None, 100),
            Ok(Effect::Put {
                expires_at: Some(500),
                ..
            })
        ));
    }

    #[test]
    fn a_listing_filter_keeps_live_keys_and_those_lapsing_before_its_bound() {
        let all = ListFilter {
            now: 100,
            expiring_before: None,
            deleted: false,
        };
        assert!(all.admits(None) && all.admits(Some(101)) && !all.admits(Some(100)));
        let soon = ListFilter {
            expiring_before: Some(200),
            ..all
        };
        assert!(!soon.admits(None) && soon.admits(Some(199)) && !soon.admits(Some(200)));
    }

    #[test]
    fn a_put_gets_the_next_version_and_prunes_beyond_the_limit() {
        assert_eq!(
            decide(None, &put(1), Precondition::None, 10, 99).unwrap(),
            Effect::Put {
                version: 1,
                key_created_at: 99,
                prune_through: None,
                expires_at: None,
                kv: false,
                previous: None,
            }
        );
        assert_eq!(
            decide(Some(&head(12, true)), &put(13), Precondition::None, 10, 99).unwrap(),
            Effect::Put {
                version: 13,
                key_created_at: 5,
                prune_through: Some(3),
                expires_at: None,
                kv: false,
                previous: Some((
                    12,
                    Mark {
                        deleted_at: Some(6),
                        destroyed: false,
                        created_at: 0,
                        expiry_cleared: false,
                    }
                )),
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
            policies: Vec::new(),
        };
        let revoked = record.revoked(&t, 7).unwrap();
        assert_eq!(revoked.revoked_at, Some(7));
        assert!(revoked.revoked(&t, 8).is_err());
        assert!(record.revoked(&TenantId::parse("u").unwrap(), 7).is_err());
        assert!(record.touched(9).is_none());
        assert_eq!(record.touched(11).unwrap().last_used_at, Some(11));
    }
}
