//! Bearer JWTs: an HS256 shared secret and/or public keys (RS256, ES256,
//! EdDSA) from a PEM or JWKS file or a JWKS URL. Each configured key carries
//! its one algorithm, and a token is checked only with a key whose algorithm
//! equals the token's `alg`, so `alg: none` and HS/RS confusion are refused
//! by construction. `kid` selects the key. `exp` is required; `nbf` and `iat`
//! are honoured with 60 s of leeway; `iss` and `aud` when configured.

use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::jwks::{parse_keys, VerifyKey};
use super::{AuthError, Principal, Scope};
use crate::types::TenantId;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
const LEEWAY_SECS: u64 = 60;

/// How tokens are checked and how claims map to a principal.
pub struct JwtConfig {
    pub hs256_secret: Option<zeroize::Zeroizing<String>>,
    /// A PEM file (one or more public keys) or a JWKS file.
    pub public_keys: Option<PathBuf>,
    /// A JWKS document fetched at start and again on an unknown `kid`.
    pub jwks_url: Option<String>,
    /// Least time between two fetches of `jwks_url`.
    pub jwks_min_refresh: Duration,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub tenant_claim: String,
}

struct RemoteJwks {
    url: String,
    client: reqwest::Client,
    keys: RwLock<Vec<VerifyKey>>,
    /// When the document was last fetched (`clock::now_ms`).
    last_fetch: Mutex<Option<i64>>,
    min_refresh: Duration,
}

pub struct JwtVerifier {
    hs256: Option<DecodingKey>,
    keys: Vec<VerifyKey>,
    remote: Option<RemoteJwks>,
    issuer: Option<String>,
    audience: Option<String>,
    tenant_claim: String,
}

impl RemoteJwks {
    /// Fetches the document unless the last fetch was too recent; true when
    /// the key set was replaced.
    async fn refresh(&self) -> bool {
        {
            let mut last = self.last_fetch.lock().unwrap_or_else(|p| p.into_inner());
            // On `clock::now_ms`, so a test clock moves it on; a clock
            // that went back allows a fetch rather than forbid one.
            let now = crate::clock::now_ms();
            let recent = |at: i64| (0..self.min_refresh.as_millis() as i64).contains(&(now - at));
            if last.is_some_and(recent) {
                return false;
            }
            *last = Some(now);
        }
        let fetched = async {
            let response = self
                .client
                .get(&self.url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("status {}", response.status()));
            }
            let text = response.text().await.map_err(|e| e.to_string())?;
            parse_keys(&text)
        }
        .await;
        match fetched {
            Ok(keys) => {
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "fetching the JWKS URL failed");
                false
            }
        }
    }
}

impl JwtVerifier {
    /// `None` when no JWT key is configured.
    pub async fn from_config(config: &JwtConfig) -> Result<Option<JwtVerifier>, String> {
        let hs256 = match &config.hs256_secret {
            Some(secret) if secret.len() < 32 => {
                return Err("jwt hs256 secret must be at least 32 bytes".into())
            }
            Some(secret) => Some(DecodingKey::from_secret(secret.as_bytes())),
            None => None,
        };
        let keys = match &config.public_keys {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read jwt public keys {}: {e}", path.display()))?;
                parse_keys(&text).map_err(|e| format!("jwt public keys {}: {e}", path.display()))?
            }
            None => Vec::new(),
        };
        let remote = config.jwks_url.as_ref().map(|url| RemoteJwks {
            url: url.clone(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
            keys: RwLock::new(Vec::new()),
            last_fetch: Mutex::new(None),
            min_refresh: config.jwks_min_refresh,
        });
        if hs256.is_none() && keys.is_empty() && remote.is_none() {
            return Ok(None);
        }
        if let Some(remote) = &remote {
            remote.refresh().await;
        }
        Ok(Some(JwtVerifier {
            hs256,
            keys,
            remote,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            tenant_claim: config.tenant_claim.clone(),
        }))
    }

