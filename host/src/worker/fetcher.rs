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

use tokio::sync::{OwnedSemaphorePermit, watch};

use super::{Phase, Shared, executor};
use crate::connection::Backoff;
use crate::queue::LeasedJob;

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
        // The queue's own limit first: waiting for it while holding host slots would starve
        // the other queues of this host.
        let reserve = async {
            let queue_permit = match &queue_limit {
                Some(limit) => Some(take_up_to(limit, config.batch).await?),
                None => None,
            };
            let max = queue_permit
                .as_ref()
                .map_or(config.batch, |p| p.num_permits());
            // While this waits, slots that other queues' jobs free go back to the pool instead
            // of on to those queues' next jobs (see the acker).
            let _waiting = shared.slots.waiting_for_room(&queue);
            let reservation = shared.slots.reserve(max, shared.handlers.max_cap()).await?;
            Some((reservation, queue_permit))
        };
        let (mut reservation, mut queue_permit) = tokio::select! {
            r = reserve => match r {
                Some(r) => r,
                None => return,
            },
            _ = phase.changed() => continue,
        };
        let max = reservation.len();
        // Seen through when the host starts to drain (for a while: Redis may be hung): a call
        // dropped after Redis ran it would leave its jobs leased to nobody until the lease
        // expired, and count an attempt.
        let call = shared
            .client
            .fetch_batch(&queue, max, config.lease, &config.host_id);
        tokio::pin!(call);
        let fetched = tokio::select! {
            f = &mut call => f,
            _ = phase.changed() => match tokio::time::timeout(FINISH_FETCH, &mut call).await {
                Ok(f) => f,
                Err(_) => continue,
            },
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
                let got = fetched.jobs.len();
                for job in fetched.jobs {
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
                    executor::spawn(&shared, job, slot);
                }
                if got > 0 {
                    // There may be more: go again at once.
                    continue;
                }
                let until_due = fetched
                    .next_due_ms
                    .map(|due| Duration::from_millis(due.saturating_sub(fetched.now_ms)));
                until_due.map_or(config.idle_wait, |d| d.min(config.idle_wait))
            }
            Err(err) => {
                shared.redis.failed("fetching jobs", &err);
                drop(reservation);
                let delay = backoff.next_delay();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = phase.changed() => {}
                }
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
                    let delay = backoff.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = phase.changed() => {}
                    }
                }
            }
            _ = phase.changed() => {}
        }
    }
}

/// Waits for one permit of `limit`, then takes as many more as are free, up to `max` in all.
async fn take_up_to(
    limit: &Arc<tokio::sync::Semaphore>,
    max: usize,
) -> Option<OwnedSemaphorePermit> {
    let mut permit = limit.clone().acquire_owned().await.ok()?;
    while permit.num_permits() < max {
        match limit.clone().try_acquire_owned() {
            Ok(more) => permit.merge(more),
            Err(_) => break,
        }
    }
    Some(permit)
}
