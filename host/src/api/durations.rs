//! Per-handler attempt-duration percentiles over time: `GET /api/queues/{queue}/durations`,
//! what the dashboard's queue page charts (docs/dashboard.md, "Durations").
//!
//! Computed on each request from the attempt histories of the jobs the queue finished in the
//! window (`Client::recent_attempts`: the newest `max_jobs` of `completed` and of `dead`), so
//! it needs no new write on the job path, survives a host restart and is the same from every
//! host: it is what Redis keeps. It covers what the queue's retention keeps (`completed_keep`,
//! 1000 by default; dead jobs are kept until purged): on a queue finishing more jobs than that
//! in the window, the oldest part of the window is missing, and the answer says so
//! (`truncated`).
//!
//! Why not a record of its own, say a sorted set of durations per handler and minute: that
//! would add commands to every ack, the hot path, and need a retention of its own, while the
//! histories already survive restarts, are shared by every host and are bounded by the
//! queue's retention. The price is the coverage above.
//!
//! [`percentiles`] is the pure part: bucket the attempts by the minute (or `bucket_s`) they
//! ended in, nearest-rank p50/p95/p99 per handler and bucket.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::error::{ApiError, ReadErrors};
use crate::queue::{Attempt, QueueKeys};

/// Longest window, in seconds (a day).
pub const MAX_WINDOW_S: u64 = 86_400;
/// Most buckets one answer has per handler.
pub const MAX_BUCKETS: u64 = 1440;
/// Most jobs read from each of `completed` and `dead`.
pub const MAX_JOBS: u64 = 5000;

/// `window_s`, `bucket_s`, `max_jobs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DurationsQuery {
    /// How far back from now, in seconds, 1 to 86400 [default: 3600].
    pub window_s: Option<u64>,
    /// Bucket width in seconds, at least 1 and a 1440th of the window, at most the window
    /// [default: 60].
    pub bucket_s: Option<u64>,
    /// Jobs read from each of completed and dead, newest first, 1 to 5000 [default: 1000].
    pub max_jobs: Option<u64>,
}

/// Percentiles of a set of attempt durations (nearest rank), in ms.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Percentiles {
    /// Attempts counted.
    pub count: u64,
    pub p50_ms: u64,
    pub p95_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

/// One time bucket of a handler's attempts (only buckets with attempts are listed).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DurationBucket {
    /// The bucket's start (ms on the Redis clock); it holds attempts that ended in
    /// `[start_ms, start_ms + bucket_ms)`.
    pub start_ms: u64,
    #[serde(flatten)]
    pub percentiles: Percentiles,
}

/// One handler's attempts in the window.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HandlerDurations {
    pub handler: String,
    /// Over the whole window.
    #[serde(flatten)]
    pub total: Percentiles,
    /// Oldest first.
    pub buckets: Vec<DurationBucket>,
}

/// Attempt durations per handler over a window.
#[derive(Debug, Serialize, ToSchema)]
pub struct DurationsView {
    pub queue: String,
    /// The window, ms on the Redis clock: attempts that ended in `[since_ms, until_ms]`.
    pub since_ms: u64,
    pub until_ms: u64,
    pub bucket_ms: u64,
    /// Finished jobs whose histories were read.
    pub jobs_read: u64,
    /// Finished jobs in the window left out: a history over 256 KiB, or past the 32 MiB one
    /// answer reads in all; or a job deleted or unreadable as it was read.
    pub jobs_skipped: u64,
    /// More jobs finished in the window than `max_jobs` of a set: the oldest are not counted.
    pub truncated: bool,
    /// Sorted by handler name.
    pub handlers: Vec<HandlerDurations>,
}

/// Nearest-rank percentiles of `values`, which it sorts; `None` when empty.
pub fn summarize(values: &mut [u64]) -> Option<Percentiles> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let n = values.len();
    let rank = |p: usize| values[(p * n).div_ceil(100).clamp(1, n) - 1];
    Some(Percentiles {
        count: n as u64,
        p50_ms: rank(50),
        p95_ms: rank(95),
        p99_ms: rank(99),
        max_ms: values[n - 1],
    })
}

/// Whether an attempt's recorded span is its run: an expired lease's end is when another
/// host noticed the expiry, not when the attempt stopped, so it is left out.
fn counts(a: &Attempt) -> bool {
    a.outcome != "lease_expired" && a.started_at > 0 && a.finished_at >= a.started_at
}

/// The attempts of `jobs` (handler, history) that ended in `[since_ms, until_ms]`, by
/// handler, in buckets of `bucket_ms` from `since_ms`.
pub fn percentiles(
    jobs: &[(String, Vec<Attempt>)],
    since_ms: u64,
    until_ms: u64,
    bucket_ms: u64,
) -> Vec<HandlerDurations> {
    let bucket_ms = bucket_ms.max(1);
    let mut by_handler: BTreeMap<&str, BTreeMap<u64, Vec<u64>>> = BTreeMap::new();
    for (handler, attempts) in jobs {
        for a in attempts.iter().filter(|a| counts(a)) {
            if a.finished_at < since_ms || a.finished_at > until_ms {
                continue;
            }
            let bucket = since_ms + (a.finished_at - since_ms) / bucket_ms * bucket_ms;
            by_handler
                .entry(handler)
                .or_default()
                .entry(bucket)
                .or_default()
                .push(a.finished_at - a.started_at);
        }
    }
    by_handler
        .into_iter()
        .filter_map(|(handler, buckets)| {
            let mut all: Vec<u64> = buckets.values().flatten().copied().collect();
            let total = summarize(&mut all)?;
            let buckets = buckets
                .into_iter()
                .filter_map(|(start_ms, mut values)| {
                    Some(DurationBucket {
                        start_ms,
                        percentiles: summarize(&mut values)?,
                    })
                })
                .collect();
            Some(HandlerDurations {
                handler: handler.to_string(),
                total,
                buckets,
            })
        })
        .collect()
}

