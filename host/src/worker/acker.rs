//! The acker: records job outcomes in Redis in batches.
//!
//! Lifecycle:
//! 1. Executors send an [`Ack`] (a completion or a failure) as each attempt ends; a completion
//!    brings its attempt's slot along.
//! 2. The acker takes whatever is queued (up to a batch), groups it by queue, and records it
//!    with one `complete` and one `fail` call per queue. Under load, batches form by
//!    themselves; when idle, an outcome is recorded as soon as it arrives. Up to [`FLIGHTS`]
//!    batches are under way at once, so Redis runs one while the host handles the last; their
//!    calls reach Redis in the order the batches formed ([`Turn`]).
//! 3. While the host is running, the completions of a queue and the leasing of that queue's
//!    next jobs for the slots they brought (one each, and for a slot of short jobs up to
//!    `prefetch` more to run after it: see `executor`) are one call (`complete_and_fetch`), so
//!    a busy slot goes from one job to the next in one round trip; the new jobs start at once
//!    (`executor::spawn_if_running`). Slots not carried over (nothing left to lease, draining,
//!    a fetcher of another queue waiting for room, no memory for the largest handler) go back
//!    to the pool, where the fetchers pick them up; no slot outlives the flush it came in.
//! 4. If Redis is away, the outcomes are kept and retried with backoff; the leases stay
//!    heartbeated meanwhile, so a short outage loses nothing and runs nothing twice. A queue
//!    whose call Redis refused because one of its keys holds another type
//!    (`QueueError::WrongType`, nothing written) has its outcomes parked and retried every
//!    [`PARKED_RETRY`] on their own, without holding back the other queues' outcomes, until
//!    the key is fixed.
//! 5. Recorded (or refused: the lease was lost) jobs leave the in-flight map, by lease token,
//!    before the next jobs start.
//! 6. At shutdown it drains what is queued and flushes for at most [`FLUSH_AT_EXIT`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::ack::{Ack, AckOutcome, Carried};
use super::workflow;
use super::{Phase, Shared, executor};
use crate::connection::Backoff;
use crate::queue::{
    CompleteReport, Completion, FailReport, Failure, Lease, LeasedJob, QueueError, SuspendReport,
    Suspension,
};

/// Most outcomes recorded in one flush.
const MAX_BATCH: usize = 512;

/// How long a stopping host keeps trying to record outcomes and release jobs.
pub(crate) const FLUSH_AT_EXIT: Duration = Duration::from_secs(10);

/// How long the outcomes of jobs whose slots ran on may wait for more to record in one call.
/// A run of short jobs leased ahead ends within about this long, so its jobs are recorded in
/// the call that leases the slot's next run.
const GATHER: Duration = Duration::from_millis(1);

/// How often the parked outcomes of a queue refused for a key of another type are retried.
const PARKED_RETRY: Duration = Duration::from_secs(1);

/// Outcomes waiting to be recorded, by queue.
#[derive(Default)]
struct Pending {
    queues: HashMap<String, Bucket>,
    len: usize,
    /// The outcomes of queues whose last call was refused for a key of another type: not in
    /// `len`, retried every [`PARKED_RETRY`] ([`Pending::unpark`]).
    parked: HashMap<String, Bucket>,
    /// Whether every outcome pending is one that may wait ([`Ack::slot_ran_on`]).
    may_wait: bool,
}

#[derive(Default)]
struct Bucket {
    completions: Vec<Completion>,
    failures: Vec<Failure>,
    suspensions: Vec<Suspension>,
    slots: Vec<Carried>,
}

