//! Where log lines go: a shared buffer that a background thread writes to
//! stderr in batches. A request only appends its line; the thread is woken
//! once per batch (not per line) and lingers a moment so a busy server's
//! lines leave in one write(2). On two cores a wake-up per line cost more
//! than the rest of the logging together. No line is dropped: when the
//! buffer is full, loggers wait for the thread.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the thread waits after a wake-up for more lines to join.
const LINGER: Duration = Duration::from_millis(2);
/// Loggers wait while this much is queued.
const FULL: usize = 1 << 20;

struct Shared {
    state: Mutex<State>,
    /// Signalled when the first line lands in an empty buffer, or at close.
    pending: Condvar,
    /// Signalled when the thread has taken the buffer.
    drained: Condvar,
}

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    closed: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `MakeWriter` handed to the subscriber; each event's line arrives in
/// one `write` call.
#[derive(Clone)]
pub struct BatchWriter(Arc<Shared>);

/// Writes what is still queued and stops the thread when dropped.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the thread writing to `out`.
pub fn spawn(out: impl Write + Send + 'static) -> (BatchWriter, Guard) {
    let shared = Arc::new(Shared {
        state: Mutex::default(),
        pending: Condvar::new(),
        drained: Condvar::new(),
    });
    let for_thread = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || run(&for_thread, out))
        .expect("cannot start the log writer thread");
    (
        BatchWriter(shared.clone()),
        Guard {
            shared,
            thread: Some(thread),
        },
    )
}

fn run(shared: &Shared, mut out: impl Write) {
    let mut spare = Vec::new();
    loop {
        let mut state = shared.state();
        while state.buf.is_empty() && !state.closed {
            state = shared
                .pending
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        if !state.closed {
            drop(state);
            std::thread::sleep(LINGER);
            state = shared.state();
        }
        std::mem::swap(&mut state.buf, &mut spare);
        let closed = state.closed;
        drop(state);
        shared.drained.notify_all();
        // Nowhere to report a failed write to stderr; the lines are gone.
        let _ = out.write_all(&spare).and_then(|()| out.flush());
        spare.clear();
        if closed {
            return;
        }
    }
}

impl BatchWriter {
    /// Queues `line`, which should be whole lines.
    pub fn write_line(&self, line: &[u8]) {
        let mut state = self.0.state();
        while state.buf.len() >= FULL && !state.closed {
            state = self
                .0
                .drained
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
        let was_empty = state.buf.is_empty();
        state.buf.extend_from_slice(line);
        drop(state);
        if was_empty {
            self.0.pending.notify_one();
        }
    }
}

impl Write for BatchWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.write_line(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.state().closed = true;
        self.shared.pending.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut sink = self.0.lock().unwrap();
            sink.0.extend_from_slice(buf);
            sink.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_in_few_writes_and_close_flushes() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        w.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let (bytes, writes) = sink.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let (t, i) = line.split_once(' ').unwrap();
            let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[t], "thread {t}'s lines out of order");
            next[t] += 1;
        }
        assert_eq!(next, [5000; 4], "every line arrives");
        assert!(writes < 20_000 / 10, "{writes} writes for 20,000 lines");
    }

    #[test]
    fn a_line_is_written_without_waiting_for_more() {
        let sink = Sink::default();
        let (mut writer, _guard) = spawn(sink.clone());
        writer.write_all(b"alone\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().0.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the line was held back"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sink.0.lock().unwrap().0, b"alone\n");
    }
}
