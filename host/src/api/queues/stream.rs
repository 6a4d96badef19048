//! A queue's events stream, paged by stream id.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiState, page};
use crate::api::error::{ApiError, ReadErrors};

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
        ReadErrors,
        (status = 200, body = EventPage),
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
}
