//! Dead-letter alerts: the reader of the consumer group, and the touch that keeps what it holds.
//!
//! Lifecycle of the reader ([`run`]), one pass over the host's queues after another:
//! 1. Until exhausted (first passes only): the entries this consumer held and had not
//!    acknowledged before a restart under the same name, oldest first.
//! 2. Every half `claim_after`: entries any consumer left untouched for `claim_after`
//!    (`XAUTOCLAIM`), except those this host holds; and consumers gone for an hour are removed.
//! 3. New entries, as many as there is room in hand for ([`IN_HAND`]).
//!
//! Each `dead` entry goes to a delivery task (one alert per job in it, then `XACK`; with
//! `[alerts.digest]`, jobs beyond the window's single alerts go into its digest, `digest.rs`,
//! which acknowledges the entry once sent); any other
//! entry is acknowledged at once. A pass that found nothing waits [`POLL`] before the next; with
//! no room in hand, the reader waits for a delivery to finish.
//!
//! [`touch`] resets, every third of `claim_after`, the idle time of the entries in hand, so
//! that a delivery retrying for minutes is not taken over by another host.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;

use super::{Alert, Health, IN_HAND, Shared, sleep_or_stop};
use crate::queue::{DeadJob, GroupRead, QueueError, ReadFrom, StreamEvent, is_missing_group};

/// How long a pass that found nothing waits before the next: the latency of an alert.
pub const POLL: Duration = Duration::from_secs(1);

/// Consumers holding nothing and silent this long are removed from the group.
const FORGET_CONSUMERS_AFTER: Duration = Duration::from_secs(3600);

/// Entry ids per `XCLAIM` / `XACK`: a digest may hold tens of thousands of entries, and one
/// command naming them all would hold Redis up.
pub(super) const IDS_PER_COMMAND: usize = 1000;

/// Lookups of job details at once within one entry (a recovery can dead-letter thousands of
/// jobs in one entry); the sender bounds the requests.
const JOBS_AT_ONCE: usize = 64;

pub(super) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut health = Health::default();
    // Per queue, where the read of this consumer's own pending entries goes on.
    let mut own: HashMap<String, String> = shared
        .queues
        .iter()
        .map(|q| (q.clone(), "0".to_string()))
        .collect();
    let mut next_claim = Instant::now();
    let mut backoff = crate::connection::Backoff::default();
    loop {
        let claim = Instant::now() >= next_claim;
        let mut found = 0;
        let mut failed = false;
        for queue in &shared.queues {
            match pass(&shared, queue, &mut own, claim, &mut stop).await {
                Ok(Some(n)) => found += n,
                Ok(None) => return,
                Err(err) if is_missing_group(&err) => {
                    // The stream (and its group) went away: deleted, or Redis restarted empty.
                    match shared.monitor.create_group(queue, shared.start_ms).await {
                        Ok(_) => tracing::info!(%queue, "alerts: created the consumer group again"),
                        Err(err) => {
                            health.failed("creating the consumer group", &err);
                            failed = true;
                        }
                    }
                }
                Err(err) => {
                    health.failed("reading the events streams", &err);
                    failed = true;
                }
            }
        }
        if claim {
            next_claim = Instant::now() + shared.claim_after / 2;
        }
        let pause = if failed {
            backoff.next_delay()
        } else {
            health.ok();
            backoff.reset();
            if found > 0 {
                continue;
            }
            POLL
        };
        if !sleep_or_stop(pause, &mut stop).await {
            return;
        }
    }
}

