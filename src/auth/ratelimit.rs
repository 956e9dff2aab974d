//! The per-credential request limit (`--rate-limit`): a token bucket per
//! authenticated principal (tenant and subject), kept by each gateway on
//! its own. Also the token bucket the failed-authentication limit keeps per
//! client address.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Principals tracked at most; past it, buckets that have refilled are
/// forgotten (they hold nothing a fresh bucket would not).
const MAX_TRACKED: usize = 100_000;

/// A bucket's refill rate and size.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// The tokens in one bucket.
#[derive(Clone, Copy, Debug)]
pub struct Tokens {
    pub tokens: f64,
    at: Instant,
}

impl Tokens {
    pub fn full(rate: Rate, now: Instant) -> Tokens {
        Tokens {
            tokens: rate.burst,
            at: now,
        }
    }

    pub fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.at = now;
    }

    pub fn is_full(&self, rate: Rate) -> bool {
        self.tokens >= rate.burst
    }
}

/// Requests allowed per principal; `None` from `new` when the limit is off.
pub struct RateLimit {
    rate: Rate,
    /// Keyed by `tenant NUL subject`.
    buckets: Mutex<HashMap<String, Tokens>>,
}

impl RateLimit {
    pub fn new(per_second: u32, burst: u32) -> Option<RateLimit> {
        (per_second > 0).then(|| RateLimit {
            rate: Rate {
                per_second: f64::from(per_second),
                burst: f64::from(burst.max(1)),
            },
            buckets: Mutex::default(),
        })
    }

    /// Takes a token for the principal, or says how long until one is due.
    pub fn admit(&self, tenant: &str, subject: &str) -> Result<(), Duration> {
        thread_local! {
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        KEY.with_borrow_mut(|key| {
            key.clear();
            key.push_str(tenant);
            key.push('\0');
            key.push_str(subject);
            self.admit_key(key)
        })
    }

    fn admit_key(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let rate = self.rate;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= MAX_TRACKED {
            // Forget the buckets that refilled (they hold nothing a new one
            // would not); if every one is in use, forget them all rather
            // than grow: a flood of new principals resets the others' limits.
            buckets.retain(|_, b| {
                b.refill(rate, now);
                !b.is_full(rate)
            });
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let bucket = match buckets.get_mut(key) {
            Some(bucket) => bucket,
            None => buckets
                .entry(key.to_owned())
                .or_insert_with(|| Tokens::full(rate, now)),
        };
        bucket.refill(self.rate, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64(
            (1.0 - bucket.tokens) / self.rate.per_second,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_gets_its_burst_then_waits_and_others_are_unaffected() {
        let limit = RateLimit::new(1, 3).unwrap();
        for _ in 0..3 {
            limit.admit("t", "apikey:a").unwrap();
        }
        let wait = limit.admit("t", "apikey:a").unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        limit.admit("t", "apikey:b").unwrap();
        limit.admit("u", "apikey:a").unwrap();
    }

    #[test]
    fn zero_turns_the_limit_off() {
        assert!(RateLimit::new(0, 10).is_none());
    }
}
