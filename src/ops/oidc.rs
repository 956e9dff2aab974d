//! People's logins (DESIGN section 11): the authorization code flow with
//! PKCE (`auth_url`, then `callback`) and the device flow (`device`, then
//! `device_token`). The state, PKCE verifier and nonce stay with
//! strongroom (a store record, the secrets sealed under the tenant's data
//! key), so the callback may reach any gateway; each state is used once and
//! for at most 5 minutes. Every step's outcome is an `auth.login` line (a
//! start's success noted `begun`).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::login::LoggedIn;
use super::{Call, OpError, Ops};
use crate::auth::oidc::{self, Failure, Polled};
use crate::auth::workload;
use crate::clock::now_ms;
use crate::crypto::seal::random_bytes;
use crate::store::identity::RoleRecord;
use crate::store::logins::{LoginState, LOGIN_STATE_TTL_MS};

/// `POST /auth/oidc/auth_url`'s request.
pub struct AuthUrl<'a> {
    pub tenant: &'a str,
    pub role: &'a str,
    pub redirect_uri: &'a str,
    pub client_nonce: &'a str,
}

/// `POST /auth/oidc/callback`'s request.
pub struct Callback<'a> {
    pub state: &'a str,
    pub code: &'a str,
    pub client_nonce: &'a str,
}

/// What the provider's device authorization said, for the person.
pub struct DeviceStarted {
    pub device_code: Zeroizing<String>,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub interval: u64,
    pub expires_in: u64,
}

/// The secrets of a code login, sealed in its state record.
#[derive(Serialize, Deserialize)]
struct Secrets {
    verifier: String,
    nonce: String,
}

fn refused(why: impl Into<String>) -> OpError {
    OpError::LoginRefused(why.into())
}

/// A provider that refused is the caller's refusal (401, charged to its
/// budget); one that could not be reached is not (503).
fn failure(f: Failure) -> OpError {
    match f {
        Failure::Refused(why) => OpError::LoginRefused(why.0),
        Failure::Unreachable(why) => OpError::Unavailable(why),
    }
}

/// The provider's endpoints, read again if they were not (a provider
/// down at start).
async fn ready(provider: &std::sync::Arc<crate::auth::providers::Provider>) {
    if provider.endpoints().is_none() {
        provider.refresh().await;
    }
}

fn random_text<const N: usize>() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*random_bytes::<N>())
}

fn sha256_hex(text: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        text.as_bytes(),
    ))
}

/// The AEAD context a state's secrets are sealed under: version 0, which
/// no secret has, so it can never open as a secret's value.
fn sealed_key(id: &str) -> String {
    format!("oidc-login/{id}")
}

