//! A job's run timeline: `GET /api/queues/{queue}/jobs/{id}/timeline`, what the dashboard's
//! job page charts (docs/dashboard.md, "Timeline").
//!
//! [`timeline`] is the pure part: from a [`Job`] (its times and attempt history) and its
//! durable-step saves ([`StepSaves`], read from the queue's events stream) it lays out, in
//! time order, the enqueue, every wait, every attempt with its duration and outcome, every
//! durable sleep and every step save. It uses only what the job already records; what is not
//! recorded stays out rather than being guessed:
//!
//! - a wait is one span from the end of what came before to the next start: the scripts keep
//!   no separate time for a delay's end, a retry's due time once it started, a release on
//!   shutdown, a throttled start or a replay (a replayed job's wait is `replayed`);
//! - a step's save is a point (the `step` event's time): when the step began is not recorded;
//! - a sleep starts when its attempt ended (`suspended`) and lasts the time `suspend.lua`
//!   wrote into that attempt's history entry (`sleep`, `sleep_ms`); an entry written before
//!   those fields existed has it only in its error text (`sleeping <ms> ms (sleep:<name>)`),
//!   which is parsed for such entries only;
//! - each outbound HTTP request and SQL statement of an attempt is a `call` span, from the
//!   attempt's call record (`runtime/calls.rs`, at most 50 an attempt, the rest counted in
//!   the attempt's `calls_dropped`): it starts `at` ms after the attempt's start and lasts
//!   its `ms`. `at` is on the host's clock from when it began the attempt, the attempt's start
//!   on the Redis clock from its lease, so a call may show a few ms off. Only attempts whose
//!   end a host recorded have calls: an attempt ended by lease expiry has none, nor does the
//!   running one until it ends (see [`TimelineView::calls_recorded`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiState;
use super::error::{ApiError, ErrorBody, ReadErrors};
use crate::queue::{
    Attempt, CallEntry, Job, JobState, QueueKeys, SavedStep, StepSaves, validate_job_id,
};

/// Most entries of the events stream one timeline reads for the job's step saves: the
/// default stream length (`events_maxlen`, 10,000), so a default stream is read whole.
pub const STEP_EVENTS_READ: usize = 10_000;

/// What a span or point of a timeline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SegmentKind {
    /// The job was created (a point).
    Enqueued,
    /// Waiting to start: `reason` says after what.
    Wait,
    /// One attempt, from its fetch to its end.
    Attempt,
    /// A durable sleep (`step::sleep`), from the attempt that reached it to its due time.
    Sleep,
    /// A durable step's result saved (a point at the save).
    Step,
    /// An outbound HTTP request or SQL statement of an attempt (`call_kind`), within it.
    Call,
    /// The job completed or was dead-lettered (a point).
    Finished,
}

/// One span (or point, `start_ms == end_ms`) of a job's timeline. Times are ms on the Redis
/// clock.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Segment {
    pub kind: SegmentKind,
    pub start_ms: u64,
    pub end_ms: u64,
    /// Still going (a running attempt, a wait): `end_ms` is now.
    pub open: bool,
    /// The attempt an attempt, sleep or step belongs to, or the one a wait leads to.
    pub attempt: Option<u32>,
    /// An attempt's outcome (`ok`, `retry`, `timeout`, `suspended`, ...), `running` for the
    /// attempt under way; a finish's state (`completed`, `dead`); a call's status code
    /// (`200`), or `denied`, `timeout`, `error` when it had none, `ok` for a SQL statement
    /// that succeeded.
    pub outcome: Option<String>,
    /// A wait's reason: `queued` (the first, delay included), `retry` (after a failed
    /// attempt: backoff, then queue), `after_sleep` (due, waiting for a host), `replayed`
    /// (dead, then replayed), `due` (still waiting, due at `due_ms`).
    pub reason: Option<String>,
    /// A step's or sleep's name; a call's: `GET http://host:port` (scheme and authority
    /// only) or `sql SELECT (db)` (the command keyword and the database grant).
    pub name: Option<String>,
    /// A call's kind: `http` or `sql`.
    pub call_kind: Option<String>,
    /// An attempt's calls past the 50 its record keeps: counted, not drawn.
    pub calls_dropped: Option<u64>,
    /// An attempt's error message (empty on success).
    pub error: Option<String>,
    /// The host of an attempt.
    pub host: Option<String>,
    /// When an open wait is due (delayed, retry).
    pub due_ms: Option<u64>,
}

