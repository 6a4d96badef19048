//! The executor: one attempt of one leased job, from slot to ack.
//!
//! Lifecycle:
//! 1. The fetcher (or the acker, starting the next job in a freed slot) hands over a leased job
//!    with its slot; the job is registered in flight as running (with the handle that can stop
//!    it) before its task can finish.
//! 2. A job whose handler is still compiling on this host, or was refused here, does not
//!    start: it goes back to wait, uncounted (`deployer::Availability`); one whose handler
//!    neither this host nor the registry knows fails as `unknown_handler`. Otherwise the
//!    task waits for its handler's own concurrency limit, if any, then runs the attempt
//!    in the sandbox in an inner task on the guest threads (`GuestThreads`), so that even a
//!    host panic becomes this job's failure.
//! 3. The outcome goes to the acker, unless the job was stopped meanwhile (shutdown or lost
//!    lease), in which case nothing is acked. A success hands its slot to the acker with it, so
//!    that recording it and leasing the queue's next job for the slot is one call; a failure,
//!    or any attempt while Redis is unreachable, frees the slot as soon as the attempt ends.
//!    A result over the queue's `max_result_bytes` is not sent: the attempt is acked as the
//!    `result_too_large` failure the complete script would have made of it.
//! 4. Leasing ahead: a slot whose job took under `prefetch_below` (1 ms) asks the acker for up to
//!    `prefetch` more jobs than the one it will run next, enough to keep it busy about that
//!    long. Those wait in the slot's [`Ahead`] (in flight as `Queued`, heartbeated like the
//!    others) and each starts in the slot as the one before it ends, whatever its outcome;
//!    the slot goes to the acker with the last one. So a run of short jobs costs Redis one
//!    call to lease and a few to record (completions batch up while the slot runs on),
//!    instead of one call per job; each still runs alone, in a fresh instance, one at a time
//!    per slot. Jobs leased ahead that cannot start (host draining, the slot's job stopped,
//!    no memory after a deploy raised a cap) are released, uncounted, and so are those behind
//!    a job that turns out long ([`hold_ahead`]), so that another slot or host runs them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::ack::{Ack, AckOutcome, Carried};
use super::deployer::Availability;
use super::slots::Slot;
use super::workflow::{self, RedisSteps};
use super::{InFlight, InFlightState, JobKey, LoadedHandler, Phase, Shared};
use crate::queue::{
    Completion, Failure, Lease, LeasedJob, MAX_ATTEMPT_LOG_LEN, RateLimit, RecordsAttempt,
    Suspension, ThrottleStart, truncate_utf8,
};
use crate::runtime::{ChildJob, JobInput, JobLimits, LogLine, Outcome, OutcomeClass};
use crate::telemetry::{self, Span as _};
use opentelemetry::trace::TraceContextExt as _;

/// Jobs leased ahead wait at most about this long for the job before them, ten times what
/// counts as short (`below`); then they go back to the queue, in their place, for any slot of
/// any host.
pub(crate) fn hold_ahead(below: Duration) -> Duration {
    below.saturating_mul(10)
}

/// How many jobs to lease ahead for a slot whose last job took `took`: none when it took
/// `below` (the host's `prefetch_below`) or longer, else enough to keep the slot busy for
/// about `below`, at most `prefetch`. Below about a millisecond the call that records a job and
/// leases the next costs more than the job.
pub(crate) fn lease_ahead(took: Duration, below: Duration, prefetch: usize) -> usize {
    if took >= below {
        return 0;
    }
    let fit = below.as_nanos() / took.as_nanos().max(1);
    usize::try_from(fit.saturating_sub(1)).map_or(prefetch, |n| n.min(prefetch))
}

/// Starts the attempt of `job` in its own task.
pub(crate) fn spawn(shared: &Arc<Shared>, job: LeasedJob, slot: Slot) {
    let ahead = Ahead::new(shared, &job.queue);
    start(shared, &mut shared.inflight(), job, slot, ahead);
}

