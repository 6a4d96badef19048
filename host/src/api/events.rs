//! `POST /api/events`: what `wasmq event send` does (docs/events.md). The name is in the body,
//! not the path: event names hold slashes (`order/created`).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, WriteErrors, read_json};
use super::{ApiState, JSON_BODY_LIMIT};
use crate::events::{self, EventError};
use crate::queue::JobState;

/// An event to send. Unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    /// The event's name, like `order/created`.
    #[schema(example = "order/created")]
    pub name: String,
    /// The event's data, any JSON [default: null].
    #[serde(default)]
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// The event's id: sending the same id again enqueues nothing new [default: a fresh
    /// ULID].
    pub id: Option<String>,
}

/// One subscriber's job.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventJobView {
    pub handler: String,
    pub queue: String,
    pub job_id: String,
    /// False when an earlier send of this event id enqueued it already.
    pub created: bool,
    #[schema(value_type = super::queues::JobStateName)]
    pub state: JobState,
}

/// What a send enqueued: a job per subscribed handler.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventSent {
    pub id: String,
    pub jobs: Vec<EventJobView>,
}

/// Send an event: one job for each handler subscribed to its name (deployed with `on`), on
/// that handler's event queue; the job's payload is `{"name", "id", "data"}`. An event nobody
/// subscribes to enqueues nothing (`jobs` is empty).
#[utoipa::path(
    post,
    path = "/api/events",
    tag = "events",
    request_body(content = EventRequest, content_type = "application/json"),
    responses(
        WriteErrors,
        (status = 200, description = "Sent", body = EventSent),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn send(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<EventSent>), ApiError> {
    let request: EventRequest = read_json(&headers, body, JSON_BODY_LIMIT, false).await?;
    let sent = events::send(
        &state.registry,
        &state.client,
        &request.name,
        request.data,
        request.id,
    )
    .await
    .map_err(|err| match err {
        EventError::Invalid(reason) => ApiError::bad_request(reason),
        EventError::Registry(err) => ApiError::from(err),
        EventError::Enqueue { source, .. } => ApiError::from(source),
    })?;
    Ok((
        StatusCode::OK,
        Json(EventSent {
            id: sent.id,
            jobs: sent
                .jobs
                .into_iter()
                .map(|j| EventJobView {
                    handler: j.handler,
                    queue: j.queue,
                    job_id: j.job_id,
                    created: j.created,
                    state: j.state,
                })
                .collect(),
        }),
    ))
}
