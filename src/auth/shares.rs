//! Fair shares of the in-flight slots: no tenant and no credential may hold
//! more than its cap of the requests handled at once, so one credential
//! that floods (slow bodies, unread answers) leaves the rest of
//! `--max-in-flight` to everyone else. Counted by a keyed hash of the
//! tenant and of the tenant and subject: no allocation per request, and a
//! collision (2^-64) only shares a cap.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

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
    hasher: RandomState,
    held: Mutex<HashMap<u64, usize>>,
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
            hasher: RandomState::new(),
            held: Mutex::default(),
        })
    }

    /// Takes one slot of `tenant`'s share and of its `subject`'s, or says
    /// which is full.
    pub fn enter(self: &Arc<Self>, tenant: &str, subject: &str) -> Result<Share, Over> {
        let tenant_key = self.hasher.hash_one(("t", tenant));
        let credential = self.hasher.hash_one(("c", tenant, subject));
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

    #[test]
    fn a_credential_and_a_tenant_hold_at_most_their_caps_and_give_them_back() {
        let shares = Shares::new(3, 2);
        let a1 = shares.enter("acme", "apikey:a").unwrap();
        let _a2 = shares.enter("acme", "apikey:a").unwrap();
        assert_eq!(
            shares.enter("acme", "apikey:a").err(),
            Some(Over::Credential)
        );
        let _b1 = shares.enter("acme", "apikey:b").unwrap();
        assert_eq!(shares.enter("acme", "apikey:c").err(), Some(Over::Tenant));
        // Another tenant, even with the same subject, has its own shares.
        let _other = shares.enter("globex", "apikey:a").unwrap();
        drop(a1);
        let _again = shares.enter("acme", "apikey:a").unwrap();
        drop((_a2, _b1, _other, _again));
        assert_eq!(shares.tracked(), 0, "nothing kept once all are back");
    }
}
