//! `strongroom serve`'s flags, and the `Settings` they ask the server to
//! run with.

use std::path::PathBuf;

use clap::Args;

use super::store::{MasterKeyArgs, StoreArgs};
use crate::auth::jwt::JwtConfig;
use crate::config::{MasterKeySource, Settings, TlsFiles};
use crate::ops::Limits;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "STRONGROOM_LISTEN", default_value = "127.0.0.1:8210")]
    pub listen: String,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub master: MasterKeyArgs,
    /// Begin a new audit chain although the store recorded a head the trail
    /// no longer reaches (its file was lost); the first line names the old
    /// head.
    #[arg(long, env = "STRONGROOM_AUDIT_RESTART_CHAIN")]
    pub audit_restart_chain: bool,
    /// Shared secret for HS256 JWTs (at least 32 bytes).
    #[arg(long, env = "STRONGROOM_JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<String>,
    /// PEM or JWKS file of public keys for RS256/ES256/EdDSA JWTs.
    #[arg(long, env = "STRONGROOM_JWT_PUBLIC_KEYS")]
    pub jwt_public_keys: Option<PathBuf>,
    /// URL of a JWKS document, fetched at start and on an unknown `kid`.
    #[arg(long, env = "STRONGROOM_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// Least seconds between two fetches of the JWKS URL.
    #[arg(
        long,
        env = "STRONGROOM_JWT_JWKS_MIN_REFRESH_SECS",
        default_value_t = 60
    )]
    pub jwt_jwks_min_refresh_secs: u64,
    /// Required `iss` of JWTs, when set.
    #[arg(long, env = "STRONGROOM_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of JWTs, when set.
    #[arg(long, env = "STRONGROOM_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// JWT claim that names the tenant.
    #[arg(long, env = "STRONGROOM_JWT_TENANT_CLAIM", default_value = "tenant")]
    pub jwt_tenant_claim: String,
    /// JSON file listing the identity providers whose JWTs log in through
    /// roles: `[{"name","issuer","jwks_file"?,"ca_file"?,"client_id"?,
    /// "client_secret_file"?}]`.
    #[arg(long, env = "STRONGROOM_OIDC_PROVIDERS")]
    pub oidc_providers: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "STRONGROOM_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "STRONGROOM_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to; with
    /// it, every client must present one (mTLS).
    #[arg(long, env = "STRONGROOM_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Seconds a client may take to send a request's headers (or a TLS
    /// handshake), and a keep-alive connection may sit idle.
    #[arg(long, env = "STRONGROOM_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout: u64,
    /// Seconds an answer may hold data its client does not take (it stopped
    /// reading, or left an HTTP/2 window at zero) before the connection is
    /// cut off; a `/watch` stream that is read lives on.
    #[arg(long, env = "STRONGROOM_WRITE_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub write_timeout: u64,
    /// How often an idle `/watch` stream sends a heartbeat comment: 15s.
    #[arg(long, env = "STRONGROOM_WATCH_HEARTBEAT", default_value = "15s", value_parser = crate::backup::schedule::parse_interval)]
    pub watch_heartbeat: std::time::Duration,
    /// Seconds a client may take to send a request's body.
    #[arg(long, env = "STRONGROOM_BODY_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout: u64,
    /// Connections held open at most; 0: the file-descriptor limit (raised
    /// to its hard limit at start) less a tenth, at least 256, for the store.
    #[arg(long, env = "STRONGROOM_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
    /// Requests handled at once; beyond it a request answers 503 at once.
    #[arg(long, env = "STRONGROOM_MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
    /// Requests one tenant may have in flight at once (beyond it 429);
    /// 0: a quarter of --max-in-flight.
    #[arg(long, env = "STRONGROOM_MAX_IN_FLIGHT_PER_TENANT", default_value_t = 0)]
    pub max_in_flight_per_tenant: u32,
    /// Requests one credential may have in flight at once (beyond it 429);
    /// 0: an eighth of --max-in-flight.
    #[arg(
        long,
        env = "STRONGROOM_MAX_IN_FLIGHT_PER_CREDENTIAL",
        default_value_t = 0
    )]
    pub max_in_flight_per_credential: u32,
    /// Bytes a second a request body must average after its first 3 s;
    /// one slower is cut off (408) long before --body-timeout. 0: no
    /// minimum.
    #[arg(long, env = "STRONGROOM_BODY_MIN_RATE", default_value_t = 1024)]
    pub body_min_rate: u32,
    /// Most bytes of keys and values one `POST /batch/get` answers with;
    /// a batch naming more is refused 413 (ask for fewer keys at once).
    #[arg(long, env = "STRONGROOM_MAX_BATCH_RESPONSE_BYTES", default_value_t = 1_048_576, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_batch_response_bytes: u64,
    /// Live API keys a tenant may hold; `POST /apikeys` beyond it is
    /// refused 409 (the offline `apikey create` is the operator's, unbounded).
    #[arg(long, env = "STRONGROOM_MAX_APIKEYS_PER_TENANT", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_apikeys_per_tenant: u32,
    /// Data keys a tenant may hold; `POST /keys/rotate` beyond it is refused
    /// 409 (rotation at a key's seal limit is never refused).
    #[arg(long, env = "STRONGROOM_MAX_DATA_KEYS_PER_TENANT", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_data_keys_per_tenant: u32,
    /// Rotated audit files kept (embedded store); older ones are removed
    /// once the store's recorded head covers them and a chained
    /// `system.audit_prune` line names what went, so `audit verify` tells
    /// a pruned prefix from a truncation. 0 keeps every file: ship them
    /// elsewhere first.
    #[arg(long, env = "STRONGROOM_AUDIT_KEEP_FILES", default_value_t = 0)]
    pub audit_keep_files: u32,
    /// How often rotated audit files are pruned (`--audit-keep-files`).
    #[arg(long, env = "STRONGROOM_AUDIT_PRUNE_INTERVAL", default_value = "1m", value_parser = crate::backup::schedule::parse_interval, hide = true)]
    pub audit_prune_interval: std::time::Duration,
    /// Free bytes on the data dir's file system below which `/readyz`'s
    /// detail, the log and `strongroom_data_dir_low` warn (1 GiB), well
    /// before a full disk makes the fail-closed trail answer 503.
    #[arg(long, env = "STRONGROOM_DISK_WARN_BYTES", default_value_t = 1 << 30)]
    pub disk_warn_bytes: u64,
    /// Largest secret value in bytes.
    #[arg(long, env = "STRONGROOM_MAX_VALUE_BYTES", default_value_t = 65_536)]
    pub max_value_bytes: usize,
    /// Largest request body in bytes.
    #[arg(
        long,
        env = "STRONGROOM_MAX_REQUEST_BYTES",
        default_value_t = 1_048_576
    )]
    pub max_request_bytes: usize,
    /// Failed authentications allowed per second per client address (IPv6:
    /// per /64); beyond it the address's requests answer 429 and are
    /// summarised in the audit trail. 0 turns the limit off.
    #[arg(long, env = "STRONGROOM_AUTH_FAILURE_LIMIT", default_value_t = 10)]
    pub auth_failure_limit: u32,
    /// Failed authentications a client address may make at once.
    #[arg(long, env = "STRONGROOM_AUTH_FAILURE_BURST", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub auth_failure_burst: u32,
    /// Seconds SIGTERM waits for in-flight requests before closing what is
    /// still open (a client that never finishes its request).
    #[arg(long, env = "STRONGROOM_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace: u64,
    /// Requests per second per credential (API key or JWT subject), per
    /// gateway; beyond it 429. 0 turns the limit off.
    #[arg(long, env = "STRONGROOM_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,
    /// Requests a credential may make at once under `--rate-limit`.
    #[arg(long, env = "STRONGROOM_RATE_LIMIT_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: u32,
    /// Take a backup into this directory every `--backup-interval`.
    #[arg(long, env = "STRONGROOM_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// How often to take a scheduled backup: 90s, 5m, 1h, 1d.
    #[arg(long, env = "STRONGROOM_BACKUP_INTERVAL", default_value = "1h", value_parser = crate::backup::schedule::parse_interval)]
    pub backup_interval: std::time::Duration,
    /// Scheduled backups kept; older ones are removed.
    #[arg(long, env = "STRONGROOM_BACKUP_KEEP", default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..))]
    pub backup_keep: u32,
    /// How often lapsed secrets are marked deleted, with a `secrets.expire`
    /// audit line each (reads stop serving them the instant they lapse).
    #[arg(long, env = "STRONGROOM_EXPIRY_SWEEP_INTERVAL", default_value = "10s", value_parser = crate::backup::schedule::parse_interval)]
    pub expiry_sweep_interval: std::time::Duration,
    /// Seals a data key may make before it is rotated (at most, and by
    /// default, 2^30); lower only rotates sooner. For tests.
    #[arg(long, env = "STRONGROOM_DEK_MAX_SEALS", hide = true)]
    pub dek_max_seals: Option<u64>,
    /// Where the Vault-compatible API serves KV v2: `secret` answers
    /// `/v1/secret/data/...` (one or more path segments; not `sys`, `auth`,
    /// `identity` or `cubbyhole`).
    #[arg(long, env = "STRONGROOM_VAULT_MOUNT", default_value = "secret", value_parser = crate::vault::parse_mount)]
    pub vault_mount: String,
    /// Log format: json or text.
    #[arg(long, env = "STRONGROOM_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
}

