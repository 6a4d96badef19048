//! Queue endpoints: enqueue, job detail, list by state, cancel, queue list and counts,
//! pause/resume, the dead-letter queue and the events stream. Each is one call (or two) into
//! [`crate::queue::Client`], the library the CLI uses too; this file only translates JSON.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::error::{ApiError, ErrorBody, parse_json, read_json, read_json_bytes};
use crate::queue::{
    Backoff, CancelOutcome, Job, JobState, MAX_BULK, NewJob, QueueConfig, QueueKeys, system_time,
    validate_job_id, validate_traceparent, validate_tracestate,
};
use crate::telemetry::{self, Span as _};

/// Largest JSON body of the endpoints that take one, enqueue aside (it adds room for the
/// queue's largest payload).
pub const JSON_BODY_LIMIT: u64 = 1024 * 1024;

/// Most jobs or events one page returns.
pub const MAX_PAGE: u64 = 1000;

const DEFAULT_PAGE: u64 = 50;

/// `GET /api/queues` examines at most this many keys (`SCAN` calls of [`SCAN_COUNT`]), so a
/// Redis with millions of job keys costs a bounded amount of work per request.
const SCAN_CALLS: usize = 200;
const SCAN_COUNT: usize = 1000;

// ----- shared shapes ----------------------------------------------------------------------

/// How a byte field (payload, result) is written in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The bytes are valid UTF-8 and given as that text.
    #[default]
    Utf8,
    /// Standard base64 (RFC 4648, with padding).
    Base64,
}

fn encode(bytes: &[u8]) -> (String, Encoding) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), Encoding::Utf8),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            Encoding::Base64,
        ),
    }
}

/// The schema of [`JobState`], from its one canonical list.
pub struct JobStateName;

impl utoipa::PartialSchema for JobStateName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(JobState::ALL.iter().map(|s| s.as_str())))
            .description(Some(
                "A job state (docs/protocol.md, \"States and transitions\").",
            ))
            .into()
    }
}

impl ToSchema for JobStateName {
    fn name() -> std::borrow::Cow<'static, str> {
        "JobState".into()
    }
}

/// A job's retry policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackoffView {
    /// `exponential` or `fixed`.
    pub kind: String,
    /// The base delay (exponential) or the delay (fixed), in ms.
    pub delay_ms: u64,
    /// Longest delay (exponential only).
    pub cap_ms: Option<u64>,
    /// Jitter fraction, 0 to 1.
    pub jitter: f64,
}

fn backoff_view(backoff: &Backoff) -> BackoffView {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    match *backoff {
        Backoff::Fixed { delay, jitter } => BackoffView {
            kind: "fixed".to_string(),
            delay_ms: ms(delay),
            cap_ms: None,
            jitter,
        },
        Backoff::Exponential { base, cap, jitter } => BackoffView {
            kind: "exponential".to_string(),
            delay_ms: ms(base),
            cap_ms: Some(ms(cap)),
            jitter,
        },
    }
}

/// Which parts of its retry policy a job's producer set.
#[derive(Debug, Serialize, ToSchema)]
pub struct OwnPolicyView {
    pub max_attempts: bool,
    pub backoff: bool,
}

/// One finished attempt of a job.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: u32,
    /// `ok`, or the failure class (`timeout`, `trap`, `lease_expired`...).
    pub outcome: String,
    pub error: String,
    pub host: String,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    /// The handler version that ran it (`<version>:<sha256 prefix>`, or `local:<sha256
    /// prefix>` for a host's `--handler` file); null when unknown (an expired lease).
    pub version: Option<String>,
    /// What the attempt logged, one `<source>: <message>` line each, at most 4096 bytes; null
    /// when it logged nothing.
    pub logs: Option<String>,
    /// The last progress (0-100) the attempt reported; null if none.
    pub progress: Option<u8>,
}