impl Pending {
    fn push(&mut self, ack: Ack) {
        self.may_wait = (self.is_empty() || self.may_wait) && ack.slot_ran_on;
        let bucket = self.queues.entry(ack.queue).or_default();
        bucket.slots.extend(ack.slot);
        match ack.outcome {
            AckOutcome::Complete(c) => bucket.completions.push(c),
            AckOutcome::Fail(f) => bucket.failures.push(f),
            AckOutcome::Suspend(s) => bucket.suspensions.push(s),
        }
        self.len += 1;
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds what a flush left unrecorded (no slots: a flush uses or frees all of them). Those
    /// outcomes are retried with backoff, not gathered.
    fn absorb(&mut self, mut left: Pending) {
        for (queue, mut from) in std::mem::take(&mut left.parked) {
            self.parked
                .entry(queue)
                .or_default()
                .take_outcomes(&mut from);
        }
        if left.is_empty() {
            return;
        }
        for (queue, mut from) in left.queues {
            self.queues
                .entry(queue)
                .or_default()
                .take_outcomes(&mut from);
        }
        self.len += left.len;
        self.may_wait = false;
    }

    /// Sets aside the outcomes of `queues`, refused for a key of another type, to retry every
    /// [`PARKED_RETRY`].
    fn park(&mut self, queues: Vec<String>) {
        for queue in queues {
            if let Some(mut bucket) = self.queues.remove(&queue) {
                self.parked
                    .entry(queue)
                    .or_default()
                    .take_outcomes(&mut bucket);
            }
        }
    }

    /// Moves the parked outcomes back in line, for the next flush.
    fn unpark(&mut self) {
        for (queue, mut from) in std::mem::take(&mut self.parked) {
            self.len += from.len();
            self.queues
                .entry(queue)
                .or_default()
                .take_outcomes(&mut from);
            self.may_wait = false;
        }
    }
}

impl Bucket {
    fn take_outcomes(&mut self, from: &mut Bucket) {
        self.completions.append(&mut from.completions);
        self.failures.append(&mut from.failures);
        self.suspensions.append(&mut from.suspensions);
    }

    fn len(&self) -> usize {
        self.completions.len() + self.failures.len() + self.suspensions.len()
    }
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Ack>,
    stop: watch::Receiver<bool>,
    phase: watch::Receiver<Phase>,
) {
    let mut acker = Acker::new(shared, rx, stop, phase);
    while !acker.done() {
        acker.unpark_if_due();
        // Wait for something to do: an outcome, a flush ending, the backoff's end, the stop.
        if acker.pending.is_empty() || acker.retry_at.is_some() {
            acker.wait().await;
            continue;
        }
        acker.gather().await;
        // Room for one more flush, or wait for one to land (its leftovers join this batch).
        if acker.flights.len() >= FLIGHTS {
            if let Some(done) = acker.flights.join_next().await {
                acker.landed(done);
            }
            continue;
        }
        acker.launch();
    }
}

/// The acker's state between flushes.
struct Acker {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Ack>,
    stop: watch::Receiver<bool>,
    phase: watch::Receiver<Phase>,
    pending: Pending,
    backoff: Backoff,
    /// Flushes under way, each returning what it could not record.
    flights: JoinSet<(Pending, bool)>,
    /// After a failed flush, no new one starts before this.
    retry_at: Option<tokio::time::Instant>,
    /// The turn of the flush spawned last, which the next one waits for.
    last_turn: Option<oneshot::Receiver<()>>,
    stopping: bool,
    closed: bool,
    /// When the parked outcomes are retried.
    parked_at: Option<tokio::time::Instant>,
}

impl Acker {
    fn new(
        shared: Arc<Shared>,
        rx: mpsc::UnboundedReceiver<Ack>,
        stop: watch::Receiver<bool>,
        phase: watch::Receiver<Phase>,
    ) -> Self {
        let stopping = *stop.borrow();
        Self {
            shared,
            rx,
            stop,
            phase,
            pending: Pending::default(),
            backoff: Backoff::default(),
            flights: JoinSet::new(),
            retry_at: None,
            last_turn: None,
            stopping,
            closed: false,
            parked_at: None,
        }
    }

    /// Whether the acker may end: told to stop (or nobody left to send outcomes), and every
    /// outcome recorded.
    fn done(&self) -> bool {
        (self.stopping || self.closed)
            && self.pending.is_empty()
            && self.pending.parked.is_empty()
            && self.rx.is_empty()
            && self.flights.is_empty()
    }

    /// Sets when the parked outcomes are retried, and moves them back in line when that is due
    /// (it came while the acker was busy with other queues' outcomes).
    fn unpark_if_due(&mut self) {
        if self.pending.parked.is_empty() {
            self.parked_at = None;
        } else if self.parked_at.is_none() {
            self.parked_at = Some(tokio::time::Instant::now() + PARKED_RETRY);
        } else if self
            .parked_at
            .is_some_and(|at| at <= tokio::time::Instant::now())
        {
            self.parked_at = None;
            self.pending.unpark();
        }
    }

