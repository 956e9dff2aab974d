//! The bytes of every KV value this engine writes, and how a secret's state
//! is read back from its history.
//!
//! - A secret's value is a `Record`: `[format=1][version u64][version
//!   created_at i64][key created_at i64][written_at i64][sealed bytes]` (big
//!   endian); a version written with an expiry is `[format=2]`, the same
//!   with `[expires_at i64]` before the sealed bytes. The per-key version
//!   number lives in the record (KV revisions are bucket-global).
//! - `[format=3]` (Vault's KV v2 model) adds, after `expires_at` (i64::MIN:
//!   none), a flags byte (1: KV data, 2: destroyed) and a length-prefixed
//!   (u32) JSON `Annex`: the key's settings and the marks of its other
//!   versions. The last message's annex is the truth for them; each message
//!   carries it forward, so a version's state never needs its own message.
//! - A soft delete is a KV delete marker whose payload is the record of the
//!   version it deletes, so undelete can re-put it (same version number) even
//!   when the history no longer holds the put itself. Destroy is a purge.
//! - API keys are `[1]` + JSON; data keys and meta values are `[1]` + bytes.

use std::collections::BTreeMap;

use async_nats::jetstream;
use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::store::model::{Head, KeySettings, Mark, StoredVersion, VersionInfo};
use crate::store::StoreError;
use crate::types::TenantId;

/// Format byte of every value this engine writes.
pub(super) const FORMAT: u8 = 1;
/// Fixed part of a secret record before the sealed bytes.
const RECORD_HEADER: usize = 1 + 8 * 4;
/// Format byte of a secret record that carries an expiry.
const FORMAT_EXPIRING: u8 = 2;
/// Format byte of a record with flags and an annex.
const FORMAT_ANNEXED: u8 = 3;
const FLAG_KV: u8 = 1;
const FLAG_DESTROYED: u8 = 2;

