//! The worker host behind `wasmq run`: takes jobs from Redis and runs them in the sandbox, and
//! loses nothing whatever happens to it.
//!
//! Lifecycle of a host ([`Worker::run`]):
//! 1. Load and validate every handler; connect to Redis.
//! 2. Start the acker (records outcomes in batches), the watchman (heartbeats leases, recovers
//!    expired leases of dead hosts) and one fetcher per queue.
//! 3. Each fetcher reserves slots, leases a batch, and starts one task per job; when a queue is
//!    empty it blocks on the queue's wake-up list instead of polling. The slot of a job that
//!    succeeded goes to the acker, which leases the queue's next job for it in the same call
//!    that records the success.
//! 4. On shutdown ([`Phase::Draining`], from SIGTERM/SIGINT): fetchers stop at once, in-flight
//!    jobs run on for the grace period, then the ones still running are stopped and released
//!    back to waiting without counting an attempt; the acker flushes; `run` returns.
//!
//! Guarantee: jobs run at least once. A job leaves this host only by an ack (complete or
//! fail), a release, or lease expiry; it is worse to lose a job than to run it twice.
//!
//! Roles, one file each: `fetcher` (lease batches), `executor` (one job attempt), `ack` (the
//! outcome an executor hands the acker), `acker` (batched outcomes), `watchman` (heartbeats
//! and recovery), `cancels` (stops the attempts of cancelled jobs), `slots` (memory and count budget), `config` (settings), `scheduler`
//! (enqueues the jobs of due cron ticks), `deployer` (compiles and installs registry handler
//! versions off the job path), `workflow` (a job's steps, sleeps and child jobs over Redis).
//! This file holds what they share: the handler table (`HandlerTable`: name to an
//! `Arc<LoadedHandler>`, an entry swapped whole), the in-flight map (every job this host holds
//! a lease on, with the handle that can stop it), and `GuestThreads`: guest code runs on a
//! tokio runtime of its own, so the host's fetchers, acker and heartbeats never queue behind
//! busy guests.

mod ack;
mod acker;
mod cancels;
mod config;
mod deployer;
mod executor;
mod fetcher;
mod scheduler;
mod slots;
mod watchman;
mod workflow;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};

use crate::capability::{Capabilities, Grants, HostResources, SecretSource};
use crate::metrics::{HostSample, Metrics};
use crate::queue::{Client, Lease, QueueError, RateLimit, RetryPolicy};
use crate::registry::{self, Registry};
use crate::runtime::{ArtifactCache, Handler, Runtime};

pub use config::{
    DEFAULT_COMPILE_CONCURRENCY, DEFAULT_HANDLER_MEMORY, DEFAULT_HANDLER_TIMEOUT,
    DEFAULT_REDIS_URL, FileConfig, HandlerSpec, WorkerConfig, default_cache_dir, host_runtime,
    merge_handlers, parse_handler_flag,
};

use ack::Ack;
use slots::Slots;

/// Where a host is in its life; sent by whoever handles signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Stop fetching; let in-flight jobs finish within the grace period.
    Draining,
    /// Stop fetching; stop in-flight jobs now and release them.
    Stop,
}

