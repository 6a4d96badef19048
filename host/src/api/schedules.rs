//! Schedule endpoints: list, add or replace, pause, resume, remove. Each is one call into
//! [`crate::schedule::Schedules`], the store `wasmq schedule ...` uses, so a schedule the CLI
//! would refuse is refused here too, and nothing is written for it.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::error::{ApiError, ErrorBody, WriteErrors, read_json};
use super::queues::JSON_BODY_LIMIT;
use crate::schedule::{Schedule, ScheduleError, ScheduleSpec, validate_schedule_name};

/// Next run times listed per schedule.
const NEXT_RUNS: usize = 3;

impl From<ScheduleError> for ApiError {
    fn from(err: ScheduleError) -> ApiError {
        match &err {
            ScheduleError::Redis(redis) if super::error::redis_unreachable(redis) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("Redis is unreachable: {redis}"),
            ),
            ScheduleError::Invalid(_) => ApiError::bad_request(err.to_string()),
            ScheduleError::NoSchedule(_) => ApiError::not_found(err.to_string()),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
        }
    }
}

/// One future run of a schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct NextRun {
    /// RFC 3339, in the schedule's time zone.
    pub local: String,
    /// RFC 3339, in UTC.
    pub utc: String,
}

/// A schedule and its next runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    /// IANA time zone the expression is read in.
    pub tz: String,
    pub queue: String,
    pub handler: String,
    /// The jobs' payload (as text; invalid UTF-8 replaced).
    pub payload: String,
    /// Missed ticks enqueued when hosts come back (the most recent ones).
    pub catch_up: u32,
    pub paused: bool,
    /// ms since the Unix epoch (Redis clock).
    pub created_at_ms: u64,
    /// The newest tick dealt with, ms since the Unix epoch.
    pub last_tick_ms: u64,
    pub next_runs: Vec<NextRun>,
}

fn view(s: &Schedule, now_ms: u64) -> ScheduleView {
    ScheduleView {
        name: s.spec.name.clone(),
        cron: s.spec.cron.clone(),
        tz: s.spec.tz.clone(),
        queue: s.spec.queue.clone(),
        handler: s.spec.handler.clone(),
        payload: String::from_utf8_lossy(&s.spec.payload).into_owned(),
        catch_up: s.spec.catch_up,
        paused: s.paused,
        created_at_ms: s.created_at_ms,
        last_tick_ms: s.last_tick_ms,
        next_runs: s
            .next_runs(now_ms, NEXT_RUNS)
            .iter()
            .map(|t| NextRun {
                local: t.to_rfc3339(),
                utc: t.with_timezone(&Utc).to_rfc3339(),
            })
            .collect(),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    validate_schedule_name(name).map_err(ApiError::bad_request)
}

/// Every schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    /// Sorted by name.
    pub schedules: Vec<ScheduleView>,
}

/// Every schedule, with its next run times in its zone and in UTC.
#[utoipa::path(
    get,
    path = "/api/schedules",
    tag = "schedules",
    responses((status = 200, body = ScheduleList), (status = 503, body = ErrorBody))
)]
pub(crate) async fn list_schedules(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<ScheduleList>, ApiError> {
    let now = state.schedules.now_ms().await?;
    let all = state.schedules.list().await?;
    Ok(Json(ScheduleList {
        schedules: all.iter().map(|s| view(s, now)).collect(),
    }))
}

/// A schedule's definition.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// 5 fields (minute hour day-of-month month day-of-week), or 6-7 with seconds first (and
    /// a year last), or @hourly, @daily, @weekly, @monthly, @yearly.
    pub cron: String,
    /// IANA time zone [default: UTC].
    pub tz: Option<String>,
    pub queue: String,
    pub handler: String,
    /// The jobs' payload, as text [default: empty].
    pub payload: Option<String>,
    /// Missed ticks to enqueue when hosts come back, the most recent ones [default: 0].
    pub catch_up: Option<u32>,
}

/// The schedule as stored, and whether it is new.
#[derive(Debug, Serialize, ToSchema)]
pub struct AddResponse {
    /// False when it replaced a schedule of the same name.
    pub created: bool,
    pub schedule: ScheduleView,
}

/// Create a schedule, or replace the one with this name (it keeps its paused flag).
#[utoipa::path(
    post,
    path = "/api/schedules/{name}",
    tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    request_body = ScheduleBody,
    responses(
        WriteErrors,
        (status = 201, description = "Created", body = AddResponse),
        (status = 200, description = "Replaced", body = AddResponse),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn add(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<AddResponse>), ApiError> {
    check_name(&name)?;
    let body: ScheduleBody = read_json(&headers, body, JSON_BODY_LIMIT, false).await?;
    let spec = ScheduleSpec {
        name,
        cron: body.cron,
        tz: body.tz.unwrap_or_else(|| "UTC".to_string()),
        queue: body.queue,
        handler: body.handler,
        payload: body.payload.unwrap_or_default().into_bytes(),
        catch_up: body.catch_up.unwrap_or(0),
    };
    let (created, stored) = state.schedules.add(&spec).await?;
    let now = state.schedules.now_ms().await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(AddResponse {
            created,
            schedule: view(&stored, now),
        }),
    ))
}

/// A pause or resume.
#[derive(Debug, Serialize, ToSchema)]
pub struct PauseResponse {
    pub name: String,
    pub paused: bool,
    /// False when the schedule already was in that state.
    pub changed: bool,
}

/// Stop a schedule from enqueueing jobs.
#[utoipa::path(
    post,
    path = "/api/schedules/{name}/pause",
    tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        WriteErrors,
        (status = 200, body = PauseResponse),
        (status = 404, description = "No such schedule", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn pause(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Json<PauseResponse>, ApiError> {
    check_name(&name)?;
    let changed = state.schedules.pause(&name).await?;
    Ok(Json(PauseResponse {
        name,
        paused: true,
        changed,
    }))
}

/// Let a paused schedule enqueue again; ticks missed while paused follow its catch_up.
#[utoipa::path(
    post,
    path = "/api/schedules/{name}/resume",
    tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        WriteErrors,
        (status = 200, body = PauseResponse),
        (status = 404, description = "No such schedule", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn resume(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Json<PauseResponse>, ApiError> {
    check_name(&name)?;
    let changed = state.schedules.resume(&name).await?;
    Ok(Json(PauseResponse {
        name,
        paused: false,
        changed,
    }))
}

/// A removal.
#[derive(Debug, Serialize, ToSchema)]
pub struct RemoveResponse {
    pub name: String,
    pub removed: bool,
}

/// Forget a schedule; jobs it enqueued stay.
#[utoipa::path(
    delete,
    path = "/api/schedules/{name}",
    tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    responses(
        WriteErrors,
        (status = 200, body = RemoveResponse),
        (status = 404, description = "No such schedule", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn remove(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Json<RemoveResponse>, ApiError> {
    check_name(&name)?;
    if !state.schedules.remove(&name).await? {
        return Err(ApiError::not_found(format!("no schedule named {name:?}")));
    }
    Ok(Json(RemoveResponse {
        name,
        removed: true,
    }))
}
