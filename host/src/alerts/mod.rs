//! Alerts: a webhook (signed JSON or a Slack message) and e-mail (SMTP) when a job is
//! dead-lettered and when a queue's backlog crosses a threshold, retried, grouped into digests
//! in a burst, and never in the way of job processing. `docs/alerts.md` is the contract
//! receivers depend on.
//!
//! Lifecycle ([`Alerts::start`], inside `wasmq run`):
//! 1. Check the channels (an `https://` webhook or SMTP over TLS needs CA certificates),
//!    connect a [`Monitor`], and create the consumer group `wasmq-alerts` on every served
//!    queue's events stream, unless it exists. A new group starts one second before this host
//!    started: dead-letterings from then on are alerted, the stream's older history is not.
//! 2. `dead_letters` reads the group: `dead` entries become one alert per job, other entries
//!    are acknowledged at once. At most [`IN_HAND`] entries and alerts are in hand at a time;
//!    with that many undelivered (a slow or hung receiver) the reader waits, and the entries
//!    wait in Redis, unread or pending.
//! 3. Each alert is delivered on its own task (`sender`: every channel, each retrying with
//!    backoff). Its entry is acknowledged once every job of it was delivered or given up on
//!    every channel. With `[alerts.digest]`, jobs beyond the window's first `after` go into
//!    the window's digest (`digest`), sent at its end, which then acknowledges their entries.
//! 4. `backlog` looks at each queue every `interval` and announces a threshold crossed, and
//!    later resolved, once fleet-wide.
//! 5. [`Alerts::stop`]: reading stops; deliveries under way get [`STOP_GRACE`] (none after a
//!    second signal), then are abandoned, their entries still pending.
//!
//! Guarantee: an alert per dead-lettered job goes out at least once, from one host at a time.
//! An entry stays pending in the group until its alerts were sent (or given up); a host that
//! dies holding entries leaves them pending, and after `claim_after` (default
//! [`DEFAULT_CLAIM_AFTER`]) without a touch another host claims and sends them. Receivers dedupe on the alert `id`. What is not guaranteed:
//! entries trimmed from the stream (`events_maxlen`) before any host read them are lost
//! (counted in [`DeliveryStats::lost`]), and a backlog change whose announcer crashes before
//! sending is not announced.
//!
//! Nothing here touches a job: the job path already writes every dead-lettering to the events
//! stream, in the same script that moves the job.

mod backlog;
mod config;
mod dead_letters;
mod digest;
mod payload;
mod render;
mod sender;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::queue::{Monitor, QueueError};

pub use config::{
    AlertFlags, AlertsConfig, BacklogConfig, DEFAULT_BACKLOG_INTERVAL, DEFAULT_BACKOFF,
    DEFAULT_BACKOFF_CAP, DEFAULT_CLAIM_AFTER, DEFAULT_DIGEST_AFTER, DEFAULT_DIGEST_WINDOW,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT, DigestConfig, EmailConfig, FileAlerts, FileBacklog,
    FileDigest, FileEmail, Format, SmtpTls,
};
pub use payload::{Alert, BacklogReading, Detail, Digest, DigestGroup, signature};
pub use render::{email as email_text, slack as slack_message};
pub use sender::{DeliveryCounts, DeliveryStats, MAX_CONCURRENT_REQUESTS};

use sender::Sender;

/// The consumer group every host reads the events streams through.
pub const GROUP: &str = "wasmq-alerts";

/// Entries and alerts a host holds at once, read and not yet acknowledged.
pub const IN_HAND: usize = 64;

/// How long deliveries under way may finish after [`Alerts::stop`].
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why alerts could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AlertsError {
    #[error("{0}")]
    Config(String),
    #[error("preparing the events streams")]
    Redis(#[from] QueueError),
}

/// What the tasks share.
pub(crate) struct Shared {
    monitor: Monitor,
    sender: Sender,
    /// This host's name in the group.
    consumer: String,
    /// Digest mode, when `[alerts.digest]` is set.
    digest: Option<digest::Digester>,
    queues: Vec<String>,
    backlog: BacklogConfig,
    /// How long an entry may sit untouched at a consumer before another takes it over.
    claim_after: Duration,
    /// Where a group created after startup (its stream was deleted meanwhile) starts.
    start_ms: u64,
    /// One permit per entry or alert in hand: the bound between reading and delivery.
    room: Arc<Semaphore>,
    /// The entries in hand, by queue: what the touch keeps from being claimed elsewhere, and
    /// what this host's own claims skip.
    held: Mutex<HashMap<String, BTreeSet<String>>>,
    deliveries: Mutex<JoinSet<()>>,
}

impl Shared {
    fn held(&self) -> MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
        // Every operation leaves the map whole; a panic elsewhere cannot leave it half-done.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_held(&self, queue: &str, id: &str) -> bool {
        self.held().get(queue).is_some_and(|ids| ids.contains(id))
    }

    /// Runs a delivery on its own task, reaping the ones that finished.
    fn spawn_delivery(&self, delivery: impl Future<Output = ()> + Send + 'static) {
        let mut set = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        while set.try_join_next().is_some() {}
        set.spawn(delivery);
    }
}

