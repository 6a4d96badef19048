//! The dead-letter queue: a page of it, replay and purge.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiState, JSON_BODY_LIMIT, JobPage, PageQuery, check_id, check_queue, job_view, page};
use crate::api::error::{ApiError, ErrorBody, ReadErrors, WriteErrors, read_json};
use crate::queue::{JobState, MAX_BULK};

/// A page of dead jobs, oldest first.
#[utoipa::path(
    get,
    path = "/api/queues/{queue}/dlq",
    tag = "dlq",
    params(("queue" = String, Path, description = "Queue name"), PageQuery),
    responses(
        ReadErrors,
        (status = 200, body = JobPage),
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
        WriteErrors,
        (status = 200, body = DlqResponse),
        (status = 413, body = ErrorBody),
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
        WriteErrors,
        (status = 200, body = DlqResponse),
        (status = 413, body = ErrorBody),
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
