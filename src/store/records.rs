//! The store's records beside secrets, defined once for every engine: meta
//! values, data keys and API keys are each a kind of record (an id and
//! bytes) that an engine only reads, scans and compare-and-sets
//! (`engine::Backend::record_*`). What an id is made of and what the bytes
//! say is here, not in an engine.

use super::dump::Dumped;
use super::model::{ApiKeyRecord, WrappedDek};
use super::StoreError;
use crate::types::TenantId;

/// What a record is. A new kind (roles, policies, tokens) is a variant
/// here and its encoding below; no engine changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A named value: the master key's check value, the audit key, a chain
    /// head, an engine's own bookkeeping.
    Meta,
    /// A tenant's wrapped data key, under `<tenant>/<id>` (`dek_id`).
    Dek,
    /// An API key's record (the hash of its text, never the text), under
    /// its public id.
    ApiKey,
    /// A tenant's named scope set, under `<tenant>/<name>` (`named_id`).
    Policy,
    /// A tenant's login role, under `<tenant>/<name>`.
    Role,
    /// A login's token (the hash of its text, never the text), under the
    /// hash in hex.
    Token,
    /// A person's login in progress (OIDC `state`, its PKCE verifier and
    /// nonce sealed), under the hash of the state in hex; minutes long,
    /// never in a backup.
    LoginState,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Meta,
        Kind::Dek,
        Kind::ApiKey,
        Kind::Policy,
        Kind::Role,
        Kind::Token,
        Kind::LoginState,
    ];

    /// The kind's name where an engine stores it (a column, a bucket).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Meta => "meta",
            Kind::Dek => "dek",
            Kind::ApiKey => "apikey",
            Kind::Policy => "policy",
            Kind::Role => "role",
            Kind::Token => "token",
            Kind::LoginState => "login_state",
        }
    }

    /// The kind a backup line names (`name`'s inverse).
    pub fn named(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// True for a tenant's named record, whose id is `<tenant>/<name>`.
    pub fn is_tenant_named(self) -> bool {
        matches!(self, Kind::Policy | Kind::Role)
    }
}

/// The id of `tenant`'s policy or role `name`.
pub fn named_id(tenant: &TenantId, name: &str) -> String {
    format!("{}/{name}", tenant.as_str())
}

/// Whether `id` is one a record of `kind` can have: `<tenant>/<name>` for
/// a policy or role, the 64 hex digits of a hash for a token.
pub fn valid_id(kind: Kind, id: &str) -> bool {
    match kind {
        Kind::Policy | Kind::Role => {
            parse_named_id(id).is_some_and(|(_, name)| super::identity::valid_name(name))
        }
        Kind::Token | Kind::LoginState => {
            id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        }
        Kind::Meta | Kind::Dek | Kind::ApiKey => !id.is_empty(),
    }
}

/// The tenant and name a policy's or role's id names.
pub fn parse_named_id(text: &str) -> Option<(TenantId, &str)> {
    let (tenant, name) = text.split_once('/')?;
    Some((TenantId::parse(tenant).ok()?, name))
}

/// One stored record: its id, its bytes, and the engine's revision of it,
/// which a compare-and-set names (never 0; 0 names "no such record").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub value: Vec<u8>,
    pub revision: u64,
}

/// The id of `tenant`'s data key `id`: zero-padded, so a scan of the
/// tenant's prefix gives its keys in id order.
pub fn dek_id(tenant: &TenantId, id: u32) -> String {
    format!("{}/{id:010}", tenant.as_str())
}

/// The tenant and number a data key's record id names.
pub fn parse_dek_id(text: &str) -> Result<(TenantId, u32), StoreError> {
    let corrupt = || StoreError::Corrupt("a data key with a bad id".into());
    let (tenant, id) = text.split_once('/').ok_or_else(corrupt)?;
    let tenant = TenantId::parse(tenant).map_err(|_| corrupt())?;
    let id = id.parse::<u32>().map_err(|_| corrupt())?;
    Ok((tenant, id))
}

/// The first byte of an API key's encoding: its format.
const APIKEY_FORMAT: u8 = 1;

/// An API key's record without its id (the record's id), as JSON.
#[derive(serde::Serialize, serde::Deserialize)]
struct ApiKeyDoc {
    tenant: String,
    name: String,
    scopes: Vec<String>,
    /// The SHA-256 of the key's text, in hex.
    hash: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    policies: Vec<String>,
}

