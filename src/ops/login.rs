//! Logins and their tokens: a workload's platform JWT exchanged, through a
//! role, for a short-lived `srt_` token (`auth.login`, every outcome
//! audited with the role and, once known, the subject); the caller's own
//! token shown (`auth.token.lookup`) or revoked (`auth.token.revoke`).
//! Failed logins count against the client address's failed-authentication
//! budget, as failed credentials do.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::{Call, OpError, Ops};
use crate::auth::failures::Admission;
use crate::auth::providers::Provider;
use crate::auth::{parse_scopes, tokens, workload, Principal, Scope};
use crate::clock::now_ms;
use crate::store::identity::{valid_name, RoleRecord, TokenRecord};
use crate::types::TenantId;

/// `POST /auth/login/jwt`'s request.
pub struct Login<'a> {
    pub tenant: &'a str,
    pub role: &'a str,
    pub jwt: &'a str,
}

/// A login's token, shown once, and what it grants.
pub struct LoggedIn {
    pub token: Zeroizing<String>,
    pub info: TokenInfo,
}

/// What a token is: its tenant, subject, role, scopes (its own and its
/// policies' now) and expiry.
pub struct TokenInfo {
    pub tenant: TenantId,
    pub subject: String,
    pub role: String,
    pub scopes: Vec<String>,
    pub policies: Vec<String>,
    pub expires_at: i64,
}

/// A principal naming the tenant and subject a login line records.
pub(super) fn attributed(tenant: TenantId, subject: String) -> Arc<Principal> {
    Arc::new(Principal {
        tenant,
        subject,
        scopes: Vec::new(),
        expires_at: None,
        share_keys: Default::default(),
        token: None,
    })
}

impl Ops {
    /// Exchanges a platform JWT for a token, if it satisfies the role.
    pub async fn login_jwt(&self, call: &Call, login: Login<'_>) -> Result<LoggedIn, OpError> {
        // The line names the role only when it could be one: a body's
        // arbitrary text does not go into the trail.
        if valid_name(login.role) {
            call.key(login.role);
        }
        self.admitted_login(call, self.login(call, login)).await
    }

    /// Runs a login within the client address's failed-authentication
    /// budget (a refusal counts against it) and records its outcome, with
    /// the binding that failed as the line's note.
    pub(super) async fn admitted_login<T>(
        &self,
        call: &Call,
        login: impl std::future::Future<Output = Result<T, OpError>>,
    ) -> Result<T, OpError> {
        let admission = call
            .client()
            .map(|addr| (addr, self.auth_failures.admit(&addr)));
        if let Some((_, Admission::Refused)) = admission {
            call.throttled();
            return Err(OpError::RateLimited);
        }
        let outcome = login.await;
        if let Some((addr, admitted)) = admission {
            let failed = matches!(&outcome, Err(OpError::LoginRefused(_)));
            self.auth_failures.settle(&addr, admitted, failed);
        }
        if let Err(OpError::LoginRefused(why)) = &outcome {
            self.metrics.auth_failure("login_refused");
            tracing::info!(reason = %why, "login refused");
            call.note(why.clone());
        }
        self.settle(call, outcome).await
    }

    /// `tenant`'s role `name`, or the refusal a login gets.
    pub(super) async fn login_role(
        &self,
        call: &Call,
        tenant: &str,
        name: &str,
    ) -> Result<(TenantId, RoleRecord), OpError> {
        let refused = |why: &str| OpError::LoginRefused(why.to_owned());
        let tenant = TenantId::parse(tenant).map_err(|_| refused("tenant: not a tenant id"))?;
        call.principal(&attributed(tenant.clone(), String::new()));
        if !valid_name(name) {
            return Err(refused("role: no such role"));
        }
        let role = self
            .store
            .role_get(&tenant, name)
            .await?
            .ok_or_else(|| refused("role: no such role"))?;
        Ok((tenant, role))
    }

    async fn login(&self, call: &Call, login: Login<'_>) -> Result<LoggedIn, OpError> {
        let (tenant, role) = self.login_role(call, login.tenant, login.role).await?;
        let provider = self.login_provider(&role)?;
        let user = workload::verify(provider, &role, login.jwt)
            .await
            .map_err(|why| OpError::LoginRefused(why.0))?;
        self.issue(call, &tenant, &role, &provider.name, &user)
            .await
    }

    pub(super) fn login_provider(&self, role: &RoleRecord) -> Result<&Arc<Provider>, OpError> {
        self.auth.providers.get(&role.provider).ok_or_else(|| {
            OpError::LoginRefused("provider: the role's identity provider is not configured".into())
        })
    }