/// Starts the first of `jobs` (a run leased for one slot, see the module docs) like [`spawn`]
/// if the host is still running, the others to follow it in the same slot; else frees the slot
/// and hands back every lease, to be released. The phase is read under the in-flight map's
/// lock, which shutdown takes after it has seen the phase change (to wait for the running jobs,
/// then to stop and release them): a job started here is one that shutdown sees.
pub(crate) fn spawn_if_running(
    shared: &Arc<Shared>,
    mut jobs: VecDeque<LeasedJob>,
    slot: Slot,
    phase: &watch::Receiver<Phase>,
) -> Result<(), Vec<Lease>> {
    let mut inflight = shared.inflight();
    let first = match jobs.pop_front() {
        Some(first) if *phase.borrow() == Phase::Running => first,
        first => return Err(first.iter().chain(&jobs).map(LeasedJob::lease).collect()),
    };
    let mut ahead = Ahead::new(shared, &first.queue);
    for job in jobs {
        inflight.insert(
            JobKey::of(&job),
            InFlight {
                token: job.token.clone(),
                state: InFlightState::Queued,
            },
        );
        ahead.jobs.push_back(job);
    }
    start(shared, &mut inflight, first, slot, ahead);
    Ok(())
}

fn start(
    shared: &Arc<Shared>,
    inflight: &mut HashMap<JobKey, InFlight>,
    job: LeasedJob,
    slot: Slot,
    ahead: Ahead,
) {
    let key = JobKey::of(&job);
    let token = job.token.clone();
    // Holding the map while spawning means the task cannot look itself up before it is there.
    let task = tokio::spawn(run(shared.clone(), job, slot, ahead));
    inflight.insert(
        key,
        InFlight {
            token,
            state: InFlightState::Running(task.abort_handle()),
        },
    );
}

/// The jobs leased ahead for one slot, in the order they run. Whatever is left in it when it
/// is dropped (the job before them was stopped, the host is draining, a job did not fit) is
/// released, uncounted, unless shutdown has already taken it over.
pub(crate) struct Ahead {
    shared: Arc<Shared>,
    queue: String,
    jobs: VecDeque<LeasedJob>,
}

impl Ahead {
    fn new(shared: &Arc<Shared>, queue: &str) -> Self {
        Self {
            shared: shared.clone(),
            queue: queue.to_string(),
            jobs: VecDeque::new(),
        }
    }

    /// The next job that may start now, skipping those no longer this host's (lease lost, or
    /// stopped by shutdown); `None` when there is none or the host is draining (shutdown
    /// releases the rest). The caller starts it under the same lock.
    fn next(&mut self, inflight: &HashMap<JobKey, InFlight>) -> Option<LeasedJob> {
        if self.shared.draining.load(Ordering::SeqCst) {
            return None;
        }
        while let Some(job) = self.jobs.pop_front() {
            if still_queued(inflight, &job) {
                return Some(job);
            }
        }
        None
    }
}

/// Whether `job`, leased ahead, is still waiting here under its lease: not stopped by
/// shutdown, nor forgotten because its lease was lost.
fn still_queued(inflight: &HashMap<JobKey, InFlight>, job: &LeasedJob) -> bool {
    inflight
        .get(&JobKey::of(job))
        .is_some_and(|e| e.token == job.token && matches!(e.state, InFlightState::Queued))
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl Ahead {
    /// Releases the jobs still waiting here (uncounted), in the background; they leave the
    /// in-flight map now.
    fn give_back(&mut self) {
        if self.jobs.is_empty() || self.shared.draining.load(Ordering::SeqCst) {
            // Draining: shutdown stops and releases every queued job itself.
            return;
        }
        let mut leases = Vec::new();
        {
            let mut inflight = self.shared.inflight();
            for job in self.jobs.drain(..) {
                if still_queued(&inflight, &job) {
                    inflight.remove(&JobKey::of(&job));
                    leases.push(job.lease());
                }
            }
        }
        if leases.is_empty() {
            return;
        }
        let shared = self.shared.clone();
        let queue = self.queue.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    shared
                        .release_unstarted(&queue, &leases, "jobs leased ahead")
                        .await;
                });
            }
            Err(_) => {
                tracing::warn!(%queue, jobs = leases.len(), "jobs leased ahead will run again after their lease expires");
            }
        }
    }
}

