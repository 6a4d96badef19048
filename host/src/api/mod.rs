//! The HTTP API: JSON endpoints for everything the CLI does with queues, jobs, the dead-letter
//! queue, events, handlers and schedules, and the OpenAPI document of them at
//! `/openapi.json`. Served by `wasmq serve` and, beside a worker, by `wasmq run --http ADDR`.
//! The reference is docs/api.md.
//!
//! - [`ApiConfig`] - where to listen, the Redis URL, the token, the queues the server knows.
//! - [`Server`] - a bound listener with its router: [`Server::bind`] refuses an unsafe
//!   configuration and a busy port before anything is served; [`Server::serve`] runs until a
//!   shutdown signal; [`Server::spawn`] runs it beside something else.
//! - [`openapi`] - the OpenAPI 3.1 document, built from the same `#[utoipa::path]` handlers the
//!   router is built from, so a route cannot be missing from the document.
//!
//! Each endpoint is a thin translation into the library calls the CLI makes
//! ([`crate::queue::Client`], [`crate::registry::Registry`], [`crate::schedule::Schedules`]):
//! `queues/` (one file per resource: enqueue, jobs, queue, check, dead, stream),
//! `handlers.rs` (the registry), `schedules.rs`, `events.rs`, and `timeline.rs` and
//! `durations.rs` (a job's run timeline and a queue's duration percentiles, computed when
//! asked from what the scripts record). Around them: `auth.rs` (who may call what),
//! `error.rs` (the one error shape; `ReadErrors` and `WriteErrors`, the 400/401/503 answers
//! every read or write endpoint shares; body limits) and `listener.rs` (the accept loop, with
//! a header-read timeout and a connection cap). `dashboard.rs` serves the web dashboard at
//! `/`, static files that call these endpoints; they are not in the OpenAPI document.
//!
//! **Invariant:** a request is refused (auth, body limit, bad JSON, invalid options) before it
//! writes anything to Redis; every write is the same single script call the CLI makes.
//!
//! **Boundary:** the endpoints, their JSON and the error shape are what HTTP clients (and the
//! dashboard) depend on; `/openapi.json` describes them.

mod auth;
mod dashboard;
mod durations;
mod error;
mod events;
mod handlers;
mod listener;
mod queues;
mod schedules;
mod timeline;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::connection::{ConnectOptions, RedisConnection, RedisTarget};
use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::{OnceCell, Semaphore, oneshot};
use tokio::task::JoinHandle;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::read_token_file;
pub use error::{ApiError, ErrorBody};
/// The JSON view of a job: what `GET /api/queues/{queue}/jobs/{id}` returns, and what
/// `wasmq job --json` prints, so the two cannot drift apart.
pub(crate) use handlers::version_view;
pub use listener::{DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, Limits as HttpLimits};
pub(crate) use queues::job_view;
pub(crate) use queues::search::search_response;
pub use queues::{JSON_BODY_LIMIT, JobView, MAX_PAGE, enqueue_job};

use crate::metrics::{self, Metrics};
use crate::queue::Client;
use crate::registry::Registry;
use crate::runtime::{CompileConfig, Runtime, RuntimeConfig};

/// The address `wasmq serve` listens on unless told otherwise.
pub const DEFAULT_BIND: &str = "127.0.0.1:7070";

