//! Outbound HTTP (`wasi:http/outgoing-handler`): the one place a guest's request is decided.
//!
//! Lifecycle of one request:
//! 1. `OutboundHooks::send_request` (wasmtime-wasi-http calls it for every `handle`): the
//!    attempt's request count, the URL (no userinfo), and the handler's [`AllowList`] decide.
//!    A refusal is `HttpRequestDenied` in the guest, a warning in the job's span and a count.
//!    Every request, refused or not, is an entry of the attempt's call record
//!    (`runtime/calls.rs`: method, `scheme://authority`, status or outcome, start, duration).
//! 2. The request goes through the handler version's pooled client ([`HttpClient`]): the
//!    host resolves the name itself and keeps only the addresses `ssrf` permits
//!    ([`PolicyResolver`]); the connection is made to one of those (no second lookup); at
//!    most `max_connections_per_authority` connections per scheme and authority are open.
//! 3. Every wait is bounded by its timeout and by the job's deadline; the response body is
//!    cut at `max_response_bytes` (`HttpResponseBodySize`) and the request body at
//!    `max_request_bytes`. Redirects are not followed: the guest sees the 3xx.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use super::allow::{AllowList, default_port};
use super::{Capabilities, ssrf};
use crate::runtime::calls::{self, HttpEnd, SharedCalls};

/// Limits of a handler's outbound HTTP (docs/capabilities.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Requests one attempt may make.
    pub max_requests: u32,
    /// Bytes of one response body a guest may read.
    pub max_response_bytes: u64,
    /// Bytes of one request body a guest may send.
    pub max_request_bytes: u64,
    /// Waiting for a connection (and its TLS handshake).
    pub connect_timeout: Duration,
    /// From sending the request to the response's head.
    pub first_byte_timeout: Duration,
    /// Between two chunks of the response body.
    pub between_bytes_timeout: Duration,
    /// Connections open at once per scheme and authority, per handler version and host.
    pub max_connections_per_authority: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_requests: 100,
            max_response_bytes: 10 * 1024 * 1024,
            max_request_bytes: 10 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(30),
            between_bytes_timeout: Duration::from_secs(30),
            max_connections_per_authority: 16,
        }
    }
}

/// How an outbound request ended, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundOutcome {
    /// A response head arrived (whatever its status).
    Ok,
    /// Refused by the handler's grants or the address rules; nothing was sent.
    Denied,
    /// Failed: connection, TLS, protocol, body size.
    Error,
    /// A timeout or the job's deadline ended it.
    Timeout,
}

impl OutboundOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Denied => "denied",
            Self::Error => "error",
            Self::Timeout => "timeout",
        }
    }
}

/// Told of every outbound request (the worker counts them in `/metrics`). Called on the job's
/// path: it must not block.
pub trait OutboundObserver: Send + Sync {
    fn request(&self, handler: &str, outcome: OutboundOutcome, elapsed: Duration);
}

/// The per-attempt half of outbound HTTP: the handler's capabilities, the attempt's deadline,
/// how many requests it has made, and its call record (`runtime/calls.rs`), which gets an
/// entry for each request, denied ones included. Lives in the attempt's store.
pub(crate) struct OutboundHooks {
    caps: Arc<Capabilities>,
    deadline: Instant,
    requests: u32,
    calls: SharedCalls,
}

impl OutboundHooks {
    pub fn new(caps: Arc<Capabilities>, deadline: Instant, calls: SharedCalls) -> Self {
        Self {
            caps,
            deadline,
            requests: 0,
            calls,
        }
    }

