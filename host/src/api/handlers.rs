//! Handler endpoints: deploy, list, versions, rollback, remove. Each is one call into
//! [`crate::registry::Registry`], the library `wasmq handler ...` uses; a deploy validates the
//! component through the same [`Registry::deploy`] under the engine settings hosts run with,
//! so a component the CLI would refuse is refused here too, and nothing is written for it.
//!
//! [`Registry::deploy`]: crate::registry::Registry::deploy

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::error::{
    ApiError, ErrorBody, ReadErrors, WriteErrors, content_type_is, read_body, read_json,
};
use super::queues::JSON_BODY_LIMIT;
use crate::capability::{Grants, HttpLimitOverrides};
use crate::queue::validate_handler_name;
use crate::registry::{HandlerSettings, Version};
use crate::units::{parse_bytes, parse_duration};
use crate::worker::{DEFAULT_HANDLER_MEMORY, DEFAULT_HANDLER_TIMEOUT};

/// One version of a handler.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    pub name: String,
    pub version: u64,
    /// Whether this is the version hosts run.
    pub current: bool,
    /// SHA-256 of the component, hex.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// When it was deployed, ms since the Unix epoch (Redis clock).
    pub deployed_at_ms: u64,
    /// Per-instance memory cap, bytes.
    pub memory: u64,
    /// Default deadline of an attempt.
    pub timeout_ms: u64,
    pub fuel: Option<u64>,
    pub max_attempts: Option<u32>,
    pub backoff: Option<String>,
    pub concurrency: Option<usize>,
    /// Most starts per period per key (the job's group), like `10/1m`.
    pub throttle: Option<String>,
    /// Events the handler is subscribed to.
    pub on: Vec<String>,
    /// The queue its event jobs go to (null: `default`).
    pub on_queue: Option<String>,
    /// Outbound HTTP patterns it may reach (docs/capabilities.md).
    pub allow_outbound: Vec<String>,
    /// The keys of its config values (the values are not shown).
    pub config: Vec<String>,
    /// The names of the secrets it reads (values are never stored).
    pub secrets: Vec<String>,
    /// Its own outbound HTTP limits, where they differ from the defaults.
    #[schema(value_type = Object)]
    pub http_limits: crate::capability::HttpLimitOverrides,
    /// The key-value buckets it may open, with their options (`cache:ttl=7d`).
    pub kv: Vec<String>,
    /// The Postgres databases it may open, each with the secret holding its URL
    /// (`main` -> `secret:APP_DB_URL`; the URL itself is never stored).
    pub databases: std::collections::BTreeMap<String, String>,
    /// Where its child jobs may go besides the job's own queue (`QUEUE/HANDLER`, `QUEUE/*`).
    pub may_enqueue: Vec<String>,
    /// The targets whose child ids are kept as the handler gives them.
    pub may_enqueue_raw_ids: Vec<String>,
}

/// The JSON of a version: what `GET /api/handlers/{name}/versions` lists, and what
/// `wasmq handler versions --json` prints.
pub(crate) fn version_view(v: &Version, current: bool) -> VersionView {
    let s = &v.settings;
    VersionView {
        name: v.name.clone(),
        version: v.version,
        current,
        sha256: v.sha256.clone(),
        size: v.size,
        deployed_at_ms: v.deployed_at_ms,
        memory: s.memory,
        timeout_ms: u64::try_from(s.timeout.as_millis()).unwrap_or(u64::MAX),
        fuel: s.fuel,
        max_attempts: s.max_attempts,
        backoff: s.backoff.clone(),
        concurrency: s.concurrency,
        throttle: s.throttle.clone(),
        on: s.on.clone(),
        on_queue: s.on_queue.clone(),
        allow_outbound: s.grants.allow_outbound.clone(),
        config: s.grants.config.keys().cloned().collect(),
        secrets: s.grants.secrets.clone(),
        http_limits: s.grants.http_limits,
        kv: s.grants.kv.clone(),
        databases: s.grants.databases.clone(),
        may_enqueue: s.grants.may_enqueue.clone(),
        may_enqueue_raw_ids: s.grants.may_enqueue_raw_ids.clone(),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    validate_handler_name(name).map_err(|reason| ApiError::bad_request(reason.to_string()))
}

/// The current version of every handler.
#[derive(Debug, Serialize, ToSchema)]
pub struct HandlerList {
    /// Sorted by name.
    pub handlers: Vec<VersionView>,
}

/// The current version of every handler.
#[utoipa::path(
    get,
    path = "/api/handlers",
    tag = "handlers",
    responses((status = 200, body = HandlerList), (status = 503, body = ErrorBody))
)]
pub(crate) async fn list_handlers(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<HandlerList>, ApiError> {
    let current = state.registry.current().await?;
    Ok(Json(HandlerList {
        handlers: current.values().map(|v| version_view(v, true)).collect(),
    }))
}

/// Every version of one handler.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    pub name: String,
    /// The version hosts run.
    pub current: u64,
    /// Oldest first.
    pub versions: Vec<VersionView>,
}

