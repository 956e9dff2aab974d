//! The read cache: the current sealed version of recently read keys, so a
//! GET of a hot key skips SQLite (whose read transaction and WAL locks cost
//! more than the lookup itself) or, on a nats gateway (`nats/cache.rs`), the
//! round trip to the stream leader. Values stay sealed here, as on disk.
//! Every change passes through `invalidate`: on sqlite the owner process
//! makes them all; on nats the gateway's watch of the bucket reports them.
//!
//! A read that missed may only fill the cache if no change was committed
//! since it started (`epoch`): the writer thread invalidates after COMMIT
//! and before answering, so a read that raced a change can never leave the
//! older version behind, and a GET that starts after a write was
//! acknowledged never sees what it replaced.
//!
//! A key is admitted on its second miss, not its first (a doorkeeper, as in
//! TinyLFU): reads spread over far more keys than the cache holds would
//! otherwise replace an entry on every miss, paying allocations for entries
//! nobody reads again.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use super::StoredVersion;

/// Entries kept at most; when full the cache starts over (no bookkeeping
/// per hit). At about 200 bytes each this bounds it near 2 MB.
const CAPACITY: usize = 8192;
/// Bits of the doorkeeper (128 KiB, allocated at the first miss). It starts
/// over after `SEEN_BITS / 8` first sightings, so at most an eighth of its
/// bits are set and a key seen once passes for seen twice rarely.
const SEEN_BITS: usize = 1 << 20;

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
    /// The doorkeeper: one bit per hash of the keys that missed once.
    seen: Vec<u64>,
    seen_count: usize,
    hasher: std::hash::RandomState,
}

impl State {
    /// Whether `key` missed before (since the doorkeeper last started
    /// over); remembers that it has now.
    fn seen_before(&mut self, tenant: &str, key: &str) -> bool {
        if self.seen.is_empty() {
            self.seen = vec![0; SEEN_BITS / 64];
        }
        let hash = self.hasher.hash_one((tenant, key)) as usize % SEEN_BITS;
        let (word, bit) = (hash / 64, 1u64 << (hash % 64));
        if self.seen[word] & bit != 0 {
            return true;
        }
        self.seen[word] |= bit;
        self.seen_count += 1;
        if self.seen_count >= SEEN_BITS / 8 {
            self.seen.fill(0);
            self.seen_count = 0;
        }
        false
    }
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

    /// The epoch a read must pass to `fill` (a hit that lacked what the
    /// read wanted).
    pub(super) fn epoch(&self) -> u64 {
        self.state().epoch
    }

    /// Remembers what a read found, unless a change committed since the
    /// read began (`epoch` from `get`), or the key missed for the first time.
    pub(super) fn fill(&self, epoch: u64, tenant: &str, key: &str, found: &StoredVersion) {
        let mut state = self.state();
        if state.epoch != epoch || !state.seen_before(tenant, key) {
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

    /// Forgets every key; reads under way cannot fill.
    pub(super) fn clear(&self) {
        let mut state = self.state();
        state.epoch += 1;
        state.tenants.clear();
        state.len = 0;
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
            expires_at: None,
            kv: false,
            settings: None,
        }
    }

    /// A read that missed, as `SqliteBackend::get` makes it.
    fn read(cache: &ReadCache, key: &str, found: u64) {
        if let Err(epoch) = cache.get("t", key) {
            cache.fill(epoch, "t", key, &v(found));
        }
    }

    #[test]
    fn a_key_is_kept_from_its_second_miss() {
        let cache = ReadCache::default();
        read(&cache, "k", 1);
        assert!(cache.get("t", "k").is_err(), "kept at its first miss");
        read(&cache, "k", 1);
        assert_eq!(cache.get("t", "k").unwrap().version, 1);
        // Keys read once each, many more than the cache holds, neither
        // fill it nor push out what it holds.
        for i in 0..4 * CAPACITY {
            read(&cache, &i.to_string(), 1);
        }
        assert!(cache.state().len < CAPACITY / 4);
        assert_eq!(cache.get("t", "k").unwrap().version, 1);
    }

    #[test]
    fn a_read_that_raced_a_change_does_not_fill() {
        let cache = ReadCache::default();
        read(&cache, "k", 1); // seen once: the next miss fills
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
            read(&cache, &i.to_string(), 1);
            read(&cache, &i.to_string(), 1);
            assert!(cache.get("t", &i.to_string()).is_ok());
        }
        let state = cache.state();
        assert!(state.len <= CAPACITY);
        assert_eq!(
            state.len,
            state.tenants.values().map(HashMap::len).sum::<usize>()
        );
    }
}
