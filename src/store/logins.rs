//! People's logins in progress, as records of the model: what
//! `POST /auth/oidc/auth_url` (or `/auth/oidc/device`) began, found again by
//! the hash of its `state` (or device code) and taken once. The PKCE
//! verifier and nonce arrive sealed; this layer never sees them.

use serde::{Deserialize, Serialize};

use super::records::Kind;
use super::{Store, StoreError};

/// How long a login may take from its start to its callback.
pub const LOGIN_STATE_TTL_MS: i64 = 5 * 60 * 1000;

/// A login in progress. Its id is the hex SHA-256 of its `state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    #[serde(skip)]
    pub id: String,
    pub tenant: String,
    pub role: String,
    /// Where the provider sends the person back (empty for the device flow).
    pub redirect_uri: String,
    /// Hex SHA-256 of the client's nonce: the callback must show it.
    pub client_nonce_hash: String,
    /// The PKCE verifier and the ID token's nonce (or the device code),
    /// sealed under the tenant's data key.
    pub sealed: Vec<u8>,
    pub created_at: i64,
}

const FORMAT: u8 = 1;

fn encode(state: &LoginState) -> Vec<u8> {
    let mut out = vec![FORMAT];
    out.extend(serde_json::to_vec(state).expect("serializable"));
    out
}

fn decode(id: &str, bytes: &[u8]) -> Result<LoginState, StoreError> {
    let corrupt = || StoreError::Corrupt("a login state is unreadable".into());
    match bytes.split_first() {
        Some((&FORMAT, body)) => {
            let state: LoginState = serde_json::from_slice(body).map_err(|_| corrupt())?;
            Ok(LoginState {
                id: id.to_owned(),
                ..state
            })
        }
        _ => Err(corrupt()),
    }
}

impl Store {
    /// Stores a login just begun.
    pub async fn login_state_insert(&self, state: &LoginState) -> Result<(), StoreError> {
        if self
            .put_record(Kind::LoginState, &state.id, 0, encode(state), None)
            .await?
        {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "a login state id already exists".into(),
            ))
        }
    }

    /// The login `id` names, removed so no one can use it again; `None`
    /// when there is none (never begun, used already, or swept).
    pub async fn login_state_take(&self, id: &str) -> Result<Option<LoginState>, StoreError> {
        let Some(r) = self.record(Kind::LoginState, id).await? else {
            return Ok(None);
        };
        let state = decode(id, &r.value)?;
        // Whoever removes it first has it; a second callback finds nothing.
        if self
            .put_record(Kind::LoginState, id, r.revision, None, None)
            .await?
        {
            Ok(Some(state))
        } else {
            Ok(None)
        }
    }

    /// The login `id` names, left in place (the device flow polls it).
    pub async fn login_state_get(&self, id: &str) -> Result<Option<LoginState>, StoreError> {
        match self.record(Kind::LoginState, id).await? {
            Some(r) => Ok(Some(decode(id, &r.value)?)),
            None => Ok(None),
        }
    }

    /// Removes logins begun more than `LOGIN_STATE_TTL_MS` before `now`,
    /// and any that cannot be read.
    pub async fn login_states_sweep(&self, now: i64) -> Result<usize, StoreError> {
        self.remove_records_where(Kind::LoginState, |id, value| {
            decode(id, value).map_or(true, |s| s.created_at + LOGIN_STATE_TTL_MS <= now)
        })
        .await
    }
}