/// What a message carries beside its version: the key's settings and the
/// state of its other versions (those deleted, undeleted or destroyed
/// while not current).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Annex {
    #[serde(default, skip_serializing_if = "KeySettings::is_default")]
    pub settings: KeySettings,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub marks: BTreeMap<u64, Mark>,
    /// Versions up to this one left the key's history (a key that keeps
    /// fewer versions than the bucket does).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub floor: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Annex {
    fn is_empty(&self) -> bool {
        self.settings.is_default() && self.marks.is_empty() && self.floor == 0
    }
}
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
    pub kv: bool,
    /// This version's value is gone (`sealed` is empty).
    pub destroyed: bool,
    pub annex: Annex,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let annexed = self.kv || self.destroyed || !self.annex.is_empty();
        let mut out = Vec::with_capacity(RECORD_HEADER + 16 + self.sealed.len());
        out.push(match (annexed, self.expires_at) {
            (true, _) => FORMAT_ANNEXED,
            (false, None) => FORMAT,
            (false, Some(_)) => FORMAT_EXPIRING,
        });
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.created_at.to_be_bytes());
        out.extend_from_slice(&self.key_created_at.to_be_bytes());
        out.extend_from_slice(&self.written_at.to_be_bytes());
        if annexed {
            out.extend_from_slice(&self.expires_at.unwrap_or(i64::MIN).to_be_bytes());
            let flags = (u8::from(self.kv) * FLAG_KV) | (u8::from(self.destroyed) * FLAG_DESTROYED);
            out.push(flags);
            let annex = if self.annex.is_empty() {
                Vec::new()
            } else {
                serde_json::to_vec(&self.annex).expect("annex encodes")
            };
            out.extend_from_slice(&(annex.len() as u32).to_be_bytes());
            out.extend_from_slice(&annex);
        } else if let Some(at) = self.expires_at {
            out.extend_from_slice(&at.to_be_bytes());
        }
        out.extend_from_slice(&self.sealed);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, StoreError> {
        let bad = || {
            StoreError::Corrupt(format!(
                "secret record of {} bytes with an unknown format",
                bytes.len()
            ))
        };
        let header = match bytes.first() {
            Some(&FORMAT) => RECORD_HEADER,
            Some(&FORMAT_EXPIRING) => RECORD_HEADER + 8,
            Some(&FORMAT_ANNEXED) => RECORD_HEADER + 8 + 1 + 4,
            _ => 0,
        };
        if header == 0 || bytes.len() < header {
            return Err(bad());
        }
        let word = |i: usize| {
            let start = 1 + 8 * i;
            <[u8; 8]>::try_from(&bytes[start..start + 8]).expect("8 bytes")
        };
        let mut record = Record {
            version: u64::from_be_bytes(word(0)),
            created_at: i64::from_be_bytes(word(1)),
            key_created_at: i64::from_be_bytes(word(2)),
            written_at: i64::from_be_bytes(word(3)),
            expires_at: (header > RECORD_HEADER).then(|| i64::from_be_bytes(word(4))),
            sealed: Vec::new(),
            kv: false,
            destroyed: false,
            annex: Annex::default(),
        };
        let mut start = header;
        if bytes[0] == FORMAT_ANNEXED {
            record.expires_at = record.expires_at.filter(|&at| at != i64::MIN);
            let flags = bytes[RECORD_HEADER + 8];
            record.kv = flags & FLAG_KV != 0;
            record.destroyed = flags & FLAG_DESTROYED != 0;
            let at = RECORD_HEADER + 9;
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
            let annex = bytes.get(header..header + len).ok_or_else(bad)?;
            if len > 0 {
                record.annex = serde_json::from_slice(annex).map_err(|_| bad())?;
            }
            start = header + len;
        }
        record.sealed = bytes[start..].to_vec();
        Ok(record)
    }

    pub fn stored(self) -> StoredVersion {
        StoredVersion {
            version: self.version,
            created_at: self.created_at,
            sealed: self.sealed,
            expires_at: self.expires_at,
            kv: self.kv,
            settings: Some(std::sync::Arc::new(self.annex.settings)),
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
                destroyed: op == Op::Delete && r.destroyed,
                key_created_at: r.key_created_at,
                updated_at: r.written_at,
                expires_at: r.expires_at,
                settings: r.annex.settings.clone(),
            })),
            (_, None) => None,
        }
    }
}

/// One retained version as the history leaves it.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub created_at: i64,
    pub deleted: bool,
    pub deleted_at: Option<i64>,
    pub destroyed: bool,
    /// Undeleted since it was written: its record's expiry no longer holds.
    pub expiry_cleared: bool,
    /// The record of its latest put (or of the marker that destroyed it).
    pub record: Option<Record>,
}

impl Slot {
    /// Readable: neither deleted nor destroyed.
    pub fn live_record(&self) -> Option<&Record> {
        (!self.deleted && !self.destroyed)
            .then_some(self.record.as_ref())
            .flatten()
    }

    /// When it lapses, as its record and marks say.
    pub fn expires_at(&self) -> Option<i64> {
        self.record
            .as_ref()
            .and_then(|r| r.expires_at)
            .filter(|_| !self.expiry_cleared)
    }
}

/// A key's state derived from its whole history.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Retained versions.
    pub versions: BTreeMap<u64, Slot>,
    pub head: Option<Head>,
    /// The last message's marks of other versions.
    pub marks: BTreeMap<u64, Mark>,
    /// The last message's floor: versions up to it are not retained.
    pub floor: u64,
}