    /// Waits for one thing to happen: an outcome, a flush ending, the backoff's end, the
    /// parked outcomes' retry, the stop.
    async fn wait(&mut self) {
        tokio::select! {
            ack = self.rx.recv(), if !self.closed => match ack {
                Some(ack) => self.pending.push(ack),
                None => self.closed = true,
            },
            Some(done) = self.flights.join_next(), if !self.flights.is_empty() => {
                self.landed(done);
            }
            () = sleep_until_some(self.retry_at) => self.retry_at = None,
            () = sleep_until_some(self.parked_at) => {
                self.parked_at = None;
                self.pending.unpark();
            }
            changed = self.stop.changed(), if !self.stopping => {
                self.stopping = changed.is_err() || *self.stop.borrow();
            }
        }
    }

    /// Takes whatever else is queued, up to a batch; when every outcome pending may wait
    /// ([`Ack::slot_ran_on`]), waits up to [`GATHER`] for more.
    async fn gather(&mut self) {
        while self.pending.len < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(ack) => self.pending.push(ack),
                Err(_) => break,
            }
        }
        if !self.pending.may_wait {
            return;
        }
        let deadline = tokio::time::Instant::now() + GATHER;
        while self.pending.may_wait && self.pending.len < MAX_BATCH {
            tokio::select! {
                ack = self.rx.recv() => match ack {
                    Some(ack) => self.pending.push(ack),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
                _ = self.stop.changed() => break,
            }
        }
    }

    /// Starts a flush of everything pending, in line after the flush started before it.
    fn launch(&mut self) {
        let mut batch = std::mem::take(&mut self.pending);
        let shared = self.shared.clone();
        let phase = self.phase.clone();
        let (passed, next) = oneshot::channel();
        let turn = Turn {
            after: self.last_turn.replace(next),
            passed: Some(passed),
        };
        self.flights.spawn(async move {
            let ok = flush(&shared, &mut batch, &phase, turn).await;
            (batch, ok)
        });
    }

    /// Takes back what a flush could not record, and sets the backoff before the next one.
    fn landed(&mut self, done: Result<(Pending, bool), tokio::task::JoinError>) {
        match done {
            Ok((left, true)) => {
                self.backoff.reset();
                self.pending.absorb(left);
            }
            Ok((left, false)) => {
                self.pending.absorb(left);
                self.retry_at = Some(tokio::time::Instant::now() + self.backoff.next_delay());
            }
            // A panic in a flush is the acker's own, as when flushes ran in its task.
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            // Cancelled: only when the set is dropped, and then nobody is here to see it.
            Err(_) => {}
        }
    }
}

/// Most flushes under way at once. With one, Redis waits while the host sends a batch, reads
/// the reply and starts the jobs leased in it (about 40% of each flush at C=50), and the host
/// waits while Redis runs the script; with two, the next batch is in Redis while the host
/// handles the last reply. The outcomes of one job are never in two flushes: an attempt is
/// acked once, and its job cannot be leased again before that ack is recorded.
const FLIGHTS: usize = 2;

/// A flush's place in line: its calls go to Redis once the flush spawned before it has its
/// replies, so outcomes are recorded in the order they were gathered (at concurrency 1, the
/// order the jobs ended: two flushes sent at once may reach Redis either way round). What a
/// flush does with its replies still runs while Redis runs the next one's calls.
struct Turn {
    /// Passed (or dropped, if that flush panicked) by the flush before.
    after: Option<oneshot::Receiver<()>>,
    passed: Option<oneshot::Sender<()>>,
}

impl Turn {
    async fn wait(&mut self) {
        if let Some(after) = self.after.take() {
            // An error is the flush before ending without passing: nothing to wait for.
            let _ = after.await;
        }
    }

    fn pass(&mut self) {
        if let Some(passed) = self.passed.take() {
            // The next flush may not exist (yet): its receiver is kept by the acker.
            let _ = passed.send(());
        }
    }
}

