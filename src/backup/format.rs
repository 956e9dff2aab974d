//! The backup file: JSON lines, engine-independent and streamed. A header
//! (format version, the id of the KEK its MAC is keyed from, a random
//! salt), then one record a line (`meta`, `dek`, `apikey`, `secret`, and
//! the source's `audit_head`), then `{"end":{"records":N,"mac":...}}`: an
//! HMAC-SHA256 of every byte before the end line, under a key derived from
//! the KEK and the salt. A changed, reordered or cut file fails the MAC.

use std::io::{BufRead, Write};

use aws_lc_rs::hmac;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::crypto::{seal, KekId, MasterKey, MasterKeys};
use crate::store::dump::{Dumped, DumpedVersion, SecretDump};
use crate::store::model::{ApiKeyRecord, Head, KeySettings, WrappedDek};
use crate::store::records::Kind;
use crate::types::TenantId;

/// The version of the format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    strongroom_backup: u32,
    kek_id: String,
    salt: String,
    created_at: String,
    source: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Meta {
        name: String,
        value: String,
    },
    Dek {
        tenant: String,
        id: u32,
        /// For a reader's eyes; the wrapped bytes name their KEK.
        kek_id: Option<String>,
        wrapped: String,
    },
    Apikey {
        id: String,
        tenant: String,
        name: String,
        scopes: Vec<String>,
        hash: String,
        created_at: i64,
        expires_at: Option<i64>,
        revoked_at: Option<i64>,
        last_used_at: Option<i64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        policies: Vec<String>,
    },
    /// A policy, role or token: its kind, id and encoding (base64).
    Record {
        kind: String,
        id: String,
        value: String,
    },
    Secret {
        tenant: String,
        key: String,
        current_version: u64,
        created_at: i64,
        updated_at: i64,
        deleted: bool,
        /// When the current version lapses (unix ms), if it can.
        expires_at: Option<i64>,
        versions: Vec<VersionLine>,
        /// The current version is destroyed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        destroyed: bool,
        /// The key's own settings (Vault KV v2 metadata).
        #[serde(default, skip_serializing_if = "KeySettings::is_default")]
        settings: KeySettings,
    },
    AuditHead(String),
    End {
        records: u64,
        mac: String,
    },
}

#[derive(Serialize, Deserialize)]
struct VersionLine {
    version: u64,
    created_at: i64,
    deleted: bool,
    sealed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deleted_at: Option<i64>,
    /// Its value is gone: `sealed` is empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    destroyed: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    kv: bool,
}

/// Writes a backup: `new` writes the header, `record` each record,
/// `finish` the end line.
pub struct Writer<W: Write> {
    out: W,
    mac: hmac::Context,
    records: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(
        mut out: W,
        kek: &MasterKey,
        source: &str,
        audit_head: Option<String>,
    ) -> std::io::Result<Self> {
        let salt = seal::random_bytes::<16>();
        let header = Header {
            strongroom_backup: FORMAT_VERSION,
            kek_id: kek.id().to_string(),
            salt: hex::encode(salt.as_ref()),
            created_at: crate::clock::rfc3339(crate::clock::now_ms()),
            source: source.to_owned(),
        };
        let mut mac = hmac::Context::with_key(&kek.backup_mac_key(salt.as_ref()));
        write_line(&mut out, &mut mac, &header)?;
        let mut writer = Writer {
            out,
            mac,
            records: 0,
        };
        if let Some(head) = audit_head {
            writer.line(&Line::AuditHead(head))?;
        }
        Ok(writer)
    }

    pub fn record(&mut self, record: &Dumped) -> std::io::Result<()> {
        self.line(&to_line(record))
    }

    fn line(&mut self, line: &Line) -> std::io::Result<()> {
        self.records += 1;
        write_line(&mut self.out, &mut self.mac, line)
    }

