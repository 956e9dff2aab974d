//! API keys: `sr_<id>_<secret>`. The id (64 random bits, hex) is public and
//! finds the record; the secret (256 random bits, base64url) is what makes
//! the key. Only SHA-256 of the whole text is stored, compared in constant
//! time. A plain hash suffices (no password KDF) because the secret has 256
//! bits of entropy: there is nothing to guess.

use std::sync::Arc;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::{AuthError, Principal, Scope};
use crate::clock::now_ms;
use crate::crypto::seal::random_bytes;
use crate::store::{ApiKeyRecord, LineBody, Store, StoreError};
use crate::types::TenantId;

/// Keys expire after this many days unless told otherwise (as quiva's do).
pub const DEFAULT_LIFETIME_DAYS: u32 = 90;
const DAY_MS: i64 = 86_400_000;

/// What is wrong with a name `valid_name` refuses, for an error's text.
pub const NAME_RULE: &str =
    "must be 1 to 128 characters, not all blank, with no control characters";

/// Whether `name` may name an API key: 1 to 128 characters, none a control
/// character, one at least not blank. The OpenAPI document's pattern says
/// the same in ECMA-262 terms, whose blanks are Unicode's plus U+FEFF.
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.chars().count())
        && !name.chars().any(char::is_control)
        && name.chars().any(|c| !c.is_whitespace() && c != '\u{feff}')
}

/// A freshly minted key: the text is shown once and then only its hash exists.
pub struct NewApiKey {
    pub text: Zeroizing<String>,
    pub record: ApiKeyRecord,
}

fn hash(text: &str) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref().try_into().expect("sha-256 is 32 bytes")
}

/// Splits `sr_<16 hex>_<43 base64url>` into its id, or refuses it.
pub fn key_id(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("sr_")?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let secret_ok = secret.len() == 43
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(id)
}

/// What a new key is called, holds and how long it lives (days; `None`:
/// `DEFAULT_LIFETIME_DAYS`).
pub struct KeySpec {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub policies: Vec<String>,
    pub lifetime_days: Option<u32>,
}

/// Mints a key for `tenant` and stores its record, with `line` as the audit
/// line of its creation. Its lifetime ends no later than `not_after` (the
/// minting key's own expiry).
pub async fn create(
    store: &Store,
    tenant: TenantId,
    spec: KeySpec,
    not_after: Option<i64>,
    line: Option<LineBody>,
) -> Result<NewApiKey, StoreError> {
    let id_bytes = random_bytes::<8>();
    let secret = random_bytes::<32>();
    let id = hex::encode(id_bytes.as_ref());
    let text = Zeroizing::new(format!(
        "sr_{id}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.as_ref())
    ));
    let now = now_ms();
    let KeySpec {
        name,
        scopes,
        policies,
        lifetime_days,
    } = spec;
    let days = lifetime_days.unwrap_or(DEFAULT_LIFETIME_DAYS);
    let record = ApiKeyRecord {
        id,
        tenant,
        name,
        scopes: scopes.iter().map(Scope::to_string).collect(),
        hash: hash(&text),
        created_at: now,
        expires_at: Some(not_after.map_or(now + i64::from(days) * DAY_MS, |at| {
            at.min(now + i64::from(days) * DAY_MS)
        })),
        revoked_at: None,
        last_used_at: None,
        policies,
    };
    store.apikey_insert(record.clone(), line).await?;
    Ok(NewApiKey { text, record })
}

/// A stored key ready for checking: its record and the principal it
/// stands for, with scopes parsed once (the authenticator caches these).
pub struct VerifiedRecord {
    hash: [u8; 32],
    revoked: bool,
    expires_at: Option<i64>,
    principal: Result<Arc<Principal>, AuthError>,
}

impl VerifiedRecord {
    /// `record`, holding `extra` too (its policies' scopes now).
    pub fn new(record: &ApiKeyRecord, extra: Vec<Scope>) -> Self {
        let scopes = if record.scopes.is_empty() && record.policies.is_empty() {
            Ok(Scope::all_secrets())
        } else {
            super::parse_scopes(&record.scopes).map_err(|_| AuthError::UnknownKey)
        };
        let scopes = scopes.map(|mut s| {
            s.extend(extra);
            s
        });
        VerifiedRecord {
            hash: record.hash,
            revoked: record.revoked_at.is_some(),
            expires_at: record.expires_at,
            principal: scopes.map(|scopes| {
                Arc::new(Principal {
                    tenant: record.tenant.clone(),
                    subject: format!("apikey:{}", record.id),
                    scopes,
                    expires_at: record.expires_at,
                    share_keys: Default::default(),
                    token: None,
                })
            }),
        }
    }

    /// Checks a presented key text against this record.
    pub fn check(&self, text: &str) -> Result<Arc<Principal>, AuthError> {
        // Constant time, so response timing says nothing about how much of
        // a guessed key matched.
        if aws_lc_rs::constant_time::verify_slices_are_equal(&hash(text), &self.hash).is_err() {
            return Err(AuthError::UnknownKey);
        }
        if self.revoked {
            return Err(AuthError::RevokedKey);
        }
        if self.expires_at.is_some_and(|at| at <= now_ms()) {
            return Err(AuthError::ExpiredKey);
        }
        self.principal.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_1_to_128_characters_not_all_blank_without_control_characters() {
        for good in ["ci", "é", "a b", &"é".repeat(128), "\u{a0}x"] {
            assert!(valid_name(good), "{good:?}");
        }
        for bad in [
            "",
            " ",
            "\u{a0}\u{3000}",
            "\u{feff}",
            "a\nb",
            "\u{85}",
            "\u{85}x",
            "x\u{7f}",
            &"a".repeat(129),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn key_shape_is_checked_before_any_lookup() {
        let good = format!("sr_{}_{}", "0123456789abcdef", "A".repeat(43));
        assert_eq!(key_id(&good), Some("0123456789abcdef"));
        for bad in [
            "",
            "sr_",
            "sr_0123_abc",
            &good[..good.len() - 1],
            &good.replace("sr_", "xx_"),
        ] {
            assert!(key_id(bad).is_none(), "{bad:?}");
        }
    }
}
