//! Queue endpoints, one file per resource: `enqueue.rs`, `jobs.rs` (one job, cancel, a page of
//! a state), `search.rs` (finding jobs by filter, a page at a time), `queue.rs` (the queue
//! list, counts and settings, pause and resume), `check.rs`,
//! `dead.rs` (the dead-letter queue) and `stream.rs` (the events stream). Each is one call (or
//! two) into [`crate::queue::Client`], the library the CLI uses too; these files only
//! translate JSON. The shapes they share (a job, a page) are here.

use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::error::ApiError;
use crate::queue::{Backoff, CallEntry, Job, JobState, QueueKeys, validate_job_id};

pub(crate) mod check;
pub(crate) mod dead;
pub(crate) mod enqueue;
pub(crate) mod jobs;
pub(crate) mod queue;
pub(crate) mod search;
pub(crate) mod stream;

pub use enqueue::enqueue_job;

/// Largest JSON body of the endpoints that take one, enqueue aside (it adds room for the
/// queue's largest payload).
pub const JSON_BODY_LIMIT: u64 = 1024 * 1024;

/// Most jobs or events one page returns.
pub const MAX_PAGE: u64 = 1000;

const DEFAULT_PAGE: u64 = 50;

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
    /// Its outbound HTTP requests and SQL statements, at most 50, in order of start: empty
    /// when it made none, and for an attempt whose end no host recorded (`lease_expired`).
    pub calls: Vec<CallView>,
    /// Calls past the 50 kept: counted, not recorded.
    pub calls_dropped: u64,
    /// A `suspended` attempt's durable sleep: its name and length (null for entries written
    /// before hosts recorded them; the error text says it too).
    pub sleep: Option<String>,
    pub sleep_ms: Option<u64>,
}

/// One outbound HTTP request or SQL statement of an attempt (docs/protocol.md, "Call
/// records"): never a header, body, URL path or query, statement text or parameter.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallView {
    /// `http` or `sql`.
    pub kind: String,
    /// When it started, ms from the attempt's start on its host.
    pub at_ms: u64,
    /// How long it took (an HTTP request: to its response's head).
    pub duration_ms: u64,
    /// HTTP: the method.
    pub method: Option<String>,
    /// HTTP: `scheme://authority` only.
    pub target: Option<String>,
    /// HTTP: the response's status.
    pub status: Option<u16>,
    /// No status: `denied`, `timeout`, `error` (HTTP); `error` for a SQL statement that failed.
    pub outcome: Option<String>,
    /// SQL: the statement's command keyword (`SELECT`, ...).
    pub operation: Option<String>,
    /// SQL: the database grant's name.
    pub database: Option<String>,
}

impl From<&CallEntry> for CallView {
    fn from(c: &CallEntry) -> Self {
        CallView {
            kind: c.kind.clone(),
            at_ms: c.at_ms,
            duration_ms: c.duration_ms,
            method: c.method.clone(),
            target: c.target.clone(),
            status: c.status,
            outcome: c.outcome.clone(),
            operation: c.op.clone(),
            database: c.db.clone(),
        }
    }
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
    /// Who cancelled it (the API token's name, `cli`, what a client passed) and why, for a
    /// job dead-lettered by a cancel (`last_outcome` `cancelled`); null when not given.
    pub cancelled_by: Option<String>,
    pub cancel_reason: Option<String>,
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
        cancelled_by: job.cancelled_by.clone(),
        cancel_reason: job.cancel_reason.clone(),
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
                calls: a.calls.iter().flatten().map(CallView::from).collect(),
                calls_dropped: a.calls_dropped.unwrap_or(0),
                sleep: a.sleep.clone(),
                sleep_ms: a.sleep_ms,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bytes_are_text_when_they_can_be() {
        assert_eq!(encode(b"hi"), ("hi".to_string(), Encoding::Utf8));
        assert_eq!(encode(&[0xff, 0]), ("/wA=".to_string(), Encoding::Base64));
    }
}