    /// Step 1 of the lifecycle: whether this request may go out at all.
    fn admit(&mut self, uri: &::http::Uri) -> Result<(), String> {
        let scheme = uri.scheme_str().unwrap_or("https");
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        if authority.contains('@') {
            return Err("the URL carries userinfo (user@host)".to_string());
        }
        let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
            return Err("the URL has no host".to_string());
        };
        let Some(port) = uri.port_u16().or_else(|| default_port(scheme)) else {
            return Err("the URL has no port".to_string());
        };
        self.requests += 1;
        let max = self.caps.http_limits.max_requests;
        if self.requests > max {
            return Err(format!("the attempt made more than {max} requests"));
        }
        if !self.caps.allow.allows(scheme, host, port) {
            return Err(if self.caps.allow.is_empty() {
                "the handler has no allow_outbound grant".to_string()
            } else {
                "no allow_outbound pattern of the handler matches".to_string()
            });
        }
        Ok(())
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    ::http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: ::http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let caps = self.caps.clone();
        let begun = Instant::now();
        let scheme = request.uri().scheme_str().unwrap_or("").to_string();
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        // What the call record keeps of the request: never its path, query or headers.
        let method = request.method().as_str().to_string();
        let target = calls::target(&scheme, &authority);
        let record = self.calls.clone();
        if let Err(why) = self.admit(request.uri()) {
            // Scheme and authority only: a path or query may carry a token.
            tracing::warn!(
                handler = %caps.handler,
                %scheme,
                %authority,
                "outbound request denied: {why}"
            );
            caps.observe(OutboundOutcome::Denied, Duration::ZERO);
            calls::lock(&record).http(
                begun,
                Duration::ZERO,
                &method,
                &target,
                HttpEnd::Outcome(OutboundOutcome::Denied.as_str()),
            );
            // The body is read (and dropped) first, so the guest's write of it succeeds and
            // it learns why from the response, not from a body stream closed under it.
            let limit = caps.http_limits.max_request_bytes;
            let deadline = self.deadline;
            return Box::new(async move {
                let _ = read_body(request.into_body(), limit, deadline).await;
                Err(HttpError::HttpRequestDenied)
            });
        }
        let deadline = self.deadline;
        let mut request = request;
        let span = crate::telemetry::client_span(&mut request);
        Box::new(async move {
            let started = Instant::now();
            let result = send(&caps, request, options, deadline).await;
            if let Some(span) = span {
                crate::telemetry::end_client(
                    span,
                    result.as_ref().ok().map(|r| r.status().as_u16()),
                );
            }
            let outcome = match &result {
                Ok(_) => OutboundOutcome::Ok,
                Err(HttpError::DestinationIpProhibited) => {
                    tracing::warn!(
                        handler = %caps.handler,
                        %scheme,
                        %authority,
                        "outbound request denied: the host resolves only to addresses the \
                         handler may not reach (loopback, private, link-local, ...); an \
                         allow_outbound pattern naming the address would allow it"
                    );
                    OutboundOutcome::Denied
                }
                Err(HttpError::ConnectionTimeout | HttpError::ConnectionReadTimeout) => {
                    OutboundOutcome::Timeout
                }
                Err(err) => {
                    tracing::debug!(handler = %caps.handler, %scheme, %authority, %err, "outbound request failed");
                    OutboundOutcome::Error
                }
            };
            caps.observe(outcome, started.elapsed());
            let end = match (&result, outcome) {
                (Ok(response), _) => HttpEnd::Status(response.status().as_u16()),
                (Err(_), outcome) => HttpEnd::Outcome(outcome.as_str()),
            };
            calls::lock(&record).http(begun, started.elapsed(), &method, &target, end);
            result.map(|response| {
                let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                    Box::new(async { Ok(()) });
                (response, done)
            })
        })
    }
}

/// Steps 2 and 3 of the lifecycle.
async fn send(
    caps: &Capabilities,
    request: ::http::Request<WasiBody>,
    options: Option<RequestOptions>,
    deadline: Instant,
) -> Result<::http::Response<WasiBody>, HttpError> {
    let Some(client) = &caps.http else {
        return Err(HttpError::HttpRequestDenied);
    };
    let limits = &caps.http_limits;
    let options = options.unwrap_or_default();
    let connect = options
        .connect_timeout
        .unwrap_or(limits.connect_timeout)
        .min(limits.connect_timeout);
    let first_byte = options
        .first_byte_timeout
        .unwrap_or(limits.first_byte_timeout)
        .min(limits.first_byte_timeout);
    let between = options
        .between_bytes_timeout
        .unwrap_or(limits.between_bytes_timeout)
        .min(limits.between_bytes_timeout);
    // The request body is read whole before the request goes out (it is bounded by
    // `max_request_bytes`): every failure then reaches the guest through the response, with
    // its own error code, rather than as a body stream closed under its writes.
    let (parts, body) = request.into_parts();
    let body = read_body(body, limits.max_request_bytes, deadline).await?;
    let request = ::http::Request::from_parts(
        parts,
        http_body_util::Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    let remaining = deadline.saturating_duration_since(Instant::now());
    let response = match tokio::time::timeout(
        (connect + first_byte).min(remaining),
        client.client.request(request),
    )
    .await
    {
        Err(_elapsed) => return Err(HttpError::ConnectionTimeout),
        Ok(Err(err)) => return Err(client_error(&err)),
        Ok(Ok(response)) => response,
    };
    let max_response = limits.max_response_bytes;
    Ok(response.map(|incoming| {
        let timed = TimedBody {
            inner: incoming,
            between,
            deadline: tokio::time::Instant::from_std(deadline),
            timer: Box::pin(tokio::time::sleep(between.min(remaining))),
        };
        LimitedBody {
            inner: timed,
            limit: max_response,
            seen: 0,
            over: HttpError::HttpResponseBodySize,
        }
        .boxed_unsync()
    }))
}

/// Reads a request body whole, up to `limit` bytes and until `deadline`.
async fn read_body(body: WasiBody, limit: u64, deadline: Instant) -> Result<Bytes, HttpError> {
    let limited = LimitedBody {
        inner: body,
        limit,
        seen: 0,
        over: HttpError::HttpRequestBodySize,
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(remaining, limited.collect()).await {
        Err(_elapsed) => Err(HttpError::ConnectionTimeout),
        Ok(Err(err)) => Err(err),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// Maps a client error to the `wasi:http` error code a guest sees, by the error's type.
fn client_error(err: &hyper_util::client::legacy::Error) -> HttpError {
    use std::error::Error as _;
    let mut source = err.source();
    while let Some(cause) = source {
        if cause.downcast_ref::<Prohibited>().is_some() {
            return HttpError::DestinationIpProhibited;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<Prohibited>().is_some())
            {
                return HttpError::DestinationIpProhibited;
            }
            if io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
            {
                return HttpError::TlsCertificateError;
            }
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return HttpError::ConnectionRefused,
                std::io::ErrorKind::TimedOut => return HttpError::ConnectionTimeout,
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => {
                    return HttpError::ConnectionTerminated;
                }
                _ => {}
            }
        }
        if cause.downcast_ref::<rustls::Error>().is_some() {
            return HttpError::TlsCertificateError;
        }
        source = cause.source();
    }
    if err.is_connect() {
        return HttpError::DestinationUnavailable;
    }
    HttpError::HttpProtocolError
}

/// The addresses of a name resolved to nothing a handler may reach.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to addresses the handler may not reach")]
struct Prohibited {
    host: String,
}

/// A resolver that keeps only the addresses `ssrf` permits under the handler's allow-list,
/// so the connector connects to an address that was checked, never to one looked up again.
#[derive(Clone)]
struct PolicyResolver {
    allow: Arc<AllowList>,
}

impl tower_service::Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| ssrf::permitted(addr.ip(), &allow))
                .collect();
            if permitted.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    Prohibited { host },
                ));
            }
            Ok(permitted.into_iter())
        })
    }
}

