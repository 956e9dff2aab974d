//! Who is calling and what they may do: a request's credentials (`X-Api-Key`
//! or `Authorization: Bearer <JWT>`) resolve to a `Principal` of one tenant
//! with a set of `Scope`s.
//!
//! Architecture invariant: `auth/` reaches storage only through the `Store`
//! handle, and never logs or returns credential text.

pub mod apikeys;
pub mod failures;
pub mod jwks;
pub mod jwt;
pub mod oidc;
pub mod providers;
pub mod ratelimit;
pub mod shares;
pub mod tokens;
pub mod workload;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::store::Store;
use crate::types::TenantId;

/// What a scope grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Read,
    List,
    Write,
    Delete,
    ApiKeysAdmin,
    /// Reading the tenant's audit lines (`GET /audit`).
    AuditRead,
    /// Starting a new data key for the tenant (`POST /keys/rotate`).
    KeysAdmin,
    /// Managing the tenant's policies and login roles.
    AuthAdmin,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Read => "secrets:read",
            Action::List => "secrets:list",
            Action::Write => "secrets:write",
            Action::Delete => "secrets:delete",
            Action::ApiKeysAdmin => "apikeys:admin",
            Action::AuditRead => "audit:read",
            Action::KeysAdmin => "keys:admin",
            Action::AuthAdmin => "auth:admin",
        }
    }
}

/// A granted action, optionally narrowed to keys under a prefix
/// (`secrets:read:prod/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub action: Action,
    pub prefix: Option<String>,
}

impl Scope {
    pub fn parse(text: &str) -> Result<Scope, String> {
        let actions = [
            Action::Read,
            Action::List,
            Action::Write,
            Action::Delete,
            Action::ApiKeysAdmin,
            Action::AuditRead,
            Action::KeysAdmin,
            Action::AuthAdmin,
        ];
        for action in actions {
            let Some(rest) = text.strip_prefix(action.name()) else {
                continue;
            };
            if rest.is_empty() {
                return Ok(Scope {
                    action,
                    prefix: None,
                });
            }
            if let Some(prefix) = rest.strip_prefix(':') {
                if !matches!(
                    action,
                    Action::ApiKeysAdmin
                        | Action::AuditRead
                        | Action::KeysAdmin
                        | Action::AuthAdmin
                ) && crate::types::can_begin_a_key(prefix)
                {
                    return Ok(Scope {
                        action,
                        prefix: Some(prefix.to_owned()),
                    });
                }
            }
        }
        Err(format!(
            "unknown scope '{text}'; scopes are secrets:read, secrets:list, secrets:write, secrets:delete (each optionally ':<key prefix>'), apikeys:admin, audit:read, keys:admin and auth:admin"
        ))
    }

    /// Every `secrets:*` scope, unnarrowed: what a key or token without
    /// explicit scopes gets.
    pub fn all_secrets() -> Vec<Scope> {
        [Action::Read, Action::List, Action::Write, Action::Delete]
            .into_iter()
            .map(|action| Scope {
                action,
                prefix: None,
            })
            .collect()
    }

    /// True when holding `self` is enough to grant `other`: same action,
    /// and `self` is unnarrowed or `other` is narrowed at least as far.
    pub fn grants(&self, other: &Scope) -> bool {
        self.action == other.action
            && match (&self.prefix, &other.prefix) {
                (None, _) => true,
                (Some(mine), Some(theirs)) => theirs.starts_with(mine.as_str()),
                (Some(_), None) => false,
            }
    }

    fn covers(&self, action: Action, key: &str) -> bool {
        self.action == action && self.prefix.as_deref().is_none_or(|p| key.starts_with(p))
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.prefix {
            None => f.write_str(self.action.name()),
            Some(p) => write!(f, "{}:{p}", self.action.name()),
        }
    }
}

/// Parses a list of scope texts, refusing unknown ones.
pub fn parse_scopes<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Scope>, String> {
    texts.iter().map(|t| Scope::parse(t.as_ref())).collect()
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantId,
    /// API key id or JWT `sub`; goes into logs and the audit trail.
    pub subject: String,
    pub scopes: Vec<Scope>,
    /// When an API key lapses (ms since the epoch): a key it mints lapses no
    /// later. `None` for a JWT, whose short `exp` is not a key's lifetime.
    pub expires_at: Option<i64>,
    /// Its tenant's and its own keys among the in-flight shares, hashed
    /// once for a cached key rather than on every request (`shares.rs`).
    pub share_keys: std::sync::OnceLock<(u64, u64)>,
    /// The login token it came with, if any.
    pub token: Option<Arc<tokens::TokenRef>>,
}

