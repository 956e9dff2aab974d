//! The bytes of every KV value this engine writes, and how a secret's state
//! is read back from its history.
//!
//! - A secret's value is a `Record`: `[format=1][version u64][version
//!   created_at i64][key created_at i64][written_at i64][sealed bytes]` (big
//!   endian); a version written with an expiry is `[format=2]`, the same
//!   with `[expires_at i64]` before the sealed bytes. The per-key version
//!   number lives in the record (KV revisions are bucket-global).
//! - A soft delete is a KV delete marker whose payload is the record of the
//!   version it deletes, so undelete can re-put it (same version number) even
//!   when the history no longer holds the put itself. Destroy is a purge.
//! - API keys are `[1]` + JSON; data keys and meta values are `[1]` + bytes.

use std::collections::BTreeMap;

use async_nats::jetstream;
use async_nats::HeaderMap;

use crate::store::model::{Head, StoredVersion, VersionInfo};
use crate::store::StoreError;
use crate::types::TenantId;

/// Format byte of every value this engine writes.
pub(super) const FORMAT: u8 = 1;
/// Fixed part of a secret record before the sealed bytes.
const RECORD_HEADER: usize = 1 + 8 * 4;
/// Format byte of a secret record that carries an expiry.
const FORMAT_EXPIRING: u8 = 2;
pub(super) const KV_OPERATION: &str = "KV-Operation";

/// The KV key of a tenant's secret (or data key): hex keeps a tenant that
/// contains '.' from being read as more subject tokens.
pub(super) fn tenant_key(tenant: &TenantId, rest: &str) -> String {
    format!("{}.{rest}", hex::encode(tenant.as_str()))
}

/// Splits a `<hex tenant>.<rest>` KV key (`tenant_key`'s inverse).
pub(super) fn split_tenant_key(key: &str) -> Option<(TenantId, &str)> {
    let (hex_tenant, rest) = key.split_once('.')?;
    let tenant = String::from_utf8(hex::decode(hex_tenant).ok()?).ok()?;
    Some((TenantId::parse(&tenant).ok()?, rest))
}

/// API key ids and meta names become KV keys as they are; anything outside
/// the KV key alphabet cannot be stored, so it is simply absent.
pub(super) fn is_kv_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'.' | b'/'))
}

/// What a message on a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Put,
    Delete,
    Purge,
}

pub(super) fn op_of(headers: Option<&HeaderMap>) -> Op {
    match headers
        .and_then(|h| h.get(KV_OPERATION))
        .map(|v| v.as_str())
    {
        Some("DEL") => Op::Delete,
        Some("PURGE") => Op::Purge,
        _ => Op::Put,
    }
}

/// One stored version of a secret, as written in a KV value.
#[derive(Debug, Clone)]
pub(super) struct Record {
    pub version: u64,
    /// When this version was written first.
    pub created_at: i64,
    /// When the key was created (survives soft delete, not destroy).
    pub key_created_at: i64,
    /// When this message was written (put, delete, undelete): `updated_at`.
    pub written_at: i64,
    pub sealed: Vec<u8>,
    /// When this version lapses, if it was written with an expiry.
    pub expires_at: Option<i64>,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_HEADER + 8 + self.sealed.len());
        out.push(match self.expires_at {
            None => FORMAT,
            Some(_) => FORMAT_EXPIRING,
        });
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.extend_from_slice(&self.key_created_at.to_be_bytes());
        out.extend_from_slice(&self.written_at.to_be_bytes());
        if let Some(at) = self.expires_at {
            out.extend_from_slice(&at.to_be_bytes());
        }
        out.extend_from_slice(&self.sealed);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, StoreError> {
        let header = match bytes.first() {
            Some(&FORMAT) => RECORD_HEADER,
            Some(&FORMAT_EXPIRING) => RECORD_HEADER + 8,
            _ => 0,
        };
        if header == 0 || bytes.len() < header {
            return Err(StoreError::Corrupt(format!(
                "secret record of {} bytes with an unknown format",
                bytes.len()
            )));
        }
        let word = |i: usize| {
            let start = 1 + 8 * i;
            <[u8; 8]>::try_from(&bytes[start..start + 8]).expect("8 bytes")
        };
        Ok(Record {
            version: u64::from_be_bytes(word(0)),
            created_at: i64::from_be_bytes(word(1)),
            key_created_at: i64::from_be_bytes(word(2)),
            written_at: i64::from_be_bytes(word(3)),
            expires_at: (header > RECORD_HEADER).then(|| i64::from_be_bytes(word(4))),
            sealed: bytes[header..].to_vec(),
        })
    }

    pub fn stored(self) -> StoredVersion {
        StoredVersion {
            version: self.version,
            created_at: self.created_at,
            sealed: self.sealed,
            expires_at: self.expires_at,
        }
    }
}

/// One message of a secret's history, decoded.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub revision: u64,
    pub op: Op,
    /// The record of a put, or of the version a delete marker deleted
    /// (absent for markers written by other tools).
    pub record: Option<Record>,
    /// Server time of the message, for markers without a record.
    pub time_ms: i64,
}

impl Entry {
    pub fn from_message(message: jetstream::message::StreamMessage) -> Result<Entry, StoreError> {
        Entry::from_parts(
            message.sequence,
            Some(&message.headers),
            &message.payload,
            (message.time.unix_timestamp_nanos() / 1_000_000) as i64,
        )
    }

