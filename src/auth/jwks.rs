//! Verification keys: public keys from a PEM file or a JWKS document, each
//! with the one algorithm its type allows (RSA: RS256, P-256: ES256,
//! Ed25519: EdDSA), so a token's `alg` can never choose a weaker check
//! (`none`, or HS256 keyed with a public key).

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};

/// A verification key with the one algorithm it may be used with.
pub struct VerifyKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// A provider's keys (PEM, or a JWKS document), keeping the signing keys
/// strongroom can use and skipping the others: a provider's set may also
/// hold encryption keys (`"use":"enc"`) or keys of algorithms we do not
/// accept (RS384, P-384), which must not stop its other keys from working.
pub fn parse_provider_keys(text: &str) -> Result<Vec<VerifyKey>, String> {
    if !text.trim_start().starts_with('{') {
        return parse_keys(text);
    }
    let set: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let listed = set
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("not a JWKS document: no \"keys\" list")?;
    let keys: Vec<VerifyKey> = listed
        .iter()
        .filter(|k| k.get("use").and_then(serde_json::Value::as_str) != Some("enc"))
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter_map(|jwk| jwk_key(&jwk).ok())
        .collect();
    if keys.is_empty() {
        return Err("the key set holds no RSA, P-256 or Ed25519 signing key".into());
    }
    Ok(keys)
}

/// Parses a PEM file of public keys, or a JWKS document.
pub fn parse_keys(text: &str) -> Result<Vec<VerifyKey>, String> {
    if text.trim_start().starts_with('{') {
        let set: JwkSet =
            serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        return set.keys.iter().map(jwk_key).collect();
    }
    let mut keys = Vec::new();
    for block in text.split("-----BEGIN ").skip(1) {
        let pem = format!("-----BEGIN {block}");
        let pem = pem.as_bytes();
        let key = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            VerifyKey {
                kid: None,
                alg: Algorithm::RS256,
                key: k,
            }
        } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            VerifyKey {
                kid: None,
                alg: Algorithm::ES256,
                key: k,
            }
        } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
            VerifyKey {
                kid: None,
                alg: Algorithm::EdDSA,
                key: k,
            }
        } else {
            return Err("a PEM block is not an RSA, P-256 or Ed25519 public key".into());
        };
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("no public key found (expected PEM blocks or a JWKS document)".into());
    }
    Ok(keys)
}

fn jwk_key(jwk: &Jwk) -> Result<VerifyKey, String> {
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return Err("JWKS keys must be RSA, EC P-256 or OKP Ed25519".into()),
    };
    if let Some(declared) = &jwk.common.key_algorithm {
        let declared = format!("{declared:?}");
        if declared != format!("{alg:?}") {
            return Err(format!("JWKS key declares alg {declared}, which strongroom does not accept for its key type"));
        }
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("bad JWKS key: {e}"))?;
    Ok(VerifyKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

/// Which of a set of keys a token's header names.
pub enum Selected<'k> {
    Key(&'k VerifyKey),
    /// The named key's type allows another algorithm than the token's.
    WrongAlgorithm,
    None,
}

/// The key a token's header names among `keys`: by `kid`, or the only key
/// when the token names none.
pub fn select<'k>(keys: &'k [VerifyKey], header: &jsonwebtoken::Header) -> Selected<'k> {
    let key = match &header.kid {
        Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
        None if keys.len() == 1 => keys.first(),
        None => None,
    };
    match key {
        Some(k) if k.alg == header.alg => Selected::Key(k),
        Some(_) => Selected::WrongAlgorithm,
        None => Selected::None,
    }
}