impl State {
    pub fn from_history(entries: &[Entry]) -> State {
        let mut s = State::default();
        for e in entries {
            match (e.op, &e.record) {
                (Op::Purge, _) => s = State::default(),
                (Op::Put, Some(r)) => {
                    let slot = Slot {
                        created_at: r.created_at,
                        deleted: false,
                        deleted_at: None,
                        destroyed: r.destroyed,
                        expiry_cleared: false,
                        record: Some(r.clone()),
                    };
                    s.versions.insert(r.version, slot);
                    s.apply(r);
                }
                (Op::Delete, Some(r)) => {
                    let slot = s.versions.entry(r.version).or_insert_with(|| Slot {
                        created_at: r.created_at,
                        deleted: true,
                        deleted_at: None,
                        destroyed: false,
                        expiry_cleared: false,
                        record: Some(r.clone()),
                    });
                    slot.deleted = true;
                    // Restated since, it keeps the time it was deleted.
                    slot.deleted_at = match r.annex.marks.get(&r.version) {
                        Some(mark) => mark.deleted_at,
                        None => Some(r.written_at),
                    };
                    if r.destroyed {
                        slot.destroyed = true;
                        slot.record = Some(r.clone());
                    }
                    s.apply(r);
                }
                (Op::Delete, None) => {
                    let Some(head) = &mut s.head else { continue };
                    if let Some(slot) = s.versions.get_mut(&head.version) {
                        slot.deleted = true;
                        slot.deleted_at = Some(e.time_ms);
                    }
                    head.deleted = true;
                    head.updated_at = e.time_ms;
                    continue;
                }
                (Op::Put, None) => continue,
            }
            s.head = e.head().flatten();
        }
        // A version-0 record says only that the key's settings came first.
        s.versions.remove(&0);
        let floor = s.floor;
        s.versions.retain(|&v, _| v > floor);
        s
    }

    /// A message's annex: its marks state the other versions.
    fn apply(&mut self, r: &Record) {
        for (v, mark) in &r.annex.marks {
            if *v == r.version {
                continue;
            }
            // A destroyed version's messages are erased: its mark shows it.
            if mark.destroyed && !self.versions.contains_key(v) {
                let slot = Slot {
                    created_at: mark.created_at,
                    deleted: true,
                    deleted_at: None,
                    destroyed: true,
                    expiry_cleared: false,
                    record: None,
                };
                self.versions.insert(*v, slot);
            }
            if let Some(slot) = self.versions.get_mut(v) {
                slot.deleted = mark.deleted_at.is_some() || mark.destroyed;
                slot.deleted_at = mark.deleted_at;
                slot.destroyed = mark.destroyed;
                slot.expiry_cleared = mark.expiry_cleared;
            }
        }
        self.marks = r.annex.marks.clone();
        self.floor = r.annex.floor;
    }

    pub fn versions(&self) -> Vec<VersionInfo> {
        self.versions
            .iter()
            .map(|(&version, slot)| {
                let record = slot.record.as_ref();
                VersionInfo {
                    version,
                    created_at: slot.created_at,
                    deleted: slot.deleted,
                    dek_id: record.and_then(|r| crate::store::model::sealed_dek_id(&r.sealed)),
                    deleted_at: slot.deleted_at,
                    destroyed: slot.destroyed,
                    expires_at: slot.expires_at(),
                    kv: record.is_some_and(|r| r.kv),
                }
            })
            .collect()
    }

    /// The last record put at the current version, for undelete after a
    /// marker that carries none.
    pub fn current_record(&self) -> Option<Record> {
        let head = self.head.as_ref()?;
        self.versions
            .get(&head.version)
            .and_then(|slot| slot.record.clone())
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
            kv: false,
            destroyed: false,
            annex: Annex::default(),
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
            kv: false,
            destroyed: false,
            annex: Annex::default(),
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
        let flags: Vec<_> = s.versions.iter().map(|(v, x)| (*v, x.deleted)).collect();
        assert_eq!(flags, [(1, false), (2, true), (3, false)]);
        assert_eq!(current(&s), Some((3, false)));
        let s = State::from_history(&[e(5, Op::Delete, Some(rec(4))), e(6, Op::Put, Some(rec(4)))]);
        assert_eq!(current(&s), Some((4, false)));
        assert!(!s.versions[&4].deleted);
        let s = State::from_history(&[e(1, Op::Put, Some(rec(1))), e(2, Op::Purge, None)]);
        assert!(s.head.is_none() && s.versions.is_empty());
    }
}
