//! The watchman: keeps this host's leases alive and recovers the jobs of hosts that died.
//!
//! Lifecycle, every tick (a third of the lease):
//! 1. Heartbeat: extend the lease of every job this host holds, one call per queue. A job
//!    whose lease was refused (it expired and another host took it) is stopped here: its
//!    outcome would be refused anyway. A refusal for an attempt the acker recorded meanwhile
//!    (the heartbeat listed it just before) is no loss and is not reported as one.
//! 2. Recovery: fail the jobs of every served queue whose lease expired (a crashed, killed or
//!    partitioned host), as an attempt with outcome `lease_expired`; they retry per policy.
//!    Any number of hosts may do this at once: the script is atomic.
//! 3. Outbox: deliver the child jobs that completed parents left in the outbox of a served
//!    queue when their host died before delivering them (`workflow::recover`).
//! 4. Dead-letter step data: count the steps of newly dead jobs of each served queue and drop
//!    those of the jobs that died first past the queue's `dead_step_bytes`
//!    (`Client::trim_dead_steps`; the jobs stay).
//! 5. Every [`CHECK_EVERY`]: the cheap part of `queue check` on each served queue's `active`
//!    ids (`Client::check_active`): dangling ids and malformed jobs leave, a job in two sets
//!    keeps its own; each repair is logged.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Shared;

/// Most expired leases recovered per queue per tick.
const RECOVER_BATCH: usize = 1_000;

/// Most newly dead jobs whose steps are counted per queue per tick.
const DEAD_STEPS_BATCH: usize = 1_000;

/// How often a host checks the `active` ids of its queues.
const CHECK_EVERY: Duration = Duration::from_secs(60);

pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let tick = (shared.config.lease / 3).max(Duration::from_millis(100));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let check_ticks = (CHECK_EVERY.as_millis() / tick.as_millis()).max(1);
    let mut ticks: u128 = 0;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        heartbeat(&shared).await;
        recover(&shared).await;
        super::workflow::recover(&shared).await;
        trim_dead_steps(&shared).await;
        ticks += 1;
        if ticks.is_multiple_of(check_ticks) {
            check(&shared).await;
        }
    }
}

async fn trim_dead_steps(shared: &Shared) {
    for queue in &shared.config.queues {
        match shared.client.trim_dead_steps(queue, DEAD_STEPS_BATCH).await {
            Ok(report) => {
                shared.redis.ok();
                if !report.dropped.is_empty() {
                    tracing::info!(%queue, jobs = report.dropped.len(), held_bytes = report.held_bytes, "dropped the steps of the oldest dead jobs: over the queue's dead_step_bytes");
                }
            }
            Err(err) => shared.redis.failed("counting dead jobs' steps", &err),
        }
    }
}

async fn check(shared: &Shared) {
    for queue in &shared.config.queues {
        match shared
            .client
            .check_active(queue, crate::queue::CHECK_BATCH)
            .await
        {
            Ok(report) => {
                shared.redis.ok();
                for finding in &report.findings {
                    tracing::warn!(%queue, kind = %finding.kind, subject = %finding.subject, detail = %finding.detail, "queue check repaired an inconsistency");
                }
            }
            Err(err) => shared.redis.failed("checking active jobs", &err),
        }
    }
}

async fn heartbeat(shared: &Shared) {
    for (queue, leases) in shared.leases_by_queue() {
        match shared
            .client
            .extend(&queue, &leases, shared.config.lease)
            .await
        {
            Ok(extended) => {
                shared.redis.ok();
                for (id, why) in extended.rejected {
                    let Some(lease) = leases.iter().find(|l| l.id == id) else {
                        continue;
                    };
                    let key = super::JobKey::new(queue.clone(), id);
                    let found = shared.abandon(&key, &lease.token);
                    if found.lost_work() {
                        tracing::warn!(%queue, job_id = %key.id, ?why, "lease lost; stopping the job here");
                    } else {
                        // The attempt ended here before the extension reached Redis; if its
                        // outcome is refused, the acker says so.
                        tracing::debug!(%queue, job_id = %key.id, ?why, ?found, "lease not extended for an attempt that already ended here");
                    }
                }
            }
            Err(err) => shared.redis.failed("heartbeat", &err),
        }
    }
}

async fn recover(shared: &Shared) {
    // A recovered attempt counts under its handler's retry policy, as a failure reported by
    // its host would.
    let policies = shared.handlers.retry_policies();
    for queue in &shared.config.queues {
        match shared
            .client
            .recover_expired(queue, RECOVER_BATCH, &policies)
            .await
        {
            Ok(report) => {
                shared.redis.ok();
                if !report.outcomes.is_empty() {
                    shared
                        .metrics
                        .recovered(queue, report.outcomes.len() as u64);
                    tracing::info!(%queue, jobs = report.outcomes.len(), "recovered jobs whose lease expired");
                }
            }
            Err(err) => shared.redis.failed("recovering expired leases", &err),
        }
    }
}
