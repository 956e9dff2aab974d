//! Connections whose client has not sent a byte yet, oldest first. At the
//! connection cap the oldest of them is closed to make room for the newest,
//! so a flood of idle connections cannot lock out a client that speaks
//! (a slow one that does speak is cut off by the header timeout instead).

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

#[derive(Default)]
pub(super) struct Fresh {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    waiting: BTreeMap<u64, Waiting>,
}

struct Waiting {
    evict: oneshot::Sender<()>,
    /// The connection's socket, open for as long as this entry is listed:
    /// its owner drops the ticket before the stream (only a shard that
    /// fails to register a socket closes it first; a reused number can then
    /// misjudge one eviction, no more: `recv` writes only its one byte).
    fd: RawFd,
}

/// A connection's place on the list; dropped when its client speaks or it
/// closes, and before the socket it names is closed.
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
    pub(super) fn issue(self: &Arc<Self>, fd: RawFd) -> (Ticket, oneshot::Receiver<()>) {
        let (evict, evicted) = oneshot::channel();
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        inner.waiting.insert(id, Waiting { evict, fd });
        drop(inner);
        let ticket = Ticket {
            id,
            fresh: self.clone(),
        };
        (ticket, evicted)
    }

    /// Evicts the connection that has waited longest; false when none waits.
    /// One whose request has arrived but not yet been read is not silent: it
    /// leaves the list instead (its shard may just be busy).
    pub(super) fn evict_oldest(&self) -> bool {
        let mut inner = self.lock();
        while let Some((_, waiting)) = inner.waiting.pop_first() {
            if !has_unread_bytes(waiting.fd) && waiting.evict.send(()).is_ok() {
                return true;
            }
        }
        false
    }
}

/// Whether the peer has sent bytes that wait in the socket's receive buffer.
fn has_unread_bytes(fd: RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv writes at most one byte, into `byte`; MSG_DONTWAIT keeps
    // it from blocking and MSG_PEEK leaves the byte for the connection.
    let peeked = unsafe {
        libc::recv(
            fd,
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    peeked > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    /// A connected pair over loopback: (client, server side).
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    #[test]
    fn the_oldest_silent_connection_goes_first_and_one_that_spoke_never() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut conns: Vec<_> = (0..5).map(|_| pair(&listener)).collect();
        let fresh = Arc::new(Fresh::default());
        let (first, mut first_rx) = fresh.issue(conns[0].1.as_raw_fd());
        let (_second, mut second_rx) = fresh.issue(conns[1].1.as_raw_fd());
        let (_third, mut third_rx) = fresh.issue(conns[2].1.as_raw_fd());
        let (_fourth, mut fourth_rx) = fresh.issue(conns[3].1.as_raw_fd());
        let (_fifth, mut fifth_rx) = fresh.issue(conns[4].1.as_raw_fd());
        // The first's client spoke and the server read it; the second's
        // request has arrived, but its shard has not read it yet; the
        // fourth's client left without a word.
        drop(first);
        (&conns[1].0).write_all(b"GET / HTTP/1.1\r\n").unwrap();
        conns[3].0.shutdown(std::net::Shutdown::Write).unwrap();
        conns[1].1.peek(&mut [0]).unwrap();
        assert!(fresh.evict_oldest());
        assert!(first_rx.try_recv().is_err());
        assert!(second_rx.try_recv().is_err(), "a client that spoke is kept");
        assert!(third_rx.try_recv().is_ok());
        assert!(fresh.evict_oldest());
        assert!(
            fourth_rx.try_recv().is_ok(),
            "a client that left is not speaking"
        );
        assert!(fifth_rx.try_recv().is_err());
        assert!(fresh.evict_oldest());
        assert!(fifth_rx.try_recv().is_ok());
        assert!(!fresh.evict_oldest());
        // The peek left the request where its shard will read it.
        let mut request = [0u8; 16];
        std::io::Read::read_exact(&mut conns[1].1, &mut request).unwrap();
        assert_eq!(&request, b"GET / HTTP/1.1\r\n");
    }
}
