//! Login tokens: `srt_` and 256 random bits (base64url). Only the SHA-256
//! of the text is stored, as the record's id; a token is looked up by it,
//! so there is nothing to compare in constant time and nothing to guess.
//! A verified token is cached like an API key (`APIKEY_CACHE_TTL`), and
//! dropped at once when it is revoked or a policy or role changes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::{fresh, AuthError, Authenticator, Principal, Scope, APIKEY_CACHE_TTL};
use crate::crypto::seal::random_bytes;
use crate::store::identity::TokenRecord;
use crate::types::TenantId;

const PREFIX: &str = "srt_";
const CACHE_MAX: usize = 10_000;

/// What a token principal carries of its token, for `GET /auth/token` and
/// its revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRef {
    /// The hex SHA-256 of the text: the record's id.
    pub id: String,
    pub role: String,
}

pub(super) struct CachedToken {
    principal: Arc<Principal>,
    fetched: i64,
    generation: u64,
}

/// The SHA-256 of a token's text, when it has a token's shape.
pub fn digest(text: &str) -> Option<[u8; 32]> {
    let secret = text.strip_prefix(PREFIX)?;
    let shaped = secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !shaped {
        return None;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    Some(digest.as_ref().try_into().expect("sha-256 is 32 bytes"))
}

/// Whether a credential's text is a token (rather than an API key or JWT).
pub fn is_token(text: &str) -> bool {
    text.starts_with(PREFIX)
}

/// A new token's text and its record id.
pub fn mint() -> (Zeroizing<String>, String) {
    let secret = random_bytes::<32>();
    let text = Zeroizing::new(format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.as_ref())
    ));
    let id = hex::encode(digest(&text).expect("a minted token has the shape"));
    (text, id)
}

impl Authenticator {
    pub(super) async fn verify_login_token(&self, text: &str) -> Result<Arc<Principal>, AuthError> {
        let digest = digest(text).ok_or(AuthError::Malformed)?;
        let now = crate::clock::now_ms();
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(cached) = self
            .login_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
        {
            if cached.generation == generation
                && fresh(cached.fetched, now, APIKEY_CACHE_TTL)
                && cached.principal.expires_at.is_some_and(|at| now < at)
            {
                return Ok(cached.principal.clone());
            }
        }
        let id = hex::encode(digest);
        let unavailable = |_| AuthError::StoreUnavailable;
        let record = self
            .store
            .token_get(&id)
            .await
            .map_err(unavailable)?
            .ok_or(AuthError::UnknownKey)?;
        if record.revoked_at.is_some() {
            return Err(AuthError::RevokedKey);
        }
        let principal = Arc::new(self.token_principal(record).await?);
        if principal.expires_at.is_some_and(|at| at <= now) {
            return Err(AuthError::ExpiredKey);
        }
        // Forgotten (revoked) while the record was read: answered from what
        // was read, but not cached, so the next request sees the revocation.
        // Checked under the cache's lock, which `forget_token` holds too.
        let mut cache = self.login_tokens.lock().unwrap_or_else(|p| p.into_inner());
        let raced = self
            .forgotten
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .is_some_and(|at| *at >= now);
        if raced {
            return Ok(principal);
        }
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            digest,
            CachedToken {
                principal: principal.clone(),
                fetched: now,
                generation,
            },
        );
        Ok(principal)
    }

    /// The principal a stored token stands for, while the role that issued
    /// it exists (not one made again under its name), and no longer than
    /// the role's token lifetime now allows.
    async fn token_principal(&self, record: TokenRecord) -> Result<Principal, AuthError> {
        let tenant = TenantId::parse(&record.tenant).map_err(|_| AuthError::UnknownKey)?;
        let role = self
            .store
            .role_get(&tenant, &record.role)
            .await
            .map_err(|_| AuthError::StoreUnavailable)?;
        let Some(role) = role.filter(|role| role.uid == record.role_uid) else {
            return Err(AuthError::RevokedKey);
        };
        let lifetime = i64::from(role.token_ttl_seconds) * 1000;
        let expires_at = record
            .expires_at
            .min(record.created_at.saturating_add(lifetime));
        let mut scopes = super::parse_scopes(&record.scopes).map_err(|_| AuthError::UnknownKey)?;
        scopes.extend(self.policy_scopes(&tenant, &record.policies).await?);
        Ok(Principal {
            tenant,
            subject: record.subject,
            scopes,
            expires_at: Some(expires_at),
            share_keys: Default::default(),
            token: Some(Arc::new(TokenRef {
                id: record.id,
                role: record.role,
            })),
        })
    }

    /// The scopes `tenant`'s policies `names` hold now; a policy that is
    /// gone holds none.
    pub async fn policy_scopes(
        &self,
        tenant: &TenantId,
        names: &[String],
    ) -> Result<Vec<Scope>, AuthError> {
        let mut scopes = Vec::new();
        for name in names {
            let policy = self
                .store
                .policy_get(tenant, name)
                .await
                .map_err(|_| AuthError::StoreUnavailable)?;
            if let Some(policy) = policy {
                // Checked when stored; a scope this build does not know
                // grants nothing.
                scopes.extend(policy.scopes.iter().filter_map(|s| Scope::parse(s).ok()));
            }
        }
        Ok(scopes)
    }

    /// Forgets a cached token (revoked here or, watched, elsewhere).
    pub fn forget_token(&self, id: &str) {
        let mut digest = [0u8; 32];
        if hex::decode_to_slice(id, &mut digest).is_err() {
            return;
        }
        let now = crate::clock::now_ms();
        let mut cache = self.login_tokens.lock().unwrap_or_else(|p| p.into_inner());
        // When, so a lookup that began before it does not cache what it
        // read; kept about as long as a cache entry lives.
        let mut forgotten = self.forgotten.lock().unwrap_or_else(|p| p.into_inner());
        if forgotten.len() >= CACHE_MAX {
            let keep = 2 * APIKEY_CACHE_TTL;
            forgotten.retain(|_, at| fresh(*at, now, keep));
        }
        forgotten.insert(digest, now);
        cache.remove(&digest);
    }

    /// A policy or role changed: every cached principal is resolved again
    /// on its next request.
    pub fn identity_changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_have_the_shape_and_256_bits() {
        let (text, id) = mint();
        assert_eq!(text.len(), 4 + 43);
        assert!(is_token(&text));
        assert_eq!(hex::encode(digest(&text).unwrap()), id);
        assert_ne!(mint().0, text);
        for bad in [
            "srt_",
            "srt_short",
            &format!("srt_{}", "!".repeat(43)),
            "sr_x",
        ] {
            assert!(digest(bad).is_none(), "{bad}");
        }
    }
}