impl ServeArgs {
    /// The settings these flags ask the server to run with.
    pub fn settings(&self) -> Settings {
        let limits = Limits {
            max_request_bytes: self.max_request_bytes,
            max_value_bytes: self.max_value_bytes,
            auth_failures_per_second: self.auth_failure_limit,
            auth_failure_burst: self.auth_failure_burst,
            rate_limit: self.rate_limit,
            rate_limit_burst: self.rate_limit_burst,
            max_in_flight: self.max_in_flight as usize,
            body_timeout: std::time::Duration::from_secs(self.body_timeout),
            body_min_rate: self.body_min_rate,
            max_in_flight_per_tenant: share_of(
                self.max_in_flight,
                self.max_in_flight_per_tenant,
                4,
            ),
            max_in_flight_per_credential: share_of(
                self.max_in_flight,
                self.max_in_flight_per_credential,
                8,
            ),
            watch_heartbeat: self.watch_heartbeat,
            max_batch_response_bytes: usize::try_from(self.max_batch_response_bytes)
                .unwrap_or(usize::MAX),
            max_apikeys_per_tenant: self.max_apikeys_per_tenant as usize,
            max_deks_per_tenant: self.max_data_keys_per_tenant as usize,
            disk_warn_bytes: self.disk_warn_bytes,
        };
        Settings {
            listen: self.listen.clone(),
            tls: TlsFiles {
                cert: self.tls_cert.clone(),
                key: self.tls_key.clone(),
                client_ca: self.tls_client_ca.clone(),
            },
            jwt: JwtConfig {
                hs256_secret: self.jwt_hs256_secret.clone().map(zeroize::Zeroizing::new),
                public_keys: self.jwt_public_keys.clone(),
                jwks_url: self.jwt_jwks_url.clone(),
                jwks_min_refresh: std::time::Duration::from_secs(self.jwt_jwks_min_refresh_secs),
                issuer: self.jwt_issuer.clone(),
                audience: self.jwt_audience.clone(),
                tenant_claim: self.jwt_tenant_claim.clone(),
            },
            oidc_providers: self.oidc_providers.clone(),
            master: MasterKeySource {
                key: self.master.master_key.clone().map(zeroize::Zeroizing::new),
                file: self.master.master_key_file.clone(),
            },
            store: self.store.store_config(),
            limits,
            dek_max_seals: self.dek_max_seals,
            audit_restart_chain: self.audit_restart_chain,
            vault_mount: self.vault_mount.clone(),
        }
    }
}

/// A cap given (non-zero), else `1/divisor` of `--max-in-flight`.
fn share_of(max_in_flight: u32, given: u32, divisor: u32) -> usize {
    match given {
        0 => (max_in_flight / divisor).max(1) as usize,
        n => n as usize,
    }
}
