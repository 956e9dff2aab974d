//! The message each change writes on a secret's subject (`message`), and
//! the earlier messages it makes obsolete (`Erase`), which JetStream
//! erases once it is stored: the nats engine's side of the model's
//! effects (`secrets.rs` reads, decides and publishes).

use super::kv;
use super::records::{Annex, Op, Record};
use crate::store::engine::Observed;
use crate::store::model::{Change, Effect, Head, Mark};
use crate::store::StoreError;

/// The message that writes `effect`: its operation and payload.
pub(super) fn message(
    seen: &Observed,
    record: Option<Record>,
    effect: Effect,
    change: Change,
    now: i64,
) -> Result<(Op, Vec<u8>), StoreError> {
    // The current record, rewritten now; a key whose settings came before
    // any value has a version-0 record.
    let current = |record: Option<Record>, head: Option<&Head>| {
        let mut record = record
            .or_else(|| {
                head.filter(|h| h.version == 0)
                    .map(|h| empty_record(h.key_created_at, now))
            })
            .ok_or(StoreError::NotFound)?;
        record.written_at = now;
        Ok::<_, StoreError>(record)
    };
    // A message on a key keeps its operation unless it changes the head.
    let op_now = |head: Option<&Head>| match head {
        Some(h) if h.deleted => Op::Delete,
        _ => Op::Put,
    };
    // A deleted current version keeps the time it was deleted through
    // messages that restate it (its mark; the first marker's own time).
    let kept_mark = seen.head.as_ref().filter(|h| h.deleted).and_then(|h| {
        let r = record.as_ref()?;
        let first = Mark {
            deleted_at: Some(r.written_at),
            destroyed: r.destroyed,
            created_at: r.created_at,
            expiry_cleared: false,
        };
        Some(seen.marks.get(&h.version).copied().unwrap_or(first))
    });
    // The current version's mark as the message's operation leaves it.
    let settle = |record: &mut Record, op: Op, changed: Option<Mark>| {
        match (op, changed.or(kept_mark)) {
            (Op::Delete, Some(mark)) => record.annex.marks.insert(record.version, mark),
            _ => record.annex.marks.remove(&record.version),
        };
    };
    Ok(match (effect, change) {
        (
            Effect::Put {
                version,
                key_created_at,
                expires_at,
                kv,
                previous,
                prune_through,
            },
            Change::Put { sealed, .. },
        ) => {
            // The bucket's history prunes old versions; the marks of the
            // versions kept travel on.
            let mut marks = seen.marks.clone();
            // The previous version's own mark, if it kept one, knows when
            // it was deleted better than the head does.
            if let Some((v, mark)) = previous {
                marks.entry(v).or_insert(mark);
            }
            if let Some(through) = prune_through {
                marks.retain(|&v, _| v > through);
            }
            let settings = seen
                .head
                .as_ref()
                .map(|h| h.settings.clone())
                .unwrap_or_default();
            let record = Record {
                version,
                created_at: now,
                key_created_at,
                written_at: now,
                sealed,
                expires_at,
                kv,
                destroyed: false,
                annex: Annex {
                    settings,
                    marks,
                    // Never lower: a version once pruned stays so.
                    floor: seen.floor.max(prune_through.unwrap_or(0)),
                },
            };
            (Op::Put, record.encode())
        }
        // Brought back, a version keeps no expiry; soft deleted, the marker
        // keeps the one it lapsed at.
        // Deleted now (its marker's time is when), or back.
        (Effect::SetDeleted { deleted, .. }, _) => {
            let mut record = current(record, seen.head.as_ref())?;
            record.annex.marks.remove(&record.version);
            if deleted {
                (Op::Delete, record.encode())
            } else {
                record.expires_at = None;
                (Op::Put, record.encode())
            }
        }
        (Effect::Destroy, _) => (Op::Purge, Vec::new()),
        (
            Effect::Marks {
                marks,
                current: now_deleted,
            },
            _,
        ) => {
            let mut record = current(record, seen.head.as_ref())?;
            let mut op = op_now(seen.head.as_ref());
            let mut changed = None;
            for (v, mark) in marks {
                if v == record.version {
                    changed = Some(mark);
                    if mark.destroyed {
                        record.destroyed = true;
                        record.sealed = Vec::new();
                    }
                    match now_deleted {
                        Some(true) => op = Op::Delete,
                        Some(false) => {
                            op = Op::Put;
                            record.expires_at = None;
                        }
                        None => {}
                    }
                } else {
                    record.annex.marks.insert(v, mark);
                }
            }
            settle(&mut record, op, changed);
            (op, record.encode())
        }
        (Effect::Settings { settings, .. }, _) => {
            let mut record = match &seen.head {
                None => empty_record(now, now),
                head => current(record, head.as_ref())?,
            };
            record.annex.settings = settings;
            let op = match &seen.head {
                None => Op::Delete,
                head => op_now(head.as_ref()),
            };
            if seen.head.is_some() {
                settle(&mut record, op, None);
            }
            (op, record.encode())
        }
        (Effect::Put { .. }, _) => unreachable!("the model puts only for a put"),
    })
}