impl Segment {
    fn new(kind: SegmentKind, start_ms: u64, end_ms: u64) -> Segment {
        Segment {
            kind,
            start_ms,
            end_ms: end_ms.max(start_ms),
            open: false,
            attempt: None,
            outcome: None,
            reason: None,
            name: None,
            call_kind: None,
            calls_dropped: None,
            error: None,
            host: None,
            due_ms: None,
        }
    }
}

/// A job's run timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineView {
    pub id: String,
    pub queue: String,
    pub handler: String,
    #[schema(value_type = super::queues::JobStateName)]
    pub state: JobState,
    /// The Redis time the timeline was read at (the end of open segments).
    pub now_ms: u64,
    /// In time order; attempts in attempt order.
    pub segments: Vec<Segment>,
    /// Whether every step save of the job was found: false when the read of the events stream
    /// stopped at its bound ([`STEP_EVENTS_READ`] entries) or the stream was trimmed past the
    /// job's creation (then `steps_since_ms` says from when they are known).
    pub steps_complete: bool,
    /// When the events stream has deleted (trimmed) entries since the job's creation: the
    /// time of the newest it deleted; step saves up to it may be missing.
    pub steps_since_ms: Option<u64>,
    /// Whether the `call` segments are every outbound HTTP request and SQL statement of the
    /// job's attempts (each past the first 50 of an attempt counted in its `calls_dropped`):
    /// true when every attempt's end was recorded by a host. False while an attempt runs (its
    /// calls are written when it ends) and when an attempt ended by lease expiry (its host
    /// lost, its calls with it). An attempt recorded by a host older than call records shows
    /// none, and cannot be told from one that made none.
    pub calls_recorded: bool,
}

/// `sleeping <ms> ms (sleep:<name>)`, as `suspend.lua` writes a suspended attempt's error.
fn parse_sleep(error: &str) -> Option<(u64, String)> {
    let rest = error.strip_prefix("sleeping ")?;
    let (ms, rest) = rest.split_once(" ms (")?;
    let name = rest.strip_suffix(')')?;
    let name = name.strip_prefix("sleep:").unwrap_or(name);
    Some((ms.parse().ok()?, name.to_string()))
}

/// The order of segments that start in the same millisecond.
fn tie_rank(kind: SegmentKind) -> u8 {
    match kind {
        SegmentKind::Enqueued => 0,
        SegmentKind::Attempt => 1,
        SegmentKind::Call => 2,
        SegmentKind::Step => 3,
        SegmentKind::Wait => 4,
        SegmentKind::Sleep => 5,
        SegmentKind::Finished => 6,
    }
}

/// Lays out `job`'s timeline at `now_ms` with its step saves (see the module doc).
pub fn timeline(job: &Job, steps: &StepSaves, now_ms: u64) -> TimelineView {
    let mut segments = vec![Segment::new(
        SegmentKind::Enqueued,
        job.created_at_ms,
        job.created_at_ms,
    )];
    let after = history_segments(job, &mut segments);
    current_segments(job, after, now_ms, &mut segments);
    segments.extend(steps.saves.iter().map(step_segment));
    // At one millisecond: a step is saved inside its attempt, so after the attempt's start
    // and before whatever starts when the attempt ends.
    segments.sort_by_key(|s| (s.start_ms, tie_rank(s.kind)));
    TimelineView {
        id: job.id.clone(),
        queue: job.queue.clone(),
        handler: job.handler.clone(),
        state: job.state,
        now_ms,
        segments,
        steps_complete: !steps.truncated && steps.trimmed_before_ms.is_none(),
        steps_since_ms: steps.trimmed_before_ms,
        calls_recorded: job.state != JobState::Active
            && job.history.iter().all(|a| a.outcome != "lease_expired"),
    }
}