/// Attempt durations per handler over time.
///
/// p50/p95/p99 (nearest rank) of the attempt durations of the jobs the queue finished
/// (completed or dead) in the last `window_s` seconds, per handler, per `bucket_s`, read
/// from those jobs' histories: what the queue's retention keeps, at most `max_jobs` of each
/// set (newest first). Expired leases are left out.
#[utoipa::path(
    get,
    path = "/api/queues/{queue}/durations",
    tag = "queues",
    params(("queue" = String, Path, description = "Queue name"), DurationsQuery),
    responses(
        ReadErrors,
        (status = 200, body = DurationsView),
    )
)]
pub(crate) async fn durations(
    State(state): State<Arc<ApiState>>,
    Path(queue): Path<String>,
    Query(query): Query<DurationsQuery>,
) -> Result<Json<DurationsView>, ApiError> {
    QueueKeys::new(&queue)?;
    let window_s = query.window_s.unwrap_or(3600);
    if !(1..=MAX_WINDOW_S).contains(&window_s) {
        return Err(ApiError::bad_request(format!(
            "window_s must be 1 to {MAX_WINDOW_S}, got {window_s}"
        )));
    }
    let bucket_s = query.bucket_s.unwrap_or(60);
    if !(1..=window_s).contains(&bucket_s) || window_s.div_ceil(bucket_s) > MAX_BUCKETS {
        return Err(ApiError::bad_request(format!(
            "bucket_s must be 1 to the window ({window_s} s) and leave at most {MAX_BUCKETS} \
             buckets in it, got {bucket_s}"
        )));
    }
    let max_jobs = query.max_jobs.unwrap_or(1000);
    if !(1..=MAX_JOBS).contains(&max_jobs) {
        return Err(ApiError::bad_request(format!(
            "max_jobs must be 1 to {MAX_JOBS}, got {max_jobs}"
        )));
    }
    let until_ms = state.client.now_ms().await?;
    let bucket_ms = bucket_s * 1000;
    // Buckets aligned to the bucket width, so that a chart polled again keeps its buckets.
    let since_ms = (until_ms.saturating_sub(window_s * 1000) / bucket_ms) * bucket_ms;
    let found = state
        .client
        .recent_attempts(&queue, since_ms, usize::try_from(max_jobs).unwrap_or(1000))
        .await?;
    Ok(Json(DurationsView {
        handlers: percentiles(&found.jobs, since_ms, until_ms, bucket_ms),
        queue,
        since_ms,
        until_ms,
        bucket_ms,
        jobs_read: found.jobs.len() as u64,
        jobs_skipped: (found.oversize + found.skipped) as u64,
        truncated: found.truncated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(outcome: &str, start: u64, end: u64) -> Attempt {
        Attempt {
            attempt: 1,
            outcome: outcome.to_string(),
            error: String::new(),
            host: String::new(),
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

    #[test]
    fn nearest_rank_percentiles() {
        let mut hundred: Vec<u64> = (1..=100).rev().collect();
        let p = summarize(&mut hundred).unwrap();
        assert_eq!(
            (p.count, p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms),
            (100, 50, 95, 99, 100)
        );
        let p = summarize(&mut [7]).unwrap();
        assert_eq!((p.p50_ms, p.p95_ms, p.p99_ms), (7, 7, 7));
        let p = summarize(&mut [10, 30, 20]).unwrap();
        assert_eq!((p.p50_ms, p.p95_ms, p.p99_ms), (20, 30, 30));
        assert_eq!(summarize(&mut []), None);
    }

    #[test]
    fn attempts_are_bucketed_by_end_per_handler_and_expired_leases_are_left_out() {
        let jobs = vec![
            (
                "a".to_string(),
                vec![
                    attempt("retry", 59_000, 59_500),
                    attempt("ok", 60_000, 60_100),
                ],
            ),
            ("a".to_string(), vec![attempt("ok", 61_000, 61_300)]),
            (
                "b".to_string(),
                vec![
                    attempt("lease_expired", 1000, 90_000),
                    attempt("ok", 100, 200),
                ],
            ),
        ];
        let out = percentiles(&jobs, 0, 120_000, 60_000);
        assert_eq!(out.len(), 2);
        let a = &out[0];
        assert_eq!((a.handler.as_str(), a.total.count), ("a", 3));
        let starts: Vec<(u64, u64, u64)> = a
            .buckets
            .iter()
            .map(|b| (b.start_ms, b.percentiles.count, b.percentiles.max_ms))
            .collect();
        assert_eq!(starts, [(0, 1, 500), (60_000, 2, 300)]);
        assert_eq!((out[1].handler.as_str(), out[1].total.count), ("b", 1));
        // Outside the window: not counted.
        assert!(percentiles(&jobs, 100_000, 120_000, 60_000).is_empty());
    }
}