/// An API key's bytes: a format byte, then JSON.
pub fn encode_apikey(r: &ApiKeyRecord) -> Vec<u8> {
    let doc = ApiKeyDoc {
        tenant: r.tenant.as_str().to_owned(),
        name: r.name.clone(),
        scopes: r.scopes.clone(),
        hash: hex::encode(r.hash),
        created_at: r.created_at,
        expires_at: r.expires_at,
        revoked_at: r.revoked_at,
        last_used_at: r.last_used_at,
        policies: r.policies.clone(),
    };
    let mut out = vec![APIKEY_FORMAT];
    out.extend(serde_json::to_vec(&doc).expect("serializable"));
    out
}

pub fn decode_apikey(id: &str, bytes: &[u8]) -> Result<ApiKeyRecord, StoreError> {
    let corrupt = || StoreError::Corrupt("api key record is unreadable".into());
    let (&format, body) = bytes.split_first().ok_or_else(corrupt)?;
    if format != APIKEY_FORMAT {
        return Err(corrupt());
    }
    let doc: ApiKeyDoc = serde_json::from_slice(body).map_err(|_| corrupt())?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(&doc.hash, &mut hash).map_err(|_| corrupt())?;
    Ok(ApiKeyRecord {
        id: id.to_owned(),
        tenant: TenantId::parse(&doc.tenant).map_err(|_| corrupt())?,
        name: doc.name,
        scopes: doc.scopes,
        hash,
        created_at: doc.created_at,
        expires_at: doc.expires_at,
        revoked_at: doc.revoked_at,
        last_used_at: doc.last_used_at,
        policies: doc.policies,
    })
}

/// A record as a backup holds it; `None` for a meta value that belongs to
/// the store it is in (`dump::is_local_meta`).
pub fn to_dumped(kind: Kind, id: &str, value: Vec<u8>) -> Result<Option<Dumped>, StoreError> {
    Ok(match kind {
        Kind::Meta if super::dump::is_local_meta(id) => None,
        Kind::Meta => Some(Dumped::Meta {
            name: id.to_owned(),
            value,
        }),
        Kind::Dek => {
            let (tenant, id) = parse_dek_id(id)?;
            Some(Dumped::Dek {
                tenant,
                dek: WrappedDek { id, wrapped: value },
            })
        }
        Kind::ApiKey => Some(Dumped::ApiKey(decode_apikey(id, &value)?)),
        // A login in progress lasts minutes: a restore has no use for it.
        Kind::LoginState => None,
        Kind::Policy | Kind::Role | Kind::Token => Some(Dumped::Record {
            kind,
            id: id.to_owned(),
            value,
        }),
    })
}

/// The record a backup's entry is, if it is not a secret.
pub fn from_dumped(record: &Dumped) -> Option<(Kind, String, Vec<u8>)> {
    match record {
        Dumped::Meta { name, value } => Some((Kind::Meta, name.clone(), value.clone())),
        Dumped::Dek { tenant, dek } => {
            Some((Kind::Dek, dek_id(tenant, dek.id), dek.wrapped.clone()))
        }
        Dumped::ApiKey(r) => Some((Kind::ApiKey, r.id.clone(), encode_apikey(r))),
        Dumped::Record { kind, id, value } => Some((*kind, id.clone(), value.clone())),
        Dumped::Secret(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_encodings_round_trip() {
        let tenant = TenantId::parse("acme.prod-1").unwrap();
        assert_eq!(dek_id(&tenant, 7), "acme.prod-1/0000000007");
        assert_eq!(
            parse_dek_id(&dek_id(&tenant, 7)).unwrap(),
            (tenant.clone(), 7)
        );
        assert!(parse_dek_id("no-slash").is_err());
        let key = ApiKeyRecord {
            id: "0123456789abcdef".into(),
            tenant,
            name: "ci".into(),
            scopes: vec!["secrets:read:app/".into()],
            hash: [9; 32],
            created_at: 1,
            expires_at: Some(2),
            revoked_at: None,
            last_used_at: Some(3),
            policies: vec!["ops".into()],
        };
        let bytes = encode_apikey(&key);
        assert_eq!(decode_apikey(&key.id, &bytes).unwrap(), key);
        assert!(decode_apikey(&key.id, &bytes[1..]).is_err());
        let dumped = Dumped::ApiKey(key.clone());
        let (kind, id, value) = from_dumped(&dumped).unwrap();
        assert_eq!(to_dumped(kind, &id, value).unwrap(), Some(dumped));
    }
}
