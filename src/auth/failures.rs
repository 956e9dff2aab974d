//! The failed-authentication limit: a token bucket per client address that
//! only failed authentications drain. While an address's bucket is empty its
//! requests are refused (429) before their credential is checked, so a
//! guessing flood learns nothing and is slowed; those refusals are counted,
//! not logged one by one, and `take_throttled` hands the counts to one
//! summary line per address per interval.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::ratelimit::{Rate, Tokens};

/// Addresses tracked at most; past it, full buckets are forgotten first and
/// then new addresses go untracked rather than grow memory.
const MAX_TRACKED: usize = 65_536;

struct Bucket {
    tokens: Tokens,
    /// Requests refused since the last `take_throttled`.
    throttled: u64,
}

/// What a limit counts by: a client address (IPv6 by /64), or a
/// credential's tenant and subject (refusals after authentication, which
/// must not lock out everyone behind one proxy's address).
pub trait LimitKey: Hash + Eq + Ord + Clone {
    /// The key this one is counted under.
    fn counted(&self) -> Self;
}

impl LimitKey for IpAddr {
    fn counted(&self) -> Self {
        client_key(*self)
    }
}

impl LimitKey for (String, String) {
    fn counted(&self) -> Self {
        self.clone()
    }
}

/// Failures allowed per key (a client address by default): `per_second`
/// on average, `burst` at once. A `per_second` of 0 turns the limit off.
pub struct FailureLimit<K: LimitKey = IpAddr> {
    rate: Rate,
    state: Mutex<State<K>>,
    /// The number of tracked addresses, read without the lock: while no
    /// address has failed, `admit` (on every authenticated request) takes
    /// no lock.
    tracked: AtomicUsize,
}

struct State<K> {
    buckets: HashMap<K, Bucket>,
    /// When a full table was last swept: at most once a second, so a flood
    /// of new addresses cannot make every failure scan the table.
    swept: Option<Instant>,
}

impl<K> Default for State<K> {
    fn default() -> Self {
        State {
            buckets: HashMap::new(),
            swept: None,
        }
    }
}

/// What `admit` decided for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The address has not failed lately: check the credential.
    Untracked,
    /// A token is held for the request until `settle`, so requests in
    /// flight at once cannot overrun the budget.
    Reserved,
    /// Over the limit: answer 429 without checking the credential.
    Refused,
}

/// IPv6 clients are limited per /64, the block one host usually holds, so
/// one host cannot spread a flood over its addresses.
fn client_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked")),
        v4 => v4,
    }
}