/// The record of a key that has settings and no version yet.
fn empty_record(key_created_at: i64, now: i64) -> Record {
    Record {
        version: 0,
        created_at: now,
        key_created_at,
        written_at: now,
        sealed: Vec::new(),
        expires_at: None,
        kv: false,
        destroyed: false,
        annex: Annex::default(),
    }
}

/// The messages a change makes obsolete.
#[derive(Default)]
pub(super) struct Erase {
    /// Every earlier message of this version (the new one restates it).
    superseded: Option<u64>,
    /// Those that hold a value of these versions.
    destroyed: Vec<u64>,
    /// Every message of a version up to this one.
    through: Option<u64>,
}

impl Erase {
    /// What must leave the stream once `effect`'s message is stored: the
    /// earlier messages of a version it restates (so a key holds about one
    /// message a version and its history keeps every retained version), a
    /// destroyed version's values, and the versions a key's own number
    /// prunes below the bucket's history (`history` messages a key).
    pub(super) fn after(effect: &Effect, seen: &Observed, history: u64) -> Erase {
        let current = seen.head.as_ref().map(|h| h.version);
        match effect {
            Effect::Marks { marks, .. } => Erase {
                superseded: current,
                destroyed: marks
                    .iter()
                    .filter(|(_, m)| m.destroyed)
                    .map(|(v, _)| *v)
                    .collect(),
                through: None,
            },
            Effect::SetDeleted { .. } | Effect::Settings { .. } => Erase {
                superseded: current,
                ..Erase::default()
            },
            Effect::Put {
                version,
                prune_through: Some(through),
                ..
            } if through + history > *version + 1 => Erase {
                through: Some(*through),
                ..Erase::default()
            },
            _ => Erase::default(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.superseded.is_none() && self.destroyed.is_empty() && self.through.is_none()
    }

    fn obsolete(&self, r: &Record) -> bool {
        self.superseded == Some(r.version)
            || (self.destroyed.contains(&r.version) && !r.sealed.is_empty())
            || self.through.is_some_and(|t| r.version <= t)
    }
}

/// Erases (JetStream overwrites them) the messages before `revision` that
/// `gone` names.
pub(super) async fn erase(
    store: &async_nats::jetstream::kv::Store,
    kv_key: &str,
    gone: &Erase,
    revision: u64,
) -> Result<(), StoreError> {
    for entry in kv::history(store, kv_key).await? {
        let obsolete = entry.record.as_ref().is_some_and(|r| gone.obsolete(r));
        if obsolete && entry.revision < revision {
            store
                .stream
                .delete_message(entry.revision)
                .await
                .map_err(|e| StoreError::Unavailable(format!("nats: erase a message: {e}")))?;
        }
    }
    Ok(())
}
