//! The accept loop of the HTTP API, in place of `axum::serve`, which has no header-read or
//! idle timeout and no connection cap: one client could hold a half-sent request open for ever,
//! or open connections until the process ran out of file descriptors.
//!
//! 1. Accept a connection; over [`Limits::max_connections`] open ones, close it at once.
//! 2. Serve it as HTTP/1.1 with a header-read timeout ([`Limits::header_timeout`]): a request
//!    whose head has not arrived in full within it, and a keep-alive connection idle that long
//!    between requests, are closed.
//! 3. On shutdown: stop accepting, let each connection finish its request in flight, and close.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Bounds on what one client can hold of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for a request's head (request line and headers), counted from the first
    /// wait for it: on a new connection, and after each response on a kept-alive one.
    pub header_timeout: Duration,
    /// Most connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
}

pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then until every connection has
/// finished the request it was serving.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let refused_log = RateLimitedLog::default();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors (EMFILE) or a connection reset before it was
                    // accepted: wait a moment rather than spin.
                    tracing::warn!("accepting an HTTP connection: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refused_log.warn(limits.max_connections);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors are the client's (reset, timed out, malformed): nothing to report.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// "connections refused" at most once a minute, with how many since the last line.
#[derive(Default)]
struct RateLimitedLog {
    refused: AtomicU64,
    last: std::sync::Mutex<Option<Instant>>,
}

impl RateLimitedLog {
    fn warn(&self, cap: usize) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            *last = Some(Instant::now());
            self.refused.store(0, Ordering::Relaxed);
            tracing::warn!(
                refused,
                "HTTP API: {cap} connections are open, the most allowed; closing new ones \
                 (--http-max-connections)"
            );
        }
    }
}