/// Waits until `at`, forever when there is none.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Records what is pending, queue by queue, leasing each queue's next jobs for the slots its
/// completions brought; what was recorded (or refused) leaves `pending` and the in-flight map.
/// Every slot is used or freed here. Returns false if Redis failed for some of it.
async fn flush(
    shared: &Arc<Shared>,
    pending: &mut Pending,
    phase: &watch::Receiver<Phase>,
    mut turn: Turn,
) -> bool {
    let mut calls = Calls::default();
    turn.wait().await;
    let queues = pending.queues.len();
    for (i, (queue, bucket)) in pending.queues.iter_mut().enumerate() {
        let slots = carry_over(shared, queue, std::mem::take(&mut bucket.slots), phase);
        // This queue's calls first, then what the replies call for.
        let completed = complete(shared, queue, &bucket.completions, &slots).await;
        let failed = if bucket.failures.is_empty() {
            None
        } else {
            Some(shared.client.fail(queue, &bucket.failures).await)
        };
        let suspended = if bucket.suspensions.is_empty() {
            None
        } else {
            Some(shared.client.suspend(queue, &bucket.suspensions).await)
        };
        if i + 1 == queues {
            turn.pass();
        }

        let next = completed.and_then(|reply| {
            record_and_forget(shared, queue, reply, &mut bucket.completions, &mut calls)
        });
        match next {
            Some((_, next)) => start_next(shared, queue, next, slots, phase).await,
            // Back to the pool at once: the retry may take a while.
            None => drop(slots),
        }
        if let Some(reply) = failed {
            record_and_forget(shared, queue, reply, &mut bucket.failures, &mut calls);
        }
        if let Some(reply) = suspended {
            record_and_forget(shared, queue, reply, &mut bucket.suspensions, &mut calls);
        }
    }
    turn.pass();
    pending.park(calls.refused);
    // What is left failed to record: retried with backoff, not gathered.
    pending.may_wait = false;
    pending.len = pending.queues.values().map(Bucket::len).sum();
    !calls.outage
}

/// Records `queue`'s completions (if any), in the call that also leases its next jobs for
/// `slots` when there are any; `None` when there is nothing to record.
async fn complete(
    shared: &Shared,
    queue: &str,
    completions: &[Completion],
    slots: &[Carried],
) -> Option<Result<Completed, QueueError>> {
    if completions.is_empty() {
        return None;
    }
    if slots.is_empty() {
        let report = shared.client.complete(queue, completions).await;
        return Some(report.map(|report| (report, Vec::new())));
    }
    let config = &shared.config;
    let wanted = slots.iter().map(|c| 1 + c.ahead).sum::<usize>();
    let recorded = shared
        .client
        .complete_and_fetch(
            queue,
            completions,
            wanted.min(crate::queue::MAX_BULK),
            config.lease,
            &config.host_id,
        )
        .await;
    Some(recorded.map(|(report, fetched)| {
        if fetched.rate_limited {
            shared.metrics.rate_limited(queue);
        }
        (report, fetched.jobs)
    }))
}

/// What recording a queue's completions replies: the report, and the jobs leased for the
/// slots they brought.
type Completed = (CompleteReport, Vec<LeasedJob>);

/// How a flush's calls went.
#[derive(Default)]
struct Calls {
    /// Some call failed for want of Redis: the next flush backs off.
    outage: bool,
    /// The queues a call of which was refused for a key of another type: parked.
    refused: Vec<String>,
}

impl Calls {
    /// Notes a failed call. A refusal wrote nothing and is no Redis outage: it parks the
    /// queue's outcomes instead of backing every queue off.
    fn failed(&mut self, shared: &Shared, queue: &str, what: &str, err: &QueueError) {
        shared.redis.failed(what, err);
        if err.wrong_type_key().is_some() {
            if !self.refused.iter().any(|q| q == queue) {
                self.refused.push(queue.to_string());
            }
        } else {
            self.outage = true;
        }
    }
}

/// One kind of outcome the acker records (completions, failures, sleeps): the reply of the
/// call that records a queue's outcomes of the kind, and what the acker makes of it.
trait Recordable: Sized {
    type Reply;
    /// What the call does, for the Redis health log.
    const RECORDING: &'static str;
    /// Counts and logs what `reply` says of `outcomes` (all still there), and starts what it
    /// calls for.
    fn recorded(shared: &Arc<Shared>, queue: &str, reply: &Self::Reply, outcomes: &[Self]);
    /// The attempt's job id and lease token.
    fn attempt(self) -> (String, String);
}

