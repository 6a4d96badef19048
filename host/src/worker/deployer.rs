//! The deployer: keeps this host's handlers in step with the registry, without a restart.
//!
//! Lifecycle:
//! 1. At start ([`sync`], before the first fetch) every current registry version is fetched,
//!    checked against its SHA-256, validated and compiled (or loaded from the artifact cache),
//!    and installed. A handler given locally (`--handler`, `[handlers]`) overrides the
//!    registry's handler of the same name.
//! 2. Then it waits for a change: a message on the registry's channel, or, as a fallback for a
//!    lost message or a pub/sub connection down, a different epoch counter at the next
//!    one-second poll. On a change it syncs again: changed versions are loaded and swapped in
//!    whole, removed handlers are taken out. Jobs already running keep the version they
//!    started with (they hold an `Arc` of it); jobs started after the swap get the new one.
//! 3. A version that cannot be loaded here (damaged, refused by this host's runtime, over its
//!    memory budget, over the compile limits) is logged once and skipped; the previous
//!    version, if any, stays.
//!
//! Compiling takes seconds for Python or JavaScript components, and a hostile component can
//! ask for minutes and gigabytes, so a sync never waits for one. A version found in the
//! artifact cache is installed at once; any other is compiled by a task of its own
//! ([`start_compile`]), in a child process under the compile limits
//! (`Runtime::load_async`), at most `compile_concurrency` at a time, and installed when it is
//! ready. Meanwhile the handler is [`Availability::NotReady`]: its jobs wait, uncounted
//! (see `executor`), while the handlers that are ready run theirs; so do the jobs of a
//! handler this host refused, for a host that can run them. A newer version supersedes a
//! compile under way (which is killed), and so does shutdown: a host never waits for a
//! compile to stop.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::AbortHandle;

use super::{HandlerSpec, LoadedHandler, Shared, WorkerError};
use crate::connection::Backoff;
use crate::queue::RateLimit;
use crate::registry::{self, CHANGES_CHANNEL, Version};
use crate::runtime::{ArtifactCache, CacheLookup, Handler, LoadError, LoadSource, Runtime};

/// How often the epoch counter is read when no change message arrives.
const POLL: Duration = Duration::from_secs(1);

/// How long a job of a handler still compiling here waits before it is leased again.
pub(crate) const WAIT_FOR_COMPILE: Duration = Duration::from_secs(1);
/// How long a job of a handler this host refused waits before any host leases it again.
pub(crate) const WAIT_FOR_ANOTHER_HOST: Duration = Duration::from_secs(10);

/// A registry version being compiled by a task of its own.
pub(crate) struct Compiling {
    version: Version,
    task: AbortHandle,
}

/// Whether this host can run a handler's jobs now ([`Shared::availability`]).
pub(crate) enum Availability {
    Ready(Arc<LoadedHandler>),
    /// The registry has it, but it is compiling here, or refused here: its jobs go back to
    /// wait this long, uncounted.
    NotReady(Duration),
    /// Neither here nor in the registry as this host last saw it.
    Unknown,
}

impl Shared {
    /// Whether the handler `name` can run here now. Consistent with a compile that ends
    /// meanwhile: a compile task installs its handler before it leaves the compiling map,
    /// under that map's lock, which this takes first.
    pub(crate) fn availability(&self, name: &str) -> Availability {
        let compiling = lock(&self.compiling);
        if let Some(loaded) = self.handlers.get(name) {
            return Availability::Ready(loaded);
        }
        if compiling.contains_key(name) {
            return Availability::NotReady(WAIT_FOR_COMPILE);
        }
        if lock(&self.refused).contains_key(name) {
            return Availability::NotReady(WAIT_FOR_ANOTHER_HOST);
        }
        Availability::Unknown
    }