/// What a host did, returned by [`Worker::run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub completed: u64,
    pub failed: u64,
    /// Jobs stopped at shutdown and returned to waiting.
    pub released: u64,
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("handler {name}")]
    Handler {
        name: String,
        #[source]
        source: crate::runtime::LoadError,
    },
    #[error(transparent)]
    Runtime(#[from] crate::runtime::LoadError),
    #[error("connecting to redis")]
    Redis(#[from] QueueError),
    /// Redis answered the queue client but not the handler registry's reads.
    #[error("connecting to the handler registry")]
    Registry(#[source] crate::registry::RegistryError),
    #[error("starting guest threads")]
    GuestThreads(#[source] std::io::Error),
}

/// A configured host, ready to run.
pub struct Worker {
    shared: Arc<Shared>,
    acks: mpsc::UnboundedReceiver<Ack>,
    /// The registry epoch the handlers were loaded at (`None`: the registry was not read).
    registry_epoch: Option<u64>,
}

/// A handler ready to run on this host: from a local file (`--handler`) or a registry version.
/// Jobs take an `Arc` of it when they start, so a swap never changes a running job's version.
pub(crate) struct LoadedHandler {
    pub handler: Handler,
    /// Per-instance memory cap; what a running job holds of the memory budget.
    pub memory: u64,
    /// Default deadline of an attempt (a job's own timeout wins).
    pub timeout: Duration,
    pub fuel: Option<u64>,
    /// The handler's own concurrency limit on this host, if it has one; carried over to the
    /// next version when the limit is unchanged.
    pub concurrency: Option<usize>,
    pub limit: Option<Arc<Semaphore>>,
    /// The retry policy for jobs that do not set their own (none for `--handler` files).
    pub retry: RetryPolicy,
    /// Most starts of its jobs per window per key (the job's group), per queue.
    pub throttle: Option<RateLimit>,
    /// What attempt history records: `local:<sha256 prefix>` or `<version>:<sha256 prefix>`.
    pub version: String,
    /// The registry version, for handlers that came from the registry.
    pub registry_version: Option<registry::Version>,
    /// Why its jobs cannot run on this host (secrets it needs that the host does not have):
    /// they are retried per their policy, so that a host that has them can run them.
    pub unavailable: Option<String>,
}

impl LoadedHandler {
    fn local(
        spec: &HandlerSpec,
        handler: Handler,
        sha256: &str,
        unavailable: Option<String>,
    ) -> Self {
        Self {
            unavailable,
            handler,
            memory: spec.memory,
            timeout: spec.timeout,
            fuel: spec.fuel,
            concurrency: spec.concurrency,
            limit: spec.concurrency.map(|n| Arc::new(Semaphore::new(n))),
            retry: RetryPolicy::default(),
            throttle: spec.throttle,
            version: format!("local:{}", &sha256[..12]),
            registry_version: None,
        }
    }
}

/// The handlers this host runs, swapped whole on every change (a deploy seen by the deployer).
#[derive(Default)]
pub(crate) struct HandlerTable {
    map: std::sync::RwLock<HashMap<String, Arc<LoadedHandler>>>,
    /// The largest memory cap of any handler: what a fetch reserves per job.
    max_cap: AtomicU64,
}

impl HandlerTable {
    pub fn get(&self, name: &str) -> Option<Arc<LoadedHandler>> {
        self.read().get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// The retry policies of the handlers that have one, for lease recovery.
    pub fn retry_policies(&self) -> Vec<(String, RetryPolicy)> {
        self.read()
            .iter()
            .filter(|(_, loaded)| !loaded.retry.is_empty())
            .map(|(name, loaded)| (name.clone(), loaded.retry))
            .collect()
    }

    pub fn max_cap(&self) -> u64 {
        self.max_cap.load(Ordering::Relaxed)
    }

    /// Installs (`Some`) or removes (`None`) a handler; jobs already running keep theirs.
    pub fn set(&self, name: &str, handler: Option<Arc<LoadedHandler>>) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        match handler {
            Some(h) => map.insert(name.to_string(), h),
            None => map.remove(name),
        };
        let max = map
            .values()
            .map(|h| h.memory)
            .max()
            .unwrap_or(DEFAULT_HANDLER_MEMORY);
        self.max_cap.store(max, Ordering::Relaxed);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<LoadedHandler>>> {
        // Every write leaves the map whole; a panic elsewhere cannot leave it half-done.
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// A job this host holds a lease on, from fetch until its outcome is recorded.
pub(crate) struct InFlight {
    pub token: String,
    pub state: InFlightState,
}

#[derive(Debug)]
pub(crate) enum InFlightState {
    /// Leased ahead: waits for the slot whose job runs before it (see `executor`).
    Queued,
    /// The attempt is running in this task.
    Running(AbortHandle),
    /// The attempt ended; its outcome waits in the acker.
    Finished,
    /// Stopped by this host (shutdown, or its lease was lost); it must not be acked.
    Stopped,
}

/// Which job a host holds: a job id is unique within its queue, not across queues.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct JobKey {
    pub queue: String,
    pub id: String,
}

impl JobKey {
    pub fn new(queue: impl Into<String>, id: impl Into<String>) -> Self {
        JobKey {
            queue: queue.into(),
            id: id.into(),
        }
    }

    pub fn of(job: &crate::queue::LeasedJob) -> Self {
        JobKey::new(&job.queue, &job.id)
    }
}

/// The threads guest code runs on, apart from the host's own tasks (fetchers, acker,
/// watchman), so that guests busy on every core never delay a fetch, a heartbeat or an ack.
pub(crate) struct GuestThreads(Option<tokio::runtime::Runtime>);

impl GuestThreads {
    /// `threads` threads (the runtime's `guest_threads`, whose turns its attempts share).
    fn new(threads: usize) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wasmq-guest")
            .enable_all()
            .build()?;
        Ok(Self(Some(rt)))
    }

    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(rt) => rt.spawn(future),
            // Only between drop and deallocation; run on the caller's runtime then.
            None => tokio::spawn(future),
        }
    }
}

impl Drop for GuestThreads {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which async code must not do; let its threads wind down
        // on their own.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

pub(crate) struct Shared {
    pub config: WorkerConfig,
    pub guests: GuestThreads,
    pub client: Client,
    pub runtime: Runtime,
    pub handlers: HandlerTable,
    pub registry: Registry,
    /// Where compiled handlers are cached across restarts, if anywhere.
    pub cache: Option<Arc<ArtifactCache>>,
    /// Registry versions this host refused to load (so it does not try again every poll).
    pub refused: Mutex<HashMap<String, registry::Version>>,
    /// Registry versions being compiled, by handler name (see `deployer`).
    pub compiling: Mutex<HashMap<String, deployer::Compiling>>,
    /// Turns to compile: `compile_concurrency` compiles at once.
    pub compile_slots: Arc<Semaphore>,
    pub slots: Slots,
    pub queue_limits: HashMap<String, Arc<Semaphore>>,
    pub inflight: Mutex<HashMap<JobKey, InFlight>>,
    pub acks: mpsc::UnboundedSender<Ack>,
    /// Set once the host stops taking jobs: jobs leased ahead then stay unstarted, for
    /// shutdown to release.
    pub draining: AtomicBool,
    pub redis: RedisHealth,
    pub metrics: Arc<Metrics>,
    /// What handlers' capabilities are resolved with (`grant`).
    pub resources: HostResources,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
}

impl Shared {
    pub fn inflight(&self) -> MutexGuard<'_, HashMap<JobKey, InFlight>> {
        // The map is consistent after every single operation on it, so a panic elsewhere while
        // it was locked leaves nothing half-done: keep using it.
        self.inflight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The leases this host holds, by queue (for heartbeats).
    pub fn leases_by_queue(&self) -> HashMap<String, Vec<Lease>> {
        let mut out: HashMap<String, Vec<Lease>> = HashMap::new();
        for (JobKey { queue, id }, job) in self.inflight().iter() {
            if !matches!(job.state, InFlightState::Stopped) {
                out.entry(queue.clone()).or_default().push(Lease {
                    id: id.clone(),
                    token: job.token.clone(),
                });
            }
        }
        out
    }

    /// Jobs whose attempt is still running.
    pub fn running(&self) -> usize {
        self.inflight()
            .values()
            .filter(|j| matches!(j.state, InFlightState::Running(_)))
            .count()
    }

    /// Stops the running attempt of a job (shutdown, or lease lost) so it is never acked, or
    /// keeps a job leased ahead from ever starting. Returns the lease if the job was running
    /// or waiting to.
    pub fn stop(&self, key: &JobKey) -> Option<Lease> {
        let mut inflight = self.inflight();
        let job = inflight.get_mut(key)?;
        match &job.state {
            InFlightState::Running(abort) => abort.abort(),
            InFlightState::Queued => {}
            InFlightState::Finished | InFlightState::Stopped => return None,
        }
        job.state = InFlightState::Stopped;
        Some(Lease {
            id: key.id.clone(),
            token: job.token.clone(),
        })
    }

    /// Stops every job leased ahead that has not started ([`Shared::stop`]), by queue.
    pub fn stop_queued(&self) -> HashMap<String, Vec<Lease>> {
        let mut out: HashMap<String, Vec<Lease>> = HashMap::new();
        let mut inflight = self.inflight();
        for (JobKey { queue, id }, job) in inflight.iter_mut() {
            if matches!(job.state, InFlightState::Queued) {
                job.state = InFlightState::Stopped;
                out.entry(queue.clone()).or_default().push(Lease {
                    id: id.clone(),
                    token: job.token.clone(),
                });
            }
        }
        out
    }
}

impl Shared {
    /// Releases leased jobs that never started (uncounted), in one call, without retrying:
    /// if Redis fails, they run again after their lease expires. `what` names them in the log.
    pub async fn release_unstarted(&self, queue: &str, leases: &[Lease], what: &str) {
        if leases.is_empty() {
            return;
        }
        match self.client.release(queue, leases).await {
            Ok(report) => {
                for (id, why) in report.rejected {
                    tracing::warn!(%queue, job_id = %id, ?why, "could not release one of the {what}");
                }
            }
            Err(err) => {
                self.redis.failed(&format!("releasing {what}"), &err);
                tracing::warn!(%queue, jobs = leases.len(), "{what} will run again after their lease expires");
            }
        }
    }

    /// Gives up the attempt holding lease `token`, which Redis refused to extend: see
    /// [`abandon`].
    pub fn abandon(&self, key: &JobKey, token: &str) -> Abandoned {
        abandon(&mut self.inflight(), key, token)
    }
}

/// What giving up a lease Redis refused to extend found here ([`abandon`]). A heartbeat lists
/// its leases, then calls Redis; the acker may record one of those jobs in between, and then
/// the extension is refused (`not_active:completed`, `not_found`) although nothing was lost.
/// Only the first two are a lost lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abandoned {
    /// The attempt was running here: it is stopped, its outcome never recorded.
    Running,
    /// The job was leased ahead and waiting for its slot: it will not start here.
    Queued,
    /// The attempt had ended and its outcome waits in the acker, which reports it if Redis
    /// refuses it.
    Finished,
    /// Nothing here holds that lease any more: the acker recorded the outcome (or this host
    /// stopped the job) after the heartbeat listed it.
    NotHeld,
}

impl Abandoned {
    /// Whether work this host still had under the lease was given up: a real lease loss.
    pub fn lost_work(self) -> bool {
        matches!(self, Abandoned::Running | Abandoned::Queued)
    }
}

/// Gives up the attempt holding lease `token` of `key`: stops it if it is still running, keeps a
/// job leased ahead from starting, and forgets either. An attempt that ended is left to the
/// acker (Redis will refuse its outcome if the lease is really gone), and a newer attempt of
/// the same job, leased since under another token, is left be.
fn abandon(inflight: &mut HashMap<JobKey, InFlight>, key: &JobKey, token: &str) -> Abandoned {
    let Some(job) = inflight.get(key).filter(|job| job.token == token) else {
        return Abandoned::NotHeld;
    };
    let found = match &job.state {
        InFlightState::Running(abort) => {
            abort.abort();
            Abandoned::Running
        }
        // Its slot's chain skips a job no longer in the map.
        InFlightState::Queued => Abandoned::Queued,
        InFlightState::Finished => return Abandoned::Finished,
        InFlightState::Stopped => return Abandoned::NotHeld,
    };
    inflight.remove(key);
    found
}

/// Redis reachability as the host sees it, logged once per change rather than per error, and
/// each return counted in the host's metrics.
#[derive(Debug)]
pub(crate) struct RedisHealth {
    up: AtomicBool,
    metrics: Arc<Metrics>,
    /// The queue keys of another type that refused calls (`QueueError::WrongType`), and when
    /// each was last logged.
    refused: Mutex<HashMap<String, std::time::Instant>>,
    /// When "redis unavailable" was last logged: once when it goes down, then every
    /// [`DOWN_LOG_EVERY`] while it stays down, so a long outage is not one line and silence.
    down_logged: Mutex<Option<std::time::Instant>>,
}

/// How often a Redis that stays unreachable is logged again.
const DOWN_LOG_EVERY: Duration = Duration::from_secs(60);

/// How often a call refused for the same key of another type is logged again: the fetcher and
/// the acker retry it every few seconds until a person fixes the key.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(600);

impl RedisHealth {
    fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            up: AtomicBool::new(true),
            metrics,
            refused: Mutex::new(HashMap::new()),
            down_logged: Mutex::new(None),
        }
    }

    /// Whether a refusal for `key` should be logged now (the first, or the first in
    /// [`REFUSAL_LOG_EVERY`]).
    fn refusal_is_news(&self, key: &str) -> bool {
        let mut refused = self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        match refused.get(key) {
            Some(at) if now.duration_since(*at) < REFUSAL_LOG_EVERY => false,
            _ => {
                refused.insert(key.to_string(), now);
                true
            }
        }
    }

    /// Whether the last call to Redis succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn ok(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            self.metrics.redis_reconnected();
            tracing::info!("redis is reachable again; resuming");
        }
    }

    pub fn failed(&self, what: &str, err: &QueueError) {
        if let Some(key) = err.wrong_type_key() {
            // Redis is up and refused the call with nothing written: one key of the queue holds
            // another type. The call is retried (nothing is lost) but only a person can fix
            // the key, so it is said once, not per retry, and Redis is not reported down.
            if self.refusal_is_news(key) {
                tracing::error!(%key, "{what} refused: {err} (retrying until the key is fixed; `wasmq queue check` lists such keys)");
            }
        } else if matches!(err, QueueError::Redis(_)) {
            let went_down = self.up.swap(false, Ordering::Relaxed);
            let mut logged = self
                .down_logged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = std::time::Instant::now();
            if went_down {
                *logged = Some(now);
                tracing::warn!(
                    "redis unavailable ({what}: {}); retrying with backoff",
                    crate::chain::ErrorChain(err)
                );
            } else if logged.is_none_or(|at| now.duration_since(at) >= DOWN_LOG_EVERY) {
                *logged = Some(now);
                tracing::warn!(
                    "redis still unavailable ({what}: {}); retrying with backoff",
                    crate::chain::ErrorChain(err)
                );
            }
        } else {
            tracing::error!(error = %crate::chain::ErrorChain(err), "{what} failed");
        }
    }
}