/// A job, as stored (docs/protocol.md, "Job fields"). Times are ms since the Unix epoch on the
/// Redis clock.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: String,
    pub queue: String,
    pub handler: String,
    #[schema(value_type = JobStateName)]
    pub state: JobState,
    pub priority: i32,
    /// Attempts started so far (counting the running one while active).
    pub attempt: u32,
    pub max_attempts: u32,
    pub backoff: BackoffView,
    /// Which of `max_attempts` and `backoff` the producer set; the others are the queue
    /// default until an attempt fails under a handler whose deployment sets a retry policy,
    /// which then applies (docs/registry.md).
    pub own_policy: OwnPolicyView,
    /// Per-attempt deadline; null means the handler's default.
    pub timeout_ms: Option<u64>,
    pub created_at_ms: u64,
    pub run_at_ms: Option<u64>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub lease_expires_at_ms: Option<u64>,
    /// Holder of the current (or last) lease.
    pub host: Option<String>,
    pub group: Option<String>,
    /// The W3C trace context the job was enqueued with (docs/observability.md); null if none.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub payload: String,
    pub payload_encoding: Encoding,
    /// The handler's result, once completed.
    pub result: Option<String>,
    pub result_encoding: Option<Encoding>,
    pub last_error: Option<String>,
    pub last_outcome: Option<String>,
    pub replays: u32,
    /// Why its durable steps were deleted while it was dead (`dead_letter_byte_cap`: the
    /// queue's `dead_step_bytes`); null when they were not.
    pub steps_dropped: Option<String>,
    /// The progress its last finished attempt reported (0-100); null if none.
    pub progress: Option<u8>,
    pub history: Vec<AttemptView>,
}

pub(crate) fn job_view(job: &Job) -> JobView {
    let (payload, payload_encoding) = encode(&job.payload);
    let (result, result_encoding) = match job.result.as_deref().map(encode) {
        Some((text, encoding)) => (Some(text), Some(encoding)),
        None => (None, None),
    };
    JobView {
        id: job.id.clone(),
        queue: job.queue.clone(),
        handler: job.handler.clone(),
        state: job.state,
        priority: job.priority,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        backoff: backoff_view(&job.backoff),
        own_policy: OwnPolicyView {
            max_attempts: job.own_policy.max_attempts,
            backoff: job.own_policy.backoff,
        },
        timeout_ms: job
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        created_at_ms: job.created_at_ms,
        run_at_ms: job.run_at_ms,
        started_at_ms: job.started_at_ms,
        finished_at_ms: job.finished_at_ms,
        lease_expires_at_ms: job.lease_expires_at_ms,
        host: job.host.clone(),
        group: job.group.clone(),
        traceparent: job.traceparent.clone(),
        tracestate: job.tracestate.clone(),
        payload,
        payload_encoding,
        result,
        result_encoding,
        last_error: job.last_error.clone(),
        last_outcome: job.last_outcome.clone(),
        replays: job.replays,
        steps_dropped: job.steps_dropped.clone(),
        progress: job.history.last().and_then(|a| a.progress),
        history: job
            .history
            .iter()
            .map(|a| AttemptView {
                attempt: a.attempt,
                outcome: a.outcome.clone(),
                error: a.error.clone(),
                host: a.host.clone(),
                started_at_ms: a.started_at,
                finished_at_ms: a.finished_at,
                version: a.version.clone(),
                logs: a.logs.clone(),
                progress: a.progress,
            })
            .collect(),
    }
}

/// A page of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    #[schema(value_type = JobStateName)]
    pub state: JobState,
    pub offset: u64,
    pub limit: u64,
    pub jobs: Vec<JobView>,
}

/// `offset` and `limit` of a page.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Jobs to skip [default: 0].
    pub offset: Option<u64>,
    /// Jobs to return, 1 to 1000 [default: 50].
    pub limit: Option<u64>,
}

fn page(offset: Option<u64>, limit: Option<u64>) -> Result<(u64, u64), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be within 1..={MAX_PAGE}, got {limit}"
        )));
    }
    Ok((offset.unwrap_or(0), limit))
}

fn check_queue(queue: &str) -> Result<(), ApiError> {
    QueueKeys::new(queue).map(|_| ()).map_err(ApiError::from)
}

fn check_id(id: &str) -> Result<(), ApiError> {
    validate_job_id(id).map_err(|reason| ApiError::bad_request(format!("invalid job id: {reason}")))
}

// ----- enqueue ----------------------------------------------------------------------------

