//! Where a command finds the store and its root key: the flags every
//! server-side command shares.

use std::path::PathBuf;

use clap::Args;

use crate::store::{Engine, StoreConfig};

/// Where the root key (KEK) comes from.
#[derive(Args, Debug, Clone)]
pub struct MasterKeyArgs {
    /// Root key, base64 of 32 bytes. Prefer the environment over the flag.
    #[arg(long, env = "STRONGROOM_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// File holding the root key as base64 text.
    #[arg(long, env = "STRONGROOM_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
}

/// Where the data lives.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Directory of the embedded store (and the generated master key).
    #[arg(long, env = "STRONGROOM_DATA_DIR", default_value = "./strongroom-data")]
    pub data_dir: PathBuf,
    /// Storage engine: sqlite (embedded) or nats.
    #[arg(long, env = "STRONGROOM_STORE", default_value = "sqlite")]
    pub store: Engine,
    /// NATS server URL(s), comma separated (nats store).
    #[arg(
        long,
        env = "STRONGROOM_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Name of the JetStream KV bucket holding secrets (nats store).
    #[arg(long, env = "STRONGROOM_NATS_BUCKET", default_value = "secrets")]
    pub nats_bucket: String,
    /// Replicas of each bucket (nats store; 3 in a cluster).
    #[arg(long, env = "STRONGROOM_NATS_REPLICAS", default_value_t = 1)]
    pub nats_replicas: usize,
    /// Versions kept per key; the oldest is pruned on write.
    #[arg(long, env = "STRONGROOM_MAX_VERSIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_versions: u32,
    /// Size in bytes at which `audit.log` is renamed `audit-<first line>.log`
    /// and a new one begins, on the same chain (sqlite store).
    #[arg(long, env = "STRONGROOM_AUDIT_MAX_BYTES", default_value_t = 100 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub audit_max_bytes: u64,
    /// Change-stream events kept for watchers that resume (`Last-Event-ID`).
    #[arg(long, env = "STRONGROOM_EVENTS_KEEP", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events_keep: u64,
    /// And for at most this long: 90s, 30m, 24h, 7d.
    #[arg(long, env = "STRONGROOM_EVENTS_MAX_AGE", default_value = "24h", value_parser = crate::backup::schedule::parse_interval)]
    pub events_max_age: std::time::Duration,
}

impl StoreArgs {
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            engine: self.store,
            data_dir: self.data_dir.clone(),
            max_versions: self.max_versions,
            nats_url: self.nats_url.clone(),
            nats_bucket: self.nats_bucket.clone(),
            nats_replicas: self.nats_replicas,
            audit_max_bytes: self.audit_max_bytes,
            events: crate::store::events::EventWindow {
                keep: self.events_keep,
                max_age_ms: i64::try_from(self.events_max_age.as_millis()).unwrap_or(i64::MAX),
            },
        }
    }
}
