//! Fair shares of the in-flight slots: no tenant and no credential may hold
//! more than its cap of the requests handled at once, so one credential
//! that floods (slow bodies, unread answers) leaves the rest of
//! `--max-in-flight` to everyone else. Counted by a keyed hash of the
//! tenant and of the tenant and subject: no allocation per request, and a
//! collision (2^-64) only shares a cap.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, LazyLock, Mutex};

use super::Principal;

/// The process's key for hashing tenants and credentials: random, so no
/// one can choose a subject that shares another's cap.
static KEYS: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// The map's keys are keyed hashes already: used as they are, rather than
/// hashed again on each of a request's four lookups.
#[derive(Default)]
struct Hashed(u64);

impl Hasher for Hashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys are hashed")
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Which cap refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Tenant,
    Credential,
}

/// The caps and what each tenant and credential holds now.
pub struct Shares {
    per_tenant: usize,
    per_credential: usize,
    held: Mutex<HashMap<u64, usize, BuildHasherDefault<Hashed>>>,
}

/// A request's hold on its tenant's and credential's shares, given back on
/// drop.
pub struct Share {
    shares: Arc<Shares>,
    tenant: u64,
    credential: u64,
}

impl Shares {
    pub fn new(per_tenant: usize, per_credential: usize) -> Arc<Shares> {
        Arc::new(Shares {
            per_tenant: per_tenant.max(1),
            per_credential: per_credential.max(1),
            held: Mutex::default(),
        })
    }

    /// Takes one slot of the principal's tenant's share and of its own, or
    /// says which is full.
    pub fn enter(self: &Arc<Self>, principal: &Principal) -> Result<Share, Over> {
        // Hashed once per principal: an API key's is cached across requests.
        let &(tenant_key, credential) = principal.share_keys.get_or_init(|| {
            let tenant = principal.tenant.as_str();
            (
                KEYS.hash_one(("t", tenant)),
                KEYS.hash_one(("c", tenant, principal.subject.as_str())),
            )
        });
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let of_tenant = held.get(&tenant_key).copied().unwrap_or(0);
        if of_tenant >= self.per_tenant {
            return Err(Over::Tenant);
        }
        let of_credential = held.get(&credential).copied().unwrap_or(0);
        if of_credential >= self.per_credential {
            return Err(Over::Credential);
        }
        held.insert(tenant_key, of_tenant + 1);
        held.insert(credential, of_credential + 1);
        Ok(Share {
            shares: self.clone(),
            tenant: tenant_key,
            credential,
        })
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = self.shares.held.lock().unwrap_or_else(|p| p.into_inner());
        for key in [self.tenant, self.credential] {
            if let Some(n) = held.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(tenant: &str, subject: &str) -> Principal {
        Principal {
            tenant: crate::types::TenantId::parse(tenant).unwrap(),
            subject: subject.into(),
            scopes: Vec::new(),
            expires_at: None,
            share_keys: Default::default(),
            token: None,
        }
    }

    #[test]
    fn a_credential_and_a_tenant_hold_at_most_their_caps_and_give_them_back() {
        let shares = Shares::new(3, 2);
        let a = who("acme", "apikey:a");
        let a1 = shares.enter(&a).unwrap();
        let _a2 = shares.enter(&a).unwrap();
        // The same credential as another principal (a JWT's, each request).
        let again = who("acme", "apikey:a");
        assert_eq!(shares.enter(&again).err(), Some(Over::Credential));
        let _b1 = shares.enter(&who("acme", "apikey:b")).unwrap();
        let c = who("acme", "apikey:c");
        assert_eq!(shares.enter(&c).err(), Some(Over::Tenant));
        // Another tenant, even with the same subject, has its own shares.
        let _other = shares.enter(&who("globex", "apikey:a")).unwrap();
        drop(a1);
        let _again = shares.enter(&a).unwrap();
        drop((_a2, _b1, _other, _again));
        assert_eq!(shares.tracked(), 0, "nothing kept once all are back");
    }
}
