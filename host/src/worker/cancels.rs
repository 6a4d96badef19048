//! The cancel listener: stops the attempts of running jobs that were cancelled.
//!
//! Lifecycle:
//! 1. Subscribe to the cancel channel of every served queue (`wasmq:{q}:cancel`), on one
//!    connection; on a cluster, one node's (a `PUBLISH` reaches every node). The host starts
//!    fetching once this first subscription is made (or has failed, or [`READY_WAIT`] passed),
//!    so that no job it leases at start misses its cancel.
//! 2. On each message `<lease token> <job id>` (published by `cancel.lua`, which has already
//!    ended the lease and dead-lettered the job), give up the attempt held under that lease
//!    here, if any (`Shared::abandon`, the same stop as a lost lease): its task is aborted, which
//!    drops the guest's future at its next epoch yield (every `epoch_tick`) or, blocked in a
//!    host call (a sleep, an outbound request), at once; nothing is acked for it, so its
//!    children, pending steps and result are never written. A job leased ahead does not start.
//!    A message for a lease not in flight here is looked at again a few times within a second
//!    (`LOOK_AGAIN_MS`): the lease may be this host's, taken by a fetch whose reply is still
//!    being handled (the message comes on another connection).
//! 3. When the connection drops, subscribe again with backoff. A cancel published meanwhile is
//!    not heard: the next heartbeat (`watchman`) finds the lease gone and stops the attempt
//!    the same way, within a third of the lease.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};

use super::{Abandoned, JobKey, Shared};
use crate::connection::Backoff;
use crate::queue::QueueKeys;

/// Longest the host waits for its first subscription before it fetches anyway.
pub(crate) const READY_WAIT: Duration = Duration::from_secs(5);

/// Runs the listener; `ready` is sent once the first subscription was made or failed.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    // Channel name to queue.
    let channels: Vec<(String, String)> = shared
        .config
        .queues
        .iter()
        .filter_map(|queue| {
            let keys = QueueKeys::new(queue).ok()?;
            Some((keys.cancel_channel(), queue.clone()))
        })
        .collect();
    if channels.is_empty() {
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        return;
    }
    let names: Vec<String> = channels.iter().map(|(c, _)| c.clone()).collect();
    let mut backoff = Backoff::default();
    loop {
        let subscribed = tokio::select! {
            s = shared.registry.redis_target().subscribe_all(&names) => s,
            _ = stop.changed() => return,
        };
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        match subscribed {
            Ok(mut messages) => {
                backoff.reset();
                loop {
                    let message = tokio::select! {
                        m = messages.next() => m,
                        _ = stop.changed() => return,
                    };
                    let Some((channel, payload)) = message else {
                        break;
                    };
                    let Some((_, queue)) = channels.iter().find(|(c, _)| *c == channel) else {
                        continue;
                    };
                    cancelled(&shared, queue, &payload);
                }
                tracing::debug!("cancel channel connection dropped; subscribing again");
            }
            Err(err) => tracing::debug!(error = %err, "cancel channel unavailable"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One cancel message of `queue`: `<lease token> <job id>`.
fn cancelled(shared: &Arc<Shared>, queue: &str, payload: &[u8]) {
    let Some((token, id)) = std::str::from_utf8(payload)
        .ok()
        .and_then(|text| text.split_once(' '))
    else {
        tracing::debug!(%queue, "a cancel message that is not `<token> <id>`; ignored");
        return;
    };
    let key = JobKey::new(queue.to_string(), id.to_string());
    if stopped(shared, &key, token) {
        return;
    }
    // Not in flight here (yet): the message may have come before this host registered the
    // lease it just took, the fetch's reply being handled on another connection (seen once
    // under CI load: the cancel of a job that had just started waited for the heartbeat, 10 s).
    // A lease token is unique, so looking again a little later can stop only that attempt.
    let shared = shared.clone();
    let token = token.to_string();
    tokio::spawn(async move {
        for wait_ms in LOOK_AGAIN_MS {
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            if stopped(&shared, &key, &token) {
                return;
            }
        }
        tracing::debug!(queue = %key.queue, job_id = %key.id, "a cancelled job this host is not running");
    });
}

/// When a cancel finds no attempt of its lease here, it looks again after each of these
/// waits (ms; 1 s in all), in case the lease was taken by this host and not registered yet.
const LOOK_AGAIN_MS: [u64; 5] = [10, 40, 100, 250, 600];

/// Stops the attempt of `key` under lease `token` if it is in flight here; whether it was.
fn stopped(shared: &Shared, key: &JobKey, token: &str) -> bool {
    let found = shared.abandon(key, token);
    if found.lost_work() {
        shared.metrics.cancelled(&key.queue);
        tracing::info!(queue = %key.queue, job_id = %key.id, "job cancelled; its attempt is stopped here");
    }
    found != Abandoned::NotHeld
}
