//! Job search: a page of the jobs of a queue that match a filter, from a cursor, each page's
//! Redis work bounded ([`crate::queue::Client::search`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiState, JobStateName, JobView, check_queue, job_view};
use crate::api::error::{ApiError, ReadErrors};
use crate::queue::{
    JobSearch, JobState, SEARCH_LIMIT_DEFAULT, SEARCH_SCAN_DEFAULT, SearchPage, TimeField,
    TimePoint,
};

/// The filters (every one given must match), the cursor and the page's size.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Only jobs in this state (waiting includes every group's waiting jobs).
    #[param(value_type = Option<JobStateName>)]
    pub state: Option<String>,
    /// Only jobs of this handler.
    pub handler: Option<String>,
    /// Only jobs of this group (of the waiting jobs, only the group's own set is read).
    pub group: Option<String>,
    /// Only jobs whose id starts with this.
    pub id_prefix: Option<String>,
    /// Only jobs whose payload contains this text (plain, case-sensitive; at most 1024 bytes).
    pub text: Option<String>,
    /// The time `since` and `until` apply to: `enqueued` or `finished` [default: enqueued].
    pub time: Option<String>,
    /// At or after: ms since the epoch, an RFC 3339 time, or a span before now (`2h`).
    pub since: Option<String>,
    /// At or before, as `since`.
    pub until: Option<String>,
    /// Where the previous page ended (its `cursor`); absent to start. Goes with the filters
    /// it was made with.
    pub cursor: Option<String>,
    /// Jobs to return, 1 to 1000 [default: 50].
    pub limit: Option<u32>,
    /// Set entries to examine, 1 to 10000 [default: 1000]: the bound on the page's Redis work.
    pub scan: Option<u32>,
}

impl SearchQuery {
    fn search(&self) -> Result<JobSearch, ApiError> {
        let time_point = |text: &Option<String>, name: &str| {
            text.as_deref()
                .map(|text| {
                    text.parse::<TimePoint>()
                        .map_err(|err| ApiError::bad_request(format!("{name}: {err}")))
                })
                .transpose()
        };
        Ok(JobSearch {
            state: self
                .state
                .as_deref()
                .map(str::parse::<JobState>)
                .transpose()
                .map_err(ApiError::bad_request)?,
            handler: self.handler.clone(),
            group: self.group.clone(),
            id_prefix: self.id_prefix.clone(),
            text: self.text.clone(),
            time: self
                .time
                .as_deref()
                .map(str::parse::<TimeField>)
                .transpose()
                .map_err(ApiError::bad_request)?
                .unwrap_or_default(),
            since: time_point(&self.since, "since")?,
            until: time_point(&self.until, "until")?,
            cursor: self.cursor.clone(),
            limit: self.limit.unwrap_or(SEARCH_LIMIT_DEFAULT),
            scan: self.scan.unwrap_or(SEARCH_SCAN_DEFAULT),
        })
    }
}

/// A job a search matched whose key does not decode (`wasmq queue check --repair` buries it).
#[derive(Debug, Serialize, ToSchema)]
pub struct MalformedView {
    pub id: String,
    pub reason: String,
}

/// One page of a search.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    /// The matching jobs, in the walk's order (waiting, each group's waiting jobs by group
    /// name, delayed, active, retry, completed, dead).
    pub jobs: Vec<JobView>,
    /// Matches that do not decode.
    pub malformed: Vec<MalformedView>,
    /// Set entries this page examined (at most `scan`).
    pub examined: u64,
    /// Pass as `cursor` for the next page; absent when the search is over.
    pub cursor: Option<String>,
}

pub(crate) fn search_response(page: &SearchPage) -> SearchResponse {
    SearchResponse {
        jobs: page.jobs.iter().map(job_view).collect(),
        malformed: page
            .malformed
            .iter()
            .map(|m| MalformedView {
                id: m.id.clone(),
                reason: m.reason.clone(),
            })
            .collect(),
        examined: page.examined,
        cursor: page.cursor.clone(),
    }
}

/// Find jobs: one page of a search.
///
/// Walks the queue's state sets from `cursor`, examining at most `scan` set entries: one
/// `HMGET` each (its filtered fields, the payload for `text`) and one `HGETALL` per match, so
/// a page costs Redis at most `2·scan + limit + 40` commands whatever the queue holds. A page
/// may hold fewer than `limit` jobs, even none, and still have a `cursor`: the search goes on
/// until `cursor` is absent. A job that changes state during a search may be missed or seen
/// twice; a queue at rest is seen whole, each job once (docs/protocol.md, "search.lua").
#[utoipa::path(
    get,
    path = "/api/queues/{queue}/search",
    tag = "jobs",
    params(("queue" = String, Path, description = "Queue name"), SearchQuery),
    responses(
        ReadErrors,
        (status = 200, body = SearchResponse),
    )
)]
pub(crate) async fn search_jobs(
    State(state): State<Arc<ApiState>>,
    Path(queue): Path<String>,
    Query(query): Query<SearchQuery>,
) -> Result<Json<SearchResponse>, ApiError> {
    check_queue(&queue)?;
    let page = state.client.search(&queue, &query.search()?).await?;
    Ok(Json(search_response(&page)))
}