/// A job to enqueue: the options of `wasmq enqueue`. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// The handler (component) that runs the job.
    #[schema(example = "resize")]
    pub handler: String,
    /// The payload, written as `payload_encoding` says [default: empty].
    #[serde(default)]
    pub payload: String,
    /// `utf8` (the payload is the text's bytes) or `base64` [default: utf8].
    #[serde(default)]
    pub payload_encoding: Encoding,
    /// Job id; an id that already exists in the queue is not enqueued again [default: a
    /// fresh ULID].
    pub id: Option<String>,
    /// -1000..=1000, higher runs first [default: 0].
    pub priority: Option<i32>,
    /// Run after this many ms (on the Redis clock). Not with `run_at_ms`.
    pub delay_ms: Option<u64>,
    /// Run at this time, ms since the Unix epoch. Not with `delay_ms`.
    pub run_at_ms: Option<u64>,
    /// Attempts in total, 1..=1000 [default: the handler's retry policy, else 3].
    pub max_attempts: Option<u32>,
    /// `exponential:<base>[:<cap>]` or `fixed:<delay>`, durations like `1s`, `500ms`, `10m`
    /// [default: the handler's retry policy, else exponential:1s].
    #[schema(example = "exponential:1s:10m")]
    pub backoff: Option<String>,
    /// Per-attempt deadline in ms [default: the handler's].
    pub timeout_ms: Option<u64>,
    /// Group key (e.g. a tenant id): the queue's per-group rate limit applies, groups take
    /// turns.
    pub group: Option<String>,
    /// The W3C trace context the job continues (`00-<trace id>-<parent id>-<flags>`); a
    /// malformed one is refused [default: the request's own `traceparent` header].
    #[schema(example = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    pub traceparent: Option<String>,
    /// The W3C `tracestate` that goes with `traceparent` [default: the request's
    /// `tracestate` header, when the trace context came from its headers].
    pub tracestate: Option<String>,
}

impl EnqueueRequest {
    fn into_job(self) -> Result<NewJob, ApiError> {
        let payload = match self.payload_encoding {
            Encoding::Utf8 => self.payload.into_bytes(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(self.payload.as_bytes())
                .map_err(|err| ApiError::bad_request(format!("payload is not base64: {err}")))?,
        };
        let mut job = NewJob::new(self.handler, payload);
        if let Some(id) = self.id {
            job = job.with_id(id);
        }
        if let Some(priority) = self.priority {
            job = job.with_priority(priority);
        }
        match (self.delay_ms, self.run_at_ms) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give delay_ms or run_at_ms, not both",
                ));
            }
            (Some(ms), None) => job = job.with_delay(Duration::from_millis(ms)),
            (None, Some(ms)) => job = job.with_run_at(system_time(ms)),
            (None, None) => {}
        }
        if let Some(n) = self.max_attempts {
            job = job.with_max_attempts(n);
        }
        if let Some(text) = self.backoff {
            let backoff = text
                .parse::<Backoff>()
                .map_err(|err| ApiError::bad_request(format!("invalid backoff: {err}")))?;
            job = job.with_backoff(backoff);
        }
        if let Some(ms) = self.timeout_ms {
            job = job.with_timeout(Duration::from_millis(ms));
        }
        if let Some(group) = self.group {
            job = job.with_group(group);
        }
        job.options.traceparent = self.traceparent;
        job.options.tracestate = self.tracestate;
        job.validate()
            .map_err(|reason| ApiError::bad_request(format!("invalid job: {reason}")))?;
        Ok(job)
    }
}

/// The job an enqueue body (`POST /api/queues/{queue}/jobs`) asks for: the JSON read as an
/// [`EnqueueRequest`], then checked and turned into a [`NewJob`] (what
/// [`crate::queue::Client::enqueue`] is given); a 400 with the reason when either step fails.
/// This is everything the endpoint does with the body's bytes; `fuzz/` drives it with
/// arbitrary bodies.
pub fn enqueue_job(body: &[u8]) -> Result<NewJob, ApiError> {
    parse_json::<EnqueueRequest>(body, false)?.into_job()
}

/// The trace context of a request's own `traceparent` and `tracestate` headers. A malformed
/// header is ignored, as W3C Trace Context asks of a receiver (a proxy may have set it); a
/// malformed body field is refused instead, since the caller wrote it.
pub(crate) fn header_trace_context(headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let Some(traceparent) = text("traceparent").filter(|t| validate_traceparent(t).is_ok()) else {
        return (None, None);
    };
    let tracestate = text("tracestate").filter(|t| validate_tracestate(t).is_ok());
    (
        Some(traceparent.to_string()),
        tracestate.map(str::to_string),
    )
}

/// The enqueued job.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnqueueResponse {
    pub id: String,
    /// False when a job with this id already existed: nothing was written.
    pub created: bool,
    /// The job's state (an existing job's current state).
    #[schema(value_type = JobStateName)]
    pub state: JobState,
}

/// The body limit of an enqueue: [`JSON_BODY_LIMIT`] plus the queue's payload limit as
/// base64 (4 bytes per 3), so a payload at the limit fits whatever its encoding.
fn enqueue_limit(config: &QueueConfig) -> u64 {
    JSON_BODY_LIMIT.saturating_add(config.max_payload_bytes.div_ceil(3).saturating_mul(4))
}

