//! Which engine to open and with what settings.

use std::path::PathBuf;
use std::str::FromStr;

use super::events;

/// Which engine to run. `FromStr` names the engines that exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Nats,
}

impl FromStr for Engine {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "sqlite" => Ok(Engine::Sqlite),
            "nats" => Ok(Engine::Nats),
            other => Err(format!(
                "unknown store '{other}'; the stores are: sqlite, nats"
            )),
        }
    }
}

/// Everything needed to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub engine: Engine,
    pub data_dir: PathBuf,
    /// Versions kept per key; older ones are pruned on write.
    pub max_versions: u32,
    /// NATS server URL(s), comma separated (nats engine).
    pub nats_url: String,
    /// Name of the secrets bucket; `<name>_deks`, `<name>_apikeys`,
    /// `<name>_meta` and the stream `<name>_audit` hold the rest (nats).
    pub nats_bucket: String,
    /// Replicas of each bucket (nats engine; 3 in a cluster).
    pub nats_replicas: usize,
    /// Size at which `audit.log` is rotated (sqlite engine).
    pub audit_max_bytes: u64,
    /// How long the change stream's events are kept for resuming.
    pub events: events::EventWindow,
}

impl StoreConfig {
    /// The embedded engine in `data_dir`, keeping 10 versions a key and one
    /// `audit.log` that never rotates: what tests, benchmarks and tools
    /// that make a throwaway store open.
    pub fn embedded(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            engine: Engine::Sqlite,
            data_dir: data_dir.into(),
            max_versions: 10,
            nats_url: String::new(),
            nats_bucket: String::new(),
            nats_replicas: 1,
            audit_max_bytes: u64::MAX,
            events: Default::default(),
        }
    }
}
