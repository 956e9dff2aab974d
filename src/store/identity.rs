//! Identity records of the store's model: a tenant's policies (named scope
//! sets), its login roles (which provider's tokens, bound how, get what),
//! and the tokens logins issue (the hash of the text, never the text). Each
//! is a kind of record (`records::Kind`), so both engines, backups and
//! migrations carry them unchanged; the rules a record must keep are here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::records::{self, Kind};
use super::{retry, Attempt, LineBody, Store, StoreError};
use crate::types::TenantId;

/// The longest a token may live, whatever its role says: a day.
pub const MAX_TOKEN_TTL_SECONDS: u32 = 86_400;
/// Vault's limits on bound claims: this many claims, each this many values.
pub const MAX_BOUND_CLAIMS: usize = 64;
pub const MAX_LIST_ITEMS: usize = 256;

/// What a policy or role name is made of, for an error's text.
pub const NAME_RULE: &str =
    "a name is 1 to 128 of A-Z a-z 0-9 _ - and inner dots (no leading, trailing or double dot)";

/// Whether `name` may name a policy or role (it becomes part of a KV key).
pub fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A tenant's named set of scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    #[serde(skip)]
    pub name: String,
    pub scopes: Vec<String>,
    pub updated_at: i64,
}

/// A tenant's login role: the JWTs of `provider` that satisfy its bindings
/// get a token with its scopes and policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRecord {
    #[serde(skip)]
    pub name: String,
    pub provider: String,
    pub bound_audiences: Vec<String>,
    #[serde(default)]
    pub bound_subject: Option<String>,
    #[serde(default)]
    pub bound_claims: BTreeMap<String, Vec<String>>,
    pub user_claim: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub policies: Vec<String>,
    pub token_ttl_seconds: u32,
    #[serde(default)]
    pub allowed_redirect_uris: Vec<String>,
    /// Random, made with the role and kept when it is replaced: a token
    /// names it, so a role deleted and made again under its name does not
    /// bring back the tokens the deleted one issued.
    #[serde(default)]
    pub uid: String,
    pub updated_at: i64,
}

impl RoleRecord {
    /// The first rule the role breaks, in words; scopes are checked by
    /// whoever knows them (`auth`).
    pub fn broken_rule(&self) -> Option<String> {
        let blank = |s: &String| s.trim().is_empty() || s.len() > 1024;
        if self.provider.is_empty() {
            return Some("field 'provider' is required".into());
        }
        if self.bound_audiences.is_empty() || self.bound_audiences.iter().any(blank) {
            return Some("field 'bound_audiences' must list at least one audience".into());
        }
        if self.bound_subject.as_ref().is_some_and(blank) {
            return Some("field 'bound_subject' must not be empty".into());
        }
        if self.bound_claims.len() > MAX_BOUND_CLAIMS {
            return Some(format!(
                "field 'bound_claims' holds at most {MAX_BOUND_CLAIMS} claims"
            ));
        }
        for (claim, values) in &self.bound_claims {
            if claim.is_empty() || values.is_empty() || values.iter().any(blank) {
                return Some(format!(
                    "bound claim '{claim}' must list at least one non-empty value"
                ));
            }
        }
        if self.user_claim.is_empty() {
            return Some("field 'user_claim' must not be empty".into());
        }
        if !(1..=MAX_TOKEN_TTL_SECONDS).contains(&self.token_ttl_seconds) {
            return Some(format!(
                "field 'token_ttl_seconds' must be 1 to {MAX_TOKEN_TTL_SECONDS}"
            ));
        }
        let lists = [
            &self.bound_audiences,
            &self.scopes,
            &self.policies,
            &self.allowed_redirect_uris,
        ];
        if lists.iter().any(|l| l.len() > MAX_LIST_ITEMS)
            || self.bound_claims.values().any(|v| v.len() > MAX_LIST_ITEMS)
        {
            return Some(format!("a list holds at most {MAX_LIST_ITEMS} items"));
        }
        if let Some(p) = self.policies.iter().find(|p| !valid_name(p)) {
            return Some(format!("policy '{p}': {NAME_RULE}"));
        }
        None
    }
}

