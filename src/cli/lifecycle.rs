//! The key-lifecycle and backup commands (`rekey`, `rotate-dek`, `reseal`,
//! `backup`, `restore`, `migrate`): each works on a store directly, with
//! the master keys, also while servers run on it (but `restore`, which
//! needs the store to itself).

use std::io::IsTerminal;
use std::path::PathBuf;

use super::flags::{BackupArgs, KeysArgs, MigrateArgs, RestoreArgs, TenantKeysArgs};
use crate::backup;
use crate::crypto::{Keyring, MasterKey, MasterKeys};
use crate::store::{Engine, Store, StoreConfig};
use crate::types::TenantId;

impl KeysArgs {
    /// The master keys, never generated: a tool needs the store's own.
    fn keks(&self) -> Result<MasterKeys, String> {
        MasterKey::load(
            self.master.master_key.as_deref(),
            self.master.master_key_file.as_deref(),
            &self.store.data_dir,
            false,
        )
        .map(|(keys, _)| keys)
        .map_err(|e| e.to_string())
    }

    /// The store and a keyring bound to it.
    async fn open(&self) -> Result<(Store, Keyring), String> {
        let keks = self.keks()?;
        let store = Store::open(&self.store.store_config())
            .await
            .map_err(|e| e.to_string())?;
        match Keyring::open(keks, store.clone()).await {
            Ok(keyring) => Ok((store, keyring)),
            Err(e) => {
                store.close().await;
                Err(e.to_string())
            }
        }
    }
}

pub async fn rekey(args: KeysArgs) -> Result<(), String> {
    let (store, keyring) = args.open().await?;
    let done = keyring.rekey().await;
    store.close().await;
    let n = done.map_err(|e| e.to_string())?;
    println!(
        "rewrapped {n} data keys under master key {}",
        keyring.keks().active().id()
    );
    Ok(())
}

pub async fn rotate_dek(args: TenantKeysArgs) -> Result<(), String> {
    let tenant = TenantId::parse(&args.tenant).map_err(|e| e.to_string())?;
    let (store, keyring) = args.keys.open().await?;
    let done = keyring.rotate(&tenant).await;
    store.close().await;
    let id = done.map_err(|e| e.to_string())?;
    println!("tenant {tenant} now seals with data key {id}");
    Ok(())
}

pub async fn reseal(args: TenantKeysArgs) -> Result<(), String> {
    let tenant = TenantId::parse(&args.tenant).map_err(|e| e.to_string())?;
    let (store, keyring) = args.keys.open().await?;
    let done = keyring.reseal(&tenant, args.batch as usize).await;
    store.close().await;
    let n = done.map_err(|e| e.to_string())?;
    println!("resealed {n} versions of tenant {tenant} under its current data key");
    Ok(())
}