/// How long in-flight requests may finish once the server is told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What a server needs to start.
#[derive(Clone)]
pub struct ApiConfig {
    /// Where to listen. Anything but a loopback address needs a token.
    pub bind: SocketAddr,
    pub redis_url: String,
    /// The bearer token; `None` (and no `named_tokens`) serves loopback only, without auth.
    /// A request made with it records the name `api`.
    pub token: Option<String>,
    /// More bearer tokens, each with the name a request made with it records (a cancel's
    /// `cancelled_by`): (name, token) pairs, as [`read_token_file`] reads them.
    pub named_tokens: Vec<(String, String)>,
    /// Queues `GET /api/queues` lists even before Redis has a key of theirs (a worker's
    /// `--queues`); `/metrics` reports the depth of these.
    pub queues: Vec<String>,
    /// The metrics `/metrics` serves: a worker's, beside it (`wasmq run --http`); `None` for
    /// a server of its own, which reports only the queues' depths.
    pub metrics: Option<Arc<Metrics>>,
    /// Where and under which limits deploys are compiled (`CompileConfig::default()`
    /// compiles in this process, unbounded; `wasmq serve` and `wasmq run --http` compile in a
    /// child process).
    pub compile: CompileConfig,
    /// Header-read timeout and connection cap.
    pub limits: HttpLimits,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("bind", &self.bind)
            .field("redis_url", &crate::connection::redact(&self.redis_url))
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field(
                "named_tokens",
                &self
                    .named_tokens
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .field("queues", &self.queues)
            .field("metrics", &self.metrics.is_some())
            .field("compile", &self.compile)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error(
        "refusing to serve the HTTP API on {0} without a token: anyone who can reach that \
         address could enqueue jobs and deploy handlers. Set a token (WASMQ_API_TOKEN, or \
         `serve --token` / `run --api-token`), or bind a loopback address such as \
         127.0.0.1:7070"
    )]
    Unprotected(SocketAddr),
    #[error("invalid API token: {0}")]
    BadToken(String),
    #[error("invalid HTTP limits: {0}")]
    BadLimits(&'static str),
    #[error("cannot listen on {addr}{}", bind_hint(.source))]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot connect to Redis at {url}")]
    Redis {
        /// The URL without its credentials.
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn bind_hint(err: &std::io::Error) -> &'static str {
    match err.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another process is listening there: stop it, or choose another port with --http)"
        }
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need privileges: choose a port above 1024)"
        }
        std::io::ErrorKind::AddrNotAvailable => " (no interface of this machine has that address)",
        _ => "",
    }
}

impl ApiConfig {
    /// Refuses a configuration that would expose the API: a non-loopback address without a
    /// token, or a token that cannot be sent in a header.
    pub fn check(&self) -> Result<(), StartError> {
        let mut names = std::collections::BTreeSet::new();
        let mut digests = std::collections::BTreeSet::new();
        for (name, token) in self.tokens() {
            if token.trim().is_empty() {
                return Err(StartError::BadToken("it is empty".into()));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(StartError::BadToken(
                    "use printable ASCII without spaces, so it fits an Authorization header".into(),
                ));
            }
            let name_ok = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            // Names are not echoed: a line written token first would show its token.
            if !name_ok {
                return Err(StartError::BadToken(
                    "a token's name is not 1 to 64 of A-Z a-z 0-9 . _ - (a token file's \
                     lines are `<name> <token>`)"
                        .into(),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(StartError::BadToken(
                    "a token's name is given twice (`api` is the name of --token's)".into(),
                ));
            }
            if !digests.insert(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes())) {
                return Err(StartError::BadToken(
                    "one token is given under two names".into(),
                ));
            }
        }
        if self.token.is_none() && self.named_tokens.is_empty() && !self.bind.ip().is_loopback() {
            return Err(StartError::Unprotected(self.bind));
        }
        if self.limits.max_connections == 0 {
            return Err(StartError::BadLimits(
                "--http-max-connections must be at least 1",
            ));
        }
        if self.limits.header_timeout.is_zero() {
            return Err(StartError::BadLimits(
                "--http-header-timeout must be above zero",
            ));
        }
        Ok(())
    }
}

impl ApiConfig {
    /// Every accepted token with its name: `--token`'s (`api`) first.
    fn tokens(&self) -> Vec<(String, String)> {
        let unnamed = self
            .token
            .iter()
            .map(|token| (auth::UNNAMED.to_string(), token.clone()));
        unnamed.chain(self.named_tokens.iter().cloned()).collect()
    }
}

/// What every endpoint shares.
pub(crate) struct ApiState {
    client: Client,
    registry: Registry,
    schedules: crate::schedule::Schedules,
    /// For what is not a queue or registry call: `PING` (health) and the `SCAN` behind
    /// `GET /api/queues`.
    redis: RedisConnection,
    queues: Vec<String>,
    metrics: Arc<Metrics>,
    /// Where deploys are compiled, and under which limits.
    compile: CompileConfig,
    /// The metrics are this server's own (no worker beside it reports Redis's state).
    own_metrics: bool,
    /// The engine deploys are validated under, built on the first deploy.
    runtime: OnceCell<Runtime>,
    deploys: Semaphore,
}

impl ApiState {
    /// Built like `wasmq handler deploy` builds it: the engine settings hosts run with, no
    /// instance pool (it only compiles).
    async fn runtime(&self) -> Result<&Runtime, ApiError> {
        self.runtime
            .get_or_try_init(|| async {
                Runtime::new(RuntimeConfig {
                    pooling: false,
                    compile: self.compile.clone(),
                    ..crate::worker::host_runtime()
                })
            })
            .await
            .map_err(|err| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot build the validation engine: {err}"),
                )
            })
    }
}