    /// Writes the end line and flushes; returns the output.
    pub fn finish(mut self) -> std::io::Result<W> {
        let mac = hex::encode(self.mac.sign().as_ref());
        let end = Line::End {
            records: self.records,
            mac,
        };
        let mut text = serde_json::to_vec(&end).map_err(std::io::Error::other)?;
        text.push(b'\n');
        self.out.write_all(&text)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn write_line(
    out: &mut impl Write,
    mac: &mut hmac::Context,
    value: &impl Serialize,
) -> std::io::Result<()> {
    let mut text = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    text.push(b'\n');
    mac.update(&text);
    out.write_all(&text)
}

fn to_line(record: &Dumped) -> Line {
    match record {
        Dumped::Meta { name, value } => Line::Meta {
            name: name.clone(),
            value: B64.encode(value),
        },
        Dumped::Dek { tenant, dek } => Line::Dek {
            tenant: tenant.as_str().to_owned(),
            id: dek.id,
            kek_id: seal::wrapped_kek_id(&dek.wrapped)
                .ok()
                .and_then(|(id, _)| id)
                .map(|id| KekId(id).to_string()),
            wrapped: B64.encode(&dek.wrapped),
        },
        Dumped::ApiKey(r) => Line::Apikey {
            id: r.id.clone(),
            tenant: r.tenant.as_str().to_owned(),
            name: r.name.clone(),
            scopes: r.scopes.clone(),
            hash: hex::encode(r.hash),
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            last_used_at: r.last_used_at,
            policies: r.policies.clone(),
        },
        Dumped::Record { kind, id, value } => Line::Record {
            kind: kind.name().to_owned(),
            id: id.clone(),
            value: B64.encode(value),
        },
        Dumped::Secret(s) => Line::Secret {
            tenant: s.tenant.as_str().to_owned(),
            key: s.key.clone(),
            current_version: s.head.version,
            created_at: s.head.key_created_at,
            updated_at: s.head.updated_at,
            deleted: s.head.deleted,
            expires_at: s.head.expires_at,
            versions: s
                .versions
                .iter()
                .map(|v| VersionLine {
                    version: v.version,
                    created_at: v.created_at,
                    deleted: v.deleted,
                    sealed: B64.encode(&v.sealed),
                    expires_at: v.expires_at,
                    deleted_at: v.deleted_at,
                    destroyed: v.destroyed,
                    kv: v.kv,
                })
                .collect(),
            destroyed: s.head.destroyed,
            settings: s.head.settings.clone(),
        },
    }
}

/// Why a backup cannot be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FormatError {
    #[error("the backup is truncated: it ends before its end record")]
    Truncated,
    #[error("the backup failed its integrity check: {0}")]
    Integrity(String),
    #[error("the backup was made under master key {0}, which is not in the keyring")]
    MissingKek(String),
    #[error(
        "backup format version {0} is newer than this strongroom understands ({FORMAT_VERSION})"
    )]
    Version(u32),
    #[error("cannot read the backup: {0}")]
    Io(String),
}

fn integrity(why: impl Into<String>) -> FormatError {
    FormatError::Integrity(why.into())
}

/// Reads a backup back: the header on `open`, then each record from
/// `next`; the MAC is checked when the end line is reached, so a record is
/// only known good once `next` has returned `Ok(None)`.
pub struct Reader<R: BufRead> {
    input: R,
    mac: hmac::Context,
    records: u64,
    line: usize,
    /// The source's chain head (`audit_head`), once read.
    pub audit_head: Option<String>,
    pub kek_id: KekId,
    done: bool,
}

impl<R: BufRead> Reader<R> {
    pub fn open(mut input: R, keks: &MasterKeys) -> Result<Self, FormatError> {
        let text = read_line(&mut input)?.ok_or(FormatError::Truncated)?;
        let header: Header = serde_json::from_slice(&text)
            .map_err(|_| integrity("its first line is not a strongroom backup header"))?;
        if header.strongroom_backup > FORMAT_VERSION {
            return Err(FormatError::Version(header.strongroom_backup));
        }
        let kek_id: KekId = header
            .kek_id
            .parse()
            .map_err(|()| integrity("its header names no valid master key id"))?;
        let kek = keks
            .get(kek_id)
            .ok_or_else(|| FormatError::MissingKek(header.kek_id.clone()))?;
        let salt = hex::decode(&header.salt).map_err(|_| integrity("its salt is not hex"))?;
        let mut mac = hmac::Context::with_key(&kek.backup_mac_key(&salt));
        mac.update(&text);
        Ok(Reader {
            input,
            mac,
            records: 0,
            line: 1,
            audit_head: None,
            kek_id,
            done: false,
        })
    }

