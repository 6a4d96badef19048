//! `queue check` over HTTP: find (`GET`) or repair (`POST`) what is out of step in a queue's keys.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;
use crate::api::error::{ApiError, ReadErrors, WriteErrors};

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
        ReadErrors,
        (status = 200, body = CheckResponse),
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
        WriteErrors,
        (status = 200, body = CheckResponse),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn post_check(
    State(state): State<Arc<ApiState>>,
    Path(queue): Path<String>,
) -> Result<Json<CheckResponse>, ApiError> {
    run_check(&state, &queue, true).await
}