/// Where the history leaves the job: when it last stopped, and why it waits from there.
struct After {
    cursor: u64,
    reason: &'static str,
}

fn wait_segment(from: u64, to: u64, reason: &str, attempt: u32) -> Segment {
    let mut w = Segment::new(SegmentKind::Wait, from, to);
    w.reason = Some(reason.to_string());
    w.attempt = Some(attempt);
    w
}

/// The finished attempts of `job`'s history, each with the wait before it and the durable
/// sleep after it, if any.
fn history_segments(job: &Job, segments: &mut Vec<Segment>) -> After {
    let mut cursor = job.created_at_ms;
    let mut reason = "queued";
    let mut last_attempt: Option<u32> = None;
    for a in &job.history {
        // A replay starts the attempts again from 1, history kept.
        let replayed =
            last_attempt.is_some_and(|last| a.attempt <= last) && reason != "after_sleep";
        let why = if replayed { "replayed" } else { reason };
        if a.started_at > cursor {
            segments.push(wait_segment(cursor, a.started_at, why, a.attempt));
        }
        let mut s = Segment::new(SegmentKind::Attempt, a.started_at, a.finished_at);
        s.attempt = Some(a.attempt);
        s.outcome = Some(a.outcome.clone());
        s.error = Some(a.error.clone());
        s.host = Some(a.host.clone());
        s.calls_dropped = a.calls_dropped;
        segments.push(s);
        segments.extend(a.calls.iter().flatten().map(|c| call_segment(a, c)));
        cursor = a.finished_at.max(a.started_at);
        last_attempt = Some(a.attempt);
        reason = if a.outcome == "ok" { "queued" } else { "retry" };
        if a.outcome == "suspended" {
            // A suspended attempt is not counted: the next one has the same number.
            last_attempt = Some(a.attempt.saturating_sub(1));
            // The fields, or for an entry written before them, its error text.
            let sleep = match (a.sleep_ms, &a.sleep) {
                (Some(ms), Some(name)) => Some((ms, name.clone())),
                _ => parse_sleep(&a.error),
            };
            if let Some((ms, name)) = sleep {
                let mut sleep = Segment::new(SegmentKind::Sleep, cursor, cursor.saturating_add(ms));
                sleep.attempt = Some(a.attempt);
                sleep.name = Some(name);
                cursor = sleep.end_ms;
                segments.push(sleep);
            }
            reason = "after_sleep";
        }
    }
    After { cursor, reason }
}

/// What `job` is doing now: running (after the wait before it), waiting, or finished.
fn current_segments(job: &Job, after: After, now_ms: u64, segments: &mut Vec<Segment>) {
    let After { cursor, reason } = after;
    let now = match job.state {
        JobState::Active => {
            let started = job.started_at_ms.unwrap_or(cursor);
            if started > cursor {
                segments.push(wait_segment(cursor, started, reason, job.attempt));
            }
            let mut s = Segment::new(SegmentKind::Attempt, started, now_ms);
            s.open = true;
            s.attempt = Some(job.attempt);
            s.outcome = Some("running".to_string());
            s.host = job.host.clone();
            s
        }
        JobState::Waiting | JobState::Delayed | JobState::Retry => {
            let mut w = wait_segment(cursor, now_ms, reason, job.attempt.saturating_add(1));
            if job.state != JobState::Waiting {
                w.due_ms = job.run_at_ms;
            }
            if job.replays > 0 && job.attempt == 0 && !job.history.is_empty() {
                w.reason = Some("replayed".to_string());
            }
            w.open = true;
            w
        }
        JobState::Completed | JobState::Dead => {
            let at = job.finished_at_ms.unwrap_or(cursor);
            let mut f = Segment::new(SegmentKind::Finished, at, at);
            f.outcome = Some(job.state.as_str().to_string());
            f
        }
    };
    segments.push(now);
}

