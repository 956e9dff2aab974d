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
    /// Of those, answers holding data the client has yet to take (not
    /// waiting on their own source, as an idle `/watch` stream does).
    owing: AtomicU32,
    /// The tick an answer's body was last polled by the connection.
    moved: AtomicU64,
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

    /// A request head was parsed: the request is being answered until the
    /// returned guard (moved into the answer's body) is dropped. The body
    /// timeout and the handlers bound the time until the answer is ready.
    pub(super) fn called(self: &Arc<Self>) -> Answering {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.phase.store(BUSY, Ordering::Relaxed);
        Answering {
            progress: self.clone(),
            owing: false,
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
            let owing = self.owing.load(Ordering::Relaxed) > 0;
            if !owing || now.saturating_sub(self.moved.load(Ordering::Relaxed)) <= limits.write {
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
/// watchdog whether the answer holds data the client has not yet taken.
pub(super) struct Answering {
    progress: Arc<Progress>,
    owing: bool,
}

impl Answering {
    /// The connection polled the body: it took what came before.
    fn polled(&mut self) {
        let now = self.progress.now();
        self.progress.moved.store(now, Ordering::Relaxed);
    }

    /// The answer has data for the client (`true`), or waits on its own
    /// source (`false`).
    fn owes(&mut self, owing: bool) {
        if owing != self.owing {
            self.owing = owing;
            if owing {
                self.progress.owing.fetch_add(1, Ordering::Relaxed);
            } else {
                self.progress.owing.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// The answer is ready: its body is to be taken from now.
    pub(super) fn ready(&mut self) {
        self.polled();
        self.owes(true);
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.owes(false);
        let progress = &self.progress;
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
        answering.ready();
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
            answering.polled();
            match &polled {
                Poll::Pending => answering.owes(false),
                Poll::Ready(Some(Ok(_))) => answering.owes(true),
                // Done: the connection may be idle from now.
                Poll::Ready(_) => this.answering = None,
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
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
        let progress = Arc::new(Progress {
            phase: AtomicU8::new(IDLE),
            since: AtomicU64::new(self.clock.load(Ordering::Relaxed)),
            cut: AtomicU8::new(0),
            active: AtomicU32::new(0),
            owing: AtomicU32::new(0),
            moved: AtomicU64::new(0),
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

    fn progress(clock: &Arc<AtomicU64>) -> Arc<Progress> {
        Arc::new(Progress {
            phase: AtomicU8::new(IDLE),
            since: AtomicU64::new(clock.load(Ordering::Relaxed)),
            cut: AtomicU8::new(0),
            active: AtomicU32::new(0),
            owing: AtomicU32::new(0),
            moved: AtomicU64::new(0),
            waker: Mutex::new(None),
            clock: clock.clone(),
        })
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

    /// A stream whose body waits on its own source (an idle `/watch`) is
    /// never cut, however long; one whose data the client does not take is
    /// cut after the write timeout, and the connection is idle only once
    /// its last answer is done.
    #[test]
    fn a_streaming_answer_lives_while_taken_and_is_cut_when_the_client_stops_taking_it() {
        let clock = Arc::new(AtomicU64::new(0));
        let conn = progress(&clock);
        conn.read();
        let mut body = Tracked::new(
            http_body_util::Empty::<axum::body::Bytes>::new(),
            conn.called(),
        );
        // The connection polls: the stream waits for an event.
        body.answering.as_mut().unwrap().polled();
        body.answering.as_mut().unwrap().owes(false);
        conn.check(1_000, LIMITS);
        assert_eq!(conn.cut(), None, "a waiting stream is never idle");
        // A heartbeat at tick 1,000 that the client does not take.
        clock.store(1_000, Ordering::Relaxed);
        body.answering.as_mut().unwrap().polled();
        body.answering.as_mut().unwrap().owes(true);
        conn.check(1_008, LIMITS);
        assert_eq!(conn.cut(), None);
        conn.check(1_009, LIMITS);
        assert_eq!(conn.cut(), Some(Cut::Stalled));

        // Two answers on one connection: idle only after both.
        let conn = progress(&clock);
        let first = conn.called();
        let second = conn.called();
        drop(first);
        conn.check(2_000, LIMITS);
        assert_eq!(conn.cut(), None);
        drop(second);
        conn.check(1_004, LIMITS);
        assert_eq!(conn.cut(), None);
        conn.check(1_005, LIMITS);
        assert_eq!(conn.cut(), Some(Cut::Idle));
    }
}