/// Ends the call that recorded `outcomes` (one kind, one queue). Answered: the reply is
/// counted and logged ([`Recordable::recorded`]) and the attempts leave `outcomes` and the
/// in-flight map (recorded or refused, this host holds their leases no longer). Failed: the
/// outcomes stay, for the next flush. Returns the reply when Redis answered.
fn record_and_forget<T: Recordable>(
    shared: &Arc<Shared>,
    queue: &str,
    reply: Result<T::Reply, QueueError>,
    outcomes: &mut Vec<T>,
    calls: &mut Calls,
) -> Option<T::Reply> {
    match reply {
        Ok(reply) => {
            shared.redis.ok();
            T::recorded(shared, queue, &reply, outcomes);
            forget(shared, queue, outcomes.drain(..).map(T::attempt));
            Some(reply)
        }
        Err(err) => {
            calls.failed(shared, queue, T::RECORDING, &err);
            None
        }
    }
}

impl Recordable for Completion {
    type Reply = Completed;
    const RECORDING: &'static str = "recording completions";

    fn recorded(shared: &Arc<Shared>, queue: &str, (report, _): &Completed, completions: &[Self]) {
        shared
            .completed
            .fetch_add(report.completed.len() as u64, Ordering::Relaxed);
        for (id, why) in &report.rejected {
            tracing::warn!(%queue, job_id = %id, ?why, "result not recorded: this host no longer held the job's lease (it runs again, or already did elsewhere)");
        }
        for id in &report.result_too_large {
            tracing::warn!(%queue, job_id = %id, "result over the queue's size limit: job dead-lettered");
        }
        // The children of the completions just recorded are in the outbox now; deliver them
        // (a refused completion wrote none).
        let parents: Vec<String> = completions
            .iter()
            .filter(|c| !c.children.is_empty() && report.completed.contains(&c.record.id))
            .map(|c| c.record.id.clone())
            .collect();
        workflow::deliver(shared, queue, parents);
    }

    fn attempt(self) -> (String, String) {
        (self.record.id, self.record.token)
    }
}

impl Recordable for Failure {
    type Reply = FailReport;
    const RECORDING: &'static str = "recording failures";

    fn recorded(shared: &Arc<Shared>, queue: &str, report: &FailReport, _: &[Self]) {
        shared
            .failed
            .fetch_add(report.outcomes.len() as u64, Ordering::Relaxed);
        for (id, why) in &report.rejected {
            tracing::warn!(%queue, job_id = %id, ?why, "failure not recorded: this host no longer held the job's lease");
        }
    }

    fn attempt(self) -> (String, String) {
        (self.record.id, self.record.token)
    }
}

impl Recordable for Suspension {
    type Reply = SuspendReport;
    const RECORDING: &'static str = "recording sleeps";

    fn recorded(_: &Arc<Shared>, queue: &str, report: &SuspendReport, _: &[Self]) {
        for (id, why) in &report.rejected {
            tracing::warn!(%queue, job_id = %id, ?why, "sleep not recorded: this host no longer held the job's lease");
        }
    }

    fn attempt(self) -> (String, String) {
        (self.record.id, self.record.token)
    }
}

/// The slots worth keeping for `queue`'s next jobs, each made room for the largest handler
/// (the next job's is not known before it is leased); the others are freed. None while the
/// host is not running, nor while a fetcher of another queue waits for room (so a busy queue
/// cannot keep every slot to itself).
fn carry_over(
    shared: &Shared,
    queue: &str,
    slots: Vec<Carried>,
    phase: &watch::Receiver<Phase>,
) -> Vec<Carried> {
    if slots.is_empty() || *phase.borrow() != Phase::Running || shared.slots.others_waiting(queue) {
        return Vec::new();
    }
    let max_cap = shared.handlers.max_cap();
    slots
        .into_iter()
        .filter_map(|mut c| c.slot.resize(max_cap).then_some(c))
        .collect()
}

/// Shares `jobs` (in the order leased) out to `slots`: one each first, so every slot has a job
/// before any has a second, then each slot's jobs ahead, up to what it asked for. Returns each
/// slot with its run of jobs (possibly none), in the order of `slots`.
fn share_out(jobs: Vec<LeasedJob>, slots: Vec<Carried>) -> Vec<(Carried, VecDeque<LeasedJob>)> {
    let mut jobs = jobs.into_iter();
    let mut runs: Vec<(Carried, VecDeque<LeasedJob>)> = slots
        .into_iter()
        .map(|c| (c, jobs.next().into_iter().collect()))
        .collect();
    for (carried, run) in &mut runs {
        run.extend(jobs.by_ref().take(carried.ahead));
    }
    // Cannot happen: the call leased no more jobs than the slots asked for.
    for job in jobs {
        tracing::error!(job_id = %job.id, "leased more jobs than slots asked for");
        if let Some((_, run)) = runs.last_mut() {
            run.push_back(job);
        }
    }
    runs
}