/// A token a login issued: who it is for and until when. Its id is the
/// SHA-256 of its text; the text is never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    #[serde(skip)]
    pub id: String,
    pub tenant: String,
    /// `<provider>:<user claim>`.
    pub subject: String,
    pub role: String,
    /// The `uid` of the role that issued it.
    #[serde(default)]
    pub role_uid: String,
    pub scopes: Vec<String>,
    pub policies: Vec<String>,
    pub created_at: i64,
    pub expires_at: i64,
    #[serde(default)]
    pub revoked_at: Option<i64>,
}

/// A record and the revision it was read at, for a compare-and-set.
pub struct Versioned<T> {
    pub record: T,
    pub revision: u64,
}

/// The first byte of each identity record: its format.
const FORMAT: u8 = 1;

fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    out.extend(serde_json::to_vec(record).expect("serializable"));
    out
}

fn decode<T: for<'de> Deserialize<'de>>(kind: Kind, bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("a {} record is unreadable", kind.name()));
    match bytes.split_first() {
        Some((&FORMAT, body)) => serde_json::from_slice(body).map_err(|_| corrupt()),
        _ => Err(corrupt()),
    }
}

impl Store {
    async fn named<T: for<'de> Deserialize<'de>>(
        &self,
        kind: Kind,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        self.record(kind, &records::named_id(tenant, name))
            .await?
            .map(|r| decode(kind, &r.value))
            .transpose()
    }

    /// `tenant`'s records of `kind`, in name order, with their names.
    async fn all_named<T: for<'de> Deserialize<'de>>(
        &self,
        kind: Kind,
        tenant: &TenantId,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let prefix = format!("{}/", tenant.as_str());
        let mut found = Vec::new();
        for r in self.records(kind, &prefix).await? {
            let name = r.id[prefix.len()..].to_owned();
            found.push((name, decode(kind, &r.value)?));
        }
        Ok(found)
    }

    /// Record `id` of `kind` with its revision.
    async fn read_versioned<T: for<'de> Deserialize<'de>>(
        &self,
        kind: Kind,
        id: &str,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let Some(r) = self.record(kind, id).await? else {
            return Ok(None);
        };
        Ok(Some(Versioned {
            record: decode(kind, &r.value)?,
            revision: r.revision,
        }))
    }

