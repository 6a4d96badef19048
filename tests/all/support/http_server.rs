//! A loopback HTTP server for outbound-request tests: records every request, counts the
//! connections it accepts, and answers by path:
//! - `/ok` - 200, body `hello`;
//! - `/status/{code}` - that status;
//! - `/slow` - never answers;
//! - `/huge/{mib}` - 200 with a body of that many MiB, streamed;
//! - `/redirect?to=URL` - 302 to `URL`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::any;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Log {
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    most_open: Arc<AtomicUsize>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    log: Log,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let log = Log::default();
        async fn record(log: &Log, method: &str, path: String, headers: HeaderMap, body: &[u8]) {
            log.seen.lock().unwrap().push(Seen {
                method: method.to_string(),
                path,
                headers,
                body: body.to_vec(),
            });
        }
        async fn ok(
            State(log): State<Log>,
            method: axum::http::Method,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> &'static str {
            record(&log, method.as_str(), "/ok".into(), headers, &body).await;
            "hello"
        }
        async fn status(
            State(log): State<Log>,
            Path(code): Path<u16>,
            headers: HeaderMap,
        ) -> StatusCode {
            record(&log, "?", format!("/status/{code}"), headers, &[]).await;
            StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT)
        }
        async fn slow(State(log): State<Log>, headers: HeaderMap) -> &'static str {
            record(&log, "?", "/slow".into(), headers, &[]).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "late"
        }
        async fn huge(
            State(log): State<Log>,
            Path(mib): Path<usize>,
            headers: HeaderMap,
        ) -> Response {
            record(&log, "?", format!("/huge/{mib}"), headers, &[]).await;
            let chunk = axum::body::Bytes::from(vec![b'x'; 1024 * 1024]);
            let stream = futures_util::stream::iter(
                (0..mib).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
            );
            Response::new(Body::from_stream(stream))
        }
        async fn redirect(
            State(log): State<Log>,
            Query(q): Query<std::collections::HashMap<String, String>>,
            headers: HeaderMap,
        ) -> Response {
            record(&log, "?", "/redirect".into(), headers, &[]).await;
            Response::builder()
                .status(StatusCode::FOUND)
                .header("location", q.get("to").cloned().unwrap_or_default())
                .body(Body::empty())
                .unwrap()
        }
        let app = axum::Router::new()
            .route("/ok", any(ok))
            .route("/status/{code}", any(status))
            .route("/slow", any(slow))
            .route("/huge/{mib}", any(huge))
            .route("/redirect", any(redirect))
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counting = Counting {
            inner: listener,
            log: log.clone(),
        };
        tokio::spawn(async move { axum::serve(counting, app).await });
        TestServer { addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://127.0.0.1:PORT`: the allow-list entry that names this server.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.log.seen.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.log.connections.load(Ordering::SeqCst)
    }

    /// The most connections open at once so far.
    pub fn most_open(&self) -> usize {
        self.log.most_open.load(Ordering::SeqCst)
    }
}

/// The listener, counting accepted and open connections.
struct Counting {
    inner: tokio::net::TcpListener,
    log: Log,
}

/// A stream that counts itself closed when dropped.
pub struct Counted {
    inner: tokio::net::TcpStream,
    open: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for Counting {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok((stream, addr)) = self.inner.accept().await {
                self.log.connections.fetch_add(1, Ordering::SeqCst);
                let now = self.log.open.fetch_add(1, Ordering::SeqCst) + 1;
                self.log.most_open.fetch_max(now, Ordering::SeqCst);
                return (
                    Counted {
                        inner: stream,
                        open: self.log.open.clone(),
                    },
                    addr,
                );
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
