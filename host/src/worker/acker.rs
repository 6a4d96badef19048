//! The acker: records job outcomes in Redis in batches.
//!
//! Lifecycle:
//! 1. Executors send an [`Ack`] (a completion or a failure) as each attempt ends.
//! 2. The acker takes whatever is queued (up to a batch), groups it by queue, and records it
//!    with one `complete` and one `fail` call per queue. Under load, batches form by
//!    themselves; when idle, an outcome is recorded as soon as it arrives.
//! 3. If Redis is away, the outcomes are kept and retried with backoff; the leases stay
//!    heartbeated meanwhile, so a short outage loses nothing and runs nothing twice.
//! 4. Recorded (or refused: the lease was lost) jobs leave the in-flight map.
//! 5. At shutdown it drains what is queued and flushes for at most [`FLUSH_AT_EXIT`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::{Backoff, Shared};
use crate::queue::{Completion, Failure};

/// Most outcomes recorded in one flush.
const MAX_BATCH: usize = 512;

/// How long a stopping host keeps trying to record outcomes and release jobs.
pub(crate) const FLUSH_AT_EXIT: Duration = Duration::from_secs(10);

/// The outcome of one attempt, to record.
#[derive(Debug)]
pub(crate) struct Ack {
    pub queue: String,
    pub outcome: AckOutcome,
}

#[derive(Debug)]
pub(crate) enum AckOutcome {
    Complete(Completion),
    Fail(Failure),
}

/// Outcomes waiting to be recorded, by queue.
#[derive(Default)]
struct Pending {
    queues: HashMap<String, Bucket>,
    len: usize,
}

#[derive(Default)]
struct Bucket {
    completions: Vec<Completion>,
    failures: Vec<Failure>,
}

impl Pending {
    fn push(&mut self, ack: Ack) {
        let bucket = self.queues.entry(ack.queue).or_default();
        match ack.outcome {
            AckOutcome::Complete(c) => bucket.completions.push(c),
            AckOutcome::Fail(f) => bucket.failures.push(f),
        }
        self.len += 1;
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Ack>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pending = Pending::default();
    let mut backoff = Backoff::default();
    loop {
        if pending.is_empty() {
            tokio::select! {
                ack = rx.recv() => match ack {
                    Some(ack) => pending.push(ack),
                    None => return,
                },
                _ = stop.changed() => {
                    while let Ok(ack) = rx.try_recv() {
                        pending.push(ack);
                    }
                    if pending.is_empty() {
                        return;
                    }
                }
            }
        }
        while pending.len < MAX_BATCH {
            match rx.try_recv() {
                Ok(ack) => pending.push(ack),
                Err(_) => break,
            }
        }
        if flush(&shared, &mut pending).await {
            backoff.reset();
        } else {
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                // Keep collecting while Redis is away; stop only ends the waiting here.
                _ = stop.changed() => {}
            }
        }
        if *stop.borrow() && pending.is_empty() && rx.is_empty() {
            return;
        }
    }
}

/// Records what is pending, queue by queue; what was recorded (or refused) leaves `pending`
/// and the in-flight map. Returns false if Redis failed for some of it.
async fn flush(shared: &Shared, pending: &mut Pending) -> bool {
    let mut all_ok = true;
    for (queue, bucket) in pending.queues.iter_mut() {
        if !bucket.completions.is_empty() {
            match shared.client.complete(queue, &bucket.completions).await {
                Ok(report) => {
                    shared.redis.ok();
                    shared
                        .completed
                        .fetch_add(report.completed.len() as u64, Ordering::Relaxed);
                    for (id, why) in &report.rejected {
                        tracing::warn!(%queue, job_id = %id, ?why, "result not recorded: this host no longer held the job's lease (it runs again, or already did elsewhere)");
                    }
                    for id in &report.result_too_large {
                        tracing::warn!(%queue, job_id = %id, "result over the queue's size limit: job dead-lettered");
                    }
                    forget(
                        shared,
                        queue,
                        bucket.completions.drain(..).map(|c| (c.id, c.token)),
                    );
                }
                Err(err) => {
                    shared.redis.failed("recording completions", &err);
                    all_ok = false;
                }
            }
        }
        if !bucket.failures.is_empty() {
            match shared.client.fail(queue, &bucket.failures).await {
                Ok(report) => {
                    shared.redis.ok();
                    shared
                        .failed
                        .fetch_add(report.outcomes.len() as u64, Ordering::Relaxed);
                    for (id, why) in &report.rejected {
                        tracing::warn!(%queue, job_id = %id, ?why, "failure not recorded: this host no longer held the job's lease");
                    }
                    forget(
                        shared,
                        queue,
                        bucket.failures.drain(..).map(|f| (f.id, f.token)),
                    );
                }
                Err(err) => {
                    shared.redis.failed("recording failures", &err);
                    all_ok = false;
                }
            }
        }
    }
    pending.len = pending
        .queues
        .values()
        .map(|b| b.completions.len() + b.failures.len())
        .sum();
    all_ok
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
        let key = (queue.to_string(), id);
        if inflight.get(&key).is_some_and(|job| job.token == token) {
            inflight.remove(&key);
        }
    }
}