    /// Issues a token of `role` to `user` of `provider`, with the login's
    /// line in the same unit of work.
    pub(super) async fn issue(
        &self,
        call: &Call,
        tenant: &TenantId,
        role: &RoleRecord,
        provider: &str,
        user: &str,
    ) -> Result<LoggedIn, OpError> {
        let subject = format!("{provider}:{user}");
        call.principal(&attributed(tenant.clone(), subject.clone()));
        let now = now_ms();
        let (text, id) = tokens::mint();
        let record = TokenRecord {
            id,
            tenant: tenant.as_str().to_owned(),
            subject,
            role: role.name.clone(),
            role_uid: role.uid.clone(),
            scopes: role.scopes.clone(),
            policies: role.policies.clone(),
            created_at: now,
            expires_at: now + i64::from(role.token_ttl_seconds) * 1000,
            revoked_at: None,
        };
        self.store
            .token_insert(&record, Some(call.line(200)))
            .await?;
        call.mark_written();
        crate::counters::TOKENS_ISSUED.add();
        Ok(LoggedIn {
            token: text,
            info: self.token_info(tenant, record).await?,
        })
    }

    async fn token_info(&self, tenant: &TenantId, t: TokenRecord) -> Result<TokenInfo, OpError> {
        let mut scopes = parse_scopes(&t.scopes).map_err(OpError::Internal)?;
        scopes.extend(
            self.auth
                .policy_scopes(tenant, &t.policies)
                .await
                .map_err(|_| OpError::Unavailable("policy lookup failed".into()))?,
        );
        Ok(TokenInfo {
            tenant: tenant.clone(),
            subject: t.subject,
            role: t.role,
            scopes: scopes.iter().map(Scope::to_string).collect(),
            policies: t.policies,
            expires_at: t.expires_at,
        })
    }

    /// The caller's own token.
    pub async fn lookup_token(
        &self,
        call: &Call,
        principal: &Principal,
    ) -> Result<TokenInfo, OpError> {
        let outcome = async {
            let token = own_token(principal)?;
            let record = self
                .store
                .token_get(&token.id)
                .await?
                .ok_or(OpError::NotFound)?;
            self.token_info(&principal.tenant, record).await
        }
        .await;
        self.settle(call, outcome).await
    }

    /// Revokes the caller's own token: refused from the next request, on
    /// every gateway.
    pub async fn revoke_token(&self, call: &Call, principal: &Principal) -> Result<(), OpError> {
        let outcome = async {
            let token = own_token(principal)?;
            call.key(&token.role);
            self.store
                .token_revoke(&token.id, now_ms(), Some(call.line(200)))
                .await?;
            call.mark_written();
            self.auth.forget_token(&token.id);
            Ok(())
        }
        .await;
        self.settle(call, outcome).await
    }
}

fn own_token(principal: &Principal) -> Result<&tokens::TokenRef, OpError> {
    principal
        .token
        .as_deref()
        .ok_or_else(|| OpError::Invalid("the credential is not a login token (srt_...)".into()))
}

/// What the caller's own credential is, whatever its kind (Vault's
/// `lookup-self`).
pub struct SelfInfo {
    pub tenant: crate::types::TenantId,
    /// The API key's id, or the token's subject.
    pub subject: String,
    /// The token's role; `None` for an API key.
    pub role: Option<String>,
    pub scopes: Vec<String>,
    pub policies: Vec<String>,
    /// ms since the epoch; `None`: does not lapse.
    pub expires_at: Option<i64>,
    /// When it was issued or created, ms since the epoch, where known.
    pub issued_at: Option<i64>,
}

impl Ops {
    /// The caller's own credential, an API key or a login token
    /// (`auth.token.lookup`).
    pub async fn lookup_self(
        &self,
        call: &Call,
        principal: &Principal,
    ) -> Result<SelfInfo, OpError> {
        let outcome = async {
            if let Some(token) = principal.token.as_deref() {
                call.key(&token.role);
                let record = self
                    .store
                    .token_get(&token.id)
                    .await?
                    .ok_or(OpError::NotFound)?;
                let issued_at = record.created_at;
                let info = self.token_info(&principal.tenant, record).await?;
                return Ok(SelfInfo {
                    tenant: info.tenant,
                    subject: info.subject,
                    role: Some(info.role),
                    scopes: info.scopes,
                    policies: info.policies,
                    expires_at: Some(info.expires_at),
                    issued_at: Some(issued_at),
                });
            }
            // An API key (subject `apikey:<id>`), or a platform JWT, which
            // has no record.
            let key = match principal.subject.strip_prefix("apikey:") {
                Some(id) => self.store.apikey_get(id).await?,
                None => None,
            };
            let key = key.filter(|k| k.tenant == principal.tenant);
            Ok(SelfInfo {
                tenant: principal.tenant.clone(),
                subject: principal.subject.clone(),
                role: None,
                scopes: principal.scopes.iter().map(Scope::to_string).collect(),
                policies: key.as_ref().map(|k| k.policies.clone()).unwrap_or_default(),
                expires_at: principal.expires_at,
                issued_at: key.map(|k| k.created_at),
            })
        }
        .await;
        self.settle(call, outcome).await
    }
}
