//! The change stream's events: one per change of a secret (`put`, `delete`,
//! `undelete`, `destroy`, `expire`), numbered in commit order, never with a
//! value. An engine keeps them for a bounded window (`EventWindow`) so a
//! watcher can resume after the last one it saw, and hands each new one to
//! the process's `Hub`, which every watcher of this process subscribes to.

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::model::{Change, Effect, Head, VersionAction};
use crate::types::TenantId;

/// One change, as watchers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its place in commit order: a watcher resumes after it.
    pub id: u64,
    pub tenant: TenantId,
    pub key: String,
    pub version: u64,
    pub action: &'static str,
    /// When the change was made (unix ms).
    pub at: i64,
}

/// An event before the engine numbered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub key: String,
    pub version: u64,
    pub action: &'static str,
    pub at: i64,
}

impl Draft {
    /// The event of `change`, which `decide` turned into `effect` against
    /// `head`.
    pub fn of(key: &str, change: &Change, effect: &Effect, head: Option<&Head>, at: i64) -> Draft {
        let version = match effect {
            Effect::Put { version, .. } | Effect::SetDeleted { version, .. } => *version,
            // The newest version a per-version change touched.
            Effect::Marks { marks, .. } => marks.iter().map(|(v, _)| *v).max().unwrap_or(0),
            Effect::Destroy | Effect::Settings { .. } => head.map_or(0, |h| h.version),
        };
        Draft {
            key: key.to_owned(),
            version,
            action: action_name(change, effect),
            at,
        }
    }

    pub fn numbered(self, id: u64, tenant: TenantId) -> Event {
        Event {
            id,
            tenant,
            key: self.key,
            version: self.version,
            action: self.action,
            at: self.at,
        }
    }
}

/// A change's action as a watcher sees the key: a per-version change that
/// leaves the current version as it was changes only the key's metadata.
fn action_name(change: &Change, effect: &Effect) -> &'static str {
    if let Effect::Marks { current: None, .. } = effect {
        return "metadata";
    }
    match change {
        Change::Put { .. } => "put",
        Change::Delete => "delete",
        Change::Undelete => "undelete",
        Change::Destroy => "destroy",
        Change::Expire { .. } => "expire",
        Change::Versions { action, .. } => match action {
            VersionAction::Delete => "delete",
            VersionAction::Undelete => "undelete",
            VersionAction::Destroy => "destroy",
        },
        Change::Settings(_) => "metadata",
    }
}

/// The action names an engine may read back from storage.
pub fn action_from(name: &str) -> Option<&'static str> {
    ["put", "delete", "undelete", "destroy", "expire", "metadata"]
        .into_iter()
        .find(|a| *a == name)
}

/// The meta value holding the highest event id pruned so far (embedded
/// engine): a watcher resuming from before it has missed events.
pub const PRUNED_THROUGH: &str = "events_pruned_through";

/// How long events are kept for resuming: the newest `keep`, none older
/// than `max_age_ms`. A watcher that resumes from before this answers 410.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventWindow {
    pub keep: u64,
    pub max_age_ms: i64,
}

impl Default for EventWindow {
    fn default() -> Self {
        EventWindow {
            keep: 100_000,
            max_age_ms: 24 * 3600 * 1000,
        }
    }
}

/// New events waiting in the live feed for a watcher that has not taken
/// them; one that falls further behind is dropped (it resumes by id).
const LIVE_BACKLOG: usize = 4096;

/// The process's live feed of new events, and (embedded engine) the events
/// of the batch being committed, published once it is durable.
pub struct Hub {
    live: broadcast::Sender<Arc<Event>>,
    staged: Mutex<Vec<Event>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            live: broadcast::channel(LIVE_BACKLOG).0,
            staged: Mutex::new(Vec::new()),
        }
    }
}

impl Hub {
    /// Every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    pub fn publish(&self, event: Event) {
        // No receiver is no error: nobody watches.
        let _ = self.live.send(Arc::new(event));
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds an event of the batch being committed.
    pub fn stage(&self, event: Event) {
        self.staged().push(event);
    }

    /// How many are staged: a job that fails gives back what it staged.
    pub fn mark(&self) -> usize {
        self.staged().len()
    }

    pub fn rewind(&self, mark: usize) {
        self.staged().truncate(mark);
    }

    /// The batch committed (publish its events) or did not (drop them).
    pub fn end_batch(&self, committed: bool) {
        let events = std::mem::take(&mut *self.staged());
        if committed {
            for event in events {
                self.publish(event);
            }
        }
    }
}
