//! The header, keep-alive and write timeouts, kept by one thread for every
//! connection. Each connection notes its phase (idle, sending a request
//! head, being answered) as it reads, is called and finishes its answers;
//! four times a second the watchdog cuts off a connection that has sent a
//! head for longer than the header timeout, sat idle that long, or owes a
//! client an answer the client has not taken for the write timeout. An
//! answer lasts until its body is done, so a `/watch` stream that a client
//! reads lives as long as it likes. No timer is armed per request: a tokio
//! timer per request (hyper's own header timeout) cost about 2,000
//! instructions a GET in the shard's park, 3.4% (callgrind).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

/// How often the watchdog looks; a timeout fires up to two of these late.
const TICK: Duration = Duration::from_millis(250);

/// Answers one connection tracks at once, and so HTTP/2's stream cap
/// (`conn::H2_MAX_STREAMS`); far more than HTTP/1.1's one.
pub(super) const SLOTS: usize = 32;

/// Why a connection was cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cut {
    /// Part of a request head (or a TLS handshake) had arrived.
    MidRequest,
    /// Nothing was under way.
    Idle,
    /// An answer had something to send that the client did not take (it
    /// stopped reading, or gave no HTTP/2 window) for the write timeout.
    Stalled,
}

/// One connection's phase, and since when (in watchdog ticks).
pub(super) struct Progress {
    phase: AtomicU8,
    since: AtomicU64,
    /// 0 while serving; else 1 + the `Cut` as a number.
    cut: AtomicU8,
    /// Requests called whose answer's body is not yet done.
    active: AtomicU32,
    /// One slot per answer being sent (an HTTP/2 connection has at most
    /// `SLOTS` streams): 0, or 1 + the tick since which it holds data its
    /// client has not taken. Each answer its own, so one stream that moves
    /// cannot hide another that is stuck.
    owed: [AtomicU64; SLOTS],
    /// Which slots are taken.
    taken: AtomicU32,
    waker: Mutex<Option<Waker>>,
    clock: Arc<AtomicU64>,
}

impl Progress {
    /// A connection's progress, idle from the clock's tick now.
    fn new(clock: Arc<AtomicU64>) -> Progress {
        Progress {
            phase: AtomicU8::new(IDLE),
            since: AtomicU64::new(clock.load(Ordering::Relaxed)),
            cut: AtomicU8::new(0),
            active: AtomicU32::new(0),
            owed: Default::default(),
            taken: AtomicU32::new(0),
            waker: Mutex::new(None),
            clock,
        }
    }

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

    /// A request head was parsed: the request is being answered until the
    /// returned guard (moved into the answer's body) is dropped. The body
    /// timeout and the handlers bound the time until the answer is ready.
    pub(super) fn called(self: &Arc<Self>) -> Answering {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.phase.store(BUSY, Ordering::Relaxed);
        Answering {
            slot: self.take_slot(),
            progress: self.clone(),
        }
    }

    /// A free slot, if any (one is, unless a client has more answers open
    /// than the stream cap allows: then that answer goes untracked).
    fn take_slot(&self) -> Option<usize> {
        let mut taken = self.taken.load(Ordering::Relaxed);
        loop {
            let free = (!taken).trailing_zeros() as usize;
            if free >= SLOTS {
                return None;
            }
            match self.taken.compare_exchange_weak(
                taken,
                taken | (1 << free),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(free),
                Err(now) => taken = now,
            }
        }
    }

