//! Policies and login roles (`auth:admin`): put, get, list and delete a
//! tenant's. Nobody grants what they do not hold: every scope a policy or
//! role names, and every scope of every policy it names, must be one its
//! author holds. A change applies from the next request, on every gateway
//! (the authenticator's caches are told here and, watched, elsewhere).

use super::{Call, OpError, Ops};
use crate::auth::{parse_scopes, Action, Principal, Scope};
use crate::clock::now_ms;
use crate::store::identity::{valid_name, PolicyRecord, RoleRecord, NAME_RULE};

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
            if let Some(old) = self.store.policy_get(&principal.tenant, name).await? {
                grantable(principal, &old.scopes)?;
            }
            let record = PolicyRecord {
                name: name.to_owned(),
                scopes: parsed.iter().map(Scope::to_string).collect(),
                updated_at: now_ms(),
            };
            let created = self
                .store
                .policy_put(&principal.tenant, &record, Some(call.line(200)))
                .await?;
            call.mark_written();
            self.auth.identity_changed();
            Ok(Written { record, created })
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
            // Removing what one could not grant is taking it from others.
            let policy = self
                .store
                .policy_get(&principal.tenant, name)
                .await?
                .ok_or(OpError::NotFound)?;
            grantable(principal, &policy.scopes)?;
            self.store
                .policy_delete(&principal.tenant, name, Some(call.line(200)))
                .await?;
            call.mark_written();
            self.auth.identity_changed();
            Ok(())
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
            // A role made again under a deleted one's name does not bring
            // back the tokens the deleted one issued (`created_at`).
            role.updated_at = now_ms();
            role.created_at = match self.store.role_get(&principal.tenant, &role.name).await? {
                Some(stored) => {
                    self.check_role_replaceable(principal, &stored).await?;
                    stored.created_at
                }
                None => role.updated_at,
            };
            let created = self
                .store
                .role_put(&principal.tenant, &role, Some(call.line(200)))
                .await?;
            call.mark_written();
            self.auth.identity_changed();
            Ok(Written {
                record: role,
                created,
            })
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
            let stored = self
                .store
                .role_get(&principal.tenant, name)
                .await?
                .ok_or(OpError::NotFound)?;
            self.check_role_replaceable(principal, &stored).await?;
            self.store
                .role_delete(&principal.tenant, name, Some(call.line(200)))
                .await?;
            call.mark_written();
            self.auth.identity_changed();
            Ok(())
        }
        .await;
        self.settle(call, outcome).await
    }
}