type Https = hyper_rustls::HttpsConnector<HttpConnector<PolicyResolver>>;

/// Authorities past which `Capped` forgets the idle ones.
const MAX_TRACKED_AUTHORITIES: usize = 256;

/// A connector that opens at most `cap` connections per scheme and authority at once: each
/// connection holds a permit until hyper drops it.
#[derive(Clone)]
struct Capped {
    inner: Https,
    cap: usize,
    open: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl tower_service::Service<::http::Uri> for Capped {
    type Response = CappedStream;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: ::http::Uri) -> Self::Future {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map(|a| a.as_str()).unwrap_or("")
        );
        let semaphore = {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            // A wildcard pattern allows any number of authorities: forget those with no
            // connection open, so the map stays as large as what is in use.
            if open.len() >= MAX_TRACKED_AUTHORITIES {
                let cap = self.cap;
                open.retain(|_, s| s.available_permits() < cap);
            }
            open.entry(key)
                .or_insert_with(|| Arc::new(Semaphore::new(self.cap)))
                .clone()
        };
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let permit = semaphore.acquire_owned().await?;
            let stream = connecting.await?;
            Ok(CappedStream {
                inner: stream,
                _permit: permit,
            })
        })
    }
}

struct CappedStream {
    inner: hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>,
    _permit: OwnedSemaphorePermit,
}

impl Connection for CappedStream {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

impl hyper::rt::Read for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The pooled client of one handler version on this host: keep-alive connections, at most
/// `max_connections_per_authority` per authority, TLS with the webpki roots and the system's.
pub(crate) struct HttpClient {
    client: Client<Capped, WasiBody>,
}

/// How long an idle keep-alive connection is kept.
const IDLE_CONNECTION: Duration = Duration::from_secs(30);

/// Trust roots: Mozilla's (webpki-roots) and the system's store (corporate CAs), read once.
static TLS: LazyLock<Result<Arc<rustls::ClientConfig>, String>> = LazyLock::new(|| {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::debug!(%err, "a system CA certificate could not be read");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, "system CA certificates trusted for outbound HTTPS");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|builder| Arc::new(builder.with_root_certificates(roots).with_no_client_auth()))
        .map_err(|err| format!("outbound TLS could not be configured: {err}"))
});

impl HttpClient {
    pub fn new(allow: Arc<AllowList>, limits: &HttpLimits) -> Result<Self, String> {
        let tls = TLS.as_ref().map_err(Clone::clone)?;
        let mut http = HttpConnector::new_with_resolver(PolicyResolver { allow });
        http.enforce_http(false);
        http.set_connect_timeout(Some(limits.connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((**tls).clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let capped = Capped {
            inner: https,
            cap: limits.max_connections_per_authority.max(1),
            open: Arc::default(),
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_CONNECTION)
            .pool_max_idle_per_host(limits.max_connections_per_authority.max(1))
            .build(capped);
        Ok(Self { client })
    }
}

/// A body cut with an error past `limit` bytes.
struct LimitedBody<B> {
    inner: B,
    limit: u64,
    seen: u64,
    over: fn(Option<u64>) -> HttpError,
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<HttpError>,
{
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if self.seen > self.limit {
            return Poll::Ready(Some(Err((self.over)(Some(self.seen)))));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.seen = self.seen.saturating_add(data.len() as u64);
                    if self.seen > self.limit {
                        return Poll::Ready(Some(Err((self.over)(Some(self.seen)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body whose chunks must come within `between` of each other, and before the
/// job's deadline.
struct TimedBody {
    inner: hyper::body::Incoming,
    between: Duration,
    deadline: tokio::time::Instant,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = (tokio::time::Instant::now() + self.between).min(self.deadline);
                self.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(HttpError::from(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
