//! The failed-authentication limit: a token bucket per client address that
//! only failed authentications drain. While an address's bucket is empty its
//! requests are refused (429) before their credential is checked, so a
//! guessing flood learns nothing and is slowed; those refusals are counted,
//! not logged one by one, and `take_throttled` hands the counts to one
//! summary line per address per interval.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Addresses tracked at most; past it, full buckets are forgotten first and
/// then new addresses go untracked rather than grow memory.
const MAX_TRACKED: usize = 65_536;

struct Bucket {
    tokens: f64,
    at: Instant,
    /// Requests refused since the last `take_throttled`.
    throttled: u64,
}

/// Failed authentications allowed per client address: `per_second` on
/// average, `burst` at once. A `per_second` of 0 turns the limit off.
pub struct FailureLimit {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    /// The map's length, read without its lock: while no address has
    /// failed, `admit` (on every authenticated request) takes no lock.
    tracked: AtomicUsize,
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

impl Bucket {
    fn refill(&mut self, limit: &FailureLimit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        self.at = now;
    }
}

impl FailureLimit {
    pub fn new(per_second: u32, burst: u32) -> FailureLimit {
        FailureLimit {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
            tracked: AtomicUsize::new(0),
        }
    }

    fn buckets(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Bucket>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a request from `addr` may have its credential checked; a
    /// refusal is counted for the summary.
    pub fn admit(&self, addr: IpAddr) -> bool {
        if self.per_second == 0.0 || self.tracked.load(Ordering::Relaxed) == 0 {
            return true;
        }
        let now = Instant::now();
        let mut buckets = self.buckets();
        let Some(bucket) = buckets.get_mut(&client_key(addr)) else {
            return true;
        };
        bucket.refill(self, now);
        if bucket.tokens >= 1.0 {
            return true;
        }
        bucket.throttled += 1;
        false
    }

    /// Records a failed authentication from `addr`.
    pub fn failed(&self, addr: IpAddr) {
        if self.per_second == 0.0 {
            return;
        }
        let now = Instant::now();
        let mut buckets = self.buckets();
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&client_key(addr)) {
            buckets.retain(|_, b| {
                b.refill(self, now);
                b.tokens < self.burst || b.throttled > 0
            });
            if buckets.len() >= MAX_TRACKED {
                return;
            }
        }
        let bucket = buckets.entry(client_key(addr)).or_insert(Bucket {
            tokens: self.burst,
            at: now,
            throttled: 0,
        });
        bucket.refill(self, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        self.tracked.store(buckets.len(), Ordering::Relaxed);
    }

    /// The refusals counted since the last call, per address (IPv6 as its
    /// /64); addresses whose bucket has refilled are forgotten.
    pub fn take_throttled(&self) -> Vec<(IpAddr, u64)> {
        let now = Instant::now();
        let mut taken = Vec::new();
        let mut buckets = self.buckets();
        buckets.retain(|addr, b| {
            if b.throttled > 0 {
                taken.push((*addr, std::mem::take(&mut b.throttled)));
            }
            b.refill(self, now);
            b.tokens < self.burst
        });
        self.tracked.store(buckets.len(), Ordering::Relaxed);
        drop(buckets);
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
            assert!(limit.admit(a));
            limit.failed(a);
        }
        assert!(!limit.admit(a));
        assert!(!limit.admit(a));
        // Another address is not affected.
        assert!(limit.admit(ip("192.0.2.2")));
        assert_eq!(limit.take_throttled(), vec![(a, 2)]);
        // Counted once: the next summary starts from zero.
        assert_eq!(limit.take_throttled(), vec![]);
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let limit = FailureLimit::new(1000, 1);
        let a = ip("192.0.2.1");
        limit.failed(a);
        assert!(!limit.admit(a));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(limit.admit(a));
    }

    #[test]
    fn an_ipv6_host_is_limited_per_64_and_a_mapped_v4_as_v4() {
        let limit = FailureLimit::new(1, 1);
        limit.failed(ip("2001:db8:1:2::1"));
        assert!(!limit.admit(ip("2001:db8:1:2:ffff::9")));
        assert!(limit.admit(ip("2001:db8:1:3::1")));
        limit.failed(ip("::ffff:192.0.2.7"));
        assert!(!limit.admit(ip("192.0.2.7")));
        let taken = limit.take_throttled();
        assert_eq!(taken, vec![(ip("192.0.2.7"), 1), (ip("2001:db8:1:2::"), 1)]);
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limit = FailureLimit::new(0, 1);
        let a = ip("192.0.2.1");
        for _ in 0..100 {
            limit.failed(a);
        }
        assert!(limit.admit(a));
        assert_eq!(limit.take_throttled(), vec![]);
    }

    #[test]
    fn tracked_addresses_are_bounded() {
        let limit = FailureLimit::new(1, 2);
        for i in 0..(MAX_TRACKED as u32 + 100) {
            limit.failed(IpAddr::from(i.to_be_bytes()));
        }
        assert!(limit.buckets().len() <= MAX_TRACKED);
    }
}
