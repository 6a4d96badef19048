//! Digest mode (`[alerts.digest]`): a burst of dead jobs becomes a few messages, not one per
//! job, on every channel.
//!
//! Lifecycle of a window ([`Digester`], per host):
//! 1. The first dead job read while no window is open opens one, `window` long.
//! 2. The first `after` dead jobs of the window get an alert each ([`Digester::admit`]).
//! 3. The rest are counted into the window's digest ([`Digester::add`]) with the entries that
//!    hold them: those stay in hand (touched, unacknowledged) but give back their room, so the
//!    reader goes on reading.
//! 4. When the window ends, [`run`] sends the digest (`job.dead.digest`) on every channel and
//!    only then acknowledges its entries. A host that dies first leaves them pending: another
//!    host claims them after `claim_after` and sends them again (at least once, as for single
//!    alerts).
//!
//! So a host sends at most `after + 1` dead-job messages per window, whatever the burst. A
//! digest holding [`MAX_DIGEST_ENTRIES`] entries is sent early, which bounds what a host holds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::config::DigestConfig;
use super::dead_letters::{IDS_PER_COMMAND, InHand, ack_entries};
use super::payload::{Alert, Digest, stream_id_ms};
use super::{Shared, sleep_or_stop};
use crate::queue::DeadJob;

/// Entries a digest holds before it is sent, window over or not.
pub const MAX_DIGEST_ENTRIES: usize = 100_000;

/// How often [`run`] looks for a window that ended.
const TICK: Duration = Duration::from_millis(100);

pub(super) struct Digester {
    config: DigestConfig,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// When the current window ends; `None` before the first.
    window_end: Option<Instant>,
    /// Single alerts sent in the current window.
    alone: u32,
    pending: Option<Pending>,
}

/// A digest being filled, and the entries it covers.
struct Pending {
    digest: Digest,
    entries: Vec<InHand>,
    due: Instant,
}

impl Digester {
    pub(super) fn new(config: DigestConfig) -> Self {
        Self {
            config,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every operation leaves the state whole; a panic elsewhere cannot leave it half-done.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the next dead job gets an alert of its own (else it goes into the digest).
    pub(super) fn admit(&self) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        if state.window_end.is_none_or(|end| now >= end) {
            state.window_end = Some(now + self.config.window);
            state.alone = 0;
        }
        if state.alone < self.config.after {
            state.alone += 1;
            true
        } else {
            false
        }
    }

    /// Counts `jobs` of the entry `stream_id` of `queue` into the window's digest; the digest
    /// keeps `entry` in hand until it is sent.
    pub(super) fn add(
        &self,
        queue: &str,
        stream_id: &str,
        jobs: &[(String, DeadJob)],
        mut entry: InHand,
    ) {
        entry.release_room();
        let now = Instant::now();
        let mut state = self.state();
        let due = state.window_end.unwrap_or(now);
        let pending = state.pending.get_or_insert_with(|| Pending {
            digest: Digest {
                since_ms: stream_id_ms(stream_id),
                ..Digest::default()
            },
            entries: Vec::new(),
            due,
        });
        let at = stream_id_ms(stream_id);
        pending.digest.since_ms = pending.digest.since_ms.min(at);
        pending.digest.until_ms = pending.digest.until_ms.max(at);
        for (job_id, job) in jobs {
            pending.digest.add(queue, job_id, job);
        }
        pending.entries.push(entry);
        if pending.entries.len() >= MAX_DIGEST_ENTRIES {
            pending.due = now;
        }
    }

    /// The digest whose window ended (any, when `all`).
    fn take_due(&self, all: bool) -> Option<Pending> {
        let mut state = self.state();
        let due = state
            .pending
            .as_ref()
            .is_some_and(|p| all || Instant::now() >= p.due);
        if due { state.pending.take() } else { None }
    }
}

/// Sends each digest when its window ends; at stop, the one being filled, within the grace
/// of deliveries.
pub(super) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let Some(digester) = &shared.digest else {
        return;
    };
    loop {
        let stopping = !sleep_or_stop(TICK, &mut stop).await;
        if let Some(pending) = digester.take_due(stopping) {
            let task_shared = shared.clone();
            shared.spawn_delivery(send(task_shared, pending));
        }
        if stopping {
            return;
        }
    }
}

async fn send(shared: Arc<Shared>, pending: Pending) {
    let Pending {
        digest, entries, ..
    } = pending;
    let count = digest.total();
    let id = format!("digest/{}/{}", shared.consumer, digest.since_ms);
    let alert = Alert::digest(id, digest);
    tracing::info!(
        alert = %alert.id,
        jobs = count,
        entries = entries.len(),
        "alerts: sending a digest"
    );
    shared.sender.deliver(&alert).await;
    let mut by_queue: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for entry in &entries {
        by_queue
            .entry(entry.queue())
            .or_default()
            .push(entry.stream_id().to_string());
    }
    for (queue, ids) in by_queue {
        for chunk in ids.chunks(IDS_PER_COMMAND) {
            ack_entries(&shared, queue, chunk).await;
        }
    }
    drop(entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_window_admits_its_first_after_jobs_alone() {
        let digester = Digester::new(DigestConfig {
            after: 2,
            window: Duration::from_millis(100),
        });
        assert!(digester.admit());
        assert!(digester.admit());
        assert!(!digester.admit());
        assert!(!digester.admit());
        std::thread::sleep(Duration::from_millis(120));
        assert!(digester.admit());
        assert!(digester.admit());
        assert!(!digester.admit());
        let none = Digester::new(DigestConfig {
            after: 0,
            window: Duration::from_secs(1),
        });
        assert!(!none.admit());
    }
}