    /// The next record; `Ok(None)` once the end line is read and the MAC
    /// verified.
    pub fn next_record(&mut self) -> Result<Option<Dumped>, FormatError> {
        while !self.done {
            let text = read_line(&mut self.input)?.ok_or(FormatError::Truncated)?;
            self.line += 1;
            let line: Line = serde_json::from_slice(&text)
                .map_err(|_| integrity(format!("line {} is not a backup record", self.line)))?;
            let record = match line {
                Line::End { records, mac } => {
                    self.finish(records, &mac)?;
                    return Ok(None);
                }
                Line::AuditHead(head) => {
                    self.audit_head = Some(head);
                    None
                }
                other => Some(
                    from_line(other)
                        .map_err(|why| integrity(format!("line {}: {why}", self.line)))?,
                ),
            };
            self.mac.update(&text);
            self.records += 1;
            if record.is_some() {
                return Ok(record);
            }
        }
        Ok(None)
    }

    fn finish(&mut self, records: u64, mac: &str) -> Result<(), FormatError> {
        self.done = true;
        let computed = std::mem::replace(
            &mut self.mac,
            hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, b"spent")),
        )
        .sign();
        let claimed = hex::decode(mac).unwrap_or_default();
        let matches =
            aws_lc_rs::constant_time::verify_slices_are_equal(computed.as_ref(), &claimed).is_ok();
        if !matches || records != self.records {
            return Err(integrity(
                "its MAC does not match its contents (changed, reordered or cut records)",
            ));
        }
        if read_line(&mut self.input)?.is_some() {
            return Err(integrity("it has data after its end record"));
        }
        Ok(())
    }
}

/// One line with its newline; `None` at the end; a last line without a
/// newline means the file was cut.
fn read_line(input: &mut impl BufRead) -> Result<Option<Vec<u8>>, FormatError> {
    let mut text = Vec::new();
    let n = input
        .read_until(b'\n', &mut text)
        .map_err(|e| FormatError::Io(e.to_string()))?;
    match n {
        0 => Ok(None),
        _ if text.last() != Some(&b'\n') => Err(FormatError::Truncated),
        _ => Ok(Some(text)),
    }
}

fn from_line(line: Line) -> Result<Dumped, String> {
    let b64 = |text: &str| {
        B64.decode(text)
            .map_err(|_| "a field is not base64".to_owned())
    };
    let tenant = |text: &str| TenantId::parse(text).map_err(|_| "an invalid tenant".to_owned());
    Ok(match line {
        Line::Meta { name, value } => Dumped::Meta {
            name,
            value: b64(&value)?,
        },
        Line::Dek {
            tenant: t,
            id,
            wrapped,
            ..
        } => Dumped::Dek {
            tenant: tenant(&t)?,
            dek: WrappedDek {
                id,
                wrapped: b64(&wrapped)?,
            },
        },
        Line::Apikey {
            id,
            tenant: t,
            name,
            scopes,
            hash,
            created_at,
            expires_at,
            revoked_at,
            last_used_at,
            policies,
        } => {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(&hash, &mut bytes).map_err(|_| "a bad API key hash")?;
            Dumped::ApiKey(ApiKeyRecord {
                id,
                tenant: tenant(&t)?,
                name,
                scopes,
                hash: bytes,
                created_at,
                expires_at,
                revoked_at,
                last_used_at,
                policies,
            })
        }
        Line::Record { kind, id, value } => {
            let kind = Kind::named(&kind)
                .filter(|k| matches!(k, Kind::Policy | Kind::Role | Kind::Token))
                .ok_or_else(|| format!("a record of unknown kind {kind:?}"))?;
            if !crate::store::records::valid_id(kind, &id) {
                return Err(format!("a {} record with a bad id", kind.name()));
            }
            Dumped::Record {
                kind,
                id,
                value: b64(&value)?,
            }
        }
        Line::Secret {
            tenant: t,
            key,
            current_version,
            created_at,
            updated_at,
            deleted,
            expires_at,
            versions,
            destroyed,
            settings,
        } => Dumped::Secret(SecretDump {
            tenant: tenant(&t)?,
            key,
            head: Head {
                version: current_version,
                deleted,
                key_created_at: created_at,
                updated_at,
                expires_at,
                destroyed,
                settings,
            },
            versions: versions
                .into_iter()
                .map(|v| {
                    Ok(DumpedVersion {
                        version: v.version,
                        created_at: v.created_at,
                        deleted: v.deleted,
                        sealed: b64(&v.sealed)?,
                        expires_at: v.expires_at,
                        deleted_at: v.deleted_at,
                        destroyed: v.destroyed,
                        kv: v.kv,
                    })
                })
                .collect::<Result<_, String>>()?,
        }),
        Line::AuditHead(_) | Line::End { .. } => unreachable!("handled by the reader"),
    })
}