/// Aborts the inner task when the outer one is dropped (stopped at shutdown).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One attempt of `job` in `slot`, from its trace span to its ack (see the module docs).
async fn run(shared: Arc<Shared>, mut job: LeasedJob, slot: Slot, mut ahead: Ahead) {
    // With tracing on, the attempt's `process` span starts here, but is made only once the
    // attempt starts (see [`attempt`]) or fails without starting.
    let started = telemetry::tracer().map(|_| std::time::SystemTime::now());
    let mut span = None;
    let outcome = attempt_holding_ahead(&shared, &mut job, &mut ahead, started, &mut span).await;
    if let (None, Some(started), Err(NotRun::Unknown(_) | NotRun::MissingSecret { .. })) =
        (&span, started, &outcome)
    {
        // A counted attempt that could not start (unknown handler, missing secret) still has
        // its span, ended at once. One that was deferred (compiling, throttled) has none: it
        // was not an attempt (uncounted), and its job gets its span when it runs.
        span = process_span_of(&job, started);
    }
    let trace = children_trace(&job, span.as_ref());
    // Only a success whose ack can be recorded now keeps its slot for the queue's next job: a
    // slot must not wait for an ack that Redis is refusing.
    let mut ok = matches!(
        outcome,
        Ok(Ran {
            outcome: Outcome::Ok(_),
            ..
        })
    );
    let (class, timing) = classify(&outcome);
    if let Some(span) = span {
        telemetry::end_process(span, class, version_of(&outcome));
    }
    let mut outcome = ack_outcome(&job, outcome, class, &trace).await;
    if let AckOutcome::Complete(completion) = &outcome
        && let Some(too_large) = refuse_oversized_result(&shared, &job, completion).await
    {
        outcome = AckOutcome::Fail(too_large);
        ok = false;
    }
    // Stopped while we finished: whoever stopped it owns the lease now.
    let Some((carried, slot_ran_on)) = finish(&shared, &job, slot, ahead, ok, timing) else {
        return;
    };
    shared
        .metrics
        .attempt(&job.queue, &job.handler, class, timing);
    let id = job.id;
    let ack = Ack {
        queue: job.queue,
        outcome,
        slot: carried,
        slot_ran_on,
    };
    if shared.acks.send(ack).is_err() {
        tracing::warn!(job_id = %id, "acker gone; the job will run again after its lease expires");
    }
}

/// The trace context `job`'s children continue: this attempt's span when there is one, else
/// the job's own.
fn children_trace(
    job: &LeasedJob,
    span: Option<&telemetry::SdkSpan>,
) -> (Option<String>, Option<String>) {
    span.and_then(|span| telemetry::traceparent(span.span_context()))
        .map_or_else(
            || (job.traceparent.clone(), job.tracestate.clone()),
            |(parent, state)| (Some(parent), state),
        )
}

/// The attempt's `process` span, started at `started` (when tracing is on).
fn process_span_of(job: &LeasedJob, started: std::time::SystemTime) -> Option<telemetry::SdkSpan> {
    telemetry::process_span(
        &job.queue,
        &job.id,
        &job.handler,
        job.attempt,
        job.traceparent.as_deref(),
        job.tracestate.as_deref(),
        started,
    )
}

/// Runs the attempt ([`attempt`], which makes its span in `span` when it starts). When jobs
/// are leased ahead for the slot and this one turns out long ([`hold_ahead`]), gives them back
/// so that another slot or host runs them.
async fn attempt_holding_ahead(
    shared: &Arc<Shared>,
    job: &mut LeasedJob,
    ahead: &mut Ahead,
    started: Option<std::time::SystemTime>,
    span: &mut Option<telemetry::SdkSpan>,
) -> Result<Ran, NotRun> {
    let running = attempt(shared, job, started, span);
    tokio::pin!(running);
    if ahead.jobs.is_empty() {
        return running.await;
    }
    tokio::select! {
        outcome = &mut running => outcome,
        () = tokio::time::sleep(hold_ahead(shared.config.prefetch_below)) => {
            ahead.give_back();
            running.await
        }
    }
}