/// Every version of a handler, oldest first, marking the current one.
#[utoipa::path(
    get,
    path = "/api/handlers/{name}/versions",
    tag = "handlers",
    params(("name" = String, Path, description = "Handler name")),
    responses(
        ReadErrors,
        (status = 200, body = VersionList),
        (status = 404, description = "No such handler", body = ErrorBody),
    )
)]
pub(crate) async fn versions(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Json<VersionList>, ApiError> {
    check_name(&name)?;
    let (current, versions) = state.registry.versions(&name).await?;
    Ok(Json(VersionList {
        name,
        current,
        versions: versions
            .iter()
            .map(|v| version_view(v, v.version == current))
            .collect(),
    }))
}

/// A deploy's settings, as query parameters (the body is the component).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeployQuery {
    /// Per-instance memory cap, like `128MiB` [default: 64MiB].
    pub memory: Option<String>,
    /// Default deadline of an attempt, like `10s` [default: 30s].
    pub timeout: Option<String>,
    /// CPU budget per attempt, in fuel units.
    pub fuel: Option<u64>,
    /// Attempts in total for this handler's jobs.
    pub max_attempts: Option<u32>,
    /// `exponential:<base>[:<cap>]` or `fixed:<delay>`.
    pub backoff: Option<String>,
    /// Most jobs of this handler running at once per host.
    pub concurrency: Option<usize>,
    /// Most starts of this handler's jobs per period per key (the job's group), like `10/1m`.
    pub throttle: Option<String>,
    /// Event names to subscribe to, comma-separated, like `order/created,order/paid`.
    pub on: Option<String>,
    /// The queue the event jobs go to [default: default].
    pub on_queue: Option<String>,
    /// Outbound HTTP patterns, comma-separated, like `https://api.example.com,https://*.slack.com`.
    pub allow_outbound: Option<String>,
    /// Config values as a JSON object of strings, like `{"region":"eu"}`.
    pub config: Option<String>,
    /// Secret names, comma-separated; each host resolves their values.
    pub secrets: Option<String>,
    /// Outbound HTTP limits, comma-separated `NAME=VALUE`, like `requests=10,response_body=1MiB`.
    pub http_limits: Option<String>,
    /// Key-value buckets, comma-separated `NAME[:OPTION=VALUE]...`, like `cache,marks:ttl=7d`.
    pub kv: Option<String>,
    /// Postgres databases, comma-separated `NAME=secret:SECRET`, like
    /// `main=secret:APP_DB_URL`.
    pub databases: Option<String>,
    /// Where child jobs may go besides the job's own queue, comma-separated `QUEUE/HANDLER`
    /// or `QUEUE/*`, like `payments/charge,mail/*`.
    pub may_enqueue: Option<String>,
    /// As `may_enqueue`, keeping the ids the handler gives those children as they are.
    pub may_enqueue_raw_ids: Option<String>,
}