/// What this host gives the handlers it loads: secrets from its environment or
/// `--secrets-dir`, outbound requests counted in `metrics`, key-value buckets in `client`'s
/// Redis.
pub(crate) fn host_resources(
    config: &WorkerConfig,
    metrics: &Arc<Metrics>,
    client: &Client,
) -> HostResources {
    let observer: Arc<dyn crate::capability::OutboundObserver> = metrics.clone();
    let kv: Arc<dyn crate::capability::KvStore> = Arc::new(client.clone());
    let sql_observer: Arc<dyn crate::capability::SqlObserver> = metrics.clone();
    HostResources {
        secrets: SecretSource {
            dir: config.secrets_dir.clone(),
        },
        observer: Some(observer),
        kv: Some(kv),
        sql: Arc::new(crate::capability::SqlPools::default()),
        sql_observer: Some(sql_observer),
    }
}

/// Gives `handler` the capabilities `grants` resolve to on this host (`resources`). The
/// second value says why it cannot run here, when secrets are missing; that is logged here,
/// once per load.
pub(crate) fn grant(
    host_id: &str,
    resources: &HostResources,
    name: &str,
    grants: &Grants,
    handler: Handler,
) -> Result<(Handler, Option<String>), String> {
    let caps = Capabilities::resolve(name, grants, resources)?;
    let unavailable = caps.missing_secrets_message(host_id);
    if let Some(why) = &unavailable {
        tracing::error!(handler = %name, "{why}; its jobs are retried (another host may have them)");
    }
    Ok((handler.with_capabilities(Arc::new(caps)), unavailable))
}

