//! Serves the router on one single-threaded runtime per core: an acceptor
//! hands each connection to the shard holding the fewest, and that shard's
//! thread parses, handles and answers every request on it, so requests do
//! not wake a second worker (a work-stealing runtime's workers woke each
//! other on every request here). The acceptor also keeps the connection
//! cap, below the file-descriptor limit.

mod conn;
mod errors;
mod fresh;
pub mod tls;
mod watchdog;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use conn::Counted;
use fresh::{Fresh, Ticket};
use watchdog::Watchdog;

/// The client's address, as the audit trail records it.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// How connections are served.
pub struct Settings {
    /// How long SIGTERM waits for in-flight requests.
    pub grace: Duration,
    /// How long a client may take to send a request's headers (or a TLS
    /// handshake), and how long a connection may sit idle.
    pub header_timeout: Duration,
    /// How long an answer may hold data its client does not take (a client
    /// that stopped reading, or an HTTP/2 window left at zero).
    pub write_timeout: Duration,
    /// Connections held open at most.
    pub max_connections: usize,
    pub tls: Option<Arc<tls::Tls>>,
    /// Applied to each request's method and URI before routing: a
    /// protocol's own methods (Vault's `LIST`) read as ones a router knows.
    pub rewrite: fn(&mut axum::http::Method, &mut axum::http::Uri),
}

/// Raises the soft file-descriptor limit to the hard one and returns the
/// limit in force.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    limit.rlim_cur
}

/// The default connection cap: the descriptor limit less what the store,
/// the logs and the trail may need (a tenth, at least 256).
pub fn default_max_connections(fd_limit: u64) -> usize {
    let reserve = (fd_limit / 10).max(256);
    fd_limit.saturating_sub(reserve).max(16) as usize
}

/// How many shards: one per core the process may use.
fn shard_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and waits, for up to the grace, for every shard to finish its
/// in-flight requests; what is still open then (a client that never
/// finishes its request) is closed with the process.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()>,
    settings: Settings,
) -> io::Result<()> {
    let settings = Arc::new(settings);
    let fresh = Arc::new(Fresh::default());
    let watchdog = Watchdog::start(settings.header_timeout, settings.write_timeout)?;
    let mut shards = Vec::new();
    for i in 0..shard_count() {
        shards.push(ShardHandle::start(
            i,
            app.clone(),
            settings.clone(),
            watchdog.clone(),
        )?);
    }
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr)) => {
                let open: usize = shards.iter().map(|s| s.open.load(Ordering::Relaxed)).sum();
                if open >= settings.max_connections && !fresh.evict_oldest() {
                    crate::counters::CONNECTIONS_REFUSED.add();
                    continue;
                }
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
                let (ticket, evicted) = fresh.issue(stream.as_raw_fd());
                if let Err(e) = shard.hand(stream, addr, ticket, evicted) {
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
    let deadline = tokio::time::Instant::now() + settings.grace;
    let mut waiting = Vec::new();
    for shard in shards {
        drop(shard.conns);
        waiting.push((shard.done, shard.open));
    }
    for (done, open) in waiting {
        if tokio::time::timeout_at(deadline, done).await.is_err() {
            tracing::warn!(
                open = open.load(Ordering::Relaxed),
                "shutdown grace is over: closing the connections still open"
            );
        }
    }
    watchdog.stop();
    Ok(())
}

/// A connection on its way from the acceptor to a shard.
struct Handed {
    // Declared before the stream so it is dropped first (see `Ticket`).
    ticket: Ticket,
    stream: std::net::TcpStream,
    addr: SocketAddr,
    evicted: oneshot::Receiver<()>,
}

/// The acceptor's side of one shard.
struct ShardHandle {
    conns: mpsc::UnboundedSender<Handed>,
    /// Connections the shard holds open.
    open: Arc<AtomicUsize>,
    done: oneshot::Receiver<()>,
}

impl ShardHandle {
    /// Builds the shard's runtime here, so a failure to build it fails
    /// start-up, and runs it on a thread of its own.
    fn start(
        i: usize,
        app: Router,
        settings: Arc<Settings>,
        watchdog: Arc<Watchdog>,
    ) -> io::Result<ShardHandle> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (conns, rx) = mpsc::unbounded_channel();
        let open = Arc::new(AtomicUsize::new(0));
        let (done_tx, done) = oneshot::channel();
        let shard_open = open.clone();
        std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || {
                runtime.block_on(run_shard(rx, app, settings, watchdog, shard_open));
                let _ = done_tx.send(());
            })?;
        Ok(ShardHandle { conns, open, done })
    }

    fn hand(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        ticket: Ticket,
        evicted: oneshot::Receiver<()>,
    ) -> io::Result<()> {
        let stream = stream.into_std()?;
        self.open.fetch_add(1, Ordering::Relaxed);
        let handed = Handed {
            stream,
            addr,
            ticket,
            evicted,
        };
        if self.conns.send(handed).is_err() {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(io::Error::other("the shard has stopped"));
        }
        Ok(())
    }
}

/// Serves every connection handed to the shard until the acceptor closes
/// the queue, then waits for their in-flight requests.
async fn run_shard(
    mut conns: mpsc::UnboundedReceiver<Handed>,
    app: Router,
    settings: Arc<Settings>,
    watchdog: Arc<Watchdog>,
    open: Arc<AtomicUsize>,
) {
    let graceful = GracefulShutdown::new();
    while let Some(handed) = conns.recv().await {
        match TcpStream::from_std(handed.stream) {
            Ok(stream) => {
                let plain = settings.tls.is_none();
                let watched = (handed.ticket, watchdog.watch());
                let stream = Counted::new(stream, open.clone(), watched, plain);
                tokio::spawn(conn::serve(
                    stream,
                    handed.addr,
                    app.clone(),
                    settings.clone(),
                    graceful.watcher(),
                    handed.evicted,
                ));
            }
            Err(e) => {
                open.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot register a connection");
            }
        }
    }
    graceful.shutdown().await;
}
