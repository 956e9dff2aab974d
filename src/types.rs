//! Validated domain types: a `SecretKey` or `TenantId` can only be built by a
//! `parse` that enforces the rules, so code holding one never re-checks it.

use std::fmt;

/// Longest key accepted, in bytes (the NATS KV key limit we design for).
pub const MAX_KEY_BYTES: usize = 256;
/// Longest tenant id accepted, in bytes.
pub const MAX_TENANT_BYTES: usize = 64;

/// Why a key or tenant id was refused; the text goes into the `detail` field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("key is empty")]
    Empty,
    #[error("key is longer than {MAX_KEY_BYTES} bytes")]
    TooLong,
    #[error("key may only contain A-Z a-z 0-9 - _ = . /")]
    BadCharacter,
    #[error("key may not start or end with '.' or '/'")]
    BadEdge,
    #[error("key may not contain an empty segment ('..' or '//')")]
    EmptySegment,
    #[error("tenant must be 1 to {MAX_TENANT_BYTES} bytes of A-Z a-z 0-9 - _ .")]
    BadTenant,
}

/// A secret's key: 1 to 256 bytes of `A-Z a-z 0-9 - _ = . /`, not starting or
/// ending with `.` or `/`, with no empty segment. This is the NATS KV key
/// alphabet, so every key maps onto the NATS backend unchanged.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretKey(String);

impl SecretKey {
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return Err(NameError::Empty);
        }
        if bytes.len() > MAX_KEY_BYTES {
            return Err(NameError::TooLong);
        }
        if !bytes.iter().all(|&b| is_key_byte(b)) {
            return Err(NameError::BadCharacter);
        }
        let edge = |b: u8| b == b'.' || b == b'/';
        if edge(bytes[0]) || edge(bytes[bytes.len() - 1]) {
            return Err(NameError::BadEdge);
        }
        // One pass over byte pairs: `str::contains` with a two-byte needle
        // calls memcmp per position, and this runs on every request.
        if bytes.windows(2).any(|w| w[0] == w[1] && edge(w[0])) {
            return Err(NameError::EmptySegment);
        }
        Ok(SecretKey(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Key names are not secret values, but they can still be sensitive (they name
/// systems), so logs never print them; `Debug` shows only the length.
impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(<{} bytes>)", self.0.len())
    }
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'.' | b'/')
}

/// A prefix scope's rule: key bytes only, at most 256, not starting with
/// `.` or `/`, and never two of those in a row (a little stricter than
/// keys, which may hold `./`; one regular expression in the OpenAPI
/// document says the same). A scope such as `secrets:read:../` could never
/// match a key, and reads as if it escaped something.
pub fn can_begin_a_key(prefix: &str) -> bool {
    let bytes = prefix.as_bytes();
    let edge = |b: u8| b == b'.' || b == b'/';
    !bytes.is_empty()
        && bytes.len() <= MAX_KEY_BYTES
        && bytes.iter().all(|&b| is_key_byte(b))
        && !edge(bytes[0])
        && !bytes.windows(2).any(|w| edge(w[0]) && edge(w[1]))
}

/// Checks a listing's key prefix: the key alphabet, at most 256 bytes,
/// possibly empty or ending in `/`.
pub fn is_valid_key_prefix(text: &str) -> bool {
    text.len() <= MAX_KEY_BYTES && text.bytes().all(is_key_byte)
}

/// A tenant id: 1 to 64 bytes of `A-Z a-z 0-9 - _ .`; it partitions every
/// secret, data key and API key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let ok = !text.is_empty()
            && text.len() <= MAX_TENANT_BYTES
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(TenantId(text.to_owned()))
        } else {
            Err(NameError::BadTenant)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_whole_alphabet_and_slashes() {
        for ok in [
            "a",
            "team/app/db.password",
            "A-Z_a=z.0/9",
            "x".repeat(256).as_str(),
        ] {
            assert!(SecretKey::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_what_the_key_rule_forbids() {
        let cases = [
            ("", NameError::Empty),
            (&"x".repeat(257), NameError::TooLong),
            ("a b", NameError::BadCharacter),
            ("a*", NameError::BadCharacter),
            ("é", NameError::BadCharacter),
            ("a\0", NameError::BadCharacter),
            (".a", NameError::BadEdge),
            ("a/", NameError::BadEdge),
            ("/a", NameError::BadEdge),
            ("a.", NameError::BadEdge),
            ("a..b", NameError::EmptySegment),
            ("a//b", NameError::EmptySegment),
        ];
        for (text, want) in cases {
            assert_eq!(SecretKey::parse(text).unwrap_err(), want, "{text:?}");
        }
    }

    #[test]
    fn debug_never_prints_the_key_text() {
        let key = SecretKey::parse("prod/db.password").unwrap();
        assert!(!format!("{key:?}").contains("password"));
    }

    #[test]
    fn tenant_rule() {
        assert!(TenantId::parse("default").is_ok());
        assert!(TenantId::parse("acme.prod-1_x").is_ok());
        for bad in ["", "a/b", "a b", &"t".repeat(65)] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// The key rule, stated independently: a key is accepted exactly when
        /// it is 1 to 256 key bytes, neither starting nor ending with `.` or
        /// `/`, without `..` or `//`; no text makes the check panic.
        #[test]
        fn the_key_rule_holds_for_any_text(text in "(?s)[a-z./=_\\-]{0,8}|.{0,300}") {
            let edge = |c: char| c == '.' || c == '/';
            let expected = !text.is_empty()
                && text.len() <= 256
                && text.bytes().all(is_key_byte)
                && !text.starts_with(edge)
                && !text.ends_with(edge)
                && !text.contains("..")
                && !text.contains("//");
            proptest::prop_assert_eq!(SecretKey::parse(&text).is_ok(), expected, "{:?}", text);
        }

        /// A scope prefix that the rule accepts begins some valid key.
        #[test]
        fn an_accepted_scope_prefix_begins_a_key(text in "[a-z./]{1,12}") {
            if can_begin_a_key(&text) {
                let key = format!("{text}x");
                proptest::prop_assert!(SecretKey::parse(&key).is_ok(), "{:?}", key);
            }
        }
    }
}
