//! The secret operations: put, get, list, metadata, and the changes of a
//! key's state (delete, undelete, destroy).

use zeroize::{Zeroize, Zeroizing};

use super::{Call, OpError, Ops};
use crate::auth::{Action, Principal};
use crate::store::{
    Change, ListedSecret, Precondition, Put, SealedPut, SecretMetadata, StoredVersion,
};
use crate::types::{SecretKey, TenantId};

/// Longest lifetime a value may be given: ten years (DESIGN §1).
pub const MAX_TTL_SECONDS: u64 = 315_576_000;

/// When a value lapses, as the caller gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Never,
    /// At this time (ms since the epoch).
    At(i64),
    /// This many seconds from now.
    After(u64),
}

impl Expiry {
    /// The time it names as of `now`, checked against the rules: in the
    /// future, at most ten years ahead.
    pub fn resolve(self, now: i64) -> Result<Option<i64>, OpError> {
        let bad = |detail: &str| Err(OpError::Invalid(detail.into()));
        let latest = now + MAX_TTL_SECONDS as i64 * 1000;
        match self {
            Expiry::Never => Ok(None),
            Expiry::After(ttl) if (1..=MAX_TTL_SECONDS).contains(&ttl) => {
                Ok(Some(now + ttl as i64 * 1000))
            }
            Expiry::After(_) => bad("ttl_seconds must be from 1 to 315576000 (ten years)"),
            Expiry::At(at) if at <= now => bad("expires_at must be in the future"),
            Expiry::At(at) if at > latest => bad("expires_at must be at most ten years ahead"),
            Expiry::At(at) => Ok(Some(at)),
        }
    }
}

/// A value to write as the key's next version.
pub struct PutRequest {
    pub key: SecretKey,
    pub value: Zeroizing<String>,
    pub expiry: Expiry,
    pub precondition: Precondition,
    /// The value is KV data (a JSON object of strings, Vault's KV v2).
    pub kv: bool,
}

/// A written version, and the change's revision where reads can lag.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub version: u64,
    pub revision: Option<u64>,
}

/// A read version, opened.
pub struct Secret {
    pub version: u64,
    pub created_at: i64,
    pub value: Zeroizing<String>,
}

/// One page of a listing and the cursor of the next.
pub struct Listing {
    pub secrets: Vec<ListedSecret>,
    pub next_cursor: Option<String>,
}

impl Ops {
    pub async fn put(
        &self,
        call: &Call,
        principal: &Principal,
        put: PutRequest,
    ) -> Result<Written, OpError> {
        call.key(put.key.as_str());
        let outcome = self.put_inner(call, principal, &put).await;
        self.settle(call, outcome).await
    }

    pub(super) async fn put_inner(
        &self,
        call: &Call,
        principal: &Principal,
        put: &PutRequest,
    ) -> Result<Written, OpError> {
        let expires_at = put.expiry.resolve(crate::clock::now_ms())?;
        if put.value.len() > self.limits.max_value_bytes {
            return Err(OpError::ValueTooLarge {
                limit: self.limits.max_value_bytes,
            });
        }
        if put.precondition == Precondition::Never {
            return Err(OpError::VersionMismatch);
        }
        if !principal.allows(Action::Write, put.key.as_str()) {
            return Err(OpError::Forbidden);
        }
        let (tenant, key) = (&principal.tenant, &put.key);
        // The tenant's KV defaults matter only to Vault's writes: a quiva
        // PUT reads nothing more.
        let defaults = if put.kv {
            self.store.kv_config(tenant).await?
        } else {
            Default::default()
        };
        let sealer = self.keyring.sealer(tenant).await?;
        let line = call.line(200);
        // The version is bound into the ciphertext, so a put that loses the
        // race for a version is sealed again for the next.
        let mut seen = self.store.head(tenant, key).await?;
        for _ in 0..crate::store::MAX_ATTEMPTS {
            let sealed = sealer.seal(key.as_str(), seen.next_version(), put.value.as_bytes())?;
            let attempt = SealedPut {
                sealed,
                expires_at,
                precondition: put.precondition,
                line: Some(line.clone()),
                kv: put.kv,
                defaults,
            };
            match self.store.put_once(tenant, key, seen, attempt).await {
                Ok((version, revision)) => {
                    call.mark_written();
                    return Ok(Written { version, revision });
                }
                Err(Put::Stale(found)) => seen = found,
                Err(Put::Failed(e)) => return Err(e.into()),
            }
        }
        Err(OpError::Unavailable(
            "too many concurrent writers on one key".into(),
        ))
    }