impl<K: LimitKey> FailureLimit<K> {
    pub fn new(per_second: u32, burst: u32) -> FailureLimit<K> {
        FailureLimit {
            rate: Rate {
                per_second: f64::from(per_second),
                burst: f64::from(burst.max(1)),
            },
            state: Mutex::new(State::default()),
            tracked: AtomicUsize::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a request from `addr` may have its credential checked; a
    /// refusal is counted for the summary. Pass the answer to `settle`.
    pub fn admit(&self, addr: &K) -> Admission {
        if self.rate.per_second == 0.0 || self.tracked.load(Ordering::Relaxed) == 0 {
            return Admission::Untracked;
        }
        let now = Instant::now();
        let mut state = self.state();
        let Some(bucket) = state.buckets.get_mut(&addr.counted()) else {
            return Admission::Untracked;
        };
        bucket.tokens.refill(self.rate, now);
        if bucket.tokens.tokens >= 1.0 {
            bucket.tokens.tokens -= 1.0;
            return Admission::Reserved;
        }
        bucket.throttled += 1;
        Admission::Refused
    }

    /// Records how the admitted request's authentication went: a failure
    /// spends a token (the one reserved, if any); anything else gives a
    /// reserved token back.
    pub fn settle(&self, addr: &K, admission: Admission, failed: bool) {
        if self.rate.per_second == 0.0 {
            return;
        }
        match (admission, failed) {
            (Admission::Reserved, false) => {
                if let Some(bucket) = self.state().buckets.get_mut(&addr.counted()) {
                    bucket.tokens.tokens = (bucket.tokens.tokens + 1.0).min(self.rate.burst);
                }
            }
            (Admission::Untracked, true) => self.first_failure(addr),
            _ => {}
        }
    }

    /// Whether the key `key` makes has spent its budget: its request is
    /// then refused, and counted for the summary. Reserves nothing (for a
    /// limit that only `charge` spends); the key is made only while some
    /// key is tracked, so the common case allocates nothing.
    pub fn exhausted_with(&self, key: impl FnOnce() -> K) -> bool {
        if self.rate.per_second == 0.0 || self.tracked.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let key = key();
        let mut state = self.state();
        let Some(bucket) = state.buckets.get_mut(&key.counted()) else {
            return false;
        };
        bucket.tokens.refill(self.rate, Instant::now());
        if bucket.tokens.tokens >= 1.0 {
            return false;
        }
        bucket.throttled += 1;
        true
    }

    /// Counts a refusal after authentication (a 403) as a failure of
    /// `addr`'s: a credential that keeps asking for what it may not have
    /// is slowed and summarised like one that keeps failing to sign in.
    pub fn charge(&self, addr: &K) {
        if self.rate.per_second == 0.0 {
            return;
        }
        // A bucket there or not, `first_failure` spends one of its tokens.
        self.first_failure(addr);
    }

    /// A failure from an address with no bucket (or one that refilled).
    fn first_failure(&self, addr: &K) {
        let now = Instant::now();
        let key = addr.counted();
        let mut state = self.state();
        let state = &mut *state;
        if state.buckets.len() >= MAX_TRACKED && !state.buckets.contains_key(&key) {
            if state
                .swept
                .is_some_and(|at| now.duration_since(at).as_secs() < 1)
            {
                return;
            }
            state.swept = Some(now);
            state.buckets.retain(|_, b| {
                b.tokens.refill(self.rate, now);
                !b.tokens.is_full(self.rate) || b.throttled > 0
            });
            if state.buckets.len() >= MAX_TRACKED {
                return;
            }
        }
        let bucket = state.buckets.entry(key).or_insert(Bucket {
            tokens: Tokens::full(self.rate, now),
            throttled: 0,
        });
        bucket.tokens.refill(self.rate, now);
        bucket.tokens.tokens = (bucket.tokens.tokens - 1.0).max(0.0);
        self.tracked.store(state.buckets.len(), Ordering::Relaxed);
    }

    /// The refusals counted since the last call, per address (IPv6 as its
    /// /64); addresses whose bucket has refilled are forgotten.
    pub fn take_throttled(&self) -> Vec<(K, u64)> {
        let now = Instant::now();
        let mut taken = Vec::new();
        let mut state = self.state();
        state.buckets.retain(|addr, b| {
            if b.throttled > 0 {
                taken.push((addr.clone(), std::mem::take(&mut b.throttled)));
            }
            b.tokens.refill(self.rate, now);
            !b.tokens.is_full(self.rate)
        });
        self.tracked.store(state.buckets.len(), Ordering::Relaxed);
        drop(state);
        taken.sort();
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_address_is_refused_once_its_failures_use_up_the_burst() {
        // So slow a refill that the test's own time cannot add a token.
        let limit = FailureLimit::new(1, 3);
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            let admitted = limit.admit(&a);
            assert_ne!(admitted, Admission::Refused);
            limit.settle(&a, admitted, true);
        }
        assert_eq!(limit.admit(&a), Admission::Refused);
        assert_eq!(limit.admit(&a), Admission::Refused);
        // Another address is not affected.
        assert_eq!(limit.admit(&ip("192.0.2.2")), Admission::Untracked);
        assert_eq!(limit.take_throttled(), vec![(a, 2)]);
        // Counted once: the next summary starts from zero.
        assert_eq!(limit.take_throttled(), vec![]);
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let limit = FailureLimit::new(1000, 1);
        let a = ip("192.0.2.1");
        limit.settle(&a, Admission::Untracked, true);
        assert_eq!(limit.admit(&a), Admission::Refused);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(limit.admit(&a), Admission::Reserved);
    }

    #[test]
    fn an_ipv6_host_is_limited_per_64_and_a_mapped_v4_as_v4() {
        let limit = FailureLimit::new(1, 1);
        limit.settle(&ip("2001:db8:1:2::1"), Admission::Untracked, true);
        assert_eq!(limit.admit(&ip("2001:db8:1:2:ffff::9")), Admission::Refused);
        assert_eq!(limit.admit(&ip("2001:db8:1:3::1")), Admission::Untracked);
        limit.settle(&ip("::ffff:192.0.2.7"), Admission::Untracked, true);
        assert_eq!(limit.admit(&ip("192.0.2.7")), Admission::Refused);
        let taken = limit.take_throttled();
        assert_eq!(taken, vec![(ip("192.0.2.7"), 1), (ip("2001:db8:1:2::"), 1)]);
    }

    #[test]
    fn requests_in_flight_at_once_cannot_overrun_the_budget() {
        let limit = FailureLimit::new(1, 3);
        let a = ip("192.0.2.1");
        limit.settle(&a, Admission::Untracked, true);
        // Two tokens left: two requests at once hold them, a third waits.
        let (one, two) = (limit.admit(&a), limit.admit(&a));
        assert_eq!((one, two), (Admission::Reserved, Admission::Reserved));
        assert_eq!(limit.admit(&a), Admission::Refused);
        // One succeeds and gives its token back; the other failed.
        limit.settle(&a, one, false);
        limit.settle(&a, two, true);
        assert_eq!(limit.admit(&a), Admission::Reserved);
        assert_eq!(limit.admit(&a), Admission::Refused);
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limit = FailureLimit::new(0, 1);
        let a = ip("192.0.2.1");
        for _ in 0..100 {
            limit.settle(&a, Admission::Untracked, true);
        }
        assert_eq!(limit.admit(&a), Admission::Untracked);
        assert_eq!(limit.take_throttled(), vec![]);
    }

    #[test]
    fn tracked_addresses_are_bounded() {
        let limit = FailureLimit::new(1, 2);
        for i in 0..(MAX_TRACKED as u32 + 100) {
            limit.settle(&IpAddr::from(i.to_be_bytes()), Admission::Untracked, true);
        }
        assert!(limit.state().buckets.len() <= MAX_TRACKED);
    }
}
