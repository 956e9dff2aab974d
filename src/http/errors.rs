//! The API's JSON error shape for the answers hyper writes on its own. A
//! request hyper cannot parse (invalid bytes, a bad Content-Length, a URI
//! or headers too large) never reaches the router: hyper answers it with
//! an empty body and closes. This wrapper sits between hyper and the
//! connection and gives exactly those answers a JSON body; the router never
//! answers 400, 414 or 431 with an empty body, so nothing else matches.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The statuses hyper answers by itself, and the API's text for each.
const ANSWERS: [(&[u8], &str); 3] = [
    (b"HTTP/1.1 400 ", "invalid request format"),
    (b"HTTP/1.1 414 ", "uri too long"),
    (b"HTTP/1.1 431 ", "request header fields too large"),
];

const EMPTY: &[u8] = b"\r\ncontent-length: 0\r\n";

pub(super) struct JsonErrors<I> {
    io: I,
    /// A rewritten answer still being written, and how much of it is out.
    pending: Vec<u8>,
    written: usize,
}

impl<I> JsonErrors<I> {
    pub(super) fn new(io: I) -> JsonErrors<I> {
        JsonErrors {
            io,
            pending: Vec::new(),
            written: 0,
        }
    }
}

/// The answer with a JSON body, when `head` is one of hyper's own.
fn rewrite(head: &[u8]) -> Option<Vec<u8>> {
    let (_, error) = ANSWERS.iter().find(|(start, _)| head.starts_with(start))?;
    let end = head.strip_suffix(b"\r\n\r\n")?;
    let at = head.windows(EMPTY.len()).position(|w| w == EMPTY)?;
    let body = format!(r#"{{"error":"{error}"}}"#);
    let mut out = Vec::with_capacity(head.len() + body.len() + 64);
    out.extend_from_slice(&head[..at]);
    out.extend_from_slice(
        b"\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: ",
    );
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    out.extend_from_slice(&end[at + EMPTY.len() - 2..]);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl<I: AsyncWrite + Unpin> JsonErrors<I> {
    /// Writes out what a rewrite left pending.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for JsonErrors<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for JsonErrors<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some(answer) = rewrite(buf) {
            this.pending = answer;
            this.written = 0;
            // Taken whole; written out by this and the next polls.
            let _ = this.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        // hyper's own answers are a head alone, in the first slice.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(first), None) = (filled.next(), filled.next()) {
            if first.starts_with(b"HTTP/1.1 4") {
                return Pin::new(this).poll_write(cx, first);
            }
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_own_answers_get_a_json_body_and_nothing_else_is_touched() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 19:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(head).unwrap()).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, r#"{"error":"request header fields too large"}"#);
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())));
        assert!(head.contains("\r\ncontent-type: application/json"));
        assert!(head.ends_with("\r\ndate: Wed, 02 Dec 2026 19:00:00 GMT"));
        assert!(!head.contains("content-length: 0"));

        for untouched in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 41\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
        ] {
            assert!(
                rewrite(untouched).is_none(),
                "{:?}",
                String::from_utf8_lossy(untouched)
            );
        }
    }
}