/// The outcome class an attempt's metrics, span and failure record name, and its timing.
fn classify(outcome: &Result<Ran, NotRun>) -> (&'static str, Option<(Duration, Duration)>) {
    match outcome {
        Err(NotRun::Unknown(_)) => ("unknown_handler", None),
        Err(NotRun::MissingSecret { .. }) => ("missing_secret", None),
        Err(NotRun::NotReady(_)) => (OutcomeClass::Suspended.as_str(), None),
        Ok(ran) => (ran.outcome.class().as_str(), ran.timing),
    }
}

/// The handler version the attempt ran (or would have), for its span.
fn version_of(outcome: &Result<Ran, NotRun>) -> Option<&str> {
    match outcome {
        Ok(ran) => Some(ran.loaded.version.as_str()),
        Err(NotRun::MissingSecret { loaded, .. }) => Some(loaded.version.as_str()),
        Err(_) => None,
    }
}

/// What the acker is to record of the attempt: a completion (with its children), a failure,
/// or a sleep.
async fn ack_outcome(
    job: &LeasedJob,
    outcome: Result<Ran, NotRun>,
    class: &str,
    trace: &(Option<String>, Option<String>),
) -> AckOutcome {
    let Ran {
        outcome,
        loaded,
        logs,
        progress,
        calls,
        children,
        ..
    } = match outcome {
        Ok(ran) => ran,
        Err(NotRun::Unknown(why)) => return AckOutcome::Fail(Failure::new(job, class, why)),
        Err(NotRun::MissingSecret { loaded, why }) => {
            return AckOutcome::Fail(
                Failure::new(job, class, why).with_handler(&loaded.version, loaded.retry),
            );
        }
        // Not started: back to wait, uncounted, like a throttled start.
        Err(NotRun::NotReady(wait)) => {
            return AckOutcome::Suspend(Suspension::new(job, String::new(), wait));
        }
    };
    match outcome {
        Outcome::Ok(result) => AckOutcome::Complete(
            workflow::with_children(
                Completion::new(job, result)
                    .with_version(&loaded.version)
                    .with_logs(logs, progress)
                    .with_calls(calls),
                children,
                trace,
            )
            .await,
        ),
        Outcome::Suspended { field, delay } => AckOutcome::Suspend(
            Suspension::new(job, field, delay)
                .with_version(&loaded.version)
                .with_logs(logs, progress)
                .with_calls(calls),
        ),
        failed => {
            let msg = failed.error_message().unwrap_or_default();
            let failure = Failure::new(job, class, msg)
                .with_handler(&loaded.version, loaded.retry)
                .with_logs(logs, progress)
                .with_calls(calls);
            // The handler said the failure is permanent, or its result would be as large
            // again: no retry.
            AckOutcome::Fail(
                if matches!(failed, Outcome::Fail(_) | Outcome::ResultTooLarge(_)) {
                    failure.permanent()
                } else {
                    failure
                },
            )
        }
    }
}

/// Marks the attempt finished in the in-flight map and passes its slot on: to the next job
/// leased ahead for it, if one may start and fits; else, after a success (`ok`) while Redis
/// is up, to the acker with how many jobs to lease ahead for it. Returns the slot for the
/// acker, if any, and whether the slot ran on; `None` when the job was stopped meanwhile
/// (nothing is acked).
fn finish(
    shared: &Arc<Shared>,
    job: &LeasedJob,
    mut slot: Slot,
    mut ahead: Ahead,
    ok: bool,
    timing: Option<(Duration, Duration)>,
) -> Option<(Option<Carried>, bool)> {
    let mut inflight = shared.inflight();
    match inflight.get_mut(&JobKey::of(job)) {
        Some(entry)
            if entry.token == job.token && matches!(entry.state, InFlightState::Running(_)) =>
        {
            entry.state = InFlightState::Finished;
        }
        _ => return None,
    }
    let Some(next) = ahead.next(&inflight) else {
        let carried = (ok && shared.redis.is_up()).then(|| Carried {
            slot,
            ahead: timing.map_or(0, |(took, _)| {
                lease_ahead(took, shared.config.prefetch_below, shared.config.prefetch)
            }),
        });
        return Some((carried, false));
    };
    let cap = shared.handlers.get(&next.handler).map_or(0, |h| h.memory);
    if slot.fit(cap) {
        start(shared, &mut inflight, next, slot, ahead);
        return Some((None, true));
    }
    // A deploy raised the cap since the lease; give back this job and the rest (`Ahead`'s
    // drop, which takes the in-flight map: after it is let go), and the slot.
    ahead.jobs.push_front(next);
    drop(slot);
    drop(inflight);
    drop(ahead);
    Some((None, false))
}

