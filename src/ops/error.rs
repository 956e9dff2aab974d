//! `OpError`: every way an operation can end other than as asked, in the
//! operation's terms. A front-end maps each to its protocol's status and
//! body; `status` is the HTTP status the audit line records for it.

use crate::crypto::keyring::KeyringError;
use crate::crypto::CryptoError;
use crate::store::StoreError;

#[derive(Debug)]
pub enum OpError {
    /// No valid credential.
    Unauthorized,
    /// A login refused: the detail names the binding that failed, never
    /// echoing the token.
    LoginRefused(String),
    /// A device-flow login not finished: the provider's code
    /// (`authorization_pending`, `slow_down`, `expired_token`,
    /// `access_denied`), answered as OAuth answers it.
    LoginPending(String),
    /// The principal's scopes do not cover what was asked.
    Forbidden,
    /// The request breaks one of the operation's rules (an expiry in the
    /// past, say): the detail says which, never echoing a value.
    Invalid(String),
    NotFound,
    /// A watcher resumed from before the kept events: re-list.
    Gone,
    /// An `If-Match` / `If-None-Match` precondition did not hold.
    VersionMismatch,
    ValueTooLarge {
        limit: usize,
    },
    /// The values a batch names add up to more than one answer may hold.
    ResponseTooLarge {
        limit: usize,
    },
    /// A tenant holds as many of something (API keys, data keys) as it may.
    LimitReached {
        what: &'static str,
        limit: usize,
    },
    /// Failed authentications over the client address's limit, or requests
    /// over the credential's.
    RateLimited,
    /// More requests in flight than allowed, or the write queue full.
    Overloaded,
    /// Stored data failed its integrity check; never a value.
    Integrity(String),
    Unavailable(String),
    Internal(String),
}

impl OpError {
    /// The status the audit line records (the quiva API's answer to it).
    pub fn status(&self) -> u16 {
        match self {
            OpError::Unauthorized | OpError::LoginRefused(_) => 401,
            OpError::Forbidden => 403,
            OpError::Invalid(_) | OpError::LoginPending(_) => 400,
            OpError::NotFound => 404,
            OpError::Gone => 410,
            OpError::VersionMismatch => 412,
            OpError::ValueTooLarge { .. } | OpError::ResponseTooLarge { .. } => 413,
            OpError::LimitReached { .. } => 409,
            OpError::RateLimited => 429,
            OpError::Overloaded | OpError::Unavailable(_) => 503,
            OpError::Integrity(_) => 502,
            OpError::Internal(_) => 500,
        }
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => OpError::NotFound,
            StoreError::VersionMismatch => OpError::VersionMismatch,
            StoreError::Invalid(detail) => OpError::Invalid(detail),
            StoreError::CasRequired => {
                OpError::Invalid("check-and-set parameter required for this call".into())
            }
            StoreError::Unavailable(cause) => OpError::Unavailable(cause),
            StoreError::Busy => OpError::Overloaded,
            StoreError::Corrupt(cause) => OpError::Integrity(cause),
            StoreError::Refused(why) => OpError::Internal(why),
            StoreError::Gone => OpError::Gone,
        }
    }
}

impl From<CryptoError> for OpError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::Tampered
            | CryptoError::Truncated
            | CryptoError::UnknownFormat(_)
            | CryptoError::UnknownDataKey(_)
            | CryptoError::DataKeyCorrupt(_) => OpError::Integrity(e.to_string()),
            e => OpError::Internal(format!("crypto: {e}")),
        }
    }
}

impl From<KeyringError> for OpError {
    fn from(e: KeyringError) -> Self {
        match e {
            KeyringError::Store(e) => e.into(),
            KeyringError::Crypto(e) => e.into(),
        }
    }
}
