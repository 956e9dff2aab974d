//! Backup, restore and migration (DESIGN §4). A backup streams a store's
//! records into the file `format` describes; a restore reads the file
//! twice: once to check all of it (MAC, version, that the keyring holds
//! every KEK it needs) before anything is written, then to load it.
//! `migrate` is a backup held in memory and restored into another store.

pub mod format;
pub mod schedule;

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use crate::audit::AuditEntry;
use crate::crypto::{Keyring, MasterKeys};
use crate::store::dump::{not_empty, Dumped, LoadCounts};
use crate::store::{Store, Trail};

pub use format::FormatError;

/// One line for people: what a backup or restore held.
pub fn describe(counts: &LoadCounts) -> String {
    format!(
        "{} secrets ({} versions), {} data keys, {} API keys",
        counts.secrets, counts.versions, counts.deks, counts.apikeys
    )
}

/// Writes a backup of `store` to `out`, MAC'd under the active KEK, and
/// returns what it held.
/// `on_secret` hears the count of secrets written so far (progress).
pub async fn write(
    store: &Store,
    keks: &MasterKeys,
    source: &str,
    out: impl Write + Send,
    on_secret: &(dyn Fn(u64) + Send + Sync),
) -> Result<LoadCounts, String> {
    let head = crate::audit::start::recorded_summary(store)
        .await
        .map_err(|e| e.to_string())?;
    let mut writer = format::Writer::new(out, keks.active(), source, head)
        .map_err(|e| format!("cannot write the backup: {e}"))?;
    let mut counts = LoadCounts::default();
    store
        .dump(&mut |record: Dumped| {
            counts.count(&record);
            if matches!(record, Dumped::Secret(_)) && counts.secrets % 1000 == 0 {
                on_secret(counts.secrets);
            }
            writer
                .record(&record)
                .map_err(|e| format!("cannot write the backup: {e}"))
        })
        .await
        .map_err(|e| e.to_string())?;
    writer
        .finish()
        .map_err(|e| format!("cannot write the backup: {e}"))?;
    Ok(counts)
}

/// What a whole, checked backup holds.
pub struct Checked {
    pub counts: LoadCounts,
    pub audit_head: Option<String>,
    pub kek_id: String,
}

/// Reads all of a backup and checks it: the MAC, and that `keks` can
/// unwrap every data key in it. Writes nothing.
pub fn check(input: impl BufRead, keks: &MasterKeys) -> Result<Checked, String> {
    let mut reader = format::Reader::open(input, keks).map_err(|e| e.to_string())?;
    let mut counts = LoadCounts::default();
    while let Some(record) = reader.next_record().map_err(|e| e.to_string())? {
        if let Dumped::Dek { tenant, dek } = &record {
            keks.unwrap(tenant.as_str(), dek.id, &dek.wrapped)
                .map_err(|e| format!("the backup cannot be restored with this keyring: {e}"))?;
        }
        counts.count(&record);
    }
    Ok(Checked {
        counts,
        audit_head: reader.audit_head,
        kek_id: reader.kek_id.to_string(),
    })
}

/// Restores the backup in `input`, which `check` passed, into `store`
/// (opened with its `trail`); an empty store unless `force`. Appends a
/// chained `system.restore` line.
pub async fn restore<R>(
    store: &Store,
    trail: &Trail,
    keks: MasterKeys,
    (mut input, checked): (R, Checked),
    force: bool,
) -> Result<LoadCounts, String>
where
    R: Read + Seek + Send + 'static,
{
    let keyring = Keyring::new(keks, store.clone());
    if !force
        && (!store
            .all_deks()
            .await
            .map_err(|e| e.to_string())?
            .is_empty()
            || store.apikeys_exist().await.map_err(|e| e.to_string())?)
    {
        return Err(not_empty().to_string());
    }
    let audit_key = keyring
        .audit_key(true)
        .await
        .map_err(|e| e.to_string())?
        .expect("created when absent");
    crate::audit::start::start(trail, store, audit_key, false)
        .await
        .map_err(|e| e.to_string())?;
    let keks = keyring.keks();
    input
        .seek(SeekFrom::Start(0))
        .map_err(|e| format!("cannot read the backup: {e}"))?;
    let records = records(std::io::BufReader::new(input), keks)?;
    let line = AuditEntry {
        request_id: "restore".into(),
        principal: None,
        subject: Some("system".into()),
        action: "system.restore",
        key: None,
        status: 200,
        client: None,
    }
    .render_with_note(&format!(
        "backup under master key {}, {}; its audit head {}",
        checked.kek_id,
        describe(&checked.counts),
        checked.audit_head.as_deref().unwrap_or("none"),
    ));
    let counts = store
        .load(records, force, Some(line))
        .await
        .map_err(|e| e.to_string())?;
    trail.flush();
    Ok(counts)
}

/// The second reading: records as the store loads them, the MAC checked
/// again at the end (an error there undoes an embedded load).
fn records(
    input: impl BufRead + Send + 'static,
    keks: Arc<MasterKeys>,
) -> Result<crate::store::dump::Records, String> {
    let mut reader = format::Reader::open(input, &keks).map_err(|e| e.to_string())?;
    let mut failed = false;
    Ok(Box::new(std::iter::from_fn(move || {
        if failed {
            return None;
        }
        match reader.next_record() {
            Ok(record) => record.map(Ok),
            Err(e) => {
                failed = true;
                Some(Err(e.to_string()))
            }
        }
    })))
}
