//! The scheduler: every host enqueues the jobs of due cron ticks (`crate::schedule`).
//!
//! Lifecycle, every [`PASS`]:
//! 1. Read the Redis clock and every schedule (there are few: one pipeline).
//! 2. For each running schedule, plan its due ticks ([`crate::schedule::Schedule::plan`]:
//!    on-time ticks, plus the most recent missed ones its `catch_up` allows).
//! 3. Enqueue each tick's job with the id `sched:<name>:<tick ms>`, then move the schedule's
//!    last tick forward. Every host does this; the id makes the second enqueue of a tick a
//!    no-op, so each tick is one job however many hosts run.
//!
//! Stops when the host starts draining. A failed pass (Redis away, a queue refusing the job)
//! leaves the last tick where it was, so the next pass, here or on another host, retries.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Phase, Shared};
use crate::queue::NewJob;
use crate::schedule::{Schedule, Schedules, job_id};

/// How often a host looks for due ticks: well under a second, the finest cron resolution.
pub(crate) const PASS: Duration = Duration::from_millis(250);

pub(crate) async fn run(shared: Arc<Shared>, mut phase: watch::Receiver<Phase>) {
    let mut interval = tokio::time::interval(PASS);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut store: Option<Schedules> = None;
    let mut healthy = true;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = phase.changed() => {}
        }
        if *phase.borrow() != Phase::Running {
            return;
        }
        let schedules = match &store {
            Some(store) => store.clone(),
            None => match Schedules::connect(&shared.config.redis_url).await {
                Ok(connected) => store.insert(connected).clone(),
                Err(err) => {
                    report(&mut healthy, &err);
                    continue;
                }
            },
        };
        match pass(&shared, &schedules).await {
            Ok(()) => healthy = true,
            Err(err) => report(&mut healthy, err.as_ref()),
        }
    }
}

/// Logs the first failure of a run of failures, not one line per pass.
fn report(healthy: &mut bool, err: &(dyn std::error::Error + 'static)) {
    if std::mem::take(healthy) {
        tracing::warn!(error = %crate::chain::ErrorChain(err), "scheduler pass failed; retrying");
    }
}

async fn pass(
    shared: &Shared,
    schedules: &Schedules,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let now = schedules.now_ms().await?;
    let mut first_error = None;
    for schedule in schedules.list().await? {
        if let Err(err) = fire(shared, schedules, &schedule, now).await {
            tracing::warn!(schedule = %schedule.spec.name, error = %crate::chain::ErrorChain(err.as_ref()), "could not enqueue a scheduled job");
            first_error.get_or_insert(err);
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

async fn fire(
    shared: &Shared,
    schedules: &Schedules,
    schedule: &Schedule,
    now: u64,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let plan = schedule.plan(now);
    let spec = &schedule.spec;
    for &tick in &plan.enqueue {
        let job = NewJob::new(spec.handler.clone(), spec.payload.clone())
            .with_id(job_id(&spec.name, tick));
        let enqueued = shared.client.enqueue(&spec.queue, &job).await?;
        if enqueued.created {
            tracing::info!(schedule = %spec.name, queue = %spec.queue, job_id = %enqueued.id, "enqueued a scheduled job");
        }
    }
    if let Some(tick) = plan.advance_to {
        schedules.advance(&spec.name, tick).await?;
    }
    Ok(())
}