/// The running alerts of a host.
pub struct Alerts {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Alerts {
    /// Prepares the consumer groups and starts the tasks (see the module documentation).
    /// `consumer` names this host in the group: give the same name across restarts (a fixed
    /// `--host-id`) and a restarted host picks up what it held at once.
    pub async fn start(
        config: AlertsConfig,
        redis_url: &str,
        queues: &[String],
        consumer: &str,
    ) -> Result<Alerts, AlertsError> {
        let (backlog, claim_after) = (config.backlog.clone(), config.claim_after);
        let digest = config.digest.map(digest::Digester::new);
        let sender = Sender::new(config).map_err(AlertsError::Config)?;
        let channels = sender.channels();
        let monitor = Monitor::connect(redis_url, GROUP, consumer).await?;
        let start_ms = monitor.server_time_ms().await?.saturating_sub(1000);
        for queue in queues {
            if monitor.create_group(queue, start_ms).await? {
                tracing::info!(%queue, group = GROUP, "alerts: created the consumer group");
            }
            if !monitor.events_enabled(queue).await? {
                tracing::warn!(
                    %queue,
                    "alerts: the queue's events are off (events_maxlen 0), so its dead-lettered jobs raise no alerts"
                );
            }
        }
        let shared = Arc::new(Shared {
            monitor,
            sender,
            consumer: consumer.to_string(),
            digest,
            queues: queues.to_vec(),
            backlog,
            claim_after,
            start_ms,
            room: Arc::new(Semaphore::new(IN_HAND)),
            held: Mutex::new(HashMap::new()),
            deliveries: Mutex::new(JoinSet::new()),
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(dead_letters::run(shared.clone(), stop_rx.clone())),
            tokio::spawn(dead_letters::touch(shared.clone(), stop_rx.clone())),
        ];
        if shared.digest.is_some() {
            tasks.push(tokio::spawn(digest::run(shared.clone(), stop_rx.clone())));
        }
        if shared.backlog.waiting.is_some() || shared.backlog.oldest_age.is_some() {
            tasks.push(tokio::spawn(backlog::run(shared.clone(), stop_rx)));
        }
        tracing::info!(?channels, queues = ?shared.queues, backlog = ?shared.backlog, "alerts on");
        Ok(Alerts {
            shared,
            stop,
            tasks,
        })
    }

    /// The delivery counters.
    pub fn stats(&self) -> Arc<DeliveryStats> {
        self.shared.sender.stats.clone()
    }

    /// Stops reading, lets deliveries under way finish within `grace` (usually
    /// [`STOP_GRACE`]), and returns. Whatever was not delivered stays pending in Redis for
    /// another host.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        let mut deliveries = std::mem::take(
            &mut *self
                .shared
                .deliveries
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let finished = tokio::time::timeout(grace, async {
            while deliveries.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                undelivered = deliveries.len(),
                "alerts: stopping with deliveries under way; their entries stay pending, and \
                 another host (or this one, restarted under the same --host-id) sends them"
            );
            deliveries.abort_all();
        }
        let stats = self.shared.sender.stats.snapshot();
        tracing::info!(?stats, "alerts stopped");
    }
}

/// Redis reachability as the alert tasks see it, logged once per change rather than per error.
#[derive(Debug, Default)]
struct Health {
    down: bool,
    /// The queue keys of another type that refused a call (`QueueError::WrongType`), each
    /// logged once: Redis is up, and only a person fixes them.
    refused: std::collections::HashSet<String>,
}

impl Health {
    fn ok(&mut self) {
        if std::mem::take(&mut self.down) {
            tracing::info!("alerts: redis is reachable again");
        }
    }

    fn failed(&mut self, what: &str, err: &QueueError) {
        if let Some(key) = err.wrong_type_key() {
            if self.refused.insert(key.to_string()) {
                tracing::error!(%key, "alerts: {what} refused: {err}");
            }
            return;
        }
        if !std::mem::replace(&mut self.down, true) {
            tracing::warn!(error = %crate::chain::ErrorChain(err), "alerts: {what} failed; retrying");
        }
    }
}

/// Sleeps `duration`; false when told to stop meanwhile.
async fn sleep_or_stop(duration: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(duration) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}