/// One call of attempt `a`'s record, placed within it (see the module doc).
fn call_segment(a: &Attempt, c: &CallEntry) -> Segment {
    let start = a.started_at.saturating_add(c.at_ms);
    let mut s = Segment::new(
        SegmentKind::Call,
        start,
        start.saturating_add(c.duration_ms),
    );
    s.attempt = Some(a.attempt);
    s.call_kind = Some(c.kind.clone());
    s.name = Some(if c.kind == "http" {
        format!(
            "{} {}",
            c.method.as_deref().unwrap_or("?"),
            c.target.as_deref().unwrap_or("?")
        )
    } else {
        let mut name = c.kind.clone();
        if let Some(op) = &c.op {
            name = format!("{name} {op}");
        }
        if let Some(db) = &c.db {
            name = format!("{name} ({db})");
        }
        name
    });
    s.outcome = Some(match (c.status, &c.outcome) {
        (Some(status), _) => status.to_string(),
        (None, Some(outcome)) => outcome.clone(),
        (None, None) => "ok".to_string(),
    });
    s
}

fn step_segment(save: &SavedStep) -> Segment {
    let mut s = Segment::new(SegmentKind::Step, save.at_ms, save.at_ms);
    s.attempt = Some(save.attempt);
    s.name = Some(
        save.field
            .strip_prefix("run:")
            .unwrap_or(&save.field)
            .to_string(),
    );
    s
}