/// Starts the jobs leased for the carried-over slots, each run in one of them fitted to its
/// handlers; the slots left over go back to the pool. A job that cannot start here (the host
/// began to shut down during the call) is released, uncounted, as shutdown would.
async fn start_next(
    shared: &Arc<Shared>,
    queue: &str,
    jobs: Vec<LeasedJob>,
    slots: Vec<Carried>,
    phase: &watch::Receiver<Phase>,
) {
    let mut refused: Vec<Lease> = Vec::new();
    for (Carried { mut slot, .. }, run) in share_out(jobs, slots) {
        if run.is_empty() {
            continue;
        }
        // A slot running several jobs in turn keeps room for the largest of them.
        let cap = run
            .iter()
            .map(|job| shared.handlers.get(&job.handler).map_or(0, |h| h.memory))
            .max()
            .unwrap_or(0);
        // Growing fails only if a deploy raised the largest cap since the call went out.
        if !slot.resize(cap) {
            refused.extend(run.iter().map(LeasedJob::lease));
            continue;
        }
        if let Err(leases) = executor::spawn_if_running(shared, run, slot, phase) {
            refused.extend(leases);
        }
    }
    shared
        .release_unstarted(queue, &refused, "jobs leased for freed slots")
        .await;
}

/// Removes recorded attempts from the in-flight map: this host holds their leases no longer.
///
/// Only the attempt with the recorded lease token leaves: a retry recorded with no backoff is
/// waiting again the moment the script returns, and this host's fetcher may already have leased
/// the next attempt of the same job under a new token. Removing that entry would orphan the new
/// attempt (its outcome never acked, its lease never heartbeated).
fn forget(shared: &Shared, queue: &str, attempts: impl Iterator<Item = (String, String)>) {
    let mut inflight = shared.inflight();
    for (id, token) in attempts {
        let key = super::JobKey::new(queue, id);
        if inflight.get(&key).is_some_and(|job| job.token == token) {
            inflight.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::OwnPolicy;
    use crate::worker::slots::Slots;

    fn job(n: usize) -> LeasedJob {
        LeasedJob {
            id: format!("j{n}"),
            queue: "q".to_string(),
            handler: "h".to_string(),
            payload: Vec::new(),
            attempt: 1,
            max_attempts: 3,
            own_policy: OwnPolicy::default(),
            timeout: None,
            priority: 0,
            created_at_ms: 0,
            traceparent: None,
            tracestate: None,
            token: "t".to_string(),
            lease_expires_at_ms: 0,
            depth: 0,
        }
    }

    #[tokio::test]
    async fn every_slot_gets_a_job_before_any_gets_jobs_ahead() {
        let pool = Slots::new(8, 1 << 30);
        let mut room = pool.reserve(3, 1 << 20).await.unwrap();
        let carried: Vec<Carried> = [4, 0, 2]
            .into_iter()
            .map(|ahead| Carried {
                slot: room.take(1 << 20).unwrap(),
                ahead,
            })
            .collect();
        let ids = |runs: &[(Carried, VecDeque<LeasedJob>)]| -> Vec<Vec<String>> {
            runs.iter()
                .map(|(_, run)| run.iter().map(|j| j.id.clone()).collect())
                .collect()
        };

        // Fewer jobs than slots: one each, in order, and the last slot gets none.
        let runs = share_out((0..2).map(job).collect(), carried);
        assert_eq!(ids(&runs), [vec!["j0"], vec!["j1"], vec![]]);
        let carried: Vec<Carried> = runs.into_iter().map(|(c, _)| c).collect();

        // Enough for some ahead: heads first, then each slot's share in turn, never more than
        // it asked for.
        let runs = share_out((0..6).map(job).collect(), carried);
        assert_eq!(
            ids(&runs),
            [vec!["j0", "j3", "j4", "j5"], vec!["j1"], vec!["j2"]]
        );
        let carried: Vec<Carried> = runs.into_iter().map(|(c, _)| c).collect();

        // All they asked for.
        let runs = share_out((0..9).map(job).collect(), carried);
        assert_eq!(
            ids(&runs),
            [
                vec!["j0", "j3", "j4", "j5", "j6"],
                vec!["j1"],
                vec!["j2", "j7", "j8"]
            ]
        );
    }
}
