//! The header and keep-alive timeouts, kept by one thread for every
//! connection. Each connection notes its phase (idle, sending a request
//! head, being answered) as it reads, is called and writes; four times a
//! second the watchdog cuts off a connection that has sent a head for
//! longer than the header timeout, or sat idle that long. No timer is armed
//! per request: a tokio timer per request (hyper's own header timeout) cost
//! about 2,000 instructions a GET in the shard's park, 3.4% (callgrind).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

/// How often the watchdog looks; a timeout fires up to two of these late.
const TICK: Duration = Duration::from_millis(250);

/// Why a connection was cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cut {
    /// Part of a request head (or a TLS handshake) had arrived.
    MidRequest,
    /// Nothing was under way.
    Idle,
}

/// One connection's phase, and since when (in watchdog ticks).
pub(super) struct Progress {
    phase: AtomicU8,
    since: AtomicU64,
    /// 0 while serving; else 1 + the `Cut` as a number.
    cut: AtomicU8,
    waker: Mutex<Option<Waker>>,
    clock: Arc<AtomicU64>,
}

impl Progress {
    fn now(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    /// Bytes arrived: while idle, a new request has begun.
    pub(super) fn read(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.since.store(self.now(), Ordering::Relaxed);
            self.phase.store(HEAD, Ordering::Relaxed);
        }
    }

    /// A request head was parsed: the request is being answered, which
    /// the body timeout and the handlers bound.
    pub(super) fn called(&self) {
        self.phase.store(BUSY, Ordering::Relaxed);
    }

    /// An answer went out: idle until the next request's first byte.
    pub(super) fn wrote(&self) {
        if self.phase.load(Ordering::Relaxed) != IDLE {
            self.since.store(self.now(), Ordering::Relaxed);
            self.phase.store(IDLE, Ordering::Relaxed);
        }
    }

    /// Why the watchdog cut the connection off, if it did.
    pub(super) fn cut(&self) -> Option<Cut> {
        match self.cut.load(Ordering::Acquire) {
            0 => None,
            1 => Some(Cut::MidRequest),
            _ => Some(Cut::Idle),
        }
    }

    /// Resolves once the watchdog cuts the connection off.
    pub(super) async fn cut_off(&self) -> Cut {
        std::future::poll_fn(|cx| {
            if let Some(cut) = self.cut() {
                return Poll::Ready(cut);
            }
            *self.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
            // Cut between the check and the registration: seen now.
            self.cut().map_or(Poll::Pending, Poll::Ready)
        })
        .await
    }

    fn check(&self, now: u64, limit: u64) {
        let phase = self.phase.load(Ordering::Relaxed);
        // `since` is a tick begun up to one tick before the event, so one
        // tick more: never cut before the full timeout.
        if phase == BUSY || now.saturating_sub(self.since.load(Ordering::Relaxed)) <= limit {
            return;
        }
        let cut = if phase == HEAD {
            Cut::MidRequest
        } else {
            Cut::Idle
        };
        self.cut.store(1 + cut as u8, Ordering::Release);
        if let Some(waker) = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            waker.wake();
        }
    }
}

/// The connections the watchdog keeps.
pub(super) struct Watchdog {
    conns: Mutex<Vec<Weak<Progress>>>,
    clock: Arc<AtomicU64>,
    stopped: AtomicBool,
}

impl Watchdog {
    /// Starts the watchdog thread; `timeout` is the header and keep-alive
    /// limit. It runs until `stop`.
    pub(super) fn start(timeout: Duration) -> std::io::Result<Arc<Watchdog>> {
        let watchdog = Arc::new(Watchdog {
            conns: Mutex::default(),
            clock: Arc::default(),
            stopped: AtomicBool::new(false),
        });
        let limit = (timeout.as_millis() / TICK.as_millis()).max(1) as u64;
        let kept = watchdog.clone();
        std::thread::Builder::new()
            .name("http-watchdog".into())
            .spawn(move || {
                let started = Instant::now();
                while !kept.stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    let now = (started.elapsed().as_millis() / TICK.as_millis()) as u64;
                    kept.clock.store(now, Ordering::Relaxed);
                    let mut conns = kept.conns.lock().unwrap_or_else(|p| p.into_inner());
                    conns.retain(|weak| match weak.upgrade() {
                        Some(progress) => {
                            progress.check(now, limit);
                            true
                        }
                        None => false,
                    });
                }
            })?;
        Ok(watchdog)
    }

    /// A new connection's progress, idle from now.
    pub(super) fn watch(&self) -> Arc<Progress> {
        let progress = Arc::new(Progress {
            phase: AtomicU8::new(IDLE),
            since: AtomicU64::new(self.clock.load(Ordering::Relaxed)),
            cut: AtomicU8::new(0),
            waker: Mutex::new(None),
            clock: self.clock.clone(),
        });
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&progress));
        progress
    }

    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// The 408 a plain-HTTP client cut off mid-request gets.
pub(super) const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncache-control: no-store\r\nconnection: close\r\ncontent-length: 27\r\n\r\n{\"error\":\"request timeout\"}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_408_is_one_well_formed_json_answer() {
        let text = std::str::from_utf8(REQUEST_TIMEOUT).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(body).unwrap(),
            serde_json::json!({"error": "request timeout"})
        );
    }

    fn progress(clock: &Arc<AtomicU64>) -> Progress {
        Progress {
            phase: AtomicU8::new(IDLE),
            since: AtomicU64::new(clock.load(Ordering::Relaxed)),
            cut: AtomicU8::new(0),
            waker: Mutex::new(None),
            clock: clock.clone(),
        }
    }

    #[test]
    fn a_head_too_slow_is_cut_mid_request_an_idle_connection_as_idle_and_a_busy_one_never() {
        let clock = Arc::new(AtomicU64::new(0));
        let slow = progress(&clock);
        slow.read();
        slow.check(4, 4);
        assert_eq!(slow.cut(), None);
        slow.check(5, 4);
        assert_eq!(slow.cut(), Some(Cut::MidRequest));

        let idle = progress(&clock);
        idle.check(5, 4);
        assert_eq!(idle.cut(), Some(Cut::Idle));

        let busy = progress(&clock);
        busy.read();
        busy.called();
        busy.check(100, 4);
        assert_eq!(busy.cut(), None);
        // Answered at tick 100: idle from then, not from tick 0.
        clock.store(100, Ordering::Relaxed);
        busy.wrote();
        busy.check(104, 4);
        assert_eq!(busy.cut(), None);
        busy.check(105, 4);
        assert_eq!(busy.cut(), Some(Cut::Idle));
    }
}
