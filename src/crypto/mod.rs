//! Envelope encryption: the root key (KEK) wraps per-tenant data keys (DEKs),
//! and DEKs seal secret values with AES-256-GCM (`seal`). `keyring` loads,
//! creates and caches unwrapped DEKs, and is the only place that sees one.
//!
//! Architecture invariant: nothing outside this module handles raw key bytes,
//! and every plaintext it returns is wrapped in `Zeroizing`.

pub mod keyring;
pub mod master;
mod rotation;
pub mod seal;

pub use keyring::Keyring;
pub use master::{KekId, MasterKey, MasterKeys};

/// Why a sealed blob could not be opened or a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The authentication tag did not verify: wrong key, or the bytes (or the
    /// tenant, key or version they are bound to) were changed.
    #[error("ciphertext failed authentication")]
    Tampered,
    #[error("unknown stored format {0}")]
    UnknownFormat(u8),
    #[error("stored blob is truncated")]
    Truncated,
    #[error("data key {0} is not in the keyring")]
    UnknownDataKey(u32),
    /// A stored data key that the (verified) master key cannot unwrap: the
    /// record was changed or damaged, not the master key.
    #[error("data key {0} failed its integrity check")]
    DataKeyCorrupt(u32),
    #[error("master key does not match the one this store was created with")]
    WrongMasterKey,
    /// A stored key names a KEK the keyring lacks.
    #[error("a stored data key is wrapped by master key {0}, which is not in the keyring")]
    MissingKek(master::KekId),
    #[error("master key: {0}")]
    BadMasterKey(String),
    #[error("aes-gcm failure")]
    Aead,
}
