//! Process-wide event counters: a leaf any module increments and `metrics`
//! renders. Process-wide because some count before any state exists (the
//! connection layer serves while start-up waits for the store).

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonic count of events.
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_n(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Counter {
        Counter::new()
    }
}

/// Connections closed at once: the cap was reached and none was idle.
pub static CONNECTIONS_REFUSED: Counter = Counter::new();
/// Idle connections closed to make room at the cap.
pub static CONNECTIONS_EVICTED: Counter = Counter::new();
/// Header, keep-alive or handshake timeouts.
pub static CONNECTIONS_TIMED_OUT: Counter = Counter::new();
/// Connections cut off because their client stopped taking an answer.
pub static CONNECTIONS_STALLED: Counter = Counter::new();
pub static TLS_HANDSHAKE_FAILURES: Counter = Counter::new();
/// Lapsed secrets the expiry sweep marked deleted.
pub static SECRETS_EXPIRED: Counter = Counter::new();
/// Expired login tokens the sweep removed.
pub static TOKENS_SWEPT: Counter = Counter::new();
/// Login tokens issued.
pub static TOKENS_ISSUED: Counter = Counter::new();
/// Reads of a current version a nats gateway answered from its cache, and
/// those it sent to the stream leader.
pub static GATEWAY_CACHE_HITS: Counter = Counter::new();
pub static GATEWAY_CACHE_MISSES: Counter = Counter::new();
/// Scheduled backups written, and those that failed.
pub static BACKUPS_WRITTEN: Counter = Counter::new();
pub static BACKUPS_FAILED: Counter = Counter::new();
