//! The queues this server knows, one queue's counts and settings, pause and resume.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;
use crate::api::error::{ApiError, ErrorBody, ReadErrors, WriteErrors};
use crate::queue::QueueKeys;

/// `GET /api/queues` examines at most this many keys (`SCAN` calls of [`SCAN_COUNT`]), so a
/// Redis with millions of job keys costs a bounded amount of work per request.
const SCAN_CALLS: usize = 200;
const SCAN_COUNT: usize = 1000;

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
    /// Most jobs of any one group running at once; null is unlimited.
    pub group_concurrency: Option<u64>,
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
        ReadErrors,
        (status = 200, body = QueueView),
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
            group_concurrency: config.group_concurrency,
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
        WriteErrors,
        (status = 200, body = PauseResponse),
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
        WriteErrors,
        (status = 200, body = PauseResponse),
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
}
