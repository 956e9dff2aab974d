//! AES-256-GCM sealing of values and data keys, and the stored byte format.
//!
//! A sealed value is `[format=1][dek id: u32 BE][nonce: 12][ciphertext][tag: 16]`.
//! Its associated data binds tenant, key and version, each length-prefixed, so
//! a ciphertext copied to another key, tenant or version fails to open. A
//! wrapped DEK is `[format=2][KEK id: 8][nonce][ciphertext][tag]` under the
//! KEK with that id, bound to tenant and DEK id the same way (format 1, from
//! before the keyring, has no KEK id: any KEK of the keyring may open it).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use zeroize::Zeroizing;

use super::CryptoError;

/// Format byte of every sealed blob written by this version.
pub const FORMAT_V1: u8 = 1;
const TAG_LEN: usize = 16;
const VALUE_HEADER: usize = 1 + 4 + NONCE_LEN;

/// An AES-256 key held inside aws-lc (which cleanses it on drop).
pub struct AeadKey(LessSafeKey);

impl AeadKey {
    pub fn new(bytes: &[u8; 32]) -> Self {
        // Cannot fail: the length is fixed by the type.
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte AES key");
        AeadKey(LessSafeKey::new(unbound))
    }
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(..)")
    }
}

/// What a value's ciphertext is bound to.
pub struct ValueContext<'a> {
    pub tenant: &'a str,
    pub key: &'a str,
    pub version: u64,
}

const VALUE_AAD_TAG: &[u8] = b"strongroom/value/v1";

fn value_aad(ctx: &ValueContext<'_>) -> Vec<u8> {
    // The tag, two length-prefixed fields and the version: one allocation.
    let mut aad =
        Vec::with_capacity(VALUE_AAD_TAG.len() + 4 + 4 + 8 + ctx.tenant.len() + ctx.key.len());
    aad.extend_from_slice(VALUE_AAD_TAG);
    push_field(&mut aad, ctx.tenant.as_bytes());
    push_field(&mut aad, ctx.key.as_bytes());
    aad.extend_from_slice(&ctx.version.to_be_bytes());
    aad
}

fn dek_aad(tenant: &str, dek_id: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + tenant.len());
    aad.extend_from_slice(b"strongroom/dek/v1");
    push_field(&mut aad, tenant.as_bytes());
    aad.extend_from_slice(&dek_id.to_be_bytes());
    aad
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u32).to_be_bytes());
    out.extend_from_slice(field);
}

pub fn random_bytes<const N: usize>() -> Zeroizing<[u8; N]> {
    let mut out = Zeroizing::new([0u8; N]);
    // aws-lc's DRBG only fails if the OS entropy source is gone, which leaves
    // nothing safe to do but stop.
    aws_lc_rs::rand::fill(out.as_mut()).expect("system randomness");
    out
}

/// Seals `plaintext` under `dek` (whose id is `dek_id`) with a fresh nonce.
pub fn seal_value(
    dek: &AeadKey,
    dek_id: u32,
    ctx: &ValueContext<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let nonce = random_bytes::<NONCE_LEN>();
    let mut out = Vec::with_capacity(VALUE_HEADER + plaintext.len() + TAG_LEN);
    out.push(FORMAT_V1);
    out.extend_from_slice(&dek_id.to_be_bytes());
    out.extend_from_slice(nonce.as_ref());
    out.extend_from_slice(plaintext);
    let tag = dek
        .0
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(value_aad(ctx)),
            &mut out[VALUE_HEADER..],
        )
        .map_err(|_| CryptoError::Aead)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Reads the DEK id from a sealed value without opening it.
pub fn sealed_value_dek_id(sealed: &[u8]) -> Result<u32, CryptoError> {
    if sealed.len() < VALUE_HEADER + TAG_LEN {
        return Err(CryptoError::Truncated);
    }
    if sealed[0] != FORMAT_V1 {
        return Err(CryptoError::UnknownFormat(sealed[0]));
    }
    Ok(u32::from_be_bytes(
        sealed[1..5].try_into().expect("4 bytes"),
    ))
}

/// Opens a sealed value; the plaintext is zeroized when dropped.
pub fn open_value(
    dek: &AeadKey,
    ctx: &ValueContext<'_>,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    sealed_value_dek_id(sealed)?;
    let nonce: [u8; NONCE_LEN] = sealed[5..VALUE_HEADER].try_into().expect("nonce");
    let mut buf = Zeroizing::new(sealed[VALUE_HEADER..].to_vec());
    let len = dek
        .0
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(value_aad(ctx)),
            buf.as_mut_slice(),
        )
        .map_err(|_| CryptoError::Tampered)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// Format byte of a wrapped key that names its KEK.
const WRAPPED_V2: u8 = 2;
const KEK_ID_LEN: usize = 8;

