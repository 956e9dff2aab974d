//! The embedded store's read cache: the current sealed version of recently
//! read keys, so a GET of a hot key skips SQLite (whose read transaction and
//! WAL locks cost more than the lookup itself). Values stay sealed here, as
//! on disk; only the database file's owner process writes secrets, so every
//! change passes through `invalidate`.
//!
//! A read that missed may only fill the cache if no change was committed
//! since it started (`epoch`): the writer thread invalidates after COMMIT
//! and before answering, so a read that raced a change can never leave the
//! older version behind, and a GET that starts after a write was
//! acknowledged never sees what it replaced.

use std::collections::HashMap;
use std::sync::Mutex;

use super::StoredVersion;

/// Entries kept at most; when full the cache starts over (no bookkeeping
/// per hit). At about 200 bytes each this bounds it near 2 MB.
const CAPACITY: usize = 8192;

#[derive(Default)]
pub(super) struct ReadCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bumped by every invalidation.
    epoch: u64,
    len: usize,
    /// tenant → key → current version.
    tenants: HashMap<String, HashMap<String, StoredVersion>>,
}

impl ReadCache {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached current version, or the epoch a read must pass to `fill`.
    pub(super) fn get(&self, tenant: &str, key: &str) -> Result<StoredVersion, u64> {
        let state = self.state();
        state
            .tenants
            .get(tenant)
            .and_then(|keys| keys.get(key))
            .cloned()
            .ok_or(state.epoch)
    }

    /// Remembers what a read found, unless a change committed since the
    /// read began (`epoch` from `get`).
    pub(super) fn fill(&self, epoch: u64, tenant: &str, key: &str, found: &StoredVersion) {
        let mut state = self.state();
        if state.epoch != epoch {
            return;
        }
        if state.len >= CAPACITY {
            state.tenants.clear();
            state.len = 0;
        }
        let keys = match state.tenants.get_mut(tenant) {
            Some(keys) => keys,
            None => state.tenants.entry(tenant.to_owned()).or_default(),
        };
        if keys.insert(key.to_owned(), found.clone()).is_none() {
            state.len += 1;
        }
    }

    /// Forgets `key`; called for every change, after its COMMIT.
    pub(super) fn invalidate(&self, tenant: &str, key: &str) {
        let mut state = self.state();
        state.epoch += 1;
        if let Some(keys) = state.tenants.get_mut(tenant) {
            if keys.remove(key).is_some() {
                state.len -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(version: u64) -> StoredVersion {
        StoredVersion {
            version,
            created_at: 0,
            sealed: vec![version as u8],
        }
    }

    #[test]
    fn a_read_that_raced_a_change_does_not_fill() {
        let cache = ReadCache::default();
        let epoch = cache.get("t", "k").unwrap_err();
        cache.invalidate("t", "k"); // a change commits while the read runs
        cache.fill(epoch, "t", "k", &v(1));
        assert!(cache.get("t", "k").is_err());

        let epoch = cache.get("t", "k").unwrap_err();
        cache.fill(epoch, "t", "k", &v(2));
        assert_eq!(cache.get("t", "k").unwrap().version, 2);
        assert!(cache.get("other", "k").is_err());
        cache.invalidate("t", "k");
        assert!(cache.get("t", "k").is_err());
    }

    #[test]
    fn stays_within_capacity() {
        let cache = ReadCache::default();
        for i in 0..CAPACITY + 10 {
            let epoch = cache.get("t", &i.to_string()).unwrap_err();
            cache.fill(epoch, "t", &i.to_string(), &v(1));
        }
        let state = cache.state();
        assert!(state.len <= CAPACITY);
        assert_eq!(
            state.len,
            state.tenants.values().map(HashMap::len).sum::<usize>()
        );
    }
}
