//! One job (`GET`, `DELETE` to cancel), the paged cancel of a handler's or a group's jobs
//! (`POST .../cancel`) and a page of a state's jobs.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    ApiState, JSON_BODY_LIMIT, JobPage, JobStateName, JobView, check_id, check_queue, job_view,
    page,
};
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ErrorBody, ReadErrors, WriteErrors, read_json};
use crate::queue::{CancelBy, CancelFilter, CancelOutcome, JobState, MAX_CANCEL_PAGE};

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

/// `reason`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CancelQuery {
    /// Why, kept on the job as `cancel_reason` (at most 256 bytes kept).
    pub reason: Option<String>,
}

/// Cancel a job.
///
/// A waiting, delayed (sleeping too), retry or running job. It is dead-lettered with outcome
/// `cancelled`, `cancelled_by` the name of the request's token (`api` for the unnamed one)
/// and the reason given, keeps its history and is not retried; a running job's attempt is stopped on its host within 100 ms, and nothing it
/// would have written (result, children, pending steps) is.
#[utoipa::path(
    delete,
    path = "/api/queues/{queue}/jobs/{id}",
    tag = "jobs",
    params(
        ("queue" = String, Path, description = "Queue name"),
        ("id" = String, Path, description = "Job id"),
        CancelQuery,
    ),
    responses(
        (status = 200, body = CancelResponse),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job is completed or dead", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel_job(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path((queue, id)): Path<(String, String)>,
    Query(query): Query<CancelQuery>,
) -> Result<Json<CancelResponse>, ApiError> {
    check_queue(&queue)?;
    check_id(&id)?;
    let who = CancelBy::new(&caller.0, query.reason.unwrap_or_default());
    let outcome = state
        .client
        .cancel_by(&queue, std::slice::from_ref(&id), &who)
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
            format!("job {id} is {job_state}; only a job that has not finished can be cancelled"),
        )),
        Some(CancelOutcome::NotFound) | None => {
            Err(ApiError::not_found(format!("no job {id} in queue {queue}")))
        }
    }
}

/// One page of a cancel by handler or group: give `handler` or `group`, not both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelMatchingRequest {
    /// Cancel the jobs of this handler.
    pub handler: Option<String>,
    /// Cancel the jobs of this group.
    pub group: Option<String>,
    /// Why, kept on each job as `cancel_reason`.
    pub reason: Option<String>,
    /// Where the last page stopped (its `cursor`); absent to start.
    pub cursor: Option<String>,
    /// Job ids to look at, 1 to 10,000 [default: 1000].
    pub limit: Option<usize>,
}

/// One page of a cancel by handler or group.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelPageResponse {
    /// The jobs this page cancelled.
    pub cancelled: Vec<String>,
    /// How many job ids it looked at.
    pub examined: u64,
    /// Pass it back for the next page; null when every job was looked at.
    pub cursor: Option<String>,
}

/// Cancel a handler's or a group's jobs, a page at a time.
///
/// Every waiting, delayed (sleeping too) or retry job of the handler or group, dead-lettered
/// as a cancel of one job is; running jobs are left alone (cancel them by id). One call looks
/// at about `limit` job ids (one Redis script call); repeat with the `cursor` it returns
/// until that is null.
#[utoipa::path(
    post,
    path = "/api/queues/{queue}/cancel",
    tag = "jobs",
    params(("queue" = String, Path, description = "Queue name")),
    request_body(content = CancelMatchingRequest, content_type = "application/json"),
    responses(
        WriteErrors,
        (status = 200, body = CancelPageResponse),
        (status = 413, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel_matching(
    State(state): State<Arc<ApiState>>,
    Extension(caller): Extension<Caller>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<CancelPageResponse>, ApiError> {
    check_queue(&queue)?;
    let request: CancelMatchingRequest = read_json(&headers, body, JSON_BODY_LIMIT, false).await?;
    let filter = match (request.handler, request.group) {
        (Some(handler), None) if !handler.is_empty() => CancelFilter::Handler(handler),
        (None, Some(group)) if !group.is_empty() => CancelFilter::Group(group),
        _ => {
            return Err(ApiError::bad_request(
                "give a handler or a group (one, not empty)",
            ));
        }
    };
    let limit = request.limit.unwrap_or(1000);
    if !(1..=MAX_CANCEL_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_CANCEL_PAGE}"
        )));
    }
    let who = CancelBy::new(&caller.0, request.reason.unwrap_or_default());
    let page = state
        .client
        .cancel_matching(&queue, &filter, &who, request.cursor.as_deref(), limit)
        .await?;
    Ok(Json(CancelPageResponse {
        cancelled: page.cancelled,
        examined: page.examined,
        cursor: page.cursor,
    }))
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