/// Enqueue one job.
#[utoipa::path(
    post,
    path = "/api/queues/{queue}/jobs",
    tag = "jobs",
    params(("queue" = String, Path, description = "Queue name")),
    request_body(content = EnqueueRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Enqueued", body = EnqueueResponse),
        (status = 200, description = "A job with this id exists; nothing written", body = EnqueueResponse),
        (status = 400, description = "Invalid JSON or options", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 413, description = "Body over the limit, or payload over the queue's max_payload_bytes", body = ErrorBody),
        (status = 429, description = "The queue's backlog is at its max_waiting: nothing was enqueued", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn enqueue(
    State(state): State<Arc<ApiState>>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<EnqueueResponse>), ApiError> {
    let config = state.client.config(&queue).await?;
    let body = read_json_bytes(&headers, body, enqueue_limit(&config), false).await?;
    let mut job = enqueue_job(&body)?;
    if job.options.traceparent.is_none() {
        (job.options.traceparent, job.options.tracestate) = header_trace_context(&headers);
    }
    // With tracing on, the job continues from this enqueue's own span.
    let span = telemetry::send_span(
        &queue,
        job.options.traceparent.as_deref(),
        job.options.tracestate.as_deref(),
    );
    if let Some((parent, state)) = span
        .as_ref()
        .and_then(|span| telemetry::traceparent(span.span_context()))
    {
        job.options.traceparent = Some(parent);
        job.options.tracestate = state;
    }
    let enqueued = state.client.enqueue(&queue, &job).await;
    if let Some(mut span) = span {
        match &enqueued {
            Ok(enqueued) => span.set_attribute(opentelemetry::KeyValue::new(
                "messaging.message.id",
                enqueued.id.clone(),
            )),
            Err(err) => span.set_status(opentelemetry::trace::Status::error(err.to_string())),
        }
        span.end();
    }
    let enqueued = enqueued?;
    let status = if enqueued.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(EnqueueResponse {
            id: enqueued.id,
            created: enqueued.created,
            state: enqueued.state,
        }),
    ))
}

// ----- jobs ---------------------------------------------------------------------------------

/// One job: state, attempts, history, payload and result.
#[utoipa::path(
    get,
    path = "/api/queues/{queue}/jobs/{id}",
    tag = "jobs",
    params(
        ("queue" = String, Path, description = "Queue name"),
        ("id" = String, Path, description = "Job id"),
    ),
    responses(
        (status = 200, body = JobView),
        (status = 400, body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub(crate) async fn get_job(
    State(state): State<Arc<ApiState>>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Json<JobView>, ApiError> {
    check_queue(&queue)?;
    check_id(&id)?;
    match state.client.get(&queue, &id).await? {
        Some(job) => Ok(Json(job_view(&job))),
        None => Err(ApiError::not_found(format!("no job {id} in queue {queue}"))),
    }
}

/// The outcome of a cancel.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelResponse {
    pub id: String,
    /// Always true: a job that could not be cancelled is an error answer.
    pub cancelled: bool,
}

/// Cancel a job.
///
/// Only a job that has not started (waiting, delayed or retry); it is deleted.
#[utoipa::path(
    delete,
    path = "/api/queues/{queue}/jobs/{id}",
    tag = "jobs",
    params(
        ("queue" = String, Path, description = "Queue name"),
        ("id" = String, Path, description = "Job id"),
    ),
    responses(
        (status = 200, body = CancelResponse),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is active, completed or dead", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel_job(
    State(state): State<Arc<ApiState>>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Json<CancelResponse>, ApiError> {
    check_queue(&queue)?;
    check_id(&id)?;
    let outcome = state
        .client
        .cancel(&queue, std::slice::from_ref(&id))
        .await?
        .into_iter()
        .next()
        .map(|(_, outcome)| outcome);
    match outcome {
        Some(CancelOutcome::Cancelled) => Ok(Json(CancelResponse {
            id,
            cancelled: true,
        })),
        Some(CancelOutcome::NotCancellable(job_state)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "job {id} is {job_state}; only waiting, delayed or retry jobs can be cancelled"
            ),
        )),
        Some(CancelOutcome::NotFound) | None => {
            Err(ApiError::not_found(format!("no job {id} in queue {queue}")))
        }
    }
}

/// `state`, `offset`, `limit`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// waiting, delayed, active, retry, completed or dead [default: waiting].
    #[param(value_type = Option<JobStateName>)]
    pub state: Option<String>,
    /// Jobs to skip [default: 0].
    pub offset: Option<u64>,
    /// Jobs to return, 1 to 1000 [default: 50].
    pub limit: Option<u64>,
}