/// Results up to this size go to Redis as they are. A larger one is first checked against its
/// queue's `max_result_bytes` (one small read), and not sent when it is over: the complete
/// script would only dead-letter it, and a guest returning megabytes in a loop would otherwise
/// keep the one Redis busy copying them, raising every other queue's latency (tests/isolation,
/// the hostile-guest corpus).
const RESULT_CHECKED_FROM: usize = 64 * 1024;

/// The failure that the complete script would record for `completion` (outcome
/// `result_too_large`, permanent), when its result is over the queue's limit; `None` to send it
/// (also when the limit cannot be read: the script checks it anyway).
async fn refuse_oversized_result(
    shared: &Shared,
    job: &LeasedJob,
    completion: &Completion,
) -> Option<Failure> {
    let size = completion.result.len();
    if size <= RESULT_CHECKED_FROM {
        return None;
    }
    let limit = shared
        .client
        .config(&job.queue)
        .await
        .ok()?
        .max_result_bytes;
    if size as u64 <= limit {
        return None;
    }
    tracing::warn!(queue = %job.queue, job_id = %job.id, size, limit, "result over the queue's size limit: job dead-lettered");
    let mut failure = Failure::new(
        job,
        "result_too_large",
        format!("result of {size} bytes is over the limit of {limit}"),
    )
    .permanent();
    failure.record.clone_from(&completion.record);
    Some(failure)
}

/// An attempt that ran.
struct Ran {
    outcome: Outcome,
    /// How long it ran, and how much of that was instantiation (`None` when the host
    /// panicked or the task was cancelled).
    timing: Option<(Duration, Duration)>,
    /// The handler version that ran it.
    loaded: Arc<LoadedHandler>,
    /// What it logged (see [`attempt_log`]) and its last progress.
    logs: String,
    progress: Option<u8>,
    /// Its call record (`runtime/calls.rs`), as the scripts take it ('' when none).
    calls: String,
    /// The child jobs it enqueued (only a success has any).
    children: Vec<ChildJob>,
}

impl Ran {
    /// An attempt held back before it started (its handler's throttle): the job waits this
    /// long, uncounted.
    fn not_started(loaded: Arc<LoadedHandler>, wait: Duration) -> Self {
        Ran {
            outcome: Outcome::Suspended {
                field: String::new(),
                delay: wait,
            },
            timing: None,
            loaded,
            logs: String::new(),
            progress: None,
            calls: String::new(),
            children: Vec::new(),
        }
    }

    /// An attempt whose task ended without a report (the host panicked, or it was
    /// cancelled).
    fn trapped(loaded: Arc<LoadedHandler>, why: &str) -> Self {
        Ran {
            outcome: Outcome::Trap(why.to_string()),
            timing: None,
            loaded,
            logs: String::new(),
            progress: None,
            calls: String::new(),
            children: Vec::new(),
        }
    }
}

/// An attempt's log as its history entry keeps it: one `<source>: <message>` line each, cut
/// to [`MAX_ATTEMPT_LOG_LEN`] bytes (on a character boundary) with a note of what was cut.
fn attempt_log(lines: &[LogLine], dropped: u64) -> String {
    let mut text = String::new();
    for line in lines {
        text.push_str(line.source.as_str());
        text.push_str(": ");
        text.push_str(&line.message);
        text.push('\n');
    }
    let total = text.len() as u64 + dropped;
    if total as usize > MAX_ATTEMPT_LOG_LEN || dropped > 0 {
        let note = format!("[{total} bytes of log in all; the rest is in the host's log]\n");
        let keep = MAX_ATTEMPT_LOG_LEN.saturating_sub(note.len());
        let cut = truncate_utf8(&text, keep).len();
        text.truncate(cut);
        text.push_str(&note);
    }
    text
}