    /// An entry from a message's parts (a consumer's messages come apart).
    pub fn from_parts(
        revision: u64,
        headers: Option<&HeaderMap>,
        payload: &[u8],
        time_ms: i64,
    ) -> Result<Entry, StoreError> {
        let op = op_of(headers);
        let record = match op {
            Op::Put => Some(Record::decode(payload)?),
            Op::Delete if !payload.is_empty() => Some(Record::decode(payload)?),
            _ => None,
        };
        Ok(Entry {
            revision,
            op,
            record,
            time_ms,
        })
    }

    /// The key's head at this message, when the message says all of it (a
    /// purge says the key is gone: `Some(None)`); `None` for a marker that
    /// carries no record, whose head only the history tells.
    pub fn head(&self) -> Option<Option<Head>> {
        match (self.op, &self.record) {
            (Op::Purge, _) => Some(None),
            (op, Some(r)) => Some(Some(Head {
                version: r.version,
                deleted: op == Op::Delete,
                key_created_at: r.key_created_at,
                updated_at: r.written_at,
                expires_at: r.expires_at,
            })),
            (_, None) => None,
        }
    }
}

/// A key's state derived from its whole history.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Retained versions: (created_at, deleted, record of its latest put).
    pub versions: BTreeMap<u64, (i64, bool, Option<Record>)>,
    pub head: Option<Head>,
}

impl State {
    pub fn from_history(entries: &[Entry]) -> State {
        let mut s = State::default();
        for e in entries {
            match (e.op, &e.record) {
                (Op::Purge, _) => s = State::default(),
                (Op::Put, Some(r)) => {
                    s.versions
                        .insert(r.version, (r.created_at, false, Some(r.clone())));
                }
                (Op::Delete, Some(r)) => {
                    s.versions
                        .entry(r.version)
                        .or_insert((r.created_at, true, Some(r.clone())))
                        .1 = true;
                }
                (Op::Delete, None) => {
                    let Some(head) = &mut s.head else { continue };
                    if let Some(slot) = s.versions.get_mut(&head.version) {
                        slot.1 = true;
                    }
                    head.deleted = true;
                    head.updated_at = e.time_ms;
                    continue;
                }
                (Op::Put, None) => continue,
            }
            s.head = e.head().flatten();
        }
        s
    }

    pub fn versions(&self) -> Vec<VersionInfo> {
        self.versions
            .iter()
            .map(|(&version, (created_at, deleted, record))| VersionInfo {
                version,
                created_at: *created_at,
                deleted: *deleted,
                dek_id: record
                    .as_ref()
                    .and_then(|r| crate::store::model::sealed_dek_id(&r.sealed)),
            })
            .collect()
    }

    /// The last record put at the current version, for undelete after a
    /// marker that carries none.
    pub fn current_record(&self) -> Option<Record> {
        let head = self.head.as_ref()?;
        self.versions
            .get(&head.version)
            .and_then(|(_, _, r)| r.clone())
    }
}

pub(super) fn with_format(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 1);
    out.push(FORMAT);
    out.extend_from_slice(value);
    out
}

pub(super) fn without_format(what: &str, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => Ok(rest.to_vec()),
        _ => Err(StoreError::Corrupt(format!("{what} has an unknown format"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = Record {
            version: 7,
            created_at: -1,
            key_created_at: 2,
            written_at: 3,
            sealed: b"sealed".to_vec(),
            expires_at: None,
        };
        let back = Record::decode(&r.encode()).unwrap();
        assert_eq!(back.expires_at, None);
        let lapsing = Record {
            expires_at: Some(9),
            ..r.clone()
        };
        let again = Record::decode(&lapsing.encode()).unwrap();
        assert_eq!(
            (again.expires_at, again.sealed.as_slice()),
            (Some(9), &b"sealed"[..])
        );
        assert_eq!(
            (
                back.version,
                back.created_at,
                back.key_created_at,
                back.written_at
            ),
            (7, -1, 2, 3)
        );
        assert_eq!(back.sealed, b"sealed");
        assert!(Record::decode(&[3; 40]).is_err());
        assert!(Record::decode(&[2; 40]).is_err());
        assert!(Record::decode(&[1; 10]).is_err());
    }

    #[test]
    fn tenant_keys_are_unambiguous() {
        let t = TenantId::parse("a.b").unwrap();
        assert_eq!(tenant_key(&t, "x/y"), "612e62.x/y");
        assert_eq!(hex::decode("612e62").unwrap(), b"a.b");
    }

    #[test]
    fn history_marks_deleted_versions() {
        let rec = |v: u64| Record {
            version: v,
            created_at: v as i64,
            key_created_at: 1,
            written_at: v as i64,
            sealed: vec![],
            expires_at: None,
        };
        let e = |revision, op, r: Option<Record>| Entry {
            revision,
            op,
            record: r,
            time_ms: 0,
        };
        let current = |s: &State| s.head.as_ref().map(|h| (h.version, h.deleted));
        let s = State::from_history(&[
            e(1, Op::Put, Some(rec(1))),
            e(2, Op::Put, Some(rec(2))),
            e(3, Op::Delete, Some(rec(2))),
            e(4, Op::Put, Some(rec(3))),
        ]);
        let flags: Vec<_> = s.versions.iter().map(|(v, x)| (*v, x.1)).collect();
        assert_eq!(flags, [(1, false), (2, true), (3, false)]);
        assert_eq!(current(&s), Some((3, false)));
        let s = State::from_history(&[e(5, Op::Delete, Some(rec(4))), e(6, Op::Put, Some(rec(4)))]);
        assert_eq!(current(&s), Some((4, false)));
        assert!(!s.versions[&4].1);
        let s = State::from_history(&[e(1, Op::Put, Some(rec(1))), e(2, Op::Purge, None)]);
        assert!(s.head.is_none() && s.versions.is_empty());
    }
}
