//! API keys (`apikeys:admin`): create, list a page of, and revoke a
//! tenant's keys. Nobody mints a key stronger than themselves, or living
//! longer.

use super::{Call, OpError, Ops};
use crate::auth::{apikeys, Action, Principal, Scope};
use crate::clock::now_ms;
use crate::store::ApiKeyRecord;

/// A key to mint.
pub struct CreateApiKey {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Policies it holds as well (each must exist, and hold only what its
    /// author holds).
    pub policies: Vec<String>,
    pub expires_in_days: Option<u32>,
}

/// A minted key: its record and its text, shown once.
pub type CreatedApiKey = apikeys::NewApiKey;

/// One page of a tenant's keys in id order, and the cursor of the next.
pub struct ApiKeyPage {
    pub keys: Vec<ApiKeyRecord>,
    pub next_cursor: Option<String>,
}

fn admin(principal: &Principal) -> Result<(), OpError> {
    if principal.allows(Action::ApiKeysAdmin, "") {
        Ok(())
    } else {
        Err(OpError::Forbidden)
    }
}

impl Ops {
    pub async fn create_apikey(
        &self,
        call: &Call,
        principal: &Principal,
        wanted: CreateApiKey,
    ) -> Result<CreatedApiKey, OpError> {
        let outcome = async {
            admin(principal)?;
            if !principal.can_grant(&wanted.scopes) {
                return Err(OpError::Forbidden);
            }
            self.check_policies_grantable(principal, &wanted.policies)
                .await?;
            let now = now_ms();
            let live = self
                .store
                .apikey_list(&principal.tenant)
                .await?
                .iter()
                .filter(|k| k.revoked_at.is_none() && k.expires_at.is_none_or(|at| at > now))
                .count();
            if live >= self.limits.max_apikeys_per_tenant {
                return Err(OpError::LimitReached {
                    what: "live API keys: revoke some first",
                    limit: self.limits.max_apikeys_per_tenant,
                });
            }
            let new = apikeys::create(
                &self.store,
                principal.tenant.clone(),
                apikeys::KeySpec {
                    name: wanted.name,
                    scopes: wanted.scopes,
                    policies: wanted.policies,
                    lifetime_days: wanted.expires_in_days,
                },
                principal.expires_at,
                Some(call.line(201)),
            )
            .await?;
            call.mark_written();
            Ok(new)
        }
        .await;
        self.settle(call, outcome).await
    }

    /// `limit` keys after the id `cursor`.
    pub async fn list_apikeys(
        &self,
        call: &Call,
        principal: &Principal,
        cursor: &str,
        limit: usize,
    ) -> Result<ApiKeyPage, OpError> {
        let outcome = async {
            admin(principal)?;
            if limit == 0 {
                return Err(OpError::Invalid("a page holds at least one key".into()));
            }
            // Record pending use times first, so last_used_at is current.
            self.auth.flush_last_used().await;
            let mut keys = self.store.apikey_list(&principal.tenant).await?;
            keys.sort_by(|a, b| a.id.cmp(&b.id));
            keys.retain(|k| k.id.as_str() > cursor);
            let next_cursor = (keys.len() > limit).then(|| keys[limit - 1].id.clone());
            keys.truncate(limit);
            Ok(ApiKeyPage { keys, next_cursor })
        }
        .await;
        self.settle(call, outcome).await
    }

    /// Revokes the tenant's key `id` (`NotFound` when it has no such live
    /// key); it is refused from the next request, on every gateway.
    pub async fn revoke_apikey(
        &self,
        call: &Call,
        principal: &Principal,
        id: &str,
    ) -> Result<(), OpError> {
        call.key(id);
        let outcome = async {
            admin(principal)?;
            self.store
                .apikey_revoke(&principal.tenant, id, now_ms(), Some(call.line(200)))
                .await?;
            call.mark_written();
            self.auth.forget_api_key(id);
            Ok(())
        }
        .await;
        self.settle(call, outcome).await
    }
}