/// Whether `given` may receive the person back for `role`: one of its
/// `allowed_redirect_uris` exactly, or a loopback one on any port (RFC
/// 8252 7.3: a native app's listener gets whatever port is free).
pub fn redirect_allowed(role: &RoleRecord, given: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(given) else {
        return false;
    };
    role.allowed_redirect_uris.iter().any(|allowed| {
        if allowed == given {
            return true;
        }
        let Ok(allowed) = reqwest::Url::parse(allowed) else {
            return false;
        };
        let loopback = |u: &reqwest::Url| {
            u.scheme() == "http"
                && matches!(u.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"))
        };
        loopback(&allowed)
            && loopback(&url)
            && allowed.host_str() == url.host_str()
            && allowed.path() == url.path()
            && allowed.query() == url.query()
    })
}

impl Ops {
    /// Begins a person's login: the URL their browser opens.
    pub async fn oidc_auth_url(&self, call: &Call, req: AuthUrl<'_>) -> Result<String, OpError> {
        self.admitted_login(call, self.auth_url(call, req)).await
    }

    async fn auth_url(&self, call: &Call, req: AuthUrl<'_>) -> Result<String, OpError> {
        let (tenant, role) = self.login_role(call, req.tenant, req.role).await?;
        call.key(&role.name);
        let provider = self.login_provider(&role)?.clone();
        ready(&provider).await;
        if !redirect_allowed(&role, req.redirect_uri) {
            return Err(refused("redirect_uri: the role does not allow it"));
        }
        if req.client_nonce.is_empty() || req.client_nonce.len() > 256 {
            return Err(refused("client_nonce: 1 to 256 characters"));
        }
        let state = random_text::<32>();
        let secrets = Secrets {
            verifier: random_text::<32>(),
            nonce: random_text::<16>(),
        };
        let url = oidc::authorization_url(
            &provider,
            req.redirect_uri,
            &state,
            &secrets.verifier,
            &secrets.nonce,
        )
        .map_err(|why| refused(why.0))?;
        let id = sha256_hex(&state);
        let plain = Zeroizing::new(serde_json::to_vec(&secrets).expect("serializable"));
        let sealed = self
            .keyring
            .sealer(&tenant)
            .await?
            .seal(&sealed_key(&id), 0, &plain)?;
        self.store
            .login_state_insert(&LoginState {
                id,
                tenant: tenant.as_str().to_owned(),
                role: role.name,
                redirect_uri: req.redirect_uri.to_owned(),
                client_nonce_hash: sha256_hex(req.client_nonce),
                sealed,
                created_at: now_ms(),
            })
            .await?;
        call.note("begun: the person is sent to the provider".into());
        Ok(url)
    }

    /// Finishes a person's login with the provider's `code`.
    pub async fn oidc_callback(&self, call: &Call, req: Callback<'_>) -> Result<LoggedIn, OpError> {
        self.admitted_login(call, self.callback(call, req)).await
    }

    async fn callback(&self, call: &Call, req: Callback<'_>) -> Result<LoggedIn, OpError> {
        let id = sha256_hex(req.state);
        // Taken, so a replayed state finds nothing.
        let state = self
            .store
            .login_state_take(&id)
            .await?
            .ok_or_else(|| refused("state: unknown, already used or expired"))?;
        if state.created_at + LOGIN_STATE_TTL_MS <= now_ms() {
            return Err(refused("state: older than 5 minutes"));
        }
        let given = sha256_hex(req.client_nonce);
        if aws_lc_rs::constant_time::verify_slices_are_equal(
            given.as_bytes(),
            state.client_nonce_hash.as_bytes(),
        )
        .is_err()
        {
            return Err(refused("client_nonce: not the one the login began with"));
        }
        let (tenant, role) = self.login_role(call, &state.tenant, &state.role).await?;
        call.key(&role.name);
        let plain = self
            .keyring
            .open_value(&tenant, &sealed_key(&id), 0, &state.sealed)
            .await?;
        let secrets: Secrets = serde_json::from_slice(&plain)
            .map_err(|_| OpError::Integrity("a login state's secrets are unreadable".into()))?;
        let provider = self.login_provider(&role)?.clone();
        let client_id = provider.client_id.clone().unwrap_or_default();
        let id_token =
            oidc::exchange_code(&provider, req.code, &state.redirect_uri, &secrets.verifier)
                .await
                .map_err(failure)?;
        let user = workload::verify_id_token(
            &provider,
            &role,
            &id_token,
            &client_id,
            Some(&secrets.nonce),
        )
        .await
        .map_err(|why| refused(why.0))?;
        self.issue(call, &tenant, &role, &provider.name, &user)
            .await
    }

    /// Begins a device-flow login at the provider.
    pub async fn oidc_device(
        &self,
        call: &Call,
        tenant: &str,
        role: &str,
    ) -> Result<DeviceStarted, OpError> {
        self.admitted_login(call, self.device(call, tenant, role))
            .await
    }

    async fn device(
        &self,
        call: &Call,
        tenant: &str,
        role: &str,
    ) -> Result<DeviceStarted, OpError> {
        let (tenant, role) = self.login_role(call, tenant, role).await?;
        call.key(&role.name);
        let provider = self.login_provider(&role)?.clone();
        ready(&provider).await;
        let started = oidc::start_device(&provider).await.map_err(failure)?;
        self.store
            .login_state_insert(&LoginState {
                id: sha256_hex(&started.device_code),
                tenant: tenant.as_str().to_owned(),
                role: role.name,
                redirect_uri: String::new(),
                client_nonce_hash: String::new(),
                sealed: Vec::new(),
                created_at: now_ms(),
            })
            .await?;
        call.note("begun: the person is shown a device code".into());
        Ok(DeviceStarted {
            device_code: started.device_code,
            user_code: started.user_code,
            verification_uri: started.verification_uri,
            verification_uri_complete: started.verification_uri_complete,
            interval: started.interval.unwrap_or(5),
            // strongroom keeps the login no longer than any other.
            expires_in: started.expires_in.min((LOGIN_STATE_TTL_MS / 1000) as u64),
        })
    }

    /// Polls a device-flow login once: the token once the person approved,
    /// `OpError::LoginPending` with the provider's code until then
    /// (`authorization_pending`, `slow_down`, `expired_token`,
    /// `access_denied`).
    pub async fn oidc_device_token(
        &self,
        call: &Call,
        device_code: &str,
    ) -> Result<LoggedIn, OpError> {
        self.admitted_login(call, self.device_token(call, device_code))
            .await
    }

    async fn device_token(&self, call: &Call, device_code: &str) -> Result<LoggedIn, OpError> {
        let expired = || OpError::LoginPending("expired_token".into());
        let id = sha256_hex(device_code);
        let state = self.store.login_state_get(&id).await?.ok_or_else(expired)?;
        if state.created_at + LOGIN_STATE_TTL_MS <= now_ms() {
            return Err(expired());
        }
        let (tenant, role) = self.login_role(call, &state.tenant, &state.role).await?;
        call.key(&role.name);
        let provider = self.login_provider(&role)?.clone();
        let id_token = match oidc::poll_device(&provider, device_code)
            .await
            .map_err(failure)?
        {
            Polled::Pending(code) => return Err(OpError::LoginPending(code)),
            Polled::IdToken(token) => token,
        };
        // Used once: a second poll after approval finds nothing.
        if self.store.login_state_take(&id).await?.is_none() {
            return Err(expired());
        }
        let client_id = provider.client_id.clone().unwrap_or_default();
        let user = workload::verify_id_token(&provider, &role, &id_token, &client_id, None)
            .await
            .map_err(|why| refused(why.0))?;
        self.issue(call, &tenant, &role, &provider.name, &user)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_match_on_any_port_and_nothing_else_does() {
        let role = RoleRecord {
            name: "people".into(),
            provider: "p".into(),
            bound_audiences: vec!["a".into()],
            bound_subject: None,
            bound_claims: Default::default(),
            user_claim: "sub".into(),
            scopes: vec![],
            policies: vec![],
            token_ttl_seconds: 60,
            allowed_redirect_uris: vec![
                "http://127.0.0.1:8250/oidc/callback".into(),
                "https://vault.example/ui/".into(),
            ],
            uid: "u".into(),
            updated_at: 0,
        };
        for good in [
            "http://127.0.0.1:8250/oidc/callback",
            "http://127.0.0.1:49152/oidc/callback",
            "https://vault.example/ui/",
        ] {
            assert!(redirect_allowed(&role, good), "{good}");
        }
        for bad in [
            "http://127.0.0.1:8250/other",
            "http://localhost:8250/oidc/callback",
            "https://vault.example/ui/x",
            "https://vault.example:8443/ui/",
            "http://evil.example:8250/oidc/callback",
            "not a url",
        ] {
            assert!(!redirect_allowed(&role, bad), "{bad}");
        }
    }
}
