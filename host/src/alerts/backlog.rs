//! Backlog alerts: a queue's waiting count or its oldest waiting job's age crossing a
//! threshold.
//!
//! Lifecycle ([`run`]), every `interval`, for each queue the host serves:
//! 1. Read the backlog and the conditions in force (`backlog.lua`, one round trip).
//! 2. A condition at or over its threshold and not in force is raised (`HSETNX`); a condition
//!    in force whose measure fell to 90% of the threshold or below is cleared (`HDEL`). Only the
//!    host whose command made the change sends `queue.backlog` or `queue.backlog_resolved`, so
//!    each change is announced once however many hosts look.
//!
//! Between the two marks nothing changes, so a queue hovering at its threshold does not flap.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Alert, BacklogReading, Health, Shared, sleep_or_stop};
use crate::queue::{Backlog, QueueError};

pub(super) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut health = Health::default();
    loop {
        for queue in &shared.queues {
            match check(&shared, queue).await {
                Ok(()) => health.ok(),
                Err(err) => health.failed("checking the backlog", &err),
            }
        }
        if !sleep_or_stop(shared.backlog.interval, &mut stop).await {
            return;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The mark at or under which a condition is resolved: 90% of its threshold.
pub fn resolve_mark(threshold: u64) -> u64 {
    threshold.saturating_mul(9) / 10
}

async fn check(shared: &Arc<Shared>, queue: &str) -> Result<(), QueueError> {
    let backlog = shared.monitor.backlog(queue).await?;
    let oldest_age_ms = millis(backlog.oldest_age());
    let conditions = [
        ("waiting", shared.backlog.waiting, backlog.waiting),
        (
            "oldest_age",
            shared.backlog.oldest_age.map(millis),
            oldest_age_ms,
        ),
    ];
    for (condition, threshold, value) in conditions {
        let Some(threshold) = threshold else {
            continue;
        };
        let reading = |since_ms| BacklogReading {
            condition,
            value,
            threshold,
            waiting: backlog.waiting,
            oldest_age_ms,
            paused: backlog.paused,
            since_ms,
            now_ms: backlog.now_ms,
        };
        let in_force = backlog.alerts.contains_key(condition);
        if !in_force && value >= threshold {
            // False: another host raised it first and announces it.
            if shared
                .monitor
                .raise_alert(queue, condition, backlog.now_ms)
                .await?
            {
                log(queue, &backlog, condition, value, threshold, false);
                send(
                    shared,
                    Alert::backlog(queue, false, &reading(backlog.now_ms)),
                )
                .await;
            }
        } else if in_force
            && value <= resolve_mark(threshold)
            && let Some(since) = shared.monitor.clear_alert(queue, condition).await?
        {
            log(queue, &backlog, condition, value, threshold, true);
            send(shared, Alert::backlog(queue, true, &reading(since))).await;
        }
    }
    Ok(())
}

fn log(
    queue: &str,
    backlog: &Backlog,
    condition: &str,
    value: u64,
    threshold: u64,
    resolved: bool,
) {
    if resolved {
        tracing::info!(%queue, condition, value, threshold, "backlog resolved");
    } else {
        tracing::warn!(%queue, condition, value, threshold, paused = backlog.paused, "backlog over threshold");
    }
}

/// Delivers a backlog alert on its own task, once there is room in hand.
async fn send(shared: &Arc<Shared>, alert: Alert) {
    let Ok(permit) = shared.room.clone().acquire_owned().await else {
        return;
    };
    let task_shared = shared.clone();
    shared.spawn_delivery(async move {
        let _permit = permit;
        task_shared.sender.deliver(&alert).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_resolves_at_ninety_percent_of_its_threshold() {
        assert_eq!(resolve_mark(1), 0);
        assert_eq!(resolve_mark(5), 4);
        assert_eq!(resolve_mark(1000), 900);
        assert_eq!(resolve_mark(u64::MAX), u64::MAX / 10);
    }
}