/// Adds the bearer scheme the mutating endpoints name.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi
            .components
            .get_or_insert_with(utoipa::openapi::Components::new);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wasmq HTTP API",
        description = "Enqueue and inspect jobs, control queues and the dead-letter queue, \
            deploy handlers. Errors are {\"error\": \"...\"}. See docs/api.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "jobs", description = "Enqueue, inspect, list and cancel jobs"),
        (name = "queues", description = "Queues: counts, settings, pause, events"),
        (name = "dlq", description = "The dead-letter queue"),
        (name = "handlers", description = "Handler components in the registry"),
        (name = "schedules", description = "Cron schedules"),
        (name = "events", description = "Events that start their subscribed handlers"),
        (name = "service", description = "Health and this document")
    )
)]
struct ApiDoc;

/// The routes and the document, from one list.
fn routes() -> OpenApiRouter<Arc<ApiState>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(queues::queue::list_queues))
        .routes(routes!(queues::queue::get_queue))
        .routes(routes!(queues::queue::pause))
        .routes(routes!(queues::queue::resume))
        .routes(routes!(queues::check::get_check, queues::check::post_check))
        .routes(routes!(queues::enqueue::enqueue, queues::jobs::list_jobs))
        .routes(routes!(queues::jobs::get_job, queues::jobs::cancel_job))
        .routes(routes!(queues::search::search_jobs))
        .routes(routes!(queues::jobs::cancel_matching))
        .routes(routes!(timeline::get_timeline))
        .routes(routes!(queues::dead::list_dlq))
        .routes(routes!(queues::dead::replay_dlq))
        .routes(routes!(queues::dead::purge_dlq))
        .routes(routes!(queues::stream::events))
        .routes(routes!(durations::durations))
        .routes(routes!(handlers::list_handlers))
        .routes(routes!(handlers::deploy, handlers::remove))
        .routes(routes!(handlers::versions))
        .routes(routes!(handlers::rollback))
        .routes(routes!(schedules::list_schedules))
        .routes(routes!(schedules::add, schedules::remove))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(events::send))
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

/// The OpenAPI 3.1 document of every endpoint (what `GET /openapi.json` serves).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// Health of the server.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Whether Redis answers (`PING` within two seconds). Never needs the token.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
    )
)]
async fn healthz(State(state): State<Arc<ApiState>>) -> Result<Json<Health>, ApiError> {
    ping(&state).await?;
    Ok(Json(Health {
        status: "ok".to_string(),
    }))
}

/// `PING`, within two seconds.
async fn ping(state: &ApiState) -> Result<(), ApiError> {
    let mut conn = state.redis.clone();
    let ping = redis::cmd("PING");
    match tokio::time::timeout(
        Duration::from_secs(2),
        ping.query_async::<String>(&mut conn),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Redis is unreachable: {err}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Redis did not answer PING within 2s",
        )),
    }
}

/// Prometheus metrics in the OpenMetrics text format (docs/metrics.md): the jobs this host
/// ran, by outcome, with durations and instantiation times; its slots and memory budget; lease
/// recoveries, Redis reconnects and rate-limited fetches; the depth of each of its queues per
/// state, read from Redis now. Needs the token off loopback, like every GET.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    responses((status = 200, description = "The metrics", content_type = "application/openmetrics-text"))
)]
async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    if state.own_metrics {
        state.metrics.set_redis_up(ping(&state).await.is_ok());
    }
    let text = state
        .metrics
        .render(Some(&state.client), &state.queues)
        .await;
    (
        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"))
)]
async fn openapi_json() -> Response {
    static DOC: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| openapi().to_json().unwrap_or_else(|_| "{}".to_string()));
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        DOC.as_str(),
    )
        .into_response()
}