/// A job's run timeline, for a chart.
///
/// Enqueue, each wait, each attempt with its duration and outcome, durable sleeps and step
/// saves, from the job's history and the `step` entries of the queue's events stream (at
/// most 10,000 entries read), and each outbound HTTP request and SQL statement of an attempt
/// whose end a host recorded (`call` segments; see `calls_recorded`).
#[utoipa::path(
    get,
    path = "/api/queues/{queue}/jobs/{id}/timeline",
    tag = "jobs",
    params(
        ("queue" = String, Path, description = "Queue name"),
        ("id" = String, Path, description = "Job id"),
    ),
    responses(
        ReadErrors,
        (status = 200, body = TimelineView),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
pub(crate) async fn get_timeline(
    State(state): State<Arc<ApiState>>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Json<TimelineView>, ApiError> {
    QueueKeys::new(&queue)?;
    validate_job_id(&id)
        .map_err(|reason| ApiError::bad_request(format!("invalid job id: {reason}")))?;
    let Some(job) = state.client.get(&queue, &id).await? else {
        return Err(ApiError::not_found(format!("no job {id} in queue {queue}")));
    };
    let end = match job.state {
        JobState::Completed | JobState::Dead => job.finished_at_ms,
        _ => None,
    };
    let steps = state
        .client
        .step_saves(&queue, &id, job.created_at_ms, end, STEP_EVENTS_READ)
        .await?;
    let now_ms = state.client.now_ms().await?;
    Ok(Json(timeline(&job, &steps, now_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::SavedStep;
    use std::collections::HashMap;

    fn job(state: &str, history: &[Attempt], extra: &[(&str, &str)]) -> Job {
        let mut hash: HashMap<String, Vec<u8>> = [
            ("handler", "h"),
            ("payload", ""),
            ("state", state),
            ("priority", "0"),
            ("attempt", "2"),
            ("max_attempts", "3"),
            ("backoff", "fixed"),
            ("backoff_ms", "0"),
            ("backoff_cap_ms", "0"),
            ("backoff_jitter", "0"),
            ("created_at", "1000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        hash.insert("history".to_string(), serde_json::to_vec(history).unwrap());
        for (k, v) in extra {
            hash.insert(k.to_string(), v.as_bytes().to_vec());
        }
        Job::from_hash("q", "j", hash).unwrap()
    }

    fn attempt(n: u32, outcome: &str, error: &str, start: u64, end: u64) -> Attempt {
        Attempt {
            attempt: n,
            outcome: outcome.to_string(),
            error: error.to_string(),
            host: "h1".to_string(),
            started_at: start,
            finished_at: end,
            version: None,
            logs: None,
            progress: None,
            calls: None,
            calls_dropped: None,
            sleep: None,
            sleep_ms: None,
        }
    }

    fn kinds(view: &TimelineView) -> Vec<(SegmentKind, u64, u64, Option<&str>)> {
        view.segments
            .iter()
            .map(|s| {
                let label = s
                    .outcome
                    .as_deref()
                    .or(s.reason.as_deref())
                    .or(s.name.as_deref());
                (s.kind, s.start_ms, s.end_ms, label)
            })
            .collect()
    }

    #[test]
    fn a_retried_then_completed_job_has_waits_between_its_attempts() {
        use SegmentKind::*;
        let j = job(
            "completed",
            &[
                attempt(1, "retry", "boom", 1500, 1600),
                attempt(2, "ok", "", 2600, 2650),
            ],
            &[("finished_at", "2650")],
        );
        let view = timeline(&j, &StepSaves::default(), 9999);
        assert_eq!(
            kinds(&view),
            vec![
                (Enqueued, 1000, 1000, None),
                (Wait, 1000, 1500, Some("queued")),
                (Attempt, 1500, 1600, Some("retry")),
                (Wait, 1600, 2600, Some("retry")),
                (Attempt, 2600, 2650, Some("ok")),
                (Finished, 2650, 2650, Some("completed")),
            ]
        );
        assert!(view.steps_complete && view.calls_recorded);
    }

    #[test]
    fn a_sleep_spans_from_its_attempt_to_its_due_time_and_steps_are_points() {
        use SegmentKind::*;
        let j = job(
            "active",
            &[attempt(
                1,
                "suspended",
                "sleeping 5000 ms (sleep:cool-off)",
                1100,
                1200,
            )],
            &[("attempt", "1"), ("started_at", "6300"), ("host", "h2")],
        );
        let steps = StepSaves {
            saves: vec![SavedStep {
                field: "run:charge".to_string(),
                attempt: 1,
                at_ms: 1150,
            }],
            read: 40,
            truncated: false,
            trimmed_before_ms: None,
        };
        let view = timeline(&j, &steps, 7000);
        assert_eq!(
            kinds(&view),
            vec![
                (Enqueued, 1000, 1000, None),
                (Wait, 1000, 1100, Some("queued")),
                (Attempt, 1100, 1200, Some("suspended")),
                (Step, 1150, 1150, Some("charge")),
                (Sleep, 1200, 6200, Some("cool-off")),
                (Wait, 6200, 6300, Some("after_sleep")),
                (Attempt, 6300, 7000, Some("running")),
            ]
        );
        let running = view.segments.last().unwrap();
        assert!(running.open);
        assert_eq!(running.attempt, Some(1));
    }

    #[test]
    fn a_job_waiting_out_its_backoff_has_an_open_wait_with_its_due_time() {
        let j = job(
            "retry",
            &[attempt(1, "timeout", "deadline", 1100, 1200)],
            &[("attempt", "1"), ("run_at", "8000")],
        );
        let steps = StepSaves {
            truncated: true,
            ..StepSaves::default()
        };
        let view = timeline(&j, &steps, 5000);
        let last = view.segments.last().unwrap();
        assert_eq!(
            (
                last.kind,
                last.start_ms,
                last.end_ms,
                last.open,
                last.due_ms,
                last.attempt
            ),
            (SegmentKind::Wait, 1200, 5000, true, Some(8000), Some(2))
        );
        assert!(!view.steps_complete);
    }

    #[test]
    fn a_replayed_job_waits_as_replayed() {
        let j = job(
            "completed",
            &[
                attempt(1, "fail", "no", 1100, 1200),
                attempt(1, "ok", "", 9000, 9100),
            ],
            &[("finished_at", "9100"), ("replays", "1")],
        );
        let view = timeline(&j, &StepSaves::default(), 9999);
        let waits: Vec<_> = view
            .segments
            .iter()
            .filter(|s| s.kind == SegmentKind::Wait)
            .map(|s| s.reason.as_deref().unwrap())
            .collect();
        assert_eq!(waits, ["queued", "replayed"]);
    }

    #[test]
    fn an_attempts_calls_are_spans_within_it_and_a_sleep_is_read_from_its_fields() {
        use SegmentKind::*;
        let mut first = attempt(1, "suspended", "sleeping 9 ms (sleep:ignored)", 1100, 1200);
        first.sleep = Some("cool-off".to_string());
        first.sleep_ms = Some(300);
        first.calls = Some(vec![
            serde_json::from_value(serde_json::json!(
                {"k": "http", "at": 10, "ms": 30, "m": "GET", "t": "http://127.0.0.1:9", "s": 503}
            ))
            .unwrap(),
            serde_json::from_value(serde_json::json!(
                {"k": "sql", "at": 50, "ms": 4, "op": "SELECT", "db": "app", "o": "error"}
            ))
            .unwrap(),
        ]);
        first.calls_dropped = Some(7);
        let mut second = attempt(1, "ok", "", 1600, 1700);
        second.calls = Some(vec![
            serde_json::from_value(serde_json::json!(
                {"k": "http", "at": 0, "ms": 0, "m": "POST", "t": "https://x", "o": "denied"}
            ))
            .unwrap(),
        ]);
        let j = job("completed", &[first, second], &[("finished_at", "1700")]);
        let view = timeline(&j, &StepSaves::default(), 9999);
        assert_eq!(
            kinds(&view),
            vec![
                (Enqueued, 1000, 1000, None),
                (Wait, 1000, 1100, Some("queued")),
                (Attempt, 1100, 1200, Some("suspended")),
                (Call, 1110, 1140, Some("503")),
                (Call, 1150, 1154, Some("error")),
                (Sleep, 1200, 1500, Some("cool-off")),
                (Wait, 1500, 1600, Some("after_sleep")),
                (Attempt, 1600, 1700, Some("ok")),
                (Call, 1600, 1600, Some("denied")),
                (Finished, 1700, 1700, Some("completed")),
            ]
        );
        let names: Vec<(&str, &str)> = view
            .segments
            .iter()
            .filter(|s| s.kind == Call)
            .map(|s| (s.call_kind.as_deref().unwrap(), s.name.as_deref().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("http", "GET http://127.0.0.1:9"),
                ("sql", "sql SELECT (app)"),
                ("http", "POST https://x")
            ]
        );
        assert_eq!(view.segments[2].calls_dropped, Some(7));
        assert!(view.calls_recorded);
    }

    #[test]
    fn calls_are_not_all_recorded_while_an_attempt_runs_or_after_a_lease_expired() {
        let running = job("active", &[], &[("attempt", "1"), ("started_at", "1100")]);
        assert!(!timeline(&running, &StepSaves::default(), 2000).calls_recorded);
        let lost = job(
            "completed",
            &[
                attempt(1, "lease_expired", "lease expired", 1100, 1200),
                attempt(2, "ok", "", 1300, 1400),
            ],
            &[("finished_at", "1400")],
        );
        assert!(!timeline(&lost, &StepSaves::default(), 2000).calls_recorded);
    }

    #[test]
    fn only_the_sleep_error_suspend_writes_is_read_as_a_sleep() {
        assert_eq!(
            parse_sleep("sleeping 250 ms (sleep:nap)"),
            Some((250, "nap".to_string()))
        );
        assert_eq!(parse_sleep("sleeping forever"), None);
        assert_eq!(parse_sleep("sleeping x ms (sleep:nap)"), None);
    }
}