fn comma_list(text: Option<String>) -> Vec<String> {
    text.map(|list| list.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

impl DeployQuery {
    fn settings(self) -> Result<HandlerSettings, ApiError> {
        let memory = self
            .memory
            .map(|text| parse_bytes("memory", &text))
            .transpose()
            .map_err(ApiError::bad_request)?;
        let timeout: Option<Duration> = self
            .timeout
            .map(|text| parse_duration("timeout", &text))
            .transpose()
            .map_err(ApiError::bad_request)?;
        let settings = HandlerSettings {
            memory: memory.unwrap_or(DEFAULT_HANDLER_MEMORY),
            timeout: timeout.unwrap_or(DEFAULT_HANDLER_TIMEOUT),
            fuel: self.fuel,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            concurrency: self.concurrency,
            throttle: self.throttle,
            on: comma_list(self.on),
            on_queue: self.on_queue,
            grants: Grants {
                allow_outbound: comma_list(self.allow_outbound),
                config: match self.config {
                    Some(text) => serde_json::from_str(&text).map_err(|e| {
                        ApiError::bad_request(format!(
                            "config: expected a JSON object of strings, like {{\"region\":\"eu\"}}: {e}"
                        ))
                    })?,
                    None => Default::default(),
                },
                secrets: comma_list(self.secrets),
                http_limits: HttpLimitOverrides::parse_all(&comma_list(self.http_limits))
                    .map_err(ApiError::bad_request)?,
                kv: comma_list(self.kv),
                databases: comma_list(self.databases)
                    .iter()
                    .map(|d| crate::capability::parse_database_flag(d))
                    .collect::<Result<_, _>>()
                    .map_err(|why| ApiError::bad_request(format!("databases: {why}")))?,
                may_enqueue: comma_list(self.may_enqueue),
                may_enqueue_raw_ids: comma_list(self.may_enqueue_raw_ids),
            },
        };
        settings
            .validate()
            .map_err(|reason| ApiError::bad_request(format!("invalid settings: {reason}")))?;
        Ok(settings)
    }
}

/// Deploy a component as the new current version of a handler on every host.
///
/// The body is the raw component (`Content-Type: application/wasm`), at most the registry's
/// upload limit (`wasmq handler max-upload`); settings are query parameters. The component is
/// validated like `wasmq handler deploy` does; nothing is written for a refused one.
#[utoipa::path(
    post,
    path = "/api/handlers/{name}",
    tag = "handlers",
    params(("name" = String, Path, description = "Handler name"), DeployQuery),
    request_body(content = inline(ComponentBytes), content_type = "application/wasm",
        description = "The component (.wasm) implementing the wasmq:job/handler world"),
    responses(
        (status = 201, description = "Deployed: the new current version", body = VersionView),
        (status = 400, description = "Invalid name or settings", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 413, description = "Over the registry's upload limit", body = ErrorBody),
        (status = 415, description = "Not sent as application/wasm", body = ErrorBody),
        (status = 422, description = "The component was refused (why, in the message)", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn deploy(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(query): Query<DeployQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<VersionView>), ApiError> {
    check_name(&name)?;
    let settings = query.settings()?;
    if !content_type_is(&headers, &["application/wasm", "application/octet-stream"]) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the component as the raw body, with Content-Type: application/wasm",
        ));
    }
    let limit = state.registry.max_upload().await?;
    let bytes = read_body(&headers, body, limit).await?;
    // One compile at a time: validation is CPU-bound, and a host serving the API may be
    // running jobs on the same cores.
    let _turn =
        state.deploys.acquire().await.map_err(|_| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping")
        })?;
    let runtime = state.runtime().await?;
    let version = state
        .registry
        .deploy(
            runtime,
            &name,
            bytes,
            &settings,
            |_sent: u64, _total: u64| {},
        )
        .await?;
    tracing::info!(
        handler = %name,
        version = version.version,
        sha256 = %version.sha256,
        "deployed through the HTTP API"
    );
    Ok((StatusCode::CREATED, Json(version_view(&version, true))))
}

/// The schema of a deploy's body: the component's raw bytes.
pub struct ComponentBytes;

impl utoipa::PartialSchema for ComponentBytes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .content_media_type("application/wasm")
            .into()
    }
}

impl ToSchema for ComponentBytes {}

/// Which version to roll back to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version number [default: the newest one older than the current one].
    pub version: Option<u64>,
}

/// Make an earlier version current again.
///
/// The body is optional: without it, the newest version older than the current one.
#[utoipa::path(
    post,
    path = "/api/handlers/{name}/rollback",
    tag = "handlers",
    params(("name" = String, Path, description = "Handler name")),
    request_body(content = Option<RollbackRequest>, content_type = "application/json"),
    responses(
        WriteErrors,
        (status = 200, description = "The version now current", body = VersionView),
        (status = 404, description = "No such handler or version", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn rollback(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<VersionView>, ApiError> {
    check_name(&name)?;
    let request: RollbackRequest = read_json(&headers, body, JSON_BODY_LIMIT, true).await?;
    let version = state.registry.rollback(&name, request.version).await?;
    Ok(Json(version_view(&version, true)))
}

/// The outcome of a removal.
#[derive(Debug, Serialize, ToSchema)]
pub struct RemoveResponse {
    pub name: String,
    /// How many versions were forgotten.
    pub removed_versions: u64,
}

/// Forget a handler and all its versions; hosts stop starting its jobs.
#[utoipa::path(
    delete,
    path = "/api/handlers/{name}",
    tag = "handlers",
    params(("name" = String, Path, description = "Handler name")),
    responses(
        WriteErrors,
        (status = 200, body = RemoveResponse),
        (status = 404, description = "No such handler", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn remove(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Json<RemoveResponse>, ApiError> {
    check_name(&name)?;
    let removed = state.registry.remove(&name).await?;
    if removed == 0 {
        return Err(ApiError::not_found(format!("no handler named {name:?}")));
    }
    Ok(Json(RemoveResponse {
        name,
        removed_versions: removed,
    }))
}
