//! `POST /api/queues/{queue}/jobs`: enqueue one job, its body read as an [`EnqueueRequest`].

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiState, Encoding, JSON_BODY_LIMIT, JobStateName};
use crate::api::error::{ApiError, ErrorBody, parse_json, read_json_bytes};
use crate::queue::{
    Backoff, Debounce, Dedupe, EnqueueOutcome, Expiry, JobState, NewJob, QueueConfig, system_time,
    validate_traceparent, validate_tracestate,
};
use crate::telemetry::{self, Span as _};

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
    /// Dead-letter the job (outcome `expired`) if it has not started this many ms after the
    /// enqueue, 1..=10^12. Not with `expires_at_ms`.
    pub expires_in_ms: Option<u64>,
    /// Dead-letter the job (outcome `expired`) if it has not started by this time, ms since
    /// the Unix epoch. Not with `expires_in_ms`.
    pub expires_at_ms: Option<u64>,
    /// Throttle key: while it lives (`dedupe_ttl_ms`), another job with it is not created and
    /// the reply names the first (outcome `deduplicated`). With `dedupe_ttl_ms`.
    pub dedupe_key: Option<String>,
    /// How long a dedupe key lives, ms, 1..=10^12.
    pub dedupe_ttl_ms: Option<u64>,
    /// Debounce key: the last enqueue within `debounce_ms` wins; the key's pending job takes
    /// this payload and starts `debounce_ms` later (outcome `debounced`). With `debounce_ms`;
    /// not with `delay_ms`, `run_at_ms` or `dedupe_key`.
    pub debounce_key: Option<String>,
    /// The debounce window, ms, 1..=10^12.
    pub debounce_ms: Option<u64>,
    /// The longest debouncing may delay the job after its first enqueue, ms, 1..=10^12
    /// [default: no bound].
    pub debounce_max_wait_ms: Option<u64>,
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
        job.options.expires = match (self.expires_in_ms, self.expires_at_ms) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give expires_in_ms or expires_at_ms, not both",
                ));
            }
            (Some(ms), None) => Some(Expiry::In(Duration::from_millis(ms))),
            (None, Some(ms)) => Some(Expiry::At(system_time(ms))),
            (None, None) => None,
        };
        job.options.dedupe = match (self.dedupe_key, self.dedupe_ttl_ms) {
            (Some(key), Some(ms)) => Some(Dedupe {
                key,
                ttl: Duration::from_millis(ms),
            }),
            (None, None) => None,
            _ => {
                return Err(ApiError::bad_request(
                    "dedupe_key and dedupe_ttl_ms go together",
                ));
            }
        };
        job.options.debounce = match (self.debounce_key, self.debounce_ms) {
            (Some(key), Some(ms)) => Some(Debounce {
                key,
                window: Duration::from_millis(ms),
                max_wait: self.debounce_max_wait_ms.map(Duration::from_millis),
            }),
            (None, None) if self.debounce_max_wait_ms.is_none() => None,
            _ => {
                return Err(ApiError::bad_request(
                    "debounce_key and debounce_ms go together (and debounce_max_wait_ms needs them)",
                ));
            }
        };
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
    /// The job's id; for a job deduplicated or debounced, the job that stands for it.
    pub id: String,
    /// False when nothing was created (an existing id, a deduplicated or debounced job).
    pub created: bool,
    /// The job's state (an existing job's current state); absent only for a deduplicated job
    /// whose first job is no longer kept.
    #[schema(value_type = Option<JobStateName>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    /// `created`, `exists`, `deduplicated` (the dedupe key was taken: `id` is the first job)
    /// or `debounced` (`id` is the debounce key's pending job, which took this payload).
    #[schema(example = "created")]
    pub outcome: &'static str,
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
            outcome: match enqueued.outcome {
                EnqueueOutcome::Created => "created",
                EnqueueOutcome::Exists => "exists",
                EnqueueOutcome::Deduplicated => "deduplicated",
                EnqueueOutcome::Debounced => "debounced",
            },
        }),
    ))
}
