//! The header timeout, watched. hyper closes a connection whose request head
//! does not arrive in time without a word; the timer handed to hyper notes
//! that it fired, and the connection notes whether part of a request had
//! arrived, so a plain-HTTP client cut off mid-request gets a 408 and the
//! access log a line, while an idle keep-alive connection just closes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// What one connection's timer and reads have seen.
#[derive(Default)]
pub(super) struct Progress {
    /// The header timeout fired.
    fired: AtomicBool,
    /// Bytes arrived since the last answer was written: a request is under
    /// way.
    partial: AtomicBool,
}

impl Progress {
    pub(super) fn read(&self) {
        self.partial.store(true, Ordering::Relaxed);
    }

    pub(super) fn wrote(&self) {
        self.partial.store(false, Ordering::Relaxed);
    }

    /// A request was under way when the header timeout fired.
    pub(super) fn cut_off_mid_request(&self) -> bool {
        self.fired.load(Ordering::Relaxed) && self.partial.load(Ordering::Relaxed)
    }
}

/// The 408 a plain-HTTP client cut off mid-request gets.
pub(super) const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncache-control: no-store\r\nconnection: close\r\ncontent-length: 27\r\n\r\n{\"error\":\"request timeout\"}";

/// tokio's timer, noting in `Progress` when a sleep ends.
#[derive(Clone)]
pub(super) struct WatchedTimer(pub Arc<Progress>);

struct Noted {
    sleep: Pin<Box<tokio::time::Sleep>>,
    progress: Arc<Progress>,
}

impl Future for Noted {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let done = self.sleep.as_mut().poll(cx);
        if done.is_ready() {
            self.progress.fired.store(true, Ordering::Relaxed);
        }
        done
    }
}

impl Sleep for Noted {}

impl Timer for WatchedTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        Box::pin(Noted {
            sleep: Box::pin(tokio::time::sleep(duration)),
            progress: self.0.clone(),
        })
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(Noted {
            sleep: Box::pin(tokio::time::sleep_until(deadline.into())),
            progress: self.0.clone(),
        })
    }
}

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

    #[tokio::test]
    async fn only_a_timeout_mid_request_counts_as_cut_off() {
        let progress = Arc::new(Progress::default());
        let timer = WatchedTimer(progress.clone());
        progress.read();
        assert!(!progress.cut_off_mid_request());
        timer.sleep(Duration::from_millis(1)).await;
        assert!(progress.cut_off_mid_request());
        progress.wrote();
        assert!(!progress.cut_off_mid_request());
    }
}
