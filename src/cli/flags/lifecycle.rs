//! The flags of the key-lifecycle and backup commands (`rekey`,
//! `rotate-dek`, `reseal`, `backup`, `restore`, `migrate`).

use std::path::PathBuf;

use clap::Args;

use super::store::{MasterKeyArgs, StoreArgs};
use crate::store::Engine;

#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub master: MasterKeyArgs,
}

#[derive(Args, Debug)]
pub struct TenantKeysArgs {
    #[command(flatten)]
    pub keys: KeysArgs,
    /// The tenant whose data keys to work on.
    #[arg(long)]
    pub tenant: String,
    /// Versions read and resealed per batch (`reseal`).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
}

#[derive(Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub keys: KeysArgs,
    /// The file to write, outside the store's data directory (written
    /// whole under a temporary name, then renamed into place).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace `--out` when it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub keys: KeysArgs,
    /// The backup file to restore.
    #[arg(long)]
    pub from: PathBuf,
    /// Replace the data of a store that holds some (its audit trail stays).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The source store (the usual store flags) and the master keys.
    #[command(flatten)]
    pub keys: KeysArgs,
    /// The target's engine.
    #[arg(long)]
    pub to_store: Engine,
    /// The target's data dir (its database, audit.log; on nats, nothing).
    #[arg(long)]
    pub to_data_dir: Option<PathBuf>,
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub to_nats_url: String,
    #[arg(long, default_value = "strongroom")]
    pub to_nats_bucket: String,
    #[arg(long, default_value_t = 1)]
    pub to_nats_replicas: usize,
    /// Replace the data of a target that holds some.
    #[arg(long)]
    pub force: bool,
}