    /// The current version, or `version`, unless deleted or lapsed;
    /// `min_revision` as `Store::get_fresh`.
    pub async fn get(
        &self,
        call: &Call,
        principal: &Principal,
        key: &SecretKey,
        version: Option<u64>,
        min_revision: Option<u64>,
    ) -> Result<Secret, OpError> {
        call.key(key.as_str());
        let outcome = async {
            if !principal.allows(Action::Read, key.as_str()) {
                return Err(OpError::Forbidden);
            }
            let stored = self
                .store
                .get_fresh(&principal.tenant, key, version, min_revision)
                .await?
                .ok_or(OpError::NotFound)?;
            let plaintext = self.open(call, &principal.tenant, key, &stored).await?;
            let value = into_text(plaintext)
                .ok_or_else(|| OpError::Internal("stored value is not UTF-8".into()))?;
            Ok(Secret {
                version: stored.version,
                created_at: stored.created_at,
                value,
            })
        }
        .await;
        self.settle(call, outcome).await
    }

    /// Opens a stored version's value; a failed integrity check is named by
    /// tenant, version and request id (the request's audit line pairs it
    /// with the key), never by the value.
    pub(super) async fn open(
        &self,
        call: &Call,
        tenant: &TenantId,
        key: &SecretKey,
        stored: &StoredVersion,
    ) -> Result<Zeroizing<Vec<u8>>, OpError> {
        self.keyring
            .open_value(tenant, key.as_str(), stored.version, &stored.sealed)
            .await
            .map_err(|e| match OpError::from(e) {
                OpError::Integrity(cause) => OpError::Integrity(format!(
                    "{cause} (tenant {}, version {}, request {})",
                    tenant.as_str(),
                    stored.version,
                    call.request_id()
                )),
                other => other,
            })
    }

    /// Live keys under `prefix` after `after`, `limit` to a page; with
    /// `expiring_before`, only those that lapse before it.
    pub async fn list(
        &self,
        call: &Call,
        principal: &Principal,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        expiring_before: Option<i64>,
    ) -> Result<Listing, OpError> {
        let outcome = async {
            if !principal.allows(Action::List, prefix) {
                return Err(OpError::Forbidden);
            }
            // One extra row tells whether another page exists.
            let mut secrets = self
                .store
                .list(&principal.tenant, prefix, after, limit + 1, expiring_before)
                .await?;
            let next_cursor = if secrets.len() > limit {
                secrets.truncate(limit);
                secrets.last().map(|r| r.key.clone())
            } else {
                None
            };
            Ok(Listing {
                secrets,
                next_cursor,
            })
        }
        .await;
        self.settle(call, outcome).await
    }

    pub async fn metadata(
        &self,
        call: &Call,
        principal: &Principal,
        key: &SecretKey,
    ) -> Result<SecretMetadata, OpError> {
        call.key(key.as_str());
        let outcome = async {
            let allowed = [Action::Read, Action::List]
                .iter()
                .any(|&a| principal.allows(a, key.as_str()));
            if !allowed {
                return Err(OpError::Forbidden);
            }
            self.store
                .metadata(&principal.tenant, key)
                .await?
                .ok_or(OpError::NotFound)
        }
        .await;
        self.settle(call, outcome).await
    }

    /// Soft delete (`Change::Delete`), undelete or destroy of `key`, as the
    /// call's operation says.
    pub async fn change(
        &self,
        call: &Call,
        principal: &Principal,
        key: &SecretKey,
        change: Change,
        precondition: Precondition,
    ) -> Result<(), OpError> {
        call.key(key.as_str());
        let needs = match change {
            Change::Undelete => Action::Write,
            _ => Action::Delete,
        };
        let outcome = async {
            if !principal.allows(needs, key.as_str()) {
                return Err(OpError::Forbidden);
            }
            if precondition == Precondition::Never {
                return Err(OpError::VersionMismatch);
            }
            let line = call.line(200);
            self.store
                .change(&principal.tenant, key, change, precondition, Some(line))
                .await?;
            call.mark_written();
            Ok(())
        }
        .await;
        self.settle(call, outcome).await
    }
}

/// An opened value as text, moved rather than copied; `None` (and the
/// bytes wiped) when it is not UTF-8.
pub(super) fn into_text(mut plaintext: Zeroizing<Vec<u8>>) -> Option<Zeroizing<String>> {
    match String::from_utf8(std::mem::take(&mut *plaintext)) {
        Ok(text) => Some(Zeroizing::new(text)),
        Err(e) => {
            e.into_bytes().zeroize();
            None
        }
    }
}