/// One pass over `queue`; returns how many entries it read, or `None` when told to stop.
async fn pass(
    shared: &Arc<Shared>,
    queue: &str,
    own: &mut HashMap<String, String>,
    claim: bool,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<usize>, QueueError> {
    let mut found = 0;
    if let Some(after) = own.get(queue).cloned() {
        let Some(room) = wait_for_room(shared, stop).await else {
            return Ok(None);
        };
        let read = shared
            .monitor
            .read(queue, ReadFrom::Own(&after), room)
            .await?;
        match &read.last_id {
            Some(last) => own.insert(queue.to_string(), last.clone()),
            None => own.remove(queue),
        };
        found += handle(shared, queue, read).await?;
    }
    if claim {
        let mut cursor = "0-0".to_string();
        loop {
            let Some(room) = wait_for_room(shared, stop).await else {
                return Ok(None);
            };
            let (read, next) = shared
                .monitor
                .claim_stale(queue, shared.claim_after, &cursor, room)
                .await?;
            if !read.events.is_empty() {
                tracing::info!(
                    %queue,
                    entries = read.events.len(),
                    "alerts: took over entries another host left undelivered"
                );
            }
            found += handle(shared, queue, read).await?;
            if next == "0-0" {
                break;
            }
            cursor = next;
        }
        match shared
            .monitor
            .forget_idle_consumers(queue, FORGET_CONSUMERS_AFTER)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::debug!(%queue, consumers = n, "alerts: removed idle consumers"),
            Err(err) => tracing::debug!(%queue, error = %err, "alerts: listing consumers failed"),
        }
    }
    let Some(room) = wait_for_room(shared, stop).await else {
        return Ok(None);
    };
    let read = shared.monitor.read(queue, ReadFrom::New, room).await?;
    found += handle(shared, queue, read).await?;
    Ok(Some(found))
}

/// Waits until at least one entry more may be in hand; returns how many may, or `None` when
/// told to stop.
async fn wait_for_room(shared: &Shared, stop: &mut watch::Receiver<bool>) -> Option<usize> {
    loop {
        if *stop.borrow() {
            return None;
        }
        let room = shared.room.available_permits();
        if room > 0 {
            return Some(room.min(IN_HAND));
        }
        tokio::select! {
            permit = shared.room.acquire() => drop(permit),
            _ = stop.changed() => return None,
        }
    }
}

/// Dispatches the `dead` entries of `read` to delivery tasks and acknowledges the rest.
/// Returns how many entries `read` held.
async fn handle(shared: &Arc<Shared>, queue: &str, read: GroupRead) -> Result<usize, QueueError> {
    let found = read.events.len() + read.trimmed.len() + read.malformed.len();
    if !read.malformed.is_empty() {
        tracing::warn!(
            %queue,
            entries = ?read.malformed,
            "alerts: events-stream entries that do not decode; skipped"
        );
    }
    if !read.trimmed.is_empty() {
        shared
            .sender
            .stats
            .lost
            .fetch_add(read.trimmed.len() as u64, Ordering::Relaxed);
        tracing::warn!(
            %queue,
            entries = read.trimmed.len(),
            "alerts: events were trimmed from the stream before their alerts were sent; \
             raise the queue's events_maxlen"
        );
    }
    let mut ack = read.trimmed;
    ack.extend(read.malformed);
    for event in read.events {
        if shared.is_held(queue, &event.stream_id) {
            continue;
        }
        if event.event != "dead" || event.jobs.is_empty() {
            ack.push(event.stream_id);
            continue;
        }
        // The semaphore is never closed; `Err` cannot happen, and would only skip the entry,
        // which stays pending and is claimed again later.
        let Ok(permit) = shared.room.clone().acquire_owned().await else {
            continue;
        };
        let in_hand = InHand::new(shared, queue, &event.stream_id, permit);
        shared.spawn_delivery(deliver_entry(
            shared.clone(),
            queue.to_string(),
            event,
            in_hand,
        ));
    }
    shared.monitor.ack(queue, &ack).await?;
    Ok(found)
}