async fn no_route(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no endpoint {} {}; the endpoints are listed at /openapi.json",
        request.method(),
        request.uri().path()
    ))
}

/// A bound listener and its router, not yet serving.
pub struct Server {
    listener: TcpListener,
    app: Router,
    addr: SocketAddr,
    limits: HttpLimits,
}

impl Server {
    /// Checks the configuration, connects to Redis and binds the address. Fails, with a
    /// message that says what to change, on a non-loopback address without a token, a busy
    /// port or an unreachable Redis.
    pub async fn bind(config: ApiConfig) -> Result<Server, StartError> {
        config.check()?;
        let redis_error = |source: Box<dyn std::error::Error + Send + Sync>| StartError::Redis {
            url: crate::connection::redact(&config.redis_url),
            source,
        };
        let client = Client::connect(&config.redis_url)
            .await
            .map_err(|e| redis_error(Box::new(e)))?;
        let registry = Registry::connect(&config.redis_url)
            .await
            .map_err(|e| redis_error(Box::new(e)))?;
        let schedules = crate::schedule::Schedules::connect(&config.redis_url)
            .await
            .map_err(|e| redis_error(Box::new(e)))?;
        let redis = RedisTarget::open(&config.redis_url)
            .map_err(|e| redis_error(Box::new(e)))?
            .connect(ConnectOptions {
                response_timeout: Some(Duration::from_secs(10)),
                connection_timeout: Duration::from_secs(2),
                retries: 1,
            })
            .await
            .map_err(|e| redis_error(Box::new(e)))?;
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let state = Arc::new(ApiState {
            client,
            registry,
            schedules,
            redis,
            queues: config.queues.clone(),
            metrics: config.metrics.clone().unwrap_or_default(),
            compile: config.compile.clone(),
            own_metrics: config.metrics.is_none(),
            runtime: OnceCell::new(),
            deploys: Semaphore::new(1),
        });
        let access = Arc::new(auth::Access::with_tokens(
            &config.tokens(),
            addr.ip().is_loopback(),
        ));
        let (router, _doc) = routes().split_for_parts();
        let app = router
            .merge(dashboard::routes())
            .fallback(no_route)
            .with_state(state)
            .layer(axum::middleware::map_response(error::json_errors))
            .layer(axum::middleware::from_fn_with_state(
                access,
                auth::authorize,
            ))
            .layer(axum::extract::DefaultBodyLimit::max(
                usize::try_from(JSON_BODY_LIMIT).unwrap_or(usize::MAX),
            ));
        Ok(Server {
            listener,
            app,
            addr,
            limits: config.limits,
        })
    }

    /// The address it listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish (at most five
    /// seconds).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stopping_tx, stopping_rx) = oneshot::channel::<()>();
        let graceful = listener::serve(self.listener, self.app, self.limits, async move {
            shutdown.await;
            let _ = stopping_tx.send(());
        });
        tokio::pin!(graceful);
        tokio::select! {
            () = &mut graceful => Ok(()),
            () = async {
                if stopping_rx.await.is_ok() {
                    tokio::time::sleep(SHUTDOWN_GRACE).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!("HTTP requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
                Ok(())
            }
        }
    }

    /// Serves on a task of its own until [`Running::stop`].
    pub fn spawn(self) -> Running {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let addr = self.addr;
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = stop_rx.await;
            };
            if let Err(err) = self.serve(stop).await {
                tracing::error!(%addr, "the HTTP API stopped: {err}");
            }
        });
        Running {
            stop: stop_tx,
            task,
            addr,
        }
    }
}

/// A server running on its own task.
pub struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    addr: SocketAddr,
}

impl Running {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish (at most five seconds), and returns
    /// when the server is gone.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(err) = self.task.await
            && err.is_panic()
        {
            tracing::error!("the HTTP API task panicked: {err}");
        }
    }
}