    /// `tenant`'s policy `name` and its revision.
    pub async fn policy_read(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<Versioned<PolicyRecord>>, StoreError> {
        let id = records::named_id(tenant, name);
        let found = self
            .read_versioned::<PolicyRecord>(Kind::Policy, &id)
            .await?;
        Ok(found.map(|mut v| {
            v.record.name = name.to_owned();
            v
        }))
    }

    /// `tenant`'s role `name` and its revision.
    pub async fn role_read(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<Versioned<RoleRecord>>, StoreError> {
        let id = records::named_id(tenant, name);
        let found = self.read_versioned::<RoleRecord>(Kind::Role, &id).await?;
        Ok(found.map(|mut v| {
            v.record.name = name.to_owned();
            v
        }))
    }

    /// Writes `tenant`'s policy (`None`: removes it) if its revision is
    /// still `expected` (0: there is none); false when another write came
    /// first.
    pub async fn policy_put_if(
        &self,
        tenant: &TenantId,
        name: &str,
        policy: Option<&PolicyRecord>,
        expected: u64,
        line: Option<LineBody>,
    ) -> Result<bool, StoreError> {
        let id = records::named_id(tenant, name);
        self.put_record(Kind::Policy, &id, expected, policy.map(encode), line)
            .await
    }

    /// `policy_put_if` for a role.
    pub async fn role_put_if(
        &self,
        tenant: &TenantId,
        name: &str,
        role: Option<&RoleRecord>,
        expected: u64,
        line: Option<LineBody>,
    ) -> Result<bool, StoreError> {
        let id = records::named_id(tenant, name);
        self.put_record(Kind::Role, &id, expected, role.map(encode), line)
            .await
    }

    pub async fn policy_get(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<PolicyRecord>, StoreError> {
        let found: Option<PolicyRecord> = self.named(Kind::Policy, tenant, name).await?;
        Ok(found.map(|p| PolicyRecord {
            name: name.to_owned(),
            ..p
        }))
    }

    pub async fn policy_list(&self, tenant: &TenantId) -> Result<Vec<PolicyRecord>, StoreError> {
        let all: Vec<(String, PolicyRecord)> = self.all_named(Kind::Policy, tenant).await?;
        Ok(all
            .into_iter()
            .map(|(name, p)| PolicyRecord { name, ..p })
            .collect())
    }

    pub async fn role_get(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<RoleRecord>, StoreError> {
        let found: Option<RoleRecord> = self.named(Kind::Role, tenant, name).await?;
        Ok(found.map(|r| RoleRecord {
            name: name.to_owned(),
            ..r
        }))
    }

    pub async fn role_list(&self, tenant: &TenantId) -> Result<Vec<RoleRecord>, StoreError> {
        let all: Vec<(String, RoleRecord)> = self.all_named(Kind::Role, tenant).await?;
        Ok(all
            .into_iter()
            .map(|(name, r)| RoleRecord { name, ..r })
            .collect())
    }

    /// Stores a new token's record with its login's line.
    pub async fn token_insert(
        &self,
        token: &TokenRecord,
        line: Option<LineBody>,
    ) -> Result<(), StoreError> {
        if self
            .put_record(Kind::Token, &token.id, 0, encode(token), line)
            .await?
        {
            Ok(())
        } else {
            Err(StoreError::Unavailable("a token id already exists".into()))
        }
    }

    /// The token whose text hashes to `id` (hex), if stored.
    pub async fn token_get(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let Some(r) = self.record(Kind::Token, id).await? else {
            return Ok(None);
        };
        let token: TokenRecord = decode(Kind::Token, &r.value)?;
        Ok(Some(TokenRecord { id: r.id, ..token }))
    }

    /// Marks token `id` revoked at `at` (it stays until it would have
    /// expired, then the sweep removes it); `NotFound` when it is gone.
    pub async fn token_revoke(
        &self,
        id: &str,
        at: i64,
        line: Option<LineBody>,
    ) -> Result<(), StoreError> {
        retry((), |()| {
            let line = line.clone();
            async move {
                let stored = self
                    .record(Kind::Token, id)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                let mut token: TokenRecord = decode(Kind::Token, &stored.value)?;
                if token.revoked_at.is_some() {
                    return Err(Attempt::Failed(StoreError::NotFound));
                }
                token.revoked_at = Some(at);
                if self
                    .put_record(Kind::Token, id, stored.revision, encode(&token), line)
                    .await?
                {
                    Ok(())
                } else {
                    Err(Attempt::Again(()))
                }
            }
        })
        .await
    }

    /// Removes every token that expired at or before `now` (revoked or
    /// not); how many it removed. A token another writer changed meanwhile,
    /// or one that cannot be read, is left for the next sweep.
    pub async fn tokens_sweep(&self, now: i64) -> Result<usize, StoreError> {
        self.remove_records_where(Kind::Token, |_, value| {
            decode::<TokenRecord>(Kind::Token, value).is_ok_and(|t| t.expires_at <= now)
        })
        .await
    }

    /// How many token records are stored (expired or not).
    #[cfg(test)]
    pub async fn token_count(&self) -> Result<usize, StoreError> {
        Ok(self.records(Kind::Token, "").await?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kv_safe() {
        for good in ["ci", "gh-actions_main", "a.b", &"x".repeat(128)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", ".a", "a.", "a..b", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn encodings_round_trip_and_refuse_damage() {
        let role = RoleRecord {
            name: "ci".into(),
            provider: "github".into(),
            bound_audiences: vec!["https://github.com/acme".into()],
            bound_subject: Some("repo:acme/*".into()),
            bound_claims: [("environment".to_owned(), vec!["prod".to_owned()])].into(),
            user_claim: "sub".into(),
            scopes: vec!["secrets:read:prod/".into()],
            policies: vec![],
            token_ttl_seconds: 900,
            allowed_redirect_uris: vec![],
            uid: "r1".into(),
            updated_at: 1,
        };
        let bytes = encode(&role);
        let back: RoleRecord = decode(Kind::Role, &bytes).unwrap();
        assert_eq!(
            back,
            RoleRecord {
                name: String::new(),
                ..role.clone()
            }
        );
        assert!(decode::<RoleRecord>(Kind::Role, &bytes[1..]).is_err());
        assert!(role.broken_rule().is_none());
        let long = RoleRecord {
            token_ttl_seconds: 86_401,
            ..role.clone()
        };
        assert!(long.broken_rule().unwrap().contains("token_ttl_seconds"));
        let open = RoleRecord {
            bound_audiences: vec![],
            ..role
        };
        assert!(open.broken_rule().unwrap().contains("bound_audiences"));
    }
}