/// One page of the jobs in a state.
///
/// In the state's order: waiting by run order, delayed/retry by due time, active by lease
/// expiry, completed/dead oldest first.
#[utoipa::path(
    get,
    path = "/api/queues/{queue}/jobs",
    tag = "jobs",
    params(("queue" = String, Path, description = "Queue name"), ListQuery),
    responses(
        (status = 200, body = JobPage),
        (status = 400, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub(crate) async fn list_jobs(
    State(state): State<Arc<ApiState>>,
    Path(queue): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let job_state = match query.state.as_deref() {
        None => JobState::Waiting,
        Some(text) => text.parse::<JobState>().map_err(ApiError::bad_request)?,
    };
    let (offset, limit) = page(query.offset, query.limit)?;
    let jobs = state.client.list(&queue, job_state, offset, limit).await?;
    Ok(Json(JobPage {
        state: job_state,
        offset,
        limit,
        jobs: jobs.iter().map(job_view).collect(),
    }))
}

// ----- queues -------------------------------------------------------------------------------

/// The queues this server knows.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueList {
    /// Sorted names: the queues the server was started with, and those found in Redis.
    pub queues: Vec<String>,
    /// False when the search of Redis stopped at its bound (200,000 keys examined) before
    /// the end of the keyspace: more queues may exist.
    pub complete: bool,
}

/// The queues this server knows.
///
/// The queues the server was started with plus those found in Redis: a bounded `SCAN` for
/// the keys every queue has once used (`wasmq:{<q>}:seq`, written by every enqueue, and
/// `wasmq:{<q>}:config`, written by pause or limits).
#[utoipa::path(
    get,
    path = "/api/queues",
    tag = "queues",
    responses((status = 200, body = QueueList), (status = 503, body = ErrorBody))
)]
pub(crate) async fn list_queues(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<QueueList>, ApiError> {
    let mut names: BTreeSet<String> = state.queues.iter().cloned().collect();
    let mut conn = state.redis.clone();
    // On a Redis Cluster this walks every primary, within the same bound in all.
    let (keys, complete) = conn
        .scan("wasmq:{*}:[sc][eo][qn]*", SCAN_COUNT, SCAN_CALLS)
        .await
        .map_err(|err| ApiError::from(crate::queue::QueueError::Redis(err)))?;
    names.extend(keys.iter().filter_map(|key| queue_of_key(key)));
    Ok(Json(QueueList {
        queues: names.into_iter().collect(),
        complete,
    }))
}

/// The queue a `wasmq:{<q>}:seq` or `wasmq:{<q>}:config` key belongs to.
fn queue_of_key(key: &[u8]) -> Option<String> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix("wasmq:{")?;
    let (queue, suffix) = rest.split_once('}')?;
    if !matches!(suffix, ":seq" | ":config") {
        return None;
    }
    QueueKeys::new(queue).ok()?;
    Some(queue.to_string())
}

/// Jobs in each state.
#[derive(Debug, Serialize, ToSchema)]
pub struct CountsView {
    pub waiting: u64,
    pub delayed: u64,
    pub active: u64,
    pub retry: u64,
    pub completed: u64,
    pub dead: u64,
}

/// A queue's settings (docs/protocol.md, "Queue config").
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueConfigView {
    pub max_payload_bytes: u64,
    pub max_result_bytes: u64,
    /// Completed jobs kept; null keeps all.
    pub completed_keep: Option<u64>,
    /// Completed jobs older than this are deleted; null keeps them regardless of age.
    pub completed_max_age_ms: Option<u64>,
    pub events_maxlen: u64,
    /// Most job starts per window in the queue, like `100/1s`; null is unlimited.
    pub rate: Option<String>,
    /// Most job starts per window in each group; null is unlimited.
    pub group_rate: Option<String>,
    /// Most bytes the steps of the queue's dead jobs hold in all (the oldest dropped first,
    /// the jobs kept); null is no cap.
    pub dead_step_bytes: Option<u64>,
    /// Most jobs not finished (waiting, delayed, retry, active) that enqueue accepts; null is
    /// unlimited.
    pub max_waiting: Option<u64>,
}