/// Sends one alert per job of a `dead` entry, then acknowledges the entry; with digests on,
/// the jobs beyond the window's single alerts go into its digest, which acknowledges the entry
/// once sent.
async fn deliver_entry(shared: Arc<Shared>, queue: String, event: StreamEvent, in_hand: InHand) {
    // Collected first: a lazy `map` over borrowed jobs makes the task's future not `Send`
    // (rustc's higher-ranked lifetime limitation).
    let lookups: Vec<_> = event
        .jobs
        .iter()
        .map(|(job_id, attempt)| {
            let (shared, queue) = (shared.clone(), queue.clone());
            let (job_id, attempt) = (job_id.clone(), *attempt);
            async move {
                // The details are a courtesy: without them (Redis away) the alert still goes.
                let job = match shared.monitor.dead_job(&queue, &job_id).await {
                    Ok(job) => job,
                    Err(err) => {
                        tracing::debug!(%queue, %job_id, error = %err, "alerts: no job details");
                        DeadJob::default()
                    }
                };
                (job_id, attempt, job)
            }
        })
        .collect();
    let jobs: Vec<(String, u32, DeadJob)> = futures_util::stream::iter(lookups)
        .buffered(JOBS_AT_ONCE)
        .collect()
        .await;
    let (alone, grouped): (Vec<_>, Vec<_>) = jobs
        .into_iter()
        .partition(|_| shared.digest.as_ref().is_none_or(|d| d.admit()));
    let deliveries: Vec<_> = alone
        .into_iter()
        .map(|(job_id, attempt, job)| {
            let alert = Alert::dead(&queue, &event.stream_id, &job_id, attempt, &job);
            let shared = shared.clone();
            async move {
                shared.sender.deliver(&alert).await;
            }
        })
        .collect();
    let mut deliveries = futures_util::stream::iter(deliveries).buffer_unordered(JOBS_AT_ONCE);
    while deliveries.next().await.is_some() {}
    match &shared.digest {
        Some(digester) if !grouped.is_empty() => {
            let grouped: Vec<(String, DeadJob)> = grouped
                .into_iter()
                .map(|(job_id, _, job)| (job_id, job))
                .collect();
            digester.add(&queue, &event.stream_id, &grouped, in_hand);
        }
        _ => {
            ack_entries(&shared, &queue, std::slice::from_ref(&event.stream_id)).await;
            drop(in_hand);
        }
    }
}

/// An entry in hand: listed in `held` (so it is touched, and not claimed by this host again)
/// and holding a permit of `room`, both until dropped, whether its delivery finished, panicked
/// or was abandoned at stop.
pub(super) struct InHand {
    shared: Arc<Shared>,
    queue: String,
    stream_id: String,
    permit: Option<OwnedSemaphorePermit>,
}

impl InHand {
    fn new(
        shared: &Arc<Shared>,
        queue: &str,
        stream_id: &str,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        shared
            .held()
            .entry(queue.to_string())
            .or_default()
            .insert(stream_id.to_string());
        InHand {
            shared: shared.clone(),
            queue: queue.to_string(),
            stream_id: stream_id.to_string(),
            permit: Some(permit),
        }
    }

    pub(super) fn queue(&self) -> &str {
        &self.queue
    }

    pub(super) fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Gives back the room the entry took while keeping it in hand (touched, not claimed):
    /// for entries waiting in a digest, which the reader must not wait for.
    pub(super) fn release_room(&mut self) {
        self.permit.take();
    }
}

impl Drop for InHand {
    fn drop(&mut self) {
        if let Some(ids) = self.shared.held().get_mut(&self.queue) {
            ids.remove(&self.stream_id);
        }
    }
}

/// Acknowledges delivered entries, retrying Redis for a few seconds. An entry that cannot be
/// acknowledged stays pending and its alerts are sent again after `claim_after`: at least
/// once.
pub(super) async fn ack_entries(shared: &Shared, queue: &str, ids: &[String]) {
    let mut backoff = crate::connection::Backoff::default();
    for _ in 0..8 {
        match shared.monitor.ack(queue, ids).await {
            Ok(_) => return,
            Err(_) => tokio::time::sleep(backoff.next_delay()).await,
        }
    }
    tracing::warn!(
        %queue,
        entries = ids.len(),
        "alerts: could not acknowledge delivered entries; their alerts will be sent again"
    );
}

/// Keeps the entries in hand from being claimed by other hosts (see the module documentation).
pub(super) async fn touch(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut health = Health::default();
    while sleep_or_stop(shared.claim_after / 3, &mut stop).await {
        let held: Vec<(String, Vec<String>)> = shared
            .held()
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(queue, ids)| (queue.clone(), ids.iter().cloned().collect()))
            .collect();
        for (queue, ids) in held {
            for chunk in ids.chunks(IDS_PER_COMMAND) {
                match shared
                    .monitor
                    .touch(&queue, chunk, shared.claim_after / 4)
                    .await
                {
                    Ok(()) => health.ok(),
                    Err(err) => health.failed("touching the alerts in hand", &err),
                }
            }
        }
    }
}
