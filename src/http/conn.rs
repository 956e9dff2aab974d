//! One connection from accept to close: the TLS handshake when TLS is on,
//! then HTTP/1.1 (or HTTP/2 when ALPN chose it) with a header timeout that
//! also bounds keep-alive idleness, half-closed clients still answered,
//! and an access-log line for the errors hyper answers on its own.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tower::Service;

use super::errors::JsonErrors;
use super::fresh::Ticket;
use super::timeout::{Progress, WatchedTimer, REQUEST_TIMEOUT};
use super::{ClientAddr, Settings, STATS};

/// Serves one accepted connection until it closes, is evicted (it never
/// sent a byte and the server is at its connection cap), or the shard
/// shuts down.
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
    let served = async move {
        match &settings.tls {
            None => http1(stream, addr, app, &settings, watcher, progress).await,
            Some(tls) => {
                let handshake = tls.acceptor().accept(stream);
                let stream = match tokio::time::timeout(settings.header_timeout, handshake).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        STATS.tls_failed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(client = %addr, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        STATS.timed_out.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    let mut builder =
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    builder.timer(TokioTimer::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), service(app, addr));
                    finished(watcher.watch(conn).await, addr, &progress);
                } else {
                    http1(stream, addr, app, &settings, watcher, progress).await;
                }
            }
        }
    };
    tokio::select! {
        () = served => {}
        () = evicted => { STATS.evicted.fetch_add(1, Ordering::Relaxed); }
    }
}

async fn http1<I>(
    io: I,
    addr: SocketAddr,
    app: Router,
    settings: &Settings,
    watcher: Watcher,
    progress: Arc<Progress>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(WatchedTimer(progress.clone()))
        .header_read_timeout(settings.header_timeout)
        .half_close(true);
    let io = TokioIo::new(JsonErrors::new(io));
    let conn = builder.serve_connection(io, service(app, addr));
    finished(watcher.watch(conn).await, addr, &progress);
}

/// The router, with the client's address where the audit trail finds it.
fn service(
    app: Router,
    addr: SocketAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = axum::routing::future::RouteFuture<std::convert::Infallible>,
> + Clone {
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(ClientAddr(addr)));
        app.clone().call(req)
    })
}

/// Logs what ended a connection: the errors hyper answered itself (a
/// malformed request, headers too large, a URI too long, a header timeout)
/// get an access-log line like any request.
fn finished(result: Result<(), hyper::Error>, addr: SocketAddr, progress: &Progress) {
    let Err(e) = result else { return };
    // hyper tells a URI too long from headers too large only in its text.
    let status = if e.is_parse_too_large() && e.to_string().contains("URI too long") {
        414
    } else if e.is_parse_too_large() {
        431
    } else if e.is_parse() {
        400
    } else if e.is_timeout() {
        STATS.timed_out.fetch_add(1, Ordering::Relaxed);
        // An idle keep-alive connection closing is no request.
        if !progress.cut_off_mid_request() {
            return;
        }
        408
    } else {
        tracing::debug!(client = %addr, error = %e, "connection ended");
        return;
    };
    crate::log::access::record(&crate::log::access::Access {
        method: "-",
        route: "-",
        status,
        latency_us: 0,
        request_id: "-",
    });
}

/// A connection that gives its shard's open count back when it closes,
/// leaves the eviction list once its client sends a byte, and notes whether
/// a request is under way (`Progress`).
pub(super) struct Counted {
    stream: TcpStream,
    open: Arc<AtomicUsize>,
    ticket: Option<Ticket>,
    progress: Arc<Progress>,
    /// HTTP straight on the socket (no TLS), so a 408 can be written here.
    plain: bool,
}

impl Counted {
    pub(super) fn new(
        stream: TcpStream,
        open: Arc<AtomicUsize>,
        ticket: Ticket,
        plain: bool,
    ) -> Counted {
        Counted {
            stream,
            open,
            ticket: Some(ticket),
            progress: Arc::default(),
            plain,
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        // hyper gave up on a request head that did not arrive in time; it
        // writes nothing, so answer here, best effort (a send buffer that is
        // full drops it).
        if self.plain && self.progress.cut_off_mid_request() {
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
        let this = self.get_mut();
        this.progress.wrote();
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.progress.wrote();
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
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