/// Why an attempt did not start.
enum NotRun {
    /// This host has no such handler, nor has the registry: a failure, retried per the job's
    /// policy (a deploy may be on its way).
    Unknown(String),
    /// The handler is compiling here, or this host refused it: the job waits this long,
    /// uncounted (`deployer::Availability`).
    NotReady(Duration),
    /// The handler needs secrets this host does not have (`LoadedHandler::unavailable`): a
    /// failure under the handler's retry policy, since another host may have them.
    MissingSecret {
        loaded: Arc<LoadedHandler>,
        why: String,
    },
}

/// Runs the attempt, if this host can run the job's handler now. With tracing on
/// (`started` given), the attempt's `process` span is made in `span` once the attempt starts,
/// and is the current trace context of its run (the parent of what the guest does).
async fn attempt(
    shared: &Arc<Shared>,
    job: &mut LeasedJob,
    started: Option<std::time::SystemTime>,
    span: &mut Option<telemetry::SdkSpan>,
) -> Result<Ran, NotRun> {
    let loaded = handler_for(shared, job)?;
    let payload = std::mem::take(&mut job.payload);
    let _handler_permit = match &loaded.limit {
        Some(limit) => limit.clone().acquire_owned().await.ok(),
        None => None,
    };
    if let Some(limit) = loaded.throttle
        && let Some(wait) = throttled(shared, job, limit).await
    {
        // Not started: the job goes back to wait (suspend.lua with no field), uncounted.
        return Ok(Ran::not_started(loaded, wait));
    }
    *span = started.and_then(|started| process_span_of(job, started));
    let Some(cx) = span.as_ref().map(|span| {
        opentelemetry::Context::new().with_remote_span_context(span.span_context().clone())
    }) else {
        return Ok(run_in_sandbox(shared, job, loaded, payload).await);
    };
    let running = run_in_sandbox(shared, job, loaded, payload);
    Ok(opentelemetry::context::FutureExt::with_context(running, cx).await)
}

/// The handler version that runs `job` on this host, or why it cannot run here now.
fn handler_for(shared: &Shared, job: &LeasedJob) -> Result<Arc<LoadedHandler>, NotRun> {
    let loaded = match shared.availability(&job.handler) {
        Availability::Ready(loaded) => loaded,
        Availability::NotReady(wait) => return Err(NotRun::NotReady(wait)),
        Availability::Unknown => {
            return Err(NotRun::Unknown(format!(
                "no handler named {:?} on host {} (known: {}); deploy it with `wasmq handler deploy`",
                job.handler,
                shared.config.host_id,
                shared.handlers.names().join(", ")
            )));
        }
    };
    if let Some(why) = loaded.unavailable.clone() {
        tracing::warn!(job_id = %job.id, queue = %job.queue, handler = %job.handler, "{why}");
        return Err(NotRun::MissingSecret { loaded, why });
    }
    Ok(loaded)
}

/// Runs `job` with `loaded` in a fresh instance, in an inner task on the guest threads, so
/// that even a host panic becomes this job's failure.
async fn run_in_sandbox(
    shared: &Arc<Shared>,
    job: &LeasedJob,
    loaded: Arc<LoadedHandler>,
    payload: Vec<u8>,
) -> Ran {
    let limits = JobLimits {
        timeout: job.timeout.unwrap_or(loaded.timeout),
        memory: loaded.memory,
        fuel: loaded.fuel,
    };
    let input = JobInput {
        id: job.id.clone(),
        queue: job.queue.clone(),
        handler: job.handler.clone(),
        payload,
        attempt: job.attempt,
        max_attempts: loaded
            .retry
            .max_attempts_for(job.own_policy, job.max_attempts),
    };
    let runtime = shared.runtime.clone();
    let handler = loaded.handler.clone();
    let steps = Arc::new(RedisSteps {
        client: shared.client.clone(),
        queue: job.queue.clone(),
        id: job.id.clone(),
        token: job.token.clone(),
        max_bytes: shared.config.runtime.max_job_step_bytes,
        depth: job.depth,
        max_depth: shared.config.max_child_depth,
    });
    let span = tracing::info_span!("job", job_id = %job.id, queue = %job.queue, handler = %job.handler, attempt = job.attempt);
    // With tracing on, the attempt's span (made current by `run`) is the parent of what the
    // guest does: its outbound requests read it (capability/http.rs).
    let trace = telemetry::tracer().map(|_| opentelemetry::Context::current());
    let mut inner = AbortOnDrop(shared.guests.spawn(tracing::Instrument::instrument(
        async move {
            let running = runtime.run_with_store(&handler, input, &limits, steps);
            match trace {
                Some(cx) => opentelemetry::context::FutureExt::with_context(running, cx).await,
                None => running.await,
            }
        },
        span,
    )));
    match (&mut inner.0).await {
        Ok(report) => Ran {
            outcome: report.outcome,
            timing: Some((report.duration, report.instantiation)),
            loaded,
            logs: attempt_log(&report.logs, report.logs_dropped),
            progress: report.progress,
            calls: report.calls,
            children: report.children,
        },
        Err(err) if err.is_panic() => {
            tracing::error!(job_id = %job.id, "the host panicked running this job");
            Ran::trapped(loaded, "the host panicked running this job")
        }
        Err(_) => Ran::trapped(loaded, "the job's task was cancelled"),
    }
}