pub async fn backup(args: BackupArgs) -> Result<(), String> {
    lower_priority();
    crate::fsutil::refuse_in_data_dir(&args.out, &args.keys.store.data_dir, "--out")?;
    if !args.force && std::fs::symlink_metadata(&args.out).is_ok() {
        return Err(format!(
            "{} exists: choose another --out, or add --force to replace it",
            args.out.display()
        ));
    }
    let (store, keyring) = args.keys.open().await?;
    let dir = match args.out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = args
        .out
        .file_name()
        .ok_or("--out must name a file")?
        .to_string_lossy()
        .into_owned();
    let temp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&temp);
    let written = async {
        let file = crate::fsutil::create_private_file(&temp)
            .map_err(|e| format!("cannot create {}: {e}", temp.display()))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let counts = backup::write(
            &store,
            &keyring.keks(),
            store.engine_name(),
            &mut out,
            &|_| {},
        )
        .await?;
        let file = out.into_inner().map_err(|e| e.to_string())?;
        file.sync_all()
            .and_then(|()| std::fs::rename(&temp, &args.out))
            .and_then(|()| std::fs::File::open(&dir)?.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", args.out.display()))?;
        Ok::<_, String>(counts)
    }
    .await;
    store.close().await;
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    let counts = written?;
    println!(
        "backed up {} to {}",
        backup::describe(&counts),
        args.out.display()
    );
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> Result<(), String> {
    // A backup kept in the data dir would go with it; one of the store's
    // own files is no backup.
    crate::fsutil::refuse_in_data_dir(&args.from, &args.keys.store.data_dir, "--from")?;
    let keks = args.keys.keks()?;
    let file = std::fs::File::open(&args.from)
        .map_err(|e| format!("cannot open {}: {e}", args.from.display()))?;
    let counts = restore_into(&args.keys.store.store_config(), keks, file, args.force).await?;
    println!(
        "restored {} from {}",
        backup::describe(&counts),
        args.from.display()
    );
    Ok(())
}

/// Checks all of `input`, then (and only then) opens `target` with its
/// trail and restores into it.
async fn restore_into<R>(
    target: &StoreConfig,
    keks: MasterKeys,
    mut input: R,
    force: bool,
) -> Result<crate::store::dump::LoadCounts, String>
where
    R: std::io::Read + std::io::Seek + Send + 'static,
{
    let checked = backup::check(std::io::BufReader::new(&mut input), &keks)?;
    let opened = Store::open_with_trail(target)
        .await
        .map_err(|e| e.to_string())?;
    let restored =
        backup::restore(&opened.store, &opened.trail, keks, (input, checked), force).await;
    opened.store.close().await;
    restored
}

/// Backs the source up into memory and restores that into the target.
pub async fn migrate(args: MigrateArgs) -> Result<(), String> {
    let mut target = args.keys.store.store_config();
    target.engine = args.to_store;
    target.nats_url = args.to_nats_url.clone();
    target.nats_bucket = args.to_nats_bucket.clone();
    target.nats_replicas = args.to_nats_replicas;
    match (&args.to_data_dir, args.to_store) {
        (Some(dir), _) => target.data_dir = dir.clone(),
        (None, Engine::Sqlite) => return Err("--to-data-dir is needed for a sqlite target".into()),
        (None, Engine::Nats) => {}
    }
    refuse_same_store(&args.keys.store.store_config(), &target)?;
    let (store, keyring) = args.keys.open().await?;
    let bar = progress();
    let mut copy = Vec::new();
    let shown = |n| bar.set_message(format!("read {n} secrets"));
    let counted = backup::write(
        &store,
        &keyring.keks(),
        store.engine_name(),
        &mut copy,
        &shown,
    )
    .await;
    store.close().await;
    let read = counted?;
    bar.set_message(format!("writing {} secrets", read.secrets));
    let keks = args.keys.keks()?;
    let restored = restore_into(&target, keks, std::io::Cursor::new(copy), args.force).await;
    bar.finish_and_clear();
    let counts = restored?;
    if counts != read {
        return Err(format!(
            "the target took {} of {}",
            backup::describe(&counts),
            backup::describe(&read)
        ));
    }
    println!("migrated {}", backup::describe(&counts));
    Ok(())
}

/// Refuses a migration whose target is its source, or (both embedded) holds
/// or lies in the source's data dir: restoring into it would write over
/// what is read. (A nats store keeps nothing in its data dir but keys.)
fn refuse_same_store(source: &StoreConfig, target: &StoreConfig) -> Result<(), String> {
    if target.engine == Engine::Sqlite && source.engine == Engine::Sqlite {
        let (from, to) = (&source.data_dir, &target.data_dir);
        crate::fsutil::refuse_in_data_dir(to, from, "--to-data-dir")?;
        crate::fsutil::refuse_in_data_dir(from, to, "the source's data dir")?;
    }
    if target.engine == Engine::Nats
        && source.engine == Engine::Nats
        && target.nats_url == source.nats_url
        && target.nats_bucket == source.nats_bucket
    {
        return Err("the target is the source's own nats bucket".into());
    }
    Ok(())
}

/// A spinner with a count on stderr when it is a terminal.
fn progress() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// A backup beside a running server yields the CPU to it.
fn lower_priority() {
    // SAFETY: setpriority on this process only; failure leaves it as is.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}
