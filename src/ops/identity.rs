//! Policies and login roles (`auth:admin`): put, get, list and delete a
//! tenant's. Nobody grants what they do not hold: every scope a policy or
//! role names, and every scope of every policy it names, must be one its
//! author holds. A change applies from the next request, on every gateway
//! (the authenticator's caches are told here and, watched, elsewhere).

use super::{Call, OpError, Ops};
use crate::auth::{parse_scopes, Action, Principal, Scope};
use crate::clock::now_ms;
use crate::crypto::seal::random_bytes;
use crate::store::identity::{valid_name, PolicyRecord, RoleRecord, NAME_RULE};
use crate::store::MAX_ATTEMPTS;

/// A stored policy or role, and whether the put made it.
pub struct Written<T> {
    pub record: T,
    pub created: bool,
}

fn admin(principal: &Principal) -> Result<(), OpError> {
    if principal.allows(Action::AuthAdmin, "") {
        Ok(())
    } else {
        Err(OpError::Forbidden)
    }
}

fn check_name(name: &str) -> Result<(), OpError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(OpError::Invalid(NAME_RULE.into()))
    }
}

/// The scopes `texts` name, which `principal` must hold all of.
fn grantable(principal: &Principal, texts: &[String]) -> Result<Vec<Scope>, OpError> {
    let scopes = parse_scopes(texts).map_err(OpError::Invalid)?;
    if principal.can_grant(&scopes) {
        Ok(scopes)
    } else {
        Err(OpError::Forbidden)
    }
}

impl Ops {
    /// Every policy `names` exists in the principal's tenant and holds only
    /// what the principal holds.
    pub(super) async fn check_policies_grantable(
        &self,
        principal: &Principal,
        names: &[String],
    ) -> Result<(), OpError> {
        for name in names {
            check_name(name)?;
            let policy = self
                .store
                .policy_get(&principal.tenant, name)
                .await?
                .ok_or_else(|| OpError::Invalid(format!("policy '{name}' does not exist")))?;
            grantable(principal, &policy.scopes)?;
        }
        Ok(())
    }

    /// What a stored role holds (its scopes and its policies' scopes), all
    /// of which `principal` must hold to replace or delete it: taking away
    /// what one could not grant is as much a change as granting it.
    async fn check_role_replaceable(
        &self,
        principal: &Principal,
        role: &RoleRecord,
    ) -> Result<(), OpError> {
        grantable(principal, &role.scopes)?;
        for name in &role.policies {
            if let Some(policy) = self.store.policy_get(&principal.tenant, name).await? {
                grantable(principal, &policy.scopes)?;
            }
        }
        Ok(())
    }

    pub async fn put_policy(
        &self,
        call: &Call,
        principal: &Principal,
        name: &str,
        scopes: Vec<String>,
    ) -> Result<Written<PolicyRecord>, OpError> {
        let outcome = async {
            admin(principal)?;
            check_name(name)?;
            call.key(name);
            if scopes.is_empty() {
                return Err(OpError::Invalid("field 'scopes' must not be empty".into()));
            }
            let parsed = grantable(principal, &scopes)?;
            let record = PolicyRecord {
                name: name.to_owned(),
                scopes: parsed.iter().map(Scope::to_string).collect(),
                updated_at: now_ms(),
            };
            // The version checked is the version replaced (compare-and-set).
            for _ in 0..MAX_ATTEMPTS {
                let stored = self.store.policy_read(&principal.tenant, name).await?;
                if let Some(old) = &stored {
                    grantable(principal, &old.record.scopes)?;
                }
                let expected = stored.as_ref().map_or(0, |v| v.revision);
                let line = Some(call.line(200));
                if self
                    .store
                    .policy_put_if(&principal.tenant, name, Some(&record), expected, line)
                    .await?
                {
                    call.mark_written();
                    self.auth.identity_changed();
                    let created = stored.is_none();
                    return Ok(Written { record, created });
                }
            }
            Err(contended())
        }
        .await;
        self.settle(call, outcome).await
    }

    pub async fn get_policy(
        &self,
        call: &Call,
        principal: &Principal,
        name: &str,
    ) -> Result<PolicyRecord, OpError> {
        let outcome = async {
            admin(principal)?;
            check_name(name)?;
            call.key(name);
            self.store
                .policy_get(&principal.tenant, name)
                .await?
                .ok_or(OpError::NotFound)
        }
        .await;
        self.settle(call, outcome).await
    }

    pub async fn list_policies(
        &self,
        call: &Call,
        principal: &Principal,
    ) -> Result<Vec<PolicyRecord>, OpError> {
        let outcome = async {
            admin(principal)?;
            Ok(self.store.policy_list(&principal.tenant).await?)
        }
        .await;
        self.settle(call, outcome).await
    }