impl Worker {
    /// Loads the handlers and connects to Redis.
    pub async fn new(config: WorkerConfig) -> Result<Self, WorkerError> {
        Self::with_metrics(config, Arc::new(Metrics::new())).await
    }

    /// [`Worker::new`], counting into `metrics` (which the HTTP API beside it serves).
    pub async fn with_metrics(
        config: WorkerConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, WorkerError> {
        config.validate().map_err(WorkerError::Config)?;
        let runtime = Runtime::new(config.runtime.clone())?;
        let cache = deployer::open_cache(config.cache_dir.as_deref());
        let handlers = HandlerTable::default();
        let client = Client::connect(&config.redis_url).await?;
        let resources = host_resources(&config, &metrics, &client);
        for spec in &config.handlers {
            let loaded =
                deployer::load_local(&runtime, cache.as_ref(), spec, &config, &resources).await?;
            handlers.set(&spec.name, Some(Arc::new(loaded)));
        }
        let registry = Registry::connect(&config.redis_url)
            .await
            .map_err(WorkerError::Registry)?;
        let queue_limits = config
            .queue_concurrency
            .iter()
            .map(|(q, n)| (q.clone(), Arc::new(Semaphore::new(*n))))
            .collect();
        let (tx, rx) = mpsc::unbounded_channel();
        let compile_slots = Arc::new(Semaphore::new(config.compile_concurrency.max(1)));
        let shared = Shared {
            guests: GuestThreads::new(runtime.config().guest_threads)
                .map_err(WorkerError::GuestThreads)?,
            slots: Slots::new(config.concurrency, config.memory_budget),
            config,
            client,
            runtime,
            handlers,
            registry,
            cache,
            refused: Mutex::new(HashMap::new()),
            compiling: Mutex::new(HashMap::new()),
            compile_slots,
            queue_limits,
            inflight: Mutex::new(HashMap::new()),
            acks: tx,
            draining: AtomicBool::new(false),
            redis: RedisHealth::new(metrics.clone()),
            metrics,
            resources,
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        };
        let shared = Arc::new(shared);
        let weak = Arc::downgrade(&shared);
        shared.metrics.set_sampler(move || {
            weak.upgrade()
                .map_or_else(HostSample::default, |shared| HostSample {
                    slots_in_use: shared.slots.running() as u64,
                    slots: shared.config.concurrency as u64,
                    memory_in_use: shared.slots.memory_in_use(),
                    memory_budget: shared.config.memory_budget,
                    redis_up: shared.redis.is_up(),
                })
        });
        // Registry handlers found in the artifact cache are ready before the first fetch; the
        // others compile meanwhile, their jobs waiting (uncounted) until they are.
        let epoch = deployer::sync(&shared).await;
        Ok(Self {
            shared,
            acks: rx,
            registry_epoch: epoch,
        })
    }

    /// This host's id, as written into leases and attempt history.
    pub fn host_id(&self) -> &str {
        &self.shared.config.host_id
    }

    /// Runs until `phase` leaves [`Phase::Running`], then shuts down gracefully (see the module
    /// documentation) and returns what the host did.
    pub async fn run(self, mut phase: watch::Receiver<Phase>) -> RunSummary {
        let Worker {
            shared,
            acks,
            registry_epoch,
        } = self;
        let config = &shared.config;
        tracing::info!(
            host = %config.host_id,
            queues = ?config.queues,
            handlers = ?shared.handlers.names(),
            // Components compiled at start: 0 when every handler came from the artifact cache.
            compiled = shared.runtime.compiles(),
            concurrency = config.concurrency,
            memory_budget = %bytesize::ByteSize(config.memory_budget),
            "wasmq host running"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let acker = tokio::spawn(acker::run(
            shared.clone(),
            acks,
            stop_rx.clone(),
            phase.clone(),
        ));
        let watchman = tokio::spawn(watchman::run(shared.clone(), stop_rx.clone()));
        let (cancels_ready, ready) = tokio::sync::oneshot::channel();
        let cancels = tokio::spawn(cancels::run(shared.clone(), stop_rx.clone(), cancels_ready));
        let deployer = tokio::spawn(deployer::run(shared.clone(), registry_epoch, stop_rx));
        let scheduler = tokio::spawn(scheduler::run(shared.clone(), phase.clone()));
        // A job leased before the host hears cancels would be stopped only by a heartbeat.
        let _ = tokio::time::timeout(cancels::READY_WAIT, ready).await;
        let mut fetchers = JoinSet::new();
        for queue in &config.queues {
            fetchers.spawn(fetcher::run(shared.clone(), queue.clone(), phase.clone()));
        }

        while *phase.borrow_and_update() == Phase::Running {
            if phase.changed().await.is_err() {
                // Whoever could tell us to stop is gone: treat it as a stop request.
                break;
            }
        }
        shared.draining.store(true, Ordering::SeqCst);
        tracing::info!(
            running = shared.running(),
            grace = ?config.grace,
            "shutting down: no new jobs; waiting for in-flight jobs"
        );
        while fetchers.join_next().await.is_some() {}
        let _ = scheduler.await;
        // Jobs leased ahead would only wait out the grace period here: other hosts can run
        // them now.
        let mut released = release(&shared, shared.stop_queued()).await;
        drain(&shared, &mut phase).await;

        // Stop what is still running and give it back, uncounted.
        let keys: Vec<JobKey> = shared.inflight().keys().cloned().collect();
        let mut to_release: HashMap<String, Vec<Lease>> = HashMap::new();
        for key in keys {
            if let Some(lease) = shared.stop(&key) {
                to_release.entry(key.queue.clone()).or_default().push(lease);
            }
        }
        released += release(&shared, to_release).await;

        // Outcomes already known are recorded before we go.
        let _ = stop_tx.send(true);
        let _ = watchman.await;
        let _ = cancels.await;
        let _ = deployer.await;
        match tokio::time::timeout(acker::FLUSH_AT_EXIT, acker).await {
            Ok(_) => {}
            Err(_) => tracing::warn!(
                "some outcomes could not be recorded before exit; those jobs will run again after their lease expires"
            ),
        }
        let summary = RunSummary {
            completed: shared.completed.load(Ordering::Relaxed),
            failed: shared.failed.load(Ordering::Relaxed),
            released,
        };
        tracing::info!(?summary, "wasmq host stopped");
        summary
    }
}

/// Waits until no attempt is running, the grace period ends, or a second signal says stop.
async fn drain(shared: &Shared, phase: &mut watch::Receiver<Phase>) {
    let deadline = tokio::time::Instant::now() + shared.config.grace;
    loop {
        if shared.running() == 0 || *phase.borrow() == Phase::Stop {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            _ = phase.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Releases stopped jobs back to waiting, retrying Redis for a bounded time. Returns how many
/// were released.
async fn release(shared: &Shared, leases: HashMap<String, Vec<Lease>>) -> u64 {
    let mut released = 0;
    for (queue, leases) in leases {
        let deadline = tokio::time::Instant::now() + acker::FLUSH_AT_EXIT;
        let mut backoff = crate::connection::Backoff::default();
        loop {
            match shared.client.release(&queue, &leases).await {
                Ok(report) => {
                    released += report.released.len() as u64;
                    for (id, why) in report.rejected {
                        tracing::warn!(%queue, job_id = %id, ?why, "could not release a stopped job");
                    }
                    break;
                }
                Err(err) => {
                    shared.redis.failed("release", &err);
                    if tokio::time::Instant::now() >= deadline {
                        tracing::warn!(%queue, jobs = leases.len(), "could not release stopped jobs; they will run again after their lease expires");
                        break;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        let mut inflight = shared.inflight();
        for lease in &leases {
            inflight.remove(&JobKey::new(queue.as_str(), lease.id.as_str()));
        }
    }
    released
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(id: &str) -> JobKey {
        JobKey::new("q", id)
    }

    fn held(token: &str, state: InFlightState) -> InFlight {
        InFlight {
            token: token.to_string(),
            state,
        }
    }

    /// The race behind a false "lease lost": the heartbeat lists a lease, the acker records
    /// the job and forgets it, then Redis refuses the extension. Only an attempt still running
    /// (or waiting to) under that lease is a loss.
    #[tokio::test]
    async fn a_refused_extension_is_a_lost_lease_only_while_the_attempt_has_not_ended() {
        let attempt = tokio::spawn(std::future::pending::<()>());
        let mut inflight = HashMap::from([
            (
                key("running"),
                held("t1", InFlightState::Running(attempt.abort_handle())),
            ),
            (key("queued"), held("t1", InFlightState::Queued)),
            (key("finished"), held("t1", InFlightState::Finished)),
            (key("stopped"), held("t1", InFlightState::Stopped)),
            (key("retried"), held("t2", InFlightState::Queued)),
        ]);

        let running = abandon(&mut inflight, &key("running"), "t1");
        assert_eq!(running, Abandoned::Running);
        assert!(running.lost_work());
        assert!(attempt.await.unwrap_err().is_cancelled());
        assert!(!inflight.contains_key(&key("running")));

        let queued = abandon(&mut inflight, &key("queued"), "t1");
        assert_eq!(queued, Abandoned::Queued);
        assert!(queued.lost_work());
        assert!(!inflight.contains_key(&key("queued")));

        // Recorded by the acker between the heartbeat's list and Redis's answer: gone here.
        let recorded = abandon(&mut inflight, &key("recorded"), "t1");
        assert_eq!(recorded, Abandoned::NotHeld);
        assert!(!recorded.lost_work());

        // Ended, its outcome still in the acker: the acker reports a refusal, if there is one.
        let finished = abandon(&mut inflight, &key("finished"), "t1");
        assert_eq!(finished, Abandoned::Finished);
        assert!(!finished.lost_work());
        assert!(inflight.contains_key(&key("finished")));

        assert_eq!(
            abandon(&mut inflight, &key("stopped"), "t1"),
            Abandoned::NotHeld
        );
        // A newer attempt of the job, under another lease, is not the one refused.
        assert_eq!(
            abandon(&mut inflight, &key("retried"), "t1"),
            Abandoned::NotHeld
        );
        assert!(inflight.contains_key(&key("retried")));
    }
}