/// Wraps a DEK under the KEK whose id is `kek_id`.
pub fn wrap_key(
    kek: &AeadKey,
    kek_id: [u8; KEK_ID_LEN],
    tenant: &str,
    dek_id: u32,
    dek: &[u8; 32],
) -> Vec<u8> {
    let nonce = random_bytes::<NONCE_LEN>();
    let header = 1 + KEK_ID_LEN + NONCE_LEN;
    let mut out = Vec::with_capacity(header + 32 + TAG_LEN);
    out.push(WRAPPED_V2);
    out.extend_from_slice(&kek_id);
    out.extend_from_slice(nonce.as_ref());
    out.extend_from_slice(dek);
    let tag = kek
        .0
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(dek_aad(tenant, dek_id)),
            &mut out[header..],
        )
        .expect("sealing 32 bytes cannot fail");
    out.extend_from_slice(tag.as_ref());
    out
}

/// The id of the KEK a wrapped key names (`None` for format 1, which names
/// none), and where its nonce starts.
pub fn wrapped_kek_id(wrapped: &[u8]) -> Result<(Option<[u8; KEK_ID_LEN]>, usize), CryptoError> {
    let (id, start) = match wrapped.first() {
        Some(&FORMAT_V1) => (None, 1),
        Some(&WRAPPED_V2) if wrapped.len() > KEK_ID_LEN => (
            Some(wrapped[1..1 + KEK_ID_LEN].try_into().expect("8 bytes")),
            1 + KEK_ID_LEN,
        ),
        Some(&other) if other != WRAPPED_V2 => return Err(CryptoError::UnknownFormat(other)),
        _ => return Err(CryptoError::Truncated),
    };
    if wrapped.len() != start + NONCE_LEN + 32 + TAG_LEN {
        return Err(CryptoError::Truncated);
    }
    Ok((id, start))
}

/// Unwraps a DEK; fails with `Tampered` under the wrong KEK.
pub fn unwrap_key(
    kek: &AeadKey,
    tenant: &str,
    dek_id: u32,
    wrapped: &[u8],
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let (_, start) = wrapped_kek_id(wrapped)?;
    let nonce: [u8; NONCE_LEN] = wrapped[start..start + NONCE_LEN].try_into().expect("nonce");
    let mut buf = Zeroizing::new(wrapped[start + NONCE_LEN..].to_vec());
    let plain = kek
        .0
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(dek_aad(tenant, dek_id)),
            buf.as_mut_slice(),
        )
        .map_err(|_| CryptoError::Tampered)?;
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(plain);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(version: u64) -> ValueContext<'static> {
        ValueContext {
            tenant: "acme",
            key: "prod/db",
            version,
        }
    }

    #[test]
    fn value_round_trips_and_nonces_differ() {
        let dek = AeadKey::new(&random_bytes::<32>());
        let a = seal_value(&dek, 7, &ctx(1), b"hunter2").unwrap();
        let b = seal_value(&dek, 7, &ctx(1), b"hunter2").unwrap();
        assert_ne!(a, b, "a fresh nonce per seal");
        assert_eq!(sealed_value_dek_id(&a).unwrap(), 7);
        assert_eq!(
            open_value(&dek, &ctx(1), &a).unwrap().as_slice(),
            b"hunter2"
        );
        assert!(!a.windows(7).any(|w| w == b"hunter2"));
    }

    #[test]
    fn empty_value_round_trips() {
        let dek = AeadKey::new(&random_bytes::<32>());
        let sealed = seal_value(&dek, 1, &ctx(1), b"").unwrap();
        assert!(open_value(&dek, &ctx(1), &sealed).unwrap().is_empty());
    }

    #[test]
    fn moved_or_edited_ciphertext_fails_to_open() {
        let dek = AeadKey::new(&random_bytes::<32>());
        let sealed = seal_value(&dek, 1, &ctx(3), b"value").unwrap();
        let other_key = ValueContext {
            tenant: "acme",
            key: "prod/db2",
            version: 3,
        };
        let other_tenant = ValueContext {
            tenant: "acme2",
            key: "prod/db",
            version: 3,
        };
        assert!(open_value(&dek, &ctx(4), &sealed).is_err());
        assert!(open_value(&dek, &other_key, &sealed).is_err());
        assert!(open_value(&dek, &other_tenant, &sealed).is_err());
        for i in 5..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(open_value(&dek, &ctx(3), &bad).is_err(), "byte {i}");
        }
        let wrong = AeadKey::new(&random_bytes::<32>());
        assert!(open_value(&wrong, &ctx(3), &sealed).is_err());
        assert!(matches!(
            open_value(&dek, &ctx(3), &sealed[..10]),
            Err(CryptoError::Truncated)
        ));
    }

    #[test]
    fn wrapped_key_is_bound_to_tenant_and_id() {
        let kek = AeadKey::new(&random_bytes::<32>());
        let dek = random_bytes::<32>();
        let wrapped = wrap_key(&kek, [7; 8], "acme", 1, &dek);
        assert_eq!(wrapped_kek_id(&wrapped).unwrap().0, Some([7; 8]));
        assert_eq!(*unwrap_key(&kek, "acme", 1, &wrapped).unwrap(), *dek);
        assert!(matches!(
            wrapped_kek_id(&wrapped[..20]),
            Err(CryptoError::Truncated)
        ));
        assert!(unwrap_key(&kek, "acme", 2, &wrapped).is_err());
        assert!(unwrap_key(&kek, "other", 1, &wrapped).is_err());
        let wrong = AeadKey::new(&random_bytes::<32>());
        assert!(unwrap_key(&wrong, "acme", 1, &wrapped).is_err());
    }
}