/// A queue: counts, pause flag and settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    pub name: String,
    pub paused: bool,
    pub counts: CountsView,
    pub config: QueueConfigView,
}

/// A queue's counts per state, whether it is paused, and its settings.
#[utoipa::path(
    get,
    path = "/api/queues/{queue}",
    tag = "queues",
    params(("queue" = String, Path, description = "Queue name")),
    responses(
        (status = 200, body = QueueView),
        (status = 400, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub(crate) async fn get_queue(
    State(state): State<Arc<ApiState>>,
    Path(queue): Path<String>,
) -> Result<Json<QueueView>, ApiError> {
    let counts = state.client.counts(&queue).await?;
    let config = state.client.config(&queue).await?;
    Ok(Json(QueueView {
        name: queue,
        paused: counts.paused,
        counts: CountsView {
            waiting: counts.waiting,
            delayed: counts.delayed,
            active: counts.active,
            retry: counts.retry,
            completed: counts.completed,
            dead: counts.dead,
        },
        config: QueueConfigView {
            max_payload_bytes: config.max_payload_bytes,
            max_result_bytes: config.max_result_bytes,
            completed_keep: config.completed_keep,
            completed_max_age_ms: config
                .completed_max_age
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            events_maxlen: config.events_maxlen,
            rate: config.rate.map(|r| r.to_string()),
            group_rate: config.group_rate.map(|r| r.to_string()),
            dead_step_bytes: config.dead_step_bytes,
            max_waiting: config.max_waiting,
        },
    }))
}

/// The outcome of a pause or resume.
#[derive(Debug, Serialize, ToSchema)]
pub struct PauseResponse {
    pub queue: String,
    pub paused: bool,
    /// False when the queue already was in that state.
    pub changed: bool,
}

/// Stop workers from fetching the queue's jobs (enqueue still works).
#[utoipa::path(
    post,
    path = "/api/queues/{queue}/pause",
    tag = "queues",
    params(("queue" = String, Path, description = "Queue name")),
    responses(
        (status = 200, body = PauseResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn pause(
    State(state): State<Arc<ApiState>>,
    Path(queue): Path<String>,
) -> Result<Json<PauseResponse>, ApiError> {
    let changed = state.client.pause(&queue).await?;
    Ok(Json(PauseResponse {
        queue,
        paused: true,
        changed,
    }))
}

/// Let workers fetch the queue's jobs again.
#[utoipa::path(
    post,
    path = "/api/queues/{queue}/resume",
    tag = "queues",
    params(("queue" = String, Path, description = "Queue name")),
    responses(
        (status = 200, body = PauseResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn resume(
    State(state): State<Arc<ApiState>>,
    Path(queue): Path<String>,
) -> Result<Json<PauseResponse>, ApiError> {
    let changed = state.client.resume(&queue).await?;
    Ok(Json(PauseResponse {
        queue,
        paused: false,
        changed,
    }))
}

// ----- consistency check ---------------------------------------------------------------------

/// One inconsistency in a queue's keys (docs/protocol.md, "check.lua").
#[derive(Debug, Serialize, ToSchema)]
pub struct FindingView {
    /// `dangling`, `malformed`, `in_no_set`, `contradicts_set`, `in_two_sets`,
    /// `group_not_listed`, `group_listed_empty` or `wrong_type`.
    pub kind: String,
    /// The job id, group or key it is about.
    pub subject: String,
    pub detail: String,
    pub repaired: bool,
}

/// What a check found in a queue's keys, and what it repaired.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResponse {
    pub queue: String,
    /// Ids and job keys looked at.
    pub checked: u64,
    pub findings: Vec<FindingView>,
    /// Findings left as they were found.
    pub unrepaired: usize,
}

async fn run_check(
    state: &ApiState,
    queue: &str,
    repair: bool,
) -> Result<Json<CheckResponse>, ApiError> {
    let report = state.client.check(queue, repair).await?;
    let unrepaired = report.unrepaired();
    Ok(Json(CheckResponse {
        queue: report.queue,
        checked: report.checked,
        unrepaired,
        findings: report
            .findings
            .into_iter()
            .map(|f| FindingView {
                kind: f.kind,
                subject: f.subject,
                detail: f.detail,
                repaired: f.repaired,
            })
            .collect(),
    }))
}

/// Find what is out of step in the queue's keys (ids with no job, malformed jobs, jobs in no
/// set or two, groups out of step, keys of the wrong type); writes nothing.
#[utoipa::path(
    get,
    path = "/api/queues/{queue}/check",
    tag = "queues",
    params(("queue" = String, Path, description = "Queue name")),
    responses(
        (status = 200, body = CheckResponse),
        (status = 400, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub(crate) async fn get_check(
    State(state): State<Arc<ApiState>>,
    Path(queue): Path<String>,
) -> Result<Json<CheckResponse>, ApiError> {
    run_check(&state, &queue, false).await
}

/// Check the queue and put each finding right: a job back into the set its state names, a
/// malformed one into the dead-letter queue (outcome `malformed`), a dangling id out of its
/// set. Idempotent. No body.
#[utoipa::path(
    post,
    path = "/api/queues/{queue}/check",
    tag = "queues",
    params(("queue" = String, Path, description = "Queue name")),
    responses(
        (status = 200, body = CheckResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn post_check(
    State(state): State<Arc<ApiState>>,
    Path(queue): Path<String>,
) -> Result<Json<CheckResponse>, ApiError> {
    run_check(&state, &queue, true).await
}

// ----- dead-letter queue ---------------------------------------------------------------------

/// A page of dead jobs, oldest first.
#[utoipa::path(
    get,
    path = "/api/queues/{queue}/dlq",
    tag = "dlq",
    params(("queue" = String, Path, description = "Queue name"), PageQuery),
    responses(
        (status = 200, body = JobPage),
        (status = 400, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub(crate) async fn list_dlq(
    State(state): State<Arc<ApiState>>,
    Path(queue): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let (offset, limit) = page(query.offset, query.limit)?;
    let jobs = state.client.dead_letters(&queue, offset, limit).await?;
    Ok(Json(JobPage {
        state: JobState::Dead,
        offset,
        limit,
        jobs: jobs.iter().map(job_view).collect(),
    }))
}

/// Which dead jobs: give `ids` or `oldest`, not both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DlqRequest {
    /// These jobs (at most 10,000).
    pub ids: Option<Vec<String>>,
    /// The N oldest dead jobs (1 to 10,000).
    pub oldest: Option<u64>,
}

/// A job a replay or purge left alone.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedJob {
    pub id: String,
    /// The job's state, or `not_found`.
    pub state: String,
}

/// The outcome of a replay or purge.
#[derive(Debug, Serialize, ToSchema)]
pub struct DlqResponse {
    /// The jobs replayed (or purged).
    pub done: Vec<String>,
    /// The jobs named that were not dead.
    pub skipped: Vec<SkippedJob>,
}

enum Target {
    Ids(Vec<String>),
    Oldest(u64),
}

impl DlqRequest {
    fn target(self) -> Result<Target, ApiError> {
        let max = MAX_BULK as u64;
        match (self.ids, self.oldest) {
            (Some(ids), None) => {
                if ids.is_empty() || ids.len() > MAX_BULK {
                    return Err(ApiError::bad_request(format!(
                        "ids must name 1 to {MAX_BULK} jobs, got {}",
                        ids.len()
                    )));
                }
                ids.iter().try_for_each(|id| check_id(id))?;
                Ok(Target::Ids(ids))
            }
            (None, Some(n)) if (1..=max).contains(&n) => Ok(Target::Oldest(n)),
            (None, Some(n)) => Err(ApiError::bad_request(format!(
                "oldest must be within 1..={max}, got {n}"
            ))),
            _ => Err(ApiError::bad_request(
                "give either ids (a list of job ids) or oldest (a number of jobs)",
            )),
        }
    }
}

async fn dlq_action(
    state: &ApiState,
    queue: &str,
    headers: &HeaderMap,
    body: Body,
    replay: bool,
) -> Result<Json<DlqResponse>, ApiError> {
    check_queue(queue)?;
    let request: DlqRequest = read_json(headers, body, JSON_BODY_LIMIT, false).await?;
    let client = &state.client;
    let report = match (request.target()?, replay) {
        (Target::Ids(ids), true) => client.replay(queue, &ids).await?,
        (Target::Ids(ids), false) => client.purge(queue, &ids).await?,
        (Target::Oldest(n), true) => client.replay_oldest(queue, n).await?,
        (Target::Oldest(n), false) => client.purge_oldest(queue, n).await?,
    };
    Ok(Json(DlqResponse {
        done: report.done,
        skipped: report
            .skipped
            .into_iter()
            .map(|(id, state)| SkippedJob { id, state })
            .collect(),
    }))
}

/// Move dead jobs back to waiting (attempts reset, history kept).
#[utoipa::path(
    post,
    path = "/api/queues/{queue}/dlq/replay",
    tag = "dlq",
    params(("queue" = String, Path, description = "Queue name")),
    request_body(content = DlqRequest, content_type = "application/json"),
    responses(
        (status = 200, body = DlqResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn replay_dlq(
    State(state): State<Arc<ApiState>>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<DlqResponse>, ApiError> {
    dlq_action(&state, &queue, &headers, body, true).await
}

/// Delete dead jobs for good.
#[utoipa::path(
    post,
    path = "/api/queues/{queue}/dlq/purge",
    tag = "dlq",
    params(("queue" = String, Path, description = "Queue name")),
    request_body(content = DlqRequest, content_type = "application/json"),
    responses(
        (status = 200, body = DlqResponse),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn purge_dlq(
    State(state): State<Arc<ApiState>>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<DlqResponse>, ApiError> {
    dlq_action(&state, &queue, &headers, body, false).await
}

// ----- events ---------------------------------------------------------------------------------

/// `after`, `limit`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this stream id (`<ms>-<n>`, from a previous page's `last_id`)
    /// [default: from the oldest kept].
    pub after: Option<String>,
    /// Events to return, 1 to 1000 [default: 100].
    pub limit: Option<u64>,
}

/// A job an event moved.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventJob {
    pub id: String,
    /// The attempt (0 for enqueued and replayed; the failed one for retried and dead).
    pub attempt: u32,
}

/// One transition event.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    /// The stream id; pass it as `after` to read on.
    pub id: String,
    /// enqueued, promoted, active, completed, retried, dead, released, cancelled, replayed,
    /// purged, paused, resumed.
    pub event: String,
    pub jobs: Vec<EventJob>,
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// The id to pass as `after` for the next page (the given `after` when no event came).
    pub last_id: Option<String>,
}

fn check_stream_id(id: &str) -> Result<(), ApiError> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if digits(ms) && digits(seq) && ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok() {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "after must be a stream id like 1700000000000-0, got {id:?}"
        )))
    }
}

/// The queue's transition events.
///
/// Oldest first, after a stream id (`after`, from a previous page's `last_id`).
#[utoipa::path(
    get,
    path = "/api/queues/{queue}/events",
    tag = "queues",
    params(("queue" = String, Path, description = "Queue name"), EventsQuery),
    responses(
        (status = 200, body = EventPage),
        (status = 400, body = ErrorBody),
        (status = 503, body = ErrorBody),
    )
)]
pub(crate) async fn events(
    State(state): State<Arc<ApiState>>,
    Path(queue): Path<String>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    if let Some(after) = &query.after {
        check_stream_id(after)?;
    }
    let (_, limit) = page(None, Some(query.limit.unwrap_or(100)))?;
    let count = usize::try_from(limit).unwrap_or(usize::MAX);
    let events = state
        .client
        .events(&queue, query.after.as_deref(), count)
        .await?;
    let last_id = events.last().map(|e| e.stream_id.clone()).or(query.after);
    Ok(Json(EventPage {
        events: events
            .into_iter()
            .map(|e| EventView {
                id: e.stream_id,
                event: e.event,
                jobs: e
                    .jobs
                    .into_iter()
                    .map(|(id, attempt)| EventJob { id, attempt })
                    .collect(),
            })
            .collect(),
        last_id,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn queue_names_come_only_from_seq_and_config_keys() {
        assert_eq!(
            queue_of_key(b"wasmq:{emails}:seq").as_deref(),
            Some("emails")
        );
        assert_eq!(
            queue_of_key(b"wasmq:{a.b:c}:config").as_deref(),
            Some("a.b:c")
        );
        for key in [
            &b"wasmq:{@registry}:config"[..],
            b"wasmq:{q}:job:x}:seq",
            b"wasmq:{q}:sequence",
            b"wasmq:{q}:seq:x",
            b"other:{q}:seq",
            b"wasmq:{\xff}:seq",
        ] {
            assert_eq!(queue_of_key(key), None, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn stream_ids_are_checked_before_redis_sees_them() {
        for good in ["0", "1700000000000-0", "1-2"] {
            assert!(check_stream_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-",
            "abc",
            "1-",
            "-1",
            "1-2-3",
            "+",
            "99999999999999999999999",
        ] {
            assert!(check_stream_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bytes_are_text_when_they_can_be() {
        assert_eq!(encode(b"hi"), ("hi".to_string(), Encoding::Utf8));
        assert_eq!(encode(&[0xff, 0]), ("/wA=".to_string(), Encoding::Base64));
    }
}
