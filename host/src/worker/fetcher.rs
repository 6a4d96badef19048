//! The fetcher of one queue: leases batches of jobs as slots allow, and sleeps on the queue's
//! wake-up list when there is nothing to do.
//!
//! Lifecycle of one turn:
//! 1. Reserve room: first within the queue's own concurrency limit, if it has one, then host
//!    slots: wait until at least one job fits (count and memory), take as many as fit now, up
//!    to the batch size. While the queue is busy, its slots mostly go from job to job through
//!    the acker (which leases the next job as it records a completion) and the fetcher waits
//!    here; it takes over the slots the acker frees (no job left, failures, other queues'
//!    turn) and is the one that waits for work when the queue runs dry.
//! 2. Lease up to that many jobs in one script call (which also promotes due delayed and retry
//!    jobs). Unused room goes back to the pool.
//! 3. Start each leased job (`executor::spawn`) with its own slot.
//! 4. If the queue had nothing, block on the wake-up list (an enqueue pushes to it) until woken,
//!    the next delayed job is due, or `idle_wait` passes; never a busy poll.
//! 5. On a Redis error, back off with jitter and try again; stop as soon as the host drains
//!    (a fetch already sent is seen through, and what it leased released uncounted).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::slots::Reservation;
use super::{Phase, Shared, executor};
use crate::connection::Backoff;
use crate::queue::{Fetched, LeasedJob, QueueError};

/// How long a fetch under way when the host starts to drain may take to come back.
const FINISH_FETCH: Duration = Duration::from_secs(2);

pub(crate) async fn run(shared: Arc<Shared>, queue: String, mut phase: watch::Receiver<Phase>) {
    let config = &shared.config;
    let mut waiter = shared.client.waiter();
    let mut backoff = Backoff::default();
    let queue_limit = shared.queue_limits.get(&queue).cloned();
    loop {
        if *phase.borrow() != Phase::Running {
            return;
        }
        let (reservation, queue_permit) = tokio::select! {
            r = reserve(&shared, &queue, queue_limit.as_ref()) => match r {
                Some(r) => r,
                None => return,
            },
            _ = phase.changed() => continue,
        };
        let Some(fetched) = fetch(&shared, &queue, reservation.len(), &mut phase).await else {
            continue;
        };
        let wait_for = match fetched {
            Ok(fetched) if *phase.borrow() != Phase::Running => {
                shared.redis.ok();
                let leases: Vec<_> = fetched.jobs.iter().map(LeasedJob::lease).collect();
                shared
                    .release_unstarted(&queue, &leases, "jobs fetched while draining")
                    .await;
                return;
            }
            Ok(fetched) => {
                shared.redis.ok();
                backoff.reset();
                if fetched.rate_limited {
                    shared.metrics.rate_limited(&queue);
                }
                if !fetched.jobs.is_empty() {
                    start_all(&shared, fetched.jobs, reservation, queue_permit);
                    // There may be more: go again at once.
                    continue;
                }
                idle_wait(config.idle_wait, &fetched)
            }
            Err(err) => {
                shared.redis.failed("fetching jobs", &err);
                drop(reservation);
                pause(backoff.next_delay(), &mut phase).await;
                continue;
            }
        };
        drop(reservation);
        drop(queue_permit);
        if wait_for.is_zero() {
            continue;
        }
        tokio::select! {
            woke = waiter.wait(&queue, wait_for) => {
                if let Err(err) = woke {
                    shared.redis.failed("waiting for jobs", &err);
                    pause(backoff.next_delay(), &mut phase).await;
                }
            }
            _ = phase.changed() => {}
        }
    }
}

/// Reserves room for up to a batch of `queue`'s jobs: the queue's own limit first (waiting for
/// it while holding host slots would starve the other queues of this host), then host slots.
/// `None` when a semaphore closed.
async fn reserve(
    shared: &Shared,
    queue: &str,
    queue_limit: Option<&Arc<Semaphore>>,
) -> Option<(Reservation, Option<OwnedSemaphorePermit>)> {
    let batch = shared.config.batch;
    let queue_permit = match queue_limit {
        Some(limit) => Some(take_up_to(limit, batch).await?),
        None => None,
    };
    let max = queue_permit.as_ref().map_or(batch, |p| p.num_permits());
    // While this waits, slots that other queues' jobs free go back to the pool instead of on to
    // those queues' next jobs (see the acker).
    let _waiting = shared.slots.waiting_for_room(queue);
    let reservation = shared.slots.reserve(max, shared.handlers.max_cap()).await?;
    Some((reservation, queue_permit))
}

/// Leases up to `max` of `queue`'s jobs. The call is seen through when the host starts to
/// drain (for a while: Redis may be hung): a call dropped after Redis ran it would leave its
/// jobs leased to nobody until the lease expired, and count an attempt. `None` when it did not
/// come back in [`FINISH_FETCH`].
async fn fetch(
    shared: &Shared,
    queue: &str,
    max: usize,
    phase: &mut watch::Receiver<Phase>,
) -> Option<Result<Fetched, QueueError>> {
    let config = &shared.config;
    let call = shared
        .client
        .fetch_batch(queue, max, config.lease, &config.host_id);
    tokio::pin!(call);
    tokio::select! {
        f = &mut call => Some(f),
        _ = phase.changed() => tokio::time::timeout(FINISH_FETCH, &mut call).await.ok(),
    }
}

/// Starts each of `jobs` (`executor::spawn`) with its own slot from `reservation`, and a
/// permit of the queue's limit when it has one.
fn start_all(
    shared: &Arc<Shared>,
    jobs: Vec<LeasedJob>,
    mut reservation: Reservation,
    mut queue_permit: Option<OwnedSemaphorePermit>,
) {
    for job in jobs {
        let cap = shared.handlers.get(&job.handler).map_or(0, |h| h.memory);
        let Some(slot) = reservation.take(cap) else {
            // Cannot happen: we asked for no more jobs than the reservation holds.
            tracing::error!(job_id = %job.id, "fetched more jobs than reserved");
            break;
        };
        let slot = match queue_permit.as_mut().and_then(|p| p.split(1)) {
            Some(permit) => slot.with_queue_permit(permit),
            None => slot,
        };
        executor::spawn(shared, job, slot);
    }
}

/// How long an empty queue's fetcher may block on the wake-up list: until the next delayed
/// job is due, at most `idle_wait`.
fn idle_wait(idle_wait: Duration, fetched: &Fetched) -> Duration {
    let until_due = fetched
        .next_due_ms
        .map(|due| Duration::from_millis(due.saturating_sub(fetched.now_ms)));
    until_due.map_or(idle_wait, |d| d.min(idle_wait))
}

/// Sleeps `delay` (a Redis backoff), or until the phase changes.
async fn pause(delay: Duration, phase: &mut watch::Receiver<Phase>) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = phase.changed() => {}
    }
}

/// Waits for one permit of `limit`, then takes as many more as are free, up to `max` in all.
async fn take_up_to(limit: &Arc<Semaphore>, max: usize) -> Option<OwnedSemaphorePermit> {
    let mut permit = limit.clone().acquire_owned().await.ok()?;
    while permit.num_permits() < max {
        match limit.clone().try_acquire_owned() {
            Ok(more) => permit.merge(more),
            Err(_) => break,
        }
    }
    Some(permit)
}