    /// Why the watchdog cut the connection off, if it did.
    pub(super) fn cut(&self) -> Option<Cut> {
        match self.cut.load(Ordering::Acquire) {
            0 => None,
            1 => Some(Cut::MidRequest),
            2 => Some(Cut::Idle),
            _ => Some(Cut::Stalled),
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

    fn check(&self, now: u64, limits: Limits) {
        let phase = self.phase.load(Ordering::Relaxed);
        // `since` is a tick begun up to one tick before the event, so one
        // tick more: never cut before the full timeout.
        let cut = if phase == BUSY {
            let stuck = self.owed.iter().any(|owed| {
                let since = owed.load(Ordering::Acquire);
                since != 0 && now.saturating_sub(since - 1) > limits.write
            });
            if !stuck {
                return;
            }
            Cut::Stalled
        } else if now.saturating_sub(self.since.load(Ordering::Relaxed)) <= limits.header {
            return;
        } else if phase == HEAD {
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

/// One request being answered, from its call until its answer's body is
/// done (or dropped, when the client leaves first). It reports to the
/// watchdog, in its slot, whether the answer holds data the client has not
/// yet taken, and since when.
pub(super) struct Answering {
    progress: Arc<Progress>,
    slot: Option<usize>,
}

impl Answering {
    /// The answer has data for the client from now (`true`: it is ready,
    /// or the connection took its last frame and got another), or waits on
    /// its own source (`false`).
    fn owes(&mut self, owing: bool) {
        if let Some(slot) = self.slot {
            let since = if owing { self.progress.now() + 1 } else { 0 };
            self.progress.owed[slot].store(since, Ordering::Release);
        }
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let progress = &self.progress;
        if let Some(slot) = self.slot {
            progress.owed[slot].store(0, Ordering::Release);
            progress.taken.fetch_and(!(1 << slot), Ordering::AcqRel);
        }
        if progress.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            // The last answer is done: idle until the next request's first
            // byte.
            progress.since.store(progress.now(), Ordering::Relaxed);
            progress.phase.store(IDLE, Ordering::Relaxed);
        }
    }
}

/// An answer's body, reporting to its `Answering` as the connection takes
/// its frames.
pub(super) struct Tracked<B> {
    body: B,
    answering: Option<Answering>,
}

impl<B> Tracked<B> {
    pub(super) fn new(body: B, mut answering: Answering) -> Tracked<B> {
        answering.owes(true);
        Tracked {
            body,
            answering: Some(answering),
        }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        if let Some(answering) = &mut this.answering {
            match &polled {
                Poll::Pending => answering.owes(false),
                Poll::Ready(Some(Ok(_))) => answering.owes(true),
                // Done: the connection may be idle from now.
                Poll::Ready(_) => this.answering = None,
            }
        }
        polled
    }

    /// Never ends early: told the body had ended, hyper would drop it (and
    /// the `Answering`) as soon as it took the last frame, while that frame
    /// may still wait for the client to read it.
    fn is_end_stream(&self) -> bool {
        self.answering.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// The watchdog's limits, in ticks.
#[derive(Clone, Copy)]
struct Limits {
    header: u64,
    write: u64,
}

/// The connections the watchdog keeps.
pub(super) struct Watchdog {
    conns: Mutex<Vec<Weak<Progress>>>,
    clock: Arc<AtomicU64>,
    stopped: AtomicBool,
}

impl Watchdog {
    /// Starts the watchdog thread; `timeout` is the header and keep-alive
    /// limit, `write` how long an answer may wait for its client to take
    /// data. It runs until `stop`.
    pub(super) fn start(timeout: Duration, write: Duration) -> std::io::Result<Arc<Watchdog>> {
        let watchdog = Arc::new(Watchdog {
            conns: Mutex::default(),
            clock: Arc::default(),
            stopped: AtomicBool::new(false),
        });
        let ticks = |d: Duration| (d.as_millis() / TICK.as_millis()).max(1) as u64;
        let limits = Limits {
            header: ticks(timeout),
            write: ticks(write),
        };
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
                            progress.check(now, limits);
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
        let progress = Arc::new(Progress::new(self.clock.clone()));
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

    fn progress(clock: &Arc<AtomicU64>) -> Arc<Progress> {
        Arc::new(Progress::new(clock.clone()))
    }

    const LIMITS: Limits = Limits {
        header: 4,
        write: 8,
    };

    #[test]
    fn a_head_too_slow_is_cut_mid_request_an_idle_connection_as_idle_and_a_busy_one_never() {
        let clock = Arc::new(AtomicU64::new(0));
        let slow = progress(&clock);
        slow.read();
        slow.check(4, LIMITS);
        assert_eq!(slow.cut(), None);
        slow.check(5, LIMITS);
        assert_eq!(slow.cut(), Some(Cut::MidRequest));

        let idle = progress(&clock);
        idle.check(5, LIMITS);
        assert_eq!(idle.cut(), Some(Cut::Idle));

        let busy = progress(&clock);
        busy.read();
        let answering = busy.called();
        busy.check(100, LIMITS);
        assert_eq!(busy.cut(), None);
        // Answered at tick 100: idle from then, not from tick 0.
        clock.store(100, Ordering::Relaxed);
        drop(answering);
        busy.check(104, LIMITS);
        assert_eq!(busy.cut(), None);
        busy.check(105, LIMITS);
        assert_eq!(busy.cut(), Some(Cut::Idle));
    }

    /// A body of `frames`, then a wait for more that never comes (an idle
    /// `/watch`), as `poll_frame` sees it.
    struct Stream {
        frames: Vec<&'static str>,
        then_wait: bool,
    }

    impl hyper::body::Body for Stream {
        type Data = axum::body::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
            if self.frames.is_empty() {
                return if self.then_wait {
                    Poll::Pending
                } else {
                    Poll::Ready(None)
                };
            }
            let frame = self.frames.remove(0);
            Poll::Ready(Some(Ok(hyper::body::Frame::data(frame.into()))))
        }

        fn is_end_stream(&self) -> bool {
            self.frames.is_empty() && !self.then_wait
        }
    }

    fn poll<B: hyper::body::Body + Unpin>(body: &mut Tracked<B>) -> Poll<Option<()>> {
        use hyper::body::Body as _;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::Pin::new(body).poll_frame(&mut cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(_)) => Poll::Ready(Some(())),
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    /// A whole body handed over in one frame still owes its client until
    /// the connection comes back for the end: its guard lives until then.
    #[test]
    fn a_body_is_done_only_when_the_connection_comes_back_after_its_last_frame() {
        use hyper::body::Body as _;
        let clock = Arc::new(AtomicU64::new(0));
        let conn = progress(&clock);
        let mut body = Tracked::new(
            Stream {
                frames: vec!["all of it"],
                then_wait: false,
            },
            conn.called(),
        );
        assert_eq!(poll(&mut body), Poll::Ready(Some(())));
        assert!(!body.is_end_stream(), "hyper must come back for the end");
        // Not taken for the write timeout: stalled.
        conn.check(9, LIMITS);
        assert_eq!(conn.cut(), Some(Cut::Stalled));
        let conn = progress(&clock);
        let mut body = Tracked::new(
            Stream {
                frames: vec!["all of it"],
                then_wait: false,
            },
            conn.called(),
        );
        assert_eq!(poll(&mut body), Poll::Ready(Some(())));
        assert_eq!(poll(&mut body), Poll::Ready(None));
        assert!(body.is_end_stream());
        assert_eq!(
            conn.active.load(Ordering::Relaxed),
            0,
            "done: the guard is gone"
        );
        assert_eq!(conn.taken.load(Ordering::Relaxed), 0, "and its slot free");
    }

    /// A stream waiting on its own source (an idle `/watch`) is never cut,
    /// however long; one whose data the client does not take is cut after
    /// the write timeout, even while another answer on the same connection
    /// keeps moving.
    #[test]
    fn each_answer_is_held_to_the_write_timeout_on_its_own() {
        let clock = Arc::new(AtomicU64::new(0));
        let conn = progress(&clock);
        conn.read();
        let mut watch = Tracked::new(
            Stream {
                frames: vec![],
                then_wait: true,
            },
            conn.called(),
        );
        assert_eq!(poll(&mut watch), Poll::Pending);
        conn.check(1_000, LIMITS);
        assert_eq!(
            conn.cut(),
            None,
            "a waiting stream is never idle nor stalled"
        );

        // At tick 1,000 a stuck answer beside a stream that keeps moving.
        clock.store(1_000, Ordering::Relaxed);
        let mut stuck = Tracked::new(
            Stream {
                frames: vec!["a", "b"],
                then_wait: false,
            },
            conn.called(),
        );
        assert_eq!(poll(&mut stuck), Poll::Ready(Some(())));
        let mut moving = Tracked::new(
            Stream {
                frames: vec!["x"; 20],
                then_wait: true,
            },
            conn.called(),
        );
        for tick in 1_001..=1_008 {
            clock.store(tick, Ordering::Relaxed);
            assert_eq!(poll(&mut moving), Poll::Ready(Some(())));
            conn.check(tick, LIMITS);
        }
        assert_eq!(conn.cut(), None);
        clock.store(1_009, Ordering::Relaxed);
        assert_eq!(poll(&mut moving), Poll::Ready(Some(())));
        conn.check(1_009, LIMITS);
        assert_eq!(conn.cut(), Some(Cut::Stalled), "the stuck one is seen");

        // Two answers on one connection: idle only after both.
        let conn = progress(&clock);
        let first = conn.called();
        let second = conn.called();
        drop(first);
        conn.check(2_000, LIMITS);
        assert_eq!(conn.cut(), None);
        drop(second);
        conn.check(1_013, LIMITS);
        assert_eq!(conn.cut(), None);
        conn.check(1_014, LIMITS);
        assert_eq!(conn.cut(), Some(Cut::Idle));
    }
}