    /// The principal and the token's `exp` (for caching).
    pub async fn verify(&self, token: &str) -> Result<(Principal, i64), AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidToken);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::InvalidToken)?;
        // RFC 7515 4.1.11: a critical extension the verifier does not
        // understand makes the token invalid, and we understand none.
        if header.crit.is_some() {
            return Err(AuthError::InvalidToken);
        }
        let claims = if header.alg == Algorithm::HS256 {
            let key = self.hs256.as_ref().ok_or(AuthError::InvalidToken)?;
            self.decode(token, key, Algorithm::HS256)?
        } else {
            match self.decode_with(&self.keys, token, &header)? {
                Some(claims) => claims,
                None => self.decode_remote(token, &header).await?,
            }
        };
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or(AuthError::InvalidToken)? as i64;
        Ok((self.principal(claims)?, exp))
    }

    /// Tries `keys`; `Ok(None)` when none of them is the token's key.
    fn decode_with(
        &self,
        keys: &[VerifyKey],
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<Option<Map<String, Value>>, AuthError> {
        let key = match &header.kid {
            Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            // Without a kid, only an unambiguous single key will do.
            None if keys.len() == 1 && self.remote_is_empty() => keys.first(),
            None => None,
        };
        match key {
            Some(k) if k.alg == header.alg => self.decode(token, &k.key, k.alg).map(Some),
            Some(_) => Err(AuthError::InvalidToken),
            None => Ok(None),
        }
    }

    fn remote_is_empty(&self) -> bool {
        self.remote
            .as_ref()
            .is_none_or(|r| r.keys.read().map(|k| k.is_empty()).unwrap_or(true))
    }

    async fn decode_remote(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<Map<String, Value>, AuthError> {
        let Some(remote) = &self.remote else {
            return Err(AuthError::InvalidToken);
        };
        for attempt in 0..2 {
            {
                let keys = remote.keys.read().unwrap_or_else(|p| p.into_inner());
                let key = match &header.kid {
                    Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
                    None if keys.len() == 1 && self.keys.is_empty() => keys.first(),
                    None => None,
                };
                match key {
                    Some(k) if k.alg == header.alg => return self.decode(token, &k.key, k.alg),
                    Some(_) => return Err(AuthError::InvalidToken),
                    None => {}
                }
            }
            // An unknown kid may be a rotated key: refetch, at most once a
            // refresh interval, and look again.
            if attempt == 0 && header.kid.is_some() && !remote.refresh().await {
                break;
            }
        }
        Err(AuthError::InvalidToken)
    }

    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        alg: Algorithm,
    ) -> Result<Map<String, Value>, AuthError> {
        let mut validation = Validation::new(alg);
        let mut required = vec!["exp"];
        if self.issuer.is_some() {
            required.push("iss");
        }
        if self.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|_| AuthError::InvalidToken)
    }

    fn principal(&self, claims: Map<String, Value>) -> Result<Principal, AuthError> {
        if let Some(iat) = claims.get("iat") {
            let iat = iat.as_f64().ok_or(AuthError::InvalidToken)?;
            let now = jsonwebtoken::get_current_timestamp() as f64;
            if iat > now + LEEWAY_SECS as f64 {
                return Err(AuthError::InvalidToken);
            }
        }
        let tenant = claims
            .get(&self.tenant_claim)
            .and_then(Value::as_str)
            .and_then(|t| TenantId::parse(t).ok())
            .ok_or(AuthError::InvalidToken)?;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        // Only a token without either claim gets every secrets:* scope; an
        // empty one grants nothing, as it says.
        let scopes = match (claims.get("scope"), claims.get("scopes")) {
            (Some(Value::String(s)), _) => {
                let texts: Vec<&str> = s.split_whitespace().collect();
                super::parse_scopes(&texts).map_err(|_| AuthError::InvalidToken)?
            }
            (_, Some(Value::Array(items))) => {
                let texts = items
                    .iter()
                    .map(|v| v.as_str().ok_or(AuthError::InvalidToken))
                    .collect::<Result<Vec<_>, _>>()?;
                super::parse_scopes(&texts).map_err(|_| AuthError::InvalidToken)?
            }
            (None, None) => Scope::all_secrets(),
            _ => return Err(AuthError::InvalidToken),
        };
        Ok(Principal {
            tenant,
            subject: format!("jwt:{subject}"),
            scopes,
            expires_at: None,
            share_keys: Default::default(),
            token: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn verifier() -> JwtVerifier {
        let config = JwtConfig {
            hs256_secret: Some(zeroize::Zeroizing::new("s".repeat(32))),
            public_keys: None,
            jwks_url: None,
            jwks_min_refresh: Duration::from_secs(60),
            issuer: None,
            audience: None,
            tenant_claim: "tenant".into(),
        };
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(JwtVerifier::from_config(&config))
            .unwrap()
            .unwrap()
    }

    proptest::proptest! {
        /// No token text, and no header (any JSON or none, base64url
        /// encoded), makes verification panic; none of them verifies.
        #[test]
        fn no_token_or_header_makes_verification_panic(
            token in "(?s).{0,300}",
            header in "(?s).{0,120}|\\{\"alg\":\"(HS256|RS256|none|ES256)\"(,\"(kid|crit|typ)\":(\"[a-z]{0,4}\"|\\[\\]|null|1))?\\}",
        ) {
            let verifier = verifier();
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let crafted = format!(
                "{}.e30.c2ln",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&header)
            );
            for text in [token.as_str(), crafted.as_str()] {
                let verified = runtime.block_on(verifier.verify(text));
                proptest::prop_assert!(verified.is_err(), "{:?}", text);
            }
        }
    }
}