impl Principal {
    /// True when some scope grants `action` on `key` (use "" for actions
    /// that are not about one key).
    pub fn allows(&self, action: Action, key: &str) -> bool {
        self.scopes.iter().any(|s| s.covers(action, key))
    }

    /// True when every scope in `wanted` is granted by one this principal
    /// holds: nobody mints a key stronger than themselves.
    pub fn can_grant(&self, wanted: &[Scope]) -> bool {
        wanted
            .iter()
            .all(|w| self.scopes.iter().any(|mine| mine.grants(w)))
    }
}

/// Why a request was not authenticated. Every variant answers 401; the
/// reason is a fixed label for metrics and logs, never credential text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials")]
    Missing,
    #[error("malformed credentials")]
    Malformed,
    #[error("both an api key and a bearer token")]
    Ambiguous,
    #[error("a credential header given twice")]
    Repeated,
    #[error("unknown api key")]
    UnknownKey,
    #[error("expired api key")]
    ExpiredKey,
    #[error("revoked api key")]
    RevokedKey,
    #[error("invalid token")]
    InvalidToken,
    #[error("jwt authentication is not configured")]
    JwtNotConfigured,
    #[error("store unavailable")]
    StoreUnavailable,
}

impl AuthError {
    pub fn label(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Ambiguous => "ambiguous",
            AuthError::Repeated => "repeated",
            AuthError::UnknownKey => "unknown_key",
            AuthError::ExpiredKey => "expired_key",
            AuthError::RevokedKey => "revoked_key",
            AuthError::InvalidToken => "invalid_token",
            AuthError::JwtNotConfigured => "jwt_not_configured",
            AuthError::StoreUnavailable => "store_unavailable",
        }
    }
}

/// How long a looked-up API key is trusted without asking the store again.
/// Revocation through this gateway is immediate (the entry is dropped);
/// through another process it takes effect within this time.
pub const APIKEY_CACHE_TTL: Duration = Duration::from_secs(1);
const APIKEY_CACHE_MAX: usize = 10_000;
const JWT_CACHE_MAX: usize = 10_000;

/// SHA-256 of a bearer token's text: the token cache's key.
type TokenFingerprint = [u8; 32];

struct CachedKey {
    record: Arc<apikeys::VerifiedRecord>,
    /// When it was read (`clock::now_ms`, so a test clock moves it on).
    fetched: i64,
    /// `Authenticator::generation` then: its policies were resolved at it.
    generation: u64,
}

/// Whether something read at `at` is still fresh at `now` for `ttl`; a
/// clock that went back makes it stale, never fresh for longer.
pub(crate) fn fresh(at: i64, now: i64, ttl: Duration) -> bool {
    (0..ttl.as_millis() as i64).contains(&(now - at))
}

