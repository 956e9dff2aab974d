//! The settings a server runs with, as plain data. The `strongroom` command
//! fills them from its flags and the environment (`cli::flags`); a test or
//! a program embedding the server may fill them itself. There is never a
//! required config file.

use std::path::PathBuf;

use crate::auth::jwt::JwtConfig;
use crate::ops::Limits;
use crate::store::StoreConfig;

/// Everything `Application::build` needs.
pub struct Settings {
    /// The address to listen on (`host:port`; port 0 picks one).
    pub listen: String,
    pub tls: TlsFiles,
    pub jwt: JwtConfig,
    /// The identity providers file (`--oidc-providers`), if any.
    pub oidc_providers: Option<PathBuf>,
    pub master: MasterKeySource,
    pub store: StoreConfig,
    pub limits: Limits,
    /// Seals one data key may make before a new one is started (a test
    /// knob; `None`: the default).
    pub dek_max_seals: Option<u64>,
    /// Start a new audit chain when the recorded one cannot be found.
    pub audit_restart_chain: bool,
    /// The mount the Vault front-end serves KV v2 at (`secret`: paths
    /// `/v1/secret/data/...`).
    pub vault_mount: String,
}

/// PEM files of the server's certificate and key, and of the CAs whose
/// client certificates it requires, when TLS is on.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
}

/// Where the root key (KEK) comes from: given as base64 text, a file, or
/// (neither) the data dir.
#[derive(Clone, Default)]
pub struct MasterKeySource {
    pub key: Option<zeroize::Zeroizing<String>>,
    pub file: Option<PathBuf>,
}