    /// Deletes a policy: keys, roles and tokens that name it hold nothing
    /// of it from the next request.
    pub async fn delete_policy(
        &self,
        call: &Call,
        principal: &Principal,
        name: &str,
    ) -> Result<(), OpError> {
        let outcome = async {
            admin(principal)?;
            check_name(name)?;
            call.key(name);
            for _ in 0..MAX_ATTEMPTS {
                let stored = self
                    .store
                    .policy_read(&principal.tenant, name)
                    .await?
                    .ok_or(OpError::NotFound)?;
                // Removing what one could not grant is taking it from others.
                grantable(principal, &stored.record.scopes)?;
                let line = Some(call.line(200));
                if self
                    .store
                    .policy_put_if(&principal.tenant, name, None, stored.revision, line)
                    .await?
                {
                    call.mark_written();
                    self.auth.identity_changed();
                    return Ok(());
                }
            }
            Err(contended())
        }
        .await;
        self.settle(call, outcome).await
    }

    /// Creates or replaces a role (`role.name` names it).
    pub async fn put_role(
        &self,
        call: &Call,
        principal: &Principal,
        mut role: RoleRecord,
    ) -> Result<Written<RoleRecord>, OpError> {
        let outcome = async {
            admin(principal)?;
            check_name(&role.name)?;
            call.key(&role.name);
            if let Some(rule) = role.broken_rule() {
                return Err(OpError::Invalid(rule));
            }
            if self.auth.providers.get(&role.provider).is_none() {
                return Err(OpError::Invalid(format!(
                    "provider '{}' is not configured (--oidc-providers)",
                    role.provider
                )));
            }
            let scopes = grantable(principal, &role.scopes)?;
            role.scopes = scopes.iter().map(Scope::to_string).collect();
            self.check_policies_grantable(principal, &role.policies)
                .await?;
            role.updated_at = now_ms();
            // The version checked is the version replaced (compare-and-set),
            // so a delete in between cannot be undone by this put.
            for _ in 0..MAX_ATTEMPTS {
                let stored = self.store.role_read(&principal.tenant, &role.name).await?;
                role.uid = match &stored {
                    Some(old) => {
                        self.check_role_replaceable(principal, &old.record).await?;
                        old.record.uid.clone()
                    }
                    None => hex::encode(*random_bytes::<16>()),
                };
                let expected = stored.as_ref().map_or(0, |v| v.revision);
                let line = Some(call.line(200));
                let (tenant, name) = (&principal.tenant, role.name.clone());
                if self
                    .store
                    .role_put_if(tenant, &name, Some(&role), expected, line)
                    .await?
                {
                    call.mark_written();
                    self.auth.identity_changed();
                    let created = stored.is_none();
                    return Ok(Written {
                        record: role,
                        created,
                    });
                }
            }
            Err(contended())
        }
        .await;
        self.settle(call, outcome).await
    }

    pub async fn get_role(
        &self,
        call: &Call,
        principal: &Principal,
        name: &str,
    ) -> Result<RoleRecord, OpError> {
        let outcome = async {
            admin(principal)?;
            check_name(name)?;
            call.key(name);
            self.store
                .role_get(&principal.tenant, name)
                .await?
                .ok_or(OpError::NotFound)
        }
        .await;
        self.settle(call, outcome).await
    }

    pub async fn list_roles(
        &self,
        call: &Call,
        principal: &Principal,
    ) -> Result<Vec<RoleRecord>, OpError> {
        let outcome = async {
            admin(principal)?;
            Ok(self.store.role_list(&principal.tenant).await?)
        }
        .await;
        self.settle(call, outcome).await
    }

    /// Deletes a role; the tokens it issued are refused from the next
    /// request.
    pub async fn delete_role(
        &self,
        call: &Call,
        principal: &Principal,
        name: &str,
    ) -> Result<(), OpError> {
        let outcome = async {
            admin(principal)?;
            check_name(name)?;
            call.key(name);
            for _ in 0..MAX_ATTEMPTS {
                let stored = self
                    .store
                    .role_read(&principal.tenant, name)
                    .await?
                    .ok_or(OpError::NotFound)?;
                self.check_role_replaceable(principal, &stored.record)
                    .await?;
                let line = Some(call.line(200));
                if self
                    .store
                    .role_put_if(&principal.tenant, name, None, stored.revision, line)
                    .await?
                {
                    call.mark_written();
                    self.auth.identity_changed();
                    return Ok(());
                }
            }
            Err(contended())
        }
        .await;
        self.settle(call, outcome).await
    }
}

/// Concurrent writers kept winning the compare-and-set.
fn contended() -> OpError {
    OpError::Unavailable("concurrent changes to the same record kept winning".into())
}
