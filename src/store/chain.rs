//! The audit chain's line format. A line is its body (`LineBody`, decided
//! above the store) with the chain fields around it:
//!
//! - v2, written now: `{"v":2,"seq":N,<body>"prev":"<mac of line N-1>","mac":"<mac>"}`,
//!   where `mac` is the HMAC-SHA256, under the audit key, of the line's text
//!   before `,"mac"`. Only the key's holder can make a line that verifies.
//! - v1, read only (trails written before v2): `{<body>"prev":"…","hash":"…"}`,
//!   `hash` the plain SHA-256 of the text before `,"hash"`.
//!
//! The first line's `prev` is `GENESIS`; numbering starts at 1 and counts v1
//! lines too, so a trail that began unkeyed continues with keyed lines.

use std::sync::Arc;

use aws_lc_rs::hmac;

/// The `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// How a v2 line begins.
pub const V2_PREFIX: &str = "{\"v\":2,\"seq\":";

/// The key lines are chained under. Made (and unwrapped from the store) by
/// `crypto`; the store only uses it.
#[derive(Clone)]
pub struct AuditKey(Arc<hmac::Key>);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    pub fn new(key: hmac::Key) -> AuditKey {
        AuditKey(Arc::new(key))
    }

    fn mac(&self, data: &[u8]) -> String {
        // `encode_to_slice`, not `encode`, which collects a char at a time.
        let mut text = [0u8; 64];
        hex::encode_to_slice(hmac::sign(&self.0, data).as_ref(), &mut text)
            .expect("a SHA-256 MAC is 32 bytes");
        String::from_utf8(text.to_vec()).expect("hex is ASCII")
    }

    /// Whether `claimed` (hex) is the MAC of `data`, in constant time.
    pub fn verifies(&self, data: &[u8], claimed: &str) -> bool {
        hex::decode(claimed).is_ok_and(|tag| hmac::verify(&self.0, data, &tag).is_ok())
    }
}

/// Where a chain stands: the number and MAC (or v1 hash) of its last line;
/// `seq` 0 and `GENESIS` before the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    pub fn genesis() -> ChainHead {
        ChainHead {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }

    /// The head of a trail whose last line is `line`; a v1 line carries no
    /// number, so `count` gives how many lines the trail has.
    pub fn after(line: &[u8], count: impl FnOnce() -> u64) -> ChainHead {
        let text = String::from_utf8_lossy(line);
        if let Some((seq, mac)) = v2_fields(&text) {
            return ChainHead {
                seq,
                hash: mac.to_owned(),
            };
        }
        ChainHead {
            seq: count(),
            hash: field_at_end(&text, "hash")
                .map(|(hash, _)| hash.to_owned())
                .unwrap_or_else(|| sha256_hex(line)),
        }
    }

    /// As text for the store's record: `<seq>:<hash>`.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.seq, self.hash)
    }

    pub fn decode(text: &str) -> Option<ChainHead> {
        let (seq, hash) = text.split_once(':')?;
        Some(ChainHead {
            seq: seq.parse().ok()?,
            hash: hash.to_owned(),
        })
    }
}

/// Chains `body` after `head` under `key`, appends the line (without a
/// newline) to `out`, and moves `head` on to it.
pub fn link(key: &AuditKey, head: &mut ChainHead, body: &str, out: &mut Vec<u8>) {
    let start = out.len();
    let seq = head.seq + 1;
    out.extend_from_slice(V2_PREFIX.as_bytes());
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.push(b',');
    out.extend_from_slice(body.strip_prefix('{').unwrap_or(body).as_bytes());
    out.extend_from_slice(b"\"prev\":\"");
    out.extend_from_slice(head.hash.as_bytes());
    out.push(b'"');
    let mac = key.mac(&out[start..]);
    out.extend_from_slice(b",\"mac\":\"");
    out.extend_from_slice(mac.as_bytes());
    out.extend_from_slice(b"\"}");
    *head = ChainHead { seq, hash: mac };
}

/// A v2 line's number and MAC.
/// The number a v2 line begins with, from as much of its start as holds it.
pub fn leading_seq(text: &str) -> Option<u64> {
    let rest = text.strip_prefix(V2_PREFIX)?;
    rest[..rest.find(',')?].parse().ok()
}

pub fn v2_fields(text: &str) -> Option<(u64, &str)> {
    let seq = leading_seq(text)?;
    let (mac, _) = field_at_end(text, "mac")?;
    Some((seq, mac))
}

/// The value of the last field, `name`, of a line ending `,"name":"…"}`,
/// and where `,"name"` begins (the end of the text it covers).
pub fn field_at_end<'a>(line: &'a str, name: &str) -> Option<(&'a str, usize)> {
    let marker = format!(",\"{name}\":\"");
    let at = line.rfind(&marker)?;
    let value = line[at + marker.len()..].strip_suffix("\"}")?;
    Some((value, at))
}

pub fn sha256_hex(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    hex::encode(digest.as_ref())
}

#[cfg(test)]
pub fn test_key() -> AuditKey {
    AuditKey::new(hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linked_line_carries_its_number_and_a_mac_over_its_text() {
        let key = test_key();
        let mut head = ChainHead::genesis();
        let mut out = Vec::new();
        link(&key, &mut head, "{\"a\":1,", &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("{\"v\":2,\"seq\":1,\"a\":1,\"prev\":\"0000"));
        let (mac, at) = field_at_end(&text, "mac").unwrap();
        assert!(key.verifies(&text.as_bytes()[..at], mac));
        assert_eq!(v2_fields(&text), Some((1, mac)));
        assert_eq!(ChainHead::after(text.as_bytes(), || unreachable!()), head);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (value["v"].as_u64(), value["seq"].as_u64()),
            (Some(2), Some(1))
        );
        let other = AuditKey::new(hmac::Key::new(hmac::HMAC_SHA256, &[8; 32]));
        assert!(!other.verifies(&text.as_bytes()[..at], mac));
    }

    #[test]
    fn a_v1_line_is_numbered_by_its_place() {
        let line = br#"{"a":1,"prev":"00","hash":"abc"}"#;
        let head = ChainHead::after(line, || 41);
        assert_eq!((head.seq, head.hash.as_str()), (41, "abc"));
        assert_eq!(ChainHead::decode(&head.encode()), Some(head));
    }
}