/// How long `job` must wait before its handler's throttle lets it start, or `None` when its
/// start is admitted (and logged). A throttle that cannot be checked holds the job back a
/// second rather than let it through unchecked.
async fn throttled(shared: &Shared, job: &LeasedJob, limit: RateLimit) -> Option<Duration> {
    match shared
        .client
        .throttle_start(&job.queue, &job.id, &job.token, &job.handler, limit)
        .await
    {
        Ok(ThrottleStart::Admitted) => None,
        Ok(ThrottleStart::Wait(wait)) => Some(wait),
        // The lease is gone; the give-back that follows is refused the same way.
        Ok(ThrottleStart::Rejected(_)) => Some(Duration::ZERO),
        Err(err) => {
            shared.redis.failed("checking a handler's throttle", &err);
            Some(Duration::from_secs(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::LogSource;

    fn line(source: LogSource, message: &str) -> LogLine {
        LogLine {
            source,
            message: message.to_string(),
        }
    }

    #[test]
    fn short_jobs_lease_enough_ahead_to_fill_about_a_millisecond() {
        let us = Duration::from_micros;
        let ms = Duration::from_millis(1);
        assert_eq!(lease_ahead(us(2000), Duration::from_millis(100), 16), 16);
        assert_eq!(lease_ahead(us(50_000), Duration::from_millis(100), 16), 1);
        assert_eq!(hold_ahead(ms), Duration::from_millis(10));
        assert_eq!(lease_ahead(us(1000), ms, 16), 0);
        assert_eq!(lease_ahead(us(5000), ms, 16), 0);
        assert_eq!(lease_ahead(us(400), ms, 16), 1);
        assert_eq!(lease_ahead(us(100), ms, 16), 9);
        assert_eq!(lease_ahead(us(20), ms, 16), 16);
        assert_eq!(lease_ahead(Duration::ZERO, ms, 16), 16);
        assert_eq!(lease_ahead(us(20), ms, 0), 0);
    }

    #[test]
    fn an_attempts_log_is_kept_whole_when_short_and_cut_with_a_note_when_long() {
        assert_eq!(attempt_log(&[], 0), "");
        let short = [
            line(LogSource::Stdout, "hello"),
            line(LogSource::Warn, "careful"),
        ];
        assert_eq!(attempt_log(&short, 0), "stdout: hello\nwarn: careful\n");

        let long: Vec<_> = (0..1000)
            .map(|i| line(LogSource::Stderr, &format!("é line {i}")))
            .collect();
        let kept = attempt_log(&long, 0);
        assert!(kept.len() <= MAX_ATTEMPT_LOG_LEN, "{}", kept.len());
        assert!(kept.starts_with("stderr: é line 0\n"));
        assert!(
            kept.ends_with("of log in all; the rest is in the host's log]\n"),
            "{kept}"
        );
        // Output the runtime already dropped counts too, even when the rest fits.
        let dropped = attempt_log(&short, 10_000);
        assert!(dropped.starts_with("stdout: hello\n"));
        assert!(dropped.contains("[10028 bytes of log in all"), "{dropped}");
    }
}
