//! One job (`GET`, `DELETE` to cancel) and a page of a state's jobs.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiState, JobPage, JobStateName, JobView, check_id, check_queue, job_view, page};
use crate::api::error::{ApiError, ErrorBody, ReadErrors};
use crate::queue::{CancelOutcome, JobState};

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
        ReadErrors,
        (status = 200, body = JobView),
        (status = 404, description = "No such job", body = ErrorBody),
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
        ReadErrors,
        (status = 200, body = JobPage),
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
