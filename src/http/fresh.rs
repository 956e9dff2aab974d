//! Connections whose client has not sent a byte yet, oldest first. At the
//! connection cap the oldest of them is closed to make room for the newest,
//! so a flood of idle connections cannot lock out a client that speaks
//! (a slow one that does speak is cut off by the header timeout instead).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

#[derive(Default)]
pub(super) struct Fresh {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    waiting: BTreeMap<u64, oneshot::Sender<()>>,
}

/// A connection's place on the list; dropped when its client speaks or it
/// closes.
pub(super) struct Ticket {
    id: u64,
    fresh: Arc<Fresh>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.fresh.lock().waiting.remove(&self.id);
    }
}

impl Fresh {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a new connection on the list; the receiver resolves if it is
    /// evicted.
    pub(super) fn issue(self: &Arc<Self>) -> (Ticket, oneshot::Receiver<()>) {
        let (evict, evicted) = oneshot::channel();
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        inner.waiting.insert(id, evict);
        drop(inner);
        let ticket = Ticket {
            id,
            fresh: self.clone(),
        };
        (ticket, evicted)
    }

    /// Evicts the connection that has waited longest; false when none waits.
    pub(super) fn evict_oldest(&self) -> bool {
        let mut inner = self.lock();
        while let Some((_, evict)) = inner.waiting.pop_first() {
            if evict.send(()).is_ok() {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_silent_connection_goes_first_and_one_that_spoke_never() {
        let fresh = Arc::new(Fresh::default());
        let (first, mut first_rx) = fresh.issue();
        let (_second, mut second_rx) = fresh.issue();
        let (_third, mut third_rx) = fresh.issue();
        drop(first); // its client spoke
        assert!(fresh.evict_oldest());
        assert!(first_rx.try_recv().is_err());
        assert!(second_rx.try_recv().is_ok());
        assert!(third_rx.try_recv().is_err());
        assert!(fresh.evict_oldest());
        assert!(third_rx.try_recv().is_ok());
        assert!(!fresh.evict_oldest());
    }
}
