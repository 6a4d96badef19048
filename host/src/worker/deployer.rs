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
//!    memory budget) is logged once and skipped; the previous version, if any, stays.
//!
//! Compiling takes seconds for Python or JavaScript components; it runs on the blocking pool,
//! never on the threads that fetch, heartbeat and ack.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};

use super::{Backoff, HandlerSpec, LoadedHandler, Shared, WorkerError};
use crate::queue::RateLimit;
use crate::registry::{self, CHANGES_CHANNEL, Version};
use crate::runtime::{ArtifactCache, Handler, LoadError, LoadSource, Runtime};

/// How often the epoch counter is read when no change message arrives.
const POLL: Duration = Duration::from_secs(1);

/// Opens the artifact cache, or logs why there is none (only start-up time depends on it).
pub(crate) fn open_cache(dir: Option<&Path>) -> Option<Arc<ArtifactCache>> {
    let dir = dir?;
    match ArtifactCache::open(dir) {
        Ok(cache) => Some(Arc::new(cache)),
        Err(err) => {
            tracing::warn!(error = %err, "compiling handlers without a cache");
            None
        }
    }
}

/// Validates and compiles `bytes` on the blocking pool, through the cache.
async fn compile(
    runtime: &Runtime,
    cache: Option<&Arc<ArtifactCache>>,
    bytes: Vec<u8>,
) -> Result<(Handler, LoadSource), LoadError> {
    let runtime = runtime.clone();
    let cache = cache.cloned();
    tokio::task::spawn_blocking(move || runtime.load_with_cache(&bytes, cache.as_deref()))
        .await
        .unwrap_or_else(|e| Err(LoadError::Invalid(format!("compiling did not finish: {e}"))))
}

/// Loads a handler given on this host's command line or config file.
pub(crate) async fn load_local(
    runtime: &Runtime,
    cache: Option<&Arc<ArtifactCache>>,
    spec: &HandlerSpec,
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
    tracing::info!(handler = %spec.name, path = %spec.path.display(), ?source, "handler loaded from a local file");
    Ok(LoadedHandler::local(spec, handler, &sha))
}

/// Brings the handler table in line with the registry. Returns the epoch it synced to, or
/// `None` if the registry could not be read (try again later).
pub(crate) async fn sync(shared: &Shared) -> Option<u64> {
    let epoch = match shared.registry.epoch().await {
        Ok(epoch) => epoch,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the handler registry; will retry");
            return None;
        }
    };
    let current = match shared.registry.current().await {
        Ok(current) => current,
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the handler registry; will retry");
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
        // Refused before: logged then, and nothing has changed since.
        if same || refused_versions(shared).get(name) == Some(version) {
            continue;
        }
        match load_version(shared, version, installed.as_deref()).await {
            Ok((loaded, source)) => {
                tracing::info!(handler = %name, version = %loaded.version, ?source, "handler version installed");
                shared.handlers.set(name, Some(Arc::new(loaded)));
            }
            Err(Skip::Retry(why)) => {
                tracing::warn!(handler = %name, version = version.version, "cannot load this version yet: {why}");
                complete = false;
            }
            Err(Skip::Refused(why)) => {
                // Refused for good: keep what runs now, and do not compile it again each poll.
                tracing::error!(handler = %name, version = version.version, "handler version refused on this host: {why}");
                let mut refused = refused_versions(shared);
                refused.insert(name.clone(), version.clone());
            }
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
    complete.then_some(epoch)
}

fn refused_versions(shared: &Shared) -> std::sync::MutexGuard<'_, HashMap<String, Version>> {
    shared
        .refused
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

enum Skip {
    /// Worth trying again at the next change or poll (Redis away).
    Retry(String),
    /// This version cannot run on this host.
    Refused(String),
}

async fn load_version(
    shared: &Shared,
    version: &Version,
    installed: Option<&LoadedHandler>,
) -> Result<(LoadedHandler, LoadSource), Skip> {
    if refused_versions(shared).get(&version.name) == Some(version) {
        return Err(Skip::Refused("refused before".to_string()));
    }
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
    let retry = settings
        .retry_policy()
        .map_err(|e| Skip::Refused(format!("invalid retry policy: {e}")))?;
    let bytes = match shared.registry.component(&version.sha256).await {
        Ok(bytes) => bytes,
        Err(registry::RegistryError::Redis(err)) => return Err(Skip::Retry(err.to_string())),
        Err(other) => return Err(Skip::Refused(other.to_string())),
    };
    let (handler, source) = compile(&shared.runtime, shared.cache.as_ref(), bytes)
        .await
        .map_err(|e| Skip::Refused(e.to_string()))?;
    // The same limit carries over, so a deploy never lets more jobs run at once than it says.
    let limit = match installed {
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
        retry,
        throttle: settings
            .throttle
            .as_deref()
            .and_then(|t| t.parse::<RateLimit>().ok()),
        version: version.label(),
        registry_version: Some(version.clone()),
    };
    Ok((loaded, source))
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
                        tracing::debug!(error = %err, "cannot read the registry's epoch");
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