/// The one credential a request carries, as `api/` found it in the headers.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    /// `X-Api-Key`, trimmed.
    ApiKey(&'a str),
    /// The token of `Authorization: Bearer`, trimmed.
    Bearer(&'a str),
}

/// Resolves a request's credential to a principal, with bounded caches so a known
/// API key or JWT costs no store round trip and no signature check.
pub struct Authenticator {
    store: Store,
    jwt: Option<jwt::JwtVerifier>,
    apikeys: Mutex<HashMap<String, CachedKey>>,
    /// Verified tokens by SHA-256 of their text, until their `exp`.
    tokens: Mutex<HashMap<TokenFingerprint, (Arc<Principal>, i64)>>,
    /// Last use per key id, written to the store in batches.
    last_used: Mutex<HashMap<String, i64>>,
    /// Login tokens (`srt_`) by SHA-256 of their text.
    login_tokens: Mutex<HashMap<TokenFingerprint, tokens::CachedToken>>,
    /// Moves on whenever a policy or role changes, here or (watched) on
    /// another gateway: cached principals of an older generation are
    /// resolved again.
    generation: AtomicU64,
    /// When each token was last forgotten (revoked here, or changed on
    /// another gateway), so a lookup that raced it caches nothing.
    forgotten: Mutex<HashMap<TokenFingerprint, i64>>,
    /// The operator's identity providers (`--oidc-providers`).
    pub providers: providers::Providers,
}

impl Authenticator {
    pub fn new(
        store: Store,
        jwt: Option<jwt::JwtVerifier>,
        providers: providers::Providers,
    ) -> Self {
        Authenticator {
            store,
            jwt,
            apikeys: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            last_used: Mutex::new(HashMap::new()),
            login_tokens: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            forgotten: Mutex::new(HashMap::new()),
            providers,
        }
    }

    pub fn jwt_configured(&self) -> bool {
        self.jwt.is_some()
    }

    /// Verifies the request's credential.
    pub async fn authenticate(
        &self,
        credential: Credential<'_>,
    ) -> Result<Arc<Principal>, AuthError> {
        match credential {
            Credential::ApiKey(text) | Credential::Bearer(text) if tokens::is_token(text) => {
                self.verify_login_token(text).await
            }
            Credential::ApiKey(text) => self.verify_api_key(text).await,
            // Boxed: JWT verification's future is large, and inline it would
            // make every request's future as large.
            Credential::Bearer(token) => Box::pin(self.verify_token(token)).await,
        }
    }

    async fn verify_api_key(&self, text: &str) -> Result<Arc<Principal>, AuthError> {
        let id = apikeys::key_id(text).ok_or(AuthError::Malformed)?;
        let now = crate::clock::now_ms();
        let generation = self.generation.load(Ordering::Acquire);
        let cached = {
            let cache = self.apikeys.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .get(id)
                .filter(|c| c.generation == generation && fresh(c.fetched, now, APIKEY_CACHE_TTL))
                .map(|c| c.record.clone())
        };
        let record = match cached {
            Some(record) => record,
            None => {
                let stored = self
                    .store
                    .apikey_get(id)
                    .await
                    .map_err(|_| AuthError::StoreUnavailable)?
                    .ok_or(AuthError::UnknownKey)?;
                let extra = self.policy_scopes(&stored.tenant, &stored.policies).await?;
                let record = Arc::new(apikeys::VerifiedRecord::new(&stored, extra));
                let mut cache = self.apikeys.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= APIKEY_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(
                    id.to_owned(),
                    CachedKey {
                        record: record.clone(),
                        fetched: now,
                        generation,
                    },
                );
                record
            }
        };
        let principal = record.check(text)?;
        let mut last_used = self.last_used.lock().unwrap_or_else(|p| p.into_inner());
        match last_used.get_mut(id) {
            Some(at) => *at = now,
            None => {
                last_used.insert(id.to_owned(), now);
            }
        }
        Ok(principal)
    }

    async fn verify_token(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        let verifier = self.jwt.as_ref().ok_or(AuthError::JwtNotConfigured)?;
        if token.len() > jwt::MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidToken);
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let fingerprint: [u8; 32] = digest.as_ref().try_into().expect("sha-256 is 32 bytes");
        let now = crate::clock::now_ms() / 1000;
        if let Some((principal, exp)) = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fingerprint)
        {
            // Cached only while unexpired (exp within leeway, as on first check).
            if now <= *exp + 60 {
                return Ok(principal.clone());
            }
        }
        let (principal, exp) = verifier.verify(token).await?;
        let principal = Arc::new(principal);
        let mut cache = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= JWT_CACHE_MAX {
            cache.clear();
        }
        cache.insert(fingerprint, (principal.clone(), exp));
        Ok(principal)
    }

    /// Forgets a cached key so its revocation holds on the next request.
    pub fn forget_api_key(&self, id: &str) {
        self.apikeys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Writes the coalesced last-use times to the store.
    pub async fn flush_last_used(&self) {
        let uses: Vec<(String, i64)> = self
            .last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        if uses.is_empty() {
            return;
        }
        if let Err(e) = self.store.apikey_touch(uses).await {
            tracing::warn!(error = %e, "recording api key last use failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_narrow() {
        let s = Scope::parse("secrets:read:prod/").unwrap();
        assert_eq!(s.to_string(), "secrets:read:prod/");
        let p = Principal {
            tenant: TenantId::parse("t").unwrap(),
            subject: "x".into(),
            scopes: vec![s],
            expires_at: None,
            share_keys: Default::default(),
            token: None,
        };
        assert!(p.allows(Action::Read, "prod/db"));
        assert!(!p.allows(Action::Read, "dev/db"));
        assert!(!p.allows(Action::Write, "prod/db"));
        for bad in [
            "secrets:reed",
            "secrets:read:",
            "secrets:read:a b",
            "apikeys:admin:x",
            "",
            "secrets:readx",
            "secrets:read:../",
            "secrets:read:/etc",
            "secrets:write:a//b",
            "secrets:list:..",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Scope::all_secrets().len(), 4);
        let narrow = Principal {
            tenant: TenantId::parse("t").unwrap(),
            subject: "x".into(),
            scopes: vec![Scope::parse("secrets:read:prod/").unwrap()],
            expires_at: None,
            share_keys: Default::default(),
            token: None,
        };
        assert!(narrow.can_grant(&[Scope::parse("secrets:read:prod/app/").unwrap()]));
        assert!(!narrow.can_grant(&[Scope::parse("secrets:read").unwrap()]));
        assert!(!narrow.can_grant(&[Scope::parse("secrets:read:dev/").unwrap()]));
        assert!(!narrow.can_grant(&[Scope::parse("secrets:write:prod/").unwrap()]));
        assert!(!narrow.can_grant(&Scope::all_secrets()));
    }
}
