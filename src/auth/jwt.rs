//! Bearer JWTs verified with an HS256 secret. The algorithm allow-list is
//! fixed by the configured key type, so `alg: none` and algorithm confusion
//! are refused by construction. `exp` is required; `nbf` and `iat` are
//! honoured with 60 s of leeway.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{AuthError, Principal, Scope};
use crate::types::TenantId;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
const LEEWAY_SECS: u64 = 60;

/// How tokens are checked and how claims map to a principal.
pub struct JwtConfig {
    pub hs256_secret: Option<zeroize::Zeroizing<String>>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub tenant_claim: String,
}

pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    tenant_claim: String,
}

impl JwtVerifier {
    /// `None` when no JWT key is configured.
    pub fn from_config(config: &JwtConfig) -> Result<Option<JwtVerifier>, String> {
        let Some(secret) = &config.hs256_secret else {
            return Ok(None);
        };
        if secret.len() < 32 {
            return Err("jwt hs256 secret must be at least 32 bytes".into());
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Some(JwtVerifier {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            tenant_claim: config.tenant_claim.clone(),
        }))
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidToken);
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|_| AuthError::InvalidToken)?;
        let claims = data.claims;
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
        let texts: Vec<&str> = match (claims.get("scope"), claims.get("scopes")) {
            (Some(Value::String(s)), _) => s.split_whitespace().collect(),
            (_, Some(Value::Array(items))) => items
                .iter()
                .map(|v| v.as_str().ok_or(AuthError::InvalidToken))
                .collect::<Result<_, _>>()?,
            (None, None) => Vec::new(),
            _ => return Err(AuthError::InvalidToken),
        };
        let scopes = if texts.is_empty() {
            Scope::all_secrets()
        } else {
            super::parse_scopes(&texts).map_err(|_| AuthError::InvalidToken)?
        };
        Ok(Principal {
            tenant,
            subject: format!("jwt:{subject}"),
            scopes,
        })
    }
}
