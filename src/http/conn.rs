//! One connection from accept to close: the TLS handshake when TLS is on,
//! then HTTP/1.1 (or HTTP/2 when ALPN chose it), half-closed clients still
//! answered, cut off by the watchdog when a head or an idle spell lasts too
//! long, and an access-log line for the errors hyper answers on its own.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::Router;
use futures_util::TryFutureExt;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tower::Service;

use super::errors::JsonErrors;
use super::fresh::Ticket;
use super::watchdog::{Cut, Progress, Tracked, REQUEST_TIMEOUT};
use super::{ClientAddr, Settings};

/// Requests one HTTP/2 connection may have open at once (hyper's default
/// is 200; each may hold a whole answer, up to a batch's, until taken):
/// as many as the watchdog tracks answers of one connection.
const H2_MAX_STREAMS: u32 = super::watchdog::SLOTS as u32;

/// Serves one accepted connection until it closes, is evicted (no request
/// yet and the server at its connection cap), is cut off by the watchdog,
/// or the shard shuts down.
pub(super) async fn serve(
    stream: Counted,
    addr: SocketAddr,
    app: Router,
    settings: Arc<Settings>,
    watcher: Watcher,
    evicted: oneshot::Receiver<()>,
) {
    let evicted = async move {
        // A dropped ticket (the client spoke) is not an eviction.
        if evicted.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let progress = stream.progress.clone();
    let calls = Calls {
        app,
        addr,
        progress: progress.clone(),
        rewrite: settings.rewrite,
    };
    let served = async move {
        match &settings.tls {
            None => http1(stream, calls, watcher).await,
            Some(tls) => {
                let stream = match tls.acceptor().accept(stream).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        crate::counters::TLS_HANDSHAKE_FAILURES.add();
                        tracing::debug!(client = %addr, error = %e, "TLS handshake failed");
                        return;
                    }
                };
                if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    let mut builder =
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    // Each stream may hold an answer in memory until its
                    // client takes it: bound how many one connection has.
                    builder.max_concurrent_streams(H2_MAX_STREAMS);
                    let conn = builder.serve_connection(TokioIo::new(stream), service(calls));
                    finished(watcher.watch(conn).await, addr);
                } else {
                    http1(stream, calls, watcher).await;
                }
            }
        }
    };
    tokio::select! {
        () = served => {}
        () = evicted => crate::counters::CONNECTIONS_EVICTED.add(),
        cut = progress.cut_off() => {
            match cut {
                Cut::Stalled => crate::counters::CONNECTIONS_STALLED.add(),
                _ => crate::counters::CONNECTIONS_TIMED_OUT.add(),
            };
            if cut == Cut::MidRequest {
                access_line(408);
            }
        }
    }
}

async fn http1<I>(io: I, calls: Calls, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = calls.addr;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.half_close(true);
    let io = TokioIo::new(JsonErrors::new(io));
    let conn = builder.serve_connection(io, service(calls));
    finished(watcher.watch(conn).await, addr);
}

/// What every request of one connection is called with.
struct Calls {
    app: Router,
    addr: SocketAddr,
    progress: Arc<Progress>,
    rewrite: fn(&mut axum::http::Method, &mut axum::http::Uri),
}

/// An answer whose body reports to the watchdog until it is done.
type Answer = hyper::Response<Tracked<axum::body::Body>>;

/// The router, with the client's address where the audit trail finds it.
fn service(
    calls: Calls,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Answer,
    Error = std::convert::Infallible,
    Future = impl std::future::Future<Output = Result<Answer, std::convert::Infallible>> + Send,
> + Clone {
    let Calls {
        app,
        addr,
        progress,
        rewrite,
    } = calls;
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let (mut parts, body) = req.into_parts();
        rewrite(&mut parts.method, &mut parts.uri);
        let mut req = Request::from_parts(parts, body);
        let answering = progress.called();
        req.extensions_mut().insert(ConnectInfo(ClientAddr(addr)));
        app.clone()
            .call(req)
            .map_ok(move |answer| answer.map(|body| Tracked::new(body, answering)))
    })
}

/// Logs what ended a connection: the errors hyper answered itself (a
/// malformed request, headers too large, a URI too long) get an access-log
/// line like any request.
fn finished(result: Result<(), hyper::Error>, addr: SocketAddr) {
    let Err(e) = result else { return };
    // hyper tells a URI too long from headers too large only in its text.
    let status = if e.is_parse_too_large() && e.to_string().contains("URI too long") {
        414
    } else if e.is_parse_too_large() {
        431
    } else if e.is_parse() {
        400
    } else {
        tracing::debug!(client = %addr, error = %e, "connection ended");
        return;
    };
    access_line(status);
}

/// The access-log line of an answer no route gave.
fn access_line(status: u16) {
    crate::log::access::record(&crate::log::access::Access {
        method: "-",
        route: "-",
        status,
        latency_us: 0,
        request_id: "-",
    });
}

/// A connection that gives its shard's open count back when it closes,
/// leaves the eviction list once its client sends a byte (a client that
/// then falls silent, after a TLS handshake say, is the watchdog's), and
/// tells the watchdog when a request begins (`Progress`).
pub(super) struct Counted {
    // Declared before the stream so it is dropped first (see `Ticket`).
    ticket: Option<Ticket>,
    stream: TcpStream,
    open: Arc<AtomicUsize>,
    progress: Arc<Progress>,
    /// HTTP straight on the socket (no TLS), so a 408 can be written here.
    plain: bool,
}

impl Counted {
    pub(super) fn new(
        stream: TcpStream,
        open: Arc<AtomicUsize>,
        (ticket, progress): (Ticket, Arc<Progress>),
        plain: bool,
    ) -> Counted {
        Counted {
            stream,
            open,
            ticket: Some(ticket),
            progress,
            plain,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // Cut off mid-request by the watchdog: answer here, best effort (a
        // send buffer that is full drops it).
        if self.plain && self.progress.cut() == Some(Cut::MidRequest) {
            let _ = self.stream.try_write(REQUEST_TIMEOUT);
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.ticket = None;
            this.progress.read();
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