    /// Stops every compile under way (shutdown): their children are killed.
    pub(crate) fn stop_compiles(&self) {
        for (_, compiling) in lock(&self.compiling).drain() {
            compiling.task.abort();
        }
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each map is whole after every single operation on it.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Opens the artifact cache, or logs why there is none (only start-up time depends on it).
pub(crate) fn open_cache(dir: Option<&Path>) -> Option<Arc<ArtifactCache>> {
    let dir = dir?;
    match ArtifactCache::open(dir) {
        Ok(cache) => Some(Arc::new(cache)),
        Err(err) => {
            tracing::warn!(error = %crate::chain::ErrorChain(&err), "compiling handlers without a cache");
            None
        }
    }
}

/// Validates and compiles `bytes` through the cache, in a child process under the compile
/// limits when the runtime has a compiler program.
async fn compile(
    runtime: &Runtime,
    cache: Option<&Arc<ArtifactCache>>,
    bytes: Vec<u8>,
) -> Result<(Handler, LoadSource), LoadError> {
    runtime.load_async(bytes.into(), cache.cloned()).await
}

/// Loads a handler given on this host's command line or config file.
pub(crate) async fn load_local(
    runtime: &Runtime,
    cache: Option<&Arc<ArtifactCache>>,
    spec: &HandlerSpec,
    config: &super::WorkerConfig,
    resources: &crate::capability::HostResources,
) -> Result<LoadedHandler, WorkerError> {
    let err = |source| WorkerError::Handler {
        name: spec.name.clone(),
        source,
    };
    let bytes = std::fs::read(&spec.path).map_err(|source| {
        err(LoadError::Io {
            path: spec.path.display().to_string(),
            source,
        })
    })?;
    let sha = registry::sha256_hex(&bytes);
    let (handler, source) = compile(runtime, cache, bytes).await.map_err(err)?;
    let (handler, unavailable) = super::grant(
        &config.host_id,
        resources,
        &spec.name,
        &spec.grants,
        handler,
    )
    .map_err(|why| WorkerError::Config(format!("handler {}: {why}", spec.name)))?;
    tracing::info!(handler = %spec.name, path = %spec.path.display(), ?source, "handler loaded from a local file");
    Ok(LoadedHandler::local(spec, handler, &sha, unavailable))
}

/// Brings the handler table in line with the registry. Returns the epoch it synced to, or
/// `None` if the registry could not be read (try again later).
pub(crate) async fn sync(shared: &Arc<Shared>) -> Option<u64> {
    let epoch = match shared.registry.epoch().await {
        Ok(epoch) => epoch,
        Err(err) => {
            tracing::warn!(error = %crate::chain::ErrorChain(&err), "cannot read the handler registry; will retry");
            return None;
        }
    };
    let current = match shared.registry.current().await {
        Ok(current) => current,
        Err(err) => {
            tracing::warn!(error = %crate::chain::ErrorChain(&err), "cannot read the handler registry; will retry");
            return None;
        }
    };
    let local: Vec<&str> = shared
        .config
        .handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    let mut complete = true;
    for (name, version) in &current {
        if local.contains(&name.as_str()) {
            continue;
        }
        let installed = shared.handlers.get(name);
        let same = installed
            .as_ref()
            .and_then(|h| h.registry_version.as_ref())
            .is_some_and(|v| v == version);
        let compiling = lock(&shared.compiling)
            .get(name)
            .is_some_and(|c| &c.version == version);
        // Refused once is refused: logged then, and not loaded again at each change.
        let refused = refused_versions(shared).get(name) == Some(version);
        if same || compiling || refused {
            continue;
        }
        match load_version(shared, version).await {
            Ok(Loaded::Ready(handler, source)) => install(shared, version, handler, source),
            Ok(Loaded::Compile(bytes, source)) => start_compile(shared, version, bytes, source),
            Err(Skip::Retry(why)) => {
                tracing::warn!(handler = %name, version = version.version, "cannot load this version yet: {why}");
                complete = false;
            }
            Err(Skip::Refused(why)) => refuse(shared, version, &why),
        }
    }
    // Handlers removed from the registry stop taking jobs here (local ones stay).
    for name in shared.handlers.names() {
        let from_registry = shared
            .handlers
            .get(&name)
            .is_some_and(|h| h.registry_version.is_some());
        if from_registry && !current.contains_key(&name) {
            tracing::info!(handler = %name, "handler removed from the registry");
            shared.handlers.set(&name, None);
        }
    }
    // Nor do they wait for a compile or for another host any more.
    lock(&shared.refused).retain(|name, _| current.contains_key(name));
    lock(&shared.compiling).retain(|name, compiling| {
        let keep = current.contains_key(name);
        if !keep {
            compiling.task.abort();
        }
        keep
    });
    complete.then_some(epoch)
}

fn refused_versions(shared: &Shared) -> std::sync::MutexGuard<'_, HashMap<String, Version>> {
    lock(&shared.refused)
}

/// Installs a loaded registry version, its concurrency limit carried over from the version it
/// replaces when unchanged (a deploy never lets more jobs run at once than it says).
fn install(shared: &Shared, version: &Version, handler: Handler, source: LoadSource) {
    let settings = &version.settings;
    let (handler, unavailable) = match super::grant(
        &shared.config.host_id,
        &shared.resources,
        &version.name,
        &settings.grants,
        handler,
    ) {
        Ok(granted) => granted,
        Err(why) => return refuse(shared, version, &why),
    };
    let limit = match shared.handlers.get(&version.name) {
        Some(old) if old.concurrency == settings.concurrency => old.limit.clone(),
        _ => settings.concurrency.map(|n| Arc::new(Semaphore::new(n))),
    };
    let loaded = LoadedHandler {
        handler,
        memory: settings.memory,
        timeout: settings.timeout,
        fuel: settings.fuel,
        concurrency: settings.concurrency,
        limit,
        // Checked before loading (`load_version`).
        retry: settings.retry_policy().unwrap_or_default(),
        throttle: settings
            .throttle
            .as_deref()
            .and_then(|t| t.parse::<RateLimit>().ok()),
        version: version.label(),
        registry_version: Some(version.clone()),
        unavailable,
    };
    tracing::info!(handler = %version.name, version = %loaded.version, ?source, "handler version installed");
    shared.handlers.set(&version.name, Some(Arc::new(loaded)));
}

/// Refused for good: keep what runs now, and do not load it again each poll.
fn refuse(shared: &Shared, version: &Version, why: &str) {
    tracing::error!(handler = %version.name, version = version.version, "handler version refused on this host: {why}");
    refused_versions(shared).insert(version.name.clone(), version.clone());
}

/// Compiles `version` in a task of its own, which installs it (or refuses it) when done,
/// unless a newer version or shutdown superseded it meanwhile. A compile of an older version
/// of the same handler still under way is stopped.
fn start_compile(shared: &Arc<Shared>, version: &Version, bytes: Vec<u8>, source: LoadSource) {
    tracing::info!(handler = %version.name, version = version.version, "compiling a handler version");
    // Held until the task is registered, so the task cannot end before it is.
    let mut compiling = lock(&shared.compiling);
    let task = {
        let shared = shared.clone();
        let version = version.clone();
        tokio::spawn(async move {
            let loaded = match shared.compile_slots.clone().acquire_owned().await {
                Ok(_turn) => compile(&shared.runtime, shared.cache.as_ref(), bytes).await,
                Err(_) => return,
            };
            let mut compiling = lock(&shared.compiling);
            if compiling.get(&version.name).map(|c| &c.version) != Some(&version) {
                return;
            }
            match loaded {
                // A cached artifact refused at the lookup was deleted then: say so.
                Ok((handler, LoadSource::Compiled)) => install(&shared, &version, handler, source),
                Ok((handler, compiled)) => install(&shared, &version, handler, compiled),
                Err(err) => refuse(&shared, &version, &err.to_string()),
            }
            compiling.remove(&version.name);
        })
    };
    let previous = compiling.insert(
        version.name.clone(),
        Compiling {
            version: version.clone(),
            task: task.abort_handle(),
        },
    );
    if let Some(previous) = previous {
        previous.task.abort();
    }
}

enum Skip {
    /// Worth trying again at the next change or poll (Redis away).
    Retry(String),
    /// This version cannot run on this host.
    Refused(String),
}

/// A version that passed the checks of this host: found compiled in the cache, or its bytes
/// to compile.
enum Loaded {
    Ready(Handler, LoadSource),
    /// Its bytes, and whether the compile is a first one or replaces a refused artifact.
    Compile(Vec<u8>, LoadSource),
}

async fn load_version(shared: &Shared, version: &Version) -> Result<Loaded, Skip> {
    let settings = &version.settings;
    if settings.memory > shared.config.memory_budget {
        return Err(Skip::Refused(format!(
            "its memory cap ({}) is over this host's memory budget ({})",
            bytesize::ByteSize(settings.memory),
            bytesize::ByteSize(shared.config.memory_budget)
        )));
    }
    if settings.memory > shared.config.runtime.max_memory_per_instance {
        return Err(Skip::Refused(format!(
            "its memory cap ({}) is over this host's per-instance maximum ({})",
            bytesize::ByteSize(settings.memory),
            bytesize::ByteSize(shared.config.runtime.max_memory_per_instance)
        )));
    }
    if settings.fuel.is_some() && !shared.config.runtime.fuel {
        return Err(Skip::Refused(
            "it has a fuel budget and this host's runtime does not meter fuel".to_string(),
        ));
    }
    settings
        .retry_policy()
        .map_err(|e| Skip::Refused(format!("invalid retry policy: {e}")))?;
    let bytes = match shared.registry.component(&version.sha256).await {
        Ok(bytes) => bytes,
        Err(registry::RegistryError::Redis(err)) => return Err(Skip::Retry(err.to_string())),
        Err(other) => return Err(Skip::Refused(other.to_string())),
    };
    let Some(cache) = shared.cache.clone() else {
        return Ok(Loaded::Compile(bytes, LoadSource::Compiled));
    };
    let runtime = shared.runtime.clone();
    let cached = tokio::task::spawn_blocking(move || {
        runtime
            .load_cached(&bytes, &cache)
            .map(|found| match found {
                CacheLookup::Hit(handler) => Loaded::Ready(handler, LoadSource::Cached),
                CacheLookup::Miss(source) => Loaded::Compile(bytes, source),
            })
    })
    .await
    .map_err(|e| Skip::Retry(format!("loading did not finish: {e}")))?;
    cached.map_err(|e| Skip::Refused(e.to_string()))
}

/// Follows the registry until `stop`: on a change message, or when the epoch counter moved.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut synced: Option<u64>,
    mut stop: watch::Receiver<bool>,
) {
    let changed = Arc::new(Notify::new());
    let listener = tokio::spawn(listen(shared.registry.clone(), changed.clone()));
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = poll.tick() => {
                match shared.registry.epoch().await {
                    Ok(epoch) if Some(epoch) == synced => continue,
                    Ok(_) => {}
                    Err(err) => {
                        // Redis being away is reported by the fetchers and the heartbeat.
                        tracing::debug!(error = %crate::chain::ErrorChain(&err), "cannot read the registry's epoch");
                        continue;
                    }
                }
            }
            _ = stop.changed() => break,
        }
        if let Some(epoch) = sync(&shared).await {
            synced = Some(epoch);
        }
    }
    listener.abort();
    shared.stop_compiles();
}

/// Subscribes to the registry's change channel and signals `changed` on every message,
/// reconnecting with backoff when the connection drops.
async fn listen(registry: registry::Registry, changed: Arc<Notify>) {
    use futures_util::StreamExt;
    let mut backoff = Backoff::default();
    loop {
        // On a Redis Cluster this is one node's connection (any node hears every PUBLISH);
        // when that node dies the stream ends and the next subscription tries another.
        match registry.redis_target().subscribe(CHANGES_CHANNEL).await {
            Ok(mut messages) => {
                backoff.reset();
                // A change may have happened while we were not subscribed.
                changed.notify_one();
                while messages.next().await.is_some() {
                    changed.notify_one();
                }
            }
            Err(err) => tracing::debug!(error = %err, "registry change channel unavailable"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
