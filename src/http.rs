//! Serves the router on one single-threaded runtime per core: an acceptor
//! hands each connection to the shard holding the fewest, and that shard's
//! thread parses, handles and answers every request on it, so requests do
//! not wake a second worker (a work-stealing runtime's workers woke each
//! other on every request here).

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};

/// The client's address, as the audit trail records it.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, Shard>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, Shard>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// How many shards: one per core the process may use.
fn shard_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and waits, for up to `grace`, for every shard to answer the
/// connections it was handed and finish their in-flight requests; what is
/// still open then (a client that never finishes its request) is left to
/// close with the process.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let mut shards = Vec::new();
    for i in 0..shard_count() {
        shards.push(ShardHandle::start(i, local, app.clone())?);
    }
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr)) => {
                // A shard whose thread has ended is never chosen again; with
                // none left, stop as if asked to.
                let Some(shard) = shards
                    .iter()
                    .filter(|s| !s.conns.is_closed())
                    .min_by_key(|s| s.open.load(Ordering::Relaxed))
                else {
                    tracing::error!("every HTTP shard has stopped");
                    break;
                };
                if let Err(e) = shard.hand(stream, addr) {
                    tracing::warn!(error = %e, "cannot hand a connection to a shard; closed it");
                }
            }
            // Out of file descriptors or the like: wait rather than spin.
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    // Each shard serves what is queued for it, then shuts down gracefully
    // once its queue is closed and empty.
    let deadline = tokio::time::Instant::now() + grace;
    let mut waiting = Vec::new();
    for shard in shards {
        drop(shard.conns);
        waiting.push((shard.done, shard.open));
    }
    let mut result = Ok(());
    for (done, open) in waiting {
        let outcome = match tokio::time::timeout_at(deadline, done).await {
            Ok(finished) => finished.unwrap_or_else(|_| {
                Err(io::Error::other(
                    "an HTTP shard thread ended without a result",
                ))
            }),
            Err(_) => {
                tracing::warn!(
                    open = open.load(Ordering::Relaxed),
                    "shutdown grace is over: closing the connections still open"
                );
                Ok(())
            }
        };
        if result.is_ok() {
            result = outcome;
        }
    }
    result
}

/// The acceptor's side of one shard.
struct ShardHandle {
    conns: mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>,
    /// Connections the shard holds open.
    open: Arc<AtomicUsize>,
    done: oneshot::Receiver<io::Result<()>>,
}

impl ShardHandle {
    /// Builds the shard's runtime here, so a failure to build it fails
    /// start-up, and runs it on a thread of its own.
    fn start(i: usize, local: SocketAddr, app: Router) -> io::Result<ShardHandle> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (conns, rx) = mpsc::unbounded_channel();
        let open = Arc::new(AtomicUsize::new(0));
        let (done_tx, done) = oneshot::channel();
        let drained = Arc::new(Notify::new());
        let listener = Shard {
            conns: rx,
            local,
            open: open.clone(),
            drained: drained.clone(),
        };
        std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || {
                let serve = axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<ClientAddr>(),
                )
                .with_graceful_shutdown(async move { drained.notified().await })
                .into_future();
                let _ = done_tx.send(runtime.block_on(serve));
            })?;
        Ok(ShardHandle { conns, open, done })
    }

    fn hand(&self, stream: TcpStream, addr: SocketAddr) -> io::Result<()> {
        let stream = stream.into_std()?;
        self.open.fetch_add(1, Ordering::Relaxed);
        if self.conns.send((stream, addr)).is_err() {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(io::Error::other("the shard has stopped"));
        }
        Ok(())
    }
}

/// One shard's listener: the connections the acceptor hands it.
pub struct Shard {
    conns: mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>,
    local: SocketAddr,
    open: Arc<AtomicUsize>,
    /// Notified once the acceptor has closed the queue and it is empty: the
    /// shard's graceful shutdown.
    drained: Arc<Notify>,
}

impl Listener for Shard {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            let Some((stream, addr)) = self.conns.recv().await else {
                // Every queued connection has been taken: shut down.
                self.drained.notify_one();
                return std::future::pending().await;
            };
            match TcpStream::from_std(stream) {
                Ok(stream) => {
                    let open = self.open.clone();
                    return (Counted { stream, open }, addr);
                }
                Err(e) => {
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cannot register a connection");
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A connection that gives its shard's open count back when it closes.
pub struct Counted {
    stream: TcpStream,
    open: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Counted {
    fn stream(self: std::pin::Pin<&mut Self>) -> std::pin::Pin<&mut TcpStream> {
        std::pin::Pin::new(&mut self.get_mut().stream)
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}
