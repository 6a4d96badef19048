//! The handler registry: handler components stored in Redis as data, so that every host picks
//! up a deploy without a restart.
//!
//! - Component bytes are stored once, content-addressed by their SHA-256
//!   (`wasmq:{@registry}:blob:<sha256>`), whatever handlers and versions use them.
//! - A handler name points at a numbered version (1, 2, ...) with its limits and retry policy
//!   ([`HandlerSettings`]); a deploy makes a new version current, a rollback points back at an
//!   older one, a removal forgets the handler (and the components nobody else uses).
//! - Every change bumps an epoch counter and is published on a channel; hosts subscribe, and
//!   poll the counter each second as a fallback ([`Registry::epoch`], [`CHANGES_CHANNEL`]).
//!
//! Lifecycle of a deploy ([`Registry::deploy`]):
//! 1. Validate before anything is written: the size limit, then the bytes through the host's
//!    runtime (a component implementing `wasmq:job/handler`, compiling under the host's engine
//!    settings, in a child process within the compile memory and time limits). Invalid
//!    uploads, and those over either limit, change nothing.
//! 2. Upload the bytes in chunks to a temporary key (skipped when the component is already
//!    stored), reporting progress.
//! 3. One script (`deploy.lua`) checks the upload's size, moves it to its content address, and
//!    records the new version as current, atomically.
//!
//! All registry keys share the hash tag `{@registry}` (`@` cannot appear in a queue name, so no
//! queue's keys can collide), so the registry lives on one Redis Cluster slot.
//!
//! **Invariant:** hosts load a component only after checking that its SHA-256 is the one the
//! version names.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::capability::Grants;
use crate::connection::{ConnectOptions, RedisConnection, RedisTarget};
use crate::queue::{Backoff, MAX_ATTEMPTS, MAX_NAME_LEN, RetryPolicy, validate_handler_name};
use crate::runtime::{LoadError, Runtime};

/// Largest component a deploy accepts unless the registry's `max_upload_bytes` says otherwise.
pub const DEFAULT_MAX_UPLOAD: u64 = 64 * 1024 * 1024;

/// Hosts subscribe here; every change publishes `"<epoch> <handler name>"`.
pub const CHANGES_CHANNEL: &str = "wasmq:{@registry}:changes";

const BASE: &str = "wasmq:{@registry}:";
const UPLOAD_CHUNK: usize = 1024 * 1024;
/// An upload abandoned half-way (a killed CLI) disappears after this long.
const UPLOAD_TTL_SECS: i64 = 3600;

static DEPLOY: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("scripts/deploy.lua")));
static ROLLBACK: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("scripts/rollback.lua")));
static REMOVE: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("scripts/remove.lua")));

/// Why a registry operation did nothing.
/// A handler's per-instance memory cap when its deploy (or `--handler` flag) names none.
pub const DEFAULT_HANDLER_MEMORY: u64 = 64 * 1024 * 1024;
/// A handler's attempt deadline when its deploy (or `--handler` flag) names none.
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// Event names (what a subscription names and `events::send` takes): 1 to 128 ASCII letters, digits and `-_.:/` (e.g. `order/created`).
pub fn validate_event_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "event name must be 1 to {MAX_NAME_LEN} bytes long, got {}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/')))
    {
        return Err(format!(
            "event name {name:?} contains {bad:?}; use ASCII letters, digits, '-', '_', '.', ':', '/'"
        ));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("redis request failed")]
    Redis(#[from] redis::RedisError),
    #[error("invalid handler: {0}")]
    Invalid(String),
    #[error("the component is {size} bytes, over the registry's upload limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("the component was refused: {0}")]
    Refused(#[source] LoadError),
    #[error("no handler named {0:?}")]
    NoHandler(String),
    #[error("{0}")]
    NoVersion(String),
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// A handler's limits and retry policy, as deployed. Applied on every host that runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerSettings {
    /// Per-instance memory cap; also what a running job holds of a host's memory budget.
    pub memory: u64,
    /// Default deadline of an attempt (a job's own timeout wins).
    pub timeout: Duration,
    /// CPU budget per attempt, in fuel units.
    pub fuel: Option<u64>,
    /// Attempts in total for jobs of this handler that do not set their own (see
    /// [`crate::queue::RetryPolicy`]).
    pub max_attempts: Option<u32>,
    /// Backoff between attempts (`exponential:1s`, `exponential:1s:10m`, `fixed:2s`).
    pub backoff: Option<String>,
    /// Most jobs of this handler running at once per host.
    pub concurrency: Option<usize>,
    /// Most starts of this handler's jobs per period per key (the job's group), in each
    /// queue: `N/period`, like `10/1m` (see docs/workflows.md, "Throttle").
    pub throttle: Option<String>,
    /// Event names this handler is subscribed to: `wasmq event send <name>` enqueues one job
    /// of it per event (see [`crate::events`]).
    pub on: Vec<String>,
    /// The queue those jobs go to [default: `default`].
    pub on_queue: Option<String>,
    /// What the handler may reach outside its sandbox (docs/capabilities.md): stored with
    /// the version, so a rollback restores the grants it was deployed with.
    pub grants: Grants,
}

impl Default for HandlerSettings {
    fn default() -> Self {
        Self {
            memory: DEFAULT_HANDLER_MEMORY,
            timeout: DEFAULT_HANDLER_TIMEOUT,
            fuel: None,
            max_attempts: None,
            backoff: None,
            concurrency: None,
            throttle: None,
            on: Vec::new(),
            on_queue: None,
            grants: Grants::default(),
        }
    }
}

impl HandlerSettings {
    /// The retry policy these settings give the handler's jobs. Fails only for a backoff that
    /// does not parse, which [`HandlerSettings::validate`] refuses at deploy.
    pub fn retry_policy(&self) -> Result<RetryPolicy, String> {
        Ok(RetryPolicy {
            max_attempts: self.max_attempts,
            backoff: self.backoff.as_deref().map(str::parse).transpose()?,
        })
    }

    /// Checks the settings on their own (the runtime's maxima are checked by hosts).
    pub fn validate(&self) -> Result<(), String> {
        if self.memory < 64 * 1024 {
            return Err("memory must be at least 64KiB (one WebAssembly page)".to_string());
        }
        // Hosts all run the runtime's default per-instance maximum (a 32-bit memory's 4GiB):
        // a cap above it could never run anywhere, and every host would refuse the version.
        let most = crate::runtime::RuntimeConfig::default().max_memory_per_instance;
        if self.memory > most {
            return Err(format!(
                "memory {} is over the most a host runs one instance with ({}, the largest \
                 32-bit WebAssembly memory)",
                bytesize::ByteSize(self.memory),
                bytesize::ByteSize(most)
            ));
        }
        if self.timeout.is_zero() {
            return Err("timeout must be more than 0".to_string());
        }
        if self.fuel == Some(0) {
            return Err("fuel must be at least 1".to_string());
        }
        if let Some(n) = self.max_attempts
            && !(1..=MAX_ATTEMPTS).contains(&n)
        {
            return Err(format!(
                "max attempts must be in 1..={MAX_ATTEMPTS}, got {n}"
            ));
        }
        if let Some(text) = &self.backoff {
            text.parse::<Backoff>()?;
        }
        if self.concurrency == Some(0) {
            return Err("concurrency must be at least 1".to_string());
        }
        if let Some(text) = &self.throttle {
            text.parse::<crate::queue::RateLimit>()
                .map_err(|err| format!("throttle: {err}"))?;
        }
        for event in &self.on {
            validate_event_name(event)?;
        }
        if let Some(queue) = &self.on_queue {
            if self.on.is_empty() {
                return Err("an event queue needs at least one event to subscribe to".to_string());
            }
            crate::queue::validate_queue_name(queue)?;
        }
        self.grants.validate()
    }
}

/// One deployed version of a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub name: String,
    /// 1 for the first deploy of the name, then 2, 3...; a rollback makes no new number.
    pub version: u64,
    /// SHA-256 of the component, hex: its address in the registry.
    pub sha256: String,
    pub size: u64,
    pub settings: HandlerSettings,
    /// When it was deployed, Unix ms on the Redis server's clock.
    pub deployed_at_ms: u64,
}

impl Version {
    /// How jobs record the version they ran: `"<version>:<first 12 hex of the sha256>"`.
    pub fn label(&self) -> String {
        format!(
            "{}:{}",
            self.version,
            &self.sha256[..12.min(self.sha256.len())]
        )
    }
}

/// The JSON form of a version, as stored (docs/registry.md).
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    name: String,
    sha256: String,
    size: u64,
    memory: u64,
    timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fuel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backoff: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    concurrency: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    throttle: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    on: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_queue: Option<String>,
    /// Written only when there are grants, so records of older versions read the same.
    #[serde(default, skip_serializing_if = "Grants::is_empty")]
    grants: Grants,
    #[serde(default, skip_serializing)]
    version: u64,
    #[serde(default, skip_serializing)]
    deployed_at_ms: u64,
}

impl Record {
    /// The JSON a version's hash keeps of a deploy (`deploy.lua` adds the version number and
    /// the time).
    fn encode(name: &str, sha: &str, size: u64, settings: &HandlerSettings) -> Result<String> {
        serde_json::to_string(&Record {
            name: name.to_string(),
            sha256: sha.to_string(),
            size,
            memory: settings.memory,
            timeout_ms: u64::try_from(settings.timeout.as_millis()).unwrap_or(u64::MAX),
            fuel: settings.fuel,
            max_attempts: settings.max_attempts,
            backoff: settings.backoff.clone(),
            concurrency: settings.concurrency,
            throttle: settings.throttle.clone(),
            on: settings.on.clone(),
            on_queue: settings.on_queue.clone(),
            grants: settings.grants.clone(),
            version: 0,
            deployed_at_ms: 0,
        })
        .map_err(|e| RegistryError::Invalid(e.to_string()))
    }

    fn decode(text: &str) -> Result<Version> {
        let r: Record = serde_json::from_str(text)
            .map_err(|e| RegistryError::Corrupt(format!("version record {text:?}: {e}")))?;
        if r.sha256.len() != 64 || !r.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RegistryError::Corrupt(format!(
                "version record of {} has a bad sha256 {:?}",
                r.name, r.sha256
            )));
        }
        Ok(Version {
            name: r.name,
            version: r.version,
            sha256: r.sha256,
            size: r.size,
            settings: HandlerSettings {
                memory: r.memory,
                timeout: Duration::from_millis(r.timeout_ms),
                fuel: r.fuel,
                max_attempts: r.max_attempts,
                backoff: r.backoff,
                concurrency: r.concurrency,
                throttle: r.throttle,
                on: r.on,
                on_queue: r.on_queue,
                grants: r.grants,
            },
            deployed_at_ms: r.deployed_at_ms,
        })
    }
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn key(suffix: &str) -> String {
    format!("{BASE}{suffix}")
}

fn handler_key(name: &str) -> String {
    key(&format!("handler:{name}"))
}

fn blob_key(sha: &str) -> String {
    key(&format!("blob:{sha}"))
}

/// Maps the scripts' `WASMQ_*` error replies to typed errors.
fn script_error(err: redis::RedisError) -> RegistryError {
    let detail = err.detail().unwrap_or_default().to_string();
    match err.code() {
        Some("WASMQ_TOO_LARGE") => {
            let mut parts = detail.split(' ').map(|p| p.parse().unwrap_or(0));
            RegistryError::TooLarge {
                size: parts.next().unwrap_or(0),
                limit: parts.next().unwrap_or(0),
            }
        }
        Some("WASMQ_NO_HANDLER") => RegistryError::NoHandler(detail),
        Some("WASMQ_NO_VERSION") => RegistryError::NoVersion(detail),
        Some("WASMQ_CORRUPT") => RegistryError::Corrupt(detail),
        _ => RegistryError::Redis(err),
    }
}

/// Progress of an upload: bytes sent so far, of the total.
pub trait UploadProgress {
    fn sent(&mut self, bytes: u64, total: u64);
}

impl<F: FnMut(u64, u64)> UploadProgress for F {
    fn sent(&mut self, bytes: u64, total: u64) {
        self(bytes, total)
    }
}

/// The registry client: what `wasmq handler ...`, hosts and the HTTP API use.
#[derive(Clone)]
pub struct Registry {
    redis: RedisTarget,
    conn: RedisConnection,
}

impl Registry {
    pub async fn connect(url: &str) -> Result<Registry> {
        let redis = RedisTarget::open(url)?;
        let conn = redis.connect(ConnectOptions::default()).await?;
        Ok(Registry { redis, conn })
    }

    /// Where the registry is, for a pub/sub connection of its own.
    pub fn redis_target(&self) -> &RedisTarget {
        &self.redis
    }

    /// The upload limit in force (set with [`Registry::set_max_upload`]).
    pub async fn max_upload(&self) -> Result<u64> {
        let mut conn = self.conn.clone();
        let limit: Option<u64> = conn.hget(key("config"), "max_upload_bytes").await?;
        Ok(limit.unwrap_or(DEFAULT_MAX_UPLOAD))
    }

    pub async fn set_max_upload(&self, bytes: u64) -> Result<()> {
        if bytes == 0 {
            return Err(RegistryError::Invalid(
                "the upload limit must be at least 1 byte".to_string(),
            ));
        }
        let mut conn = self.conn.clone();
        let () = conn.hset(key("config"), "max_upload_bytes", bytes).await?;
        Ok(())
    }

    /// Validates `bytes` as a handler under `runtime`'s engine settings, stores it and makes it
    /// the current version of `name`. Nothing is written unless every check passes.
    pub async fn deploy(
        &self,
        runtime: &Runtime,
        name: &str,
        bytes: Vec<u8>,
        settings: &HandlerSettings,
        mut progress: impl UploadProgress,
    ) -> Result<Version> {
        let size = bytes.len() as u64;
        self.check_deploy(runtime, name, settings, size).await?;
        // Compiling takes seconds for big components, and as long and as much memory as a
        // hostile one asks for: in a child process under the runtime's compile limits when it
        // has a compiler program, and off the async threads either way.
        let bytes = bytes::Bytes::from(bytes);
        runtime
            .load_async(bytes.clone(), None)
            .await
            .map_err(RegistryError::Refused)?;

        let sha = sha256_hex(&bytes);
        let record = Record::encode(name, &sha, size, settings)?;
        let (version, deployed_at_ms) = self
            .record_version(name, &sha, &bytes, &record, &mut progress)
            .await?;
        Ok(Version {
            name: name.to_string(),
            version,
            sha256: sha,
            size,
            settings: settings.clone(),
            deployed_at_ms,
        })
    }

    /// The checks a deploy passes before compiling: the name, the settings (a fuel budget
    /// needs a runtime with fuel metering) and the upload limit.
    async fn check_deploy(
        &self,
        runtime: &Runtime,
        name: &str,
        settings: &HandlerSettings,
        size: u64,
    ) -> Result<()> {
        validate_handler_name(name).map_err(RegistryError::Invalid)?;
        settings.validate().map_err(RegistryError::Invalid)?;
        if settings.fuel.is_some() && !runtime.config().fuel {
            return Err(RegistryError::Invalid(
                "a fuel budget needs a runtime with fuel metering".to_string(),
            ));
        }
        let limit = self.max_upload().await?;
        if size > limit {
            return Err(RegistryError::TooLarge { size, limit });
        }
        Ok(())
    }

    /// Uploads the component unless its blob is stored already, then records `record` as the
    /// next version of `name` (`deploy.lua`). Returns the version and when it was deployed.
    async fn record_version(
        &self,
        name: &str,
        sha: &str,
        bytes: &[u8],
        record: &str,
        progress: &mut impl UploadProgress,
    ) -> Result<(u64, u64)> {
        let size = bytes.len() as u64;
        let mut conn = self.conn.clone();
        let stored: bool = conn.exists(blob_key(sha)).await?;
        // The blob may vanish between the check and the script (a concurrent remove): then
        // upload after all and try once more.
        for upload in [!stored, true] {
            let upload_key = key(&format!("upload:{:032x}", rand::random::<u128>()));
            if upload {
                self.upload(&upload_key, bytes, progress).await?;
            } else {
                progress.sent(size, size);
            }
            let reply: redis::RedisResult<(u64, u64, u64)> = DEPLOY
                .key(handler_key(name))
                .key(key("current"))
                .key(key("epoch"))
                .key(blob_key(sha))
                .key(&upload_key)
                .key(key("refs"))
                .key(key("config"))
                .arg(name)
                .arg(sha)
                .arg(size)
                .arg(record)
                .arg(CHANGES_CHANNEL)
                .arg(DEFAULT_MAX_UPLOAD)
                .invoke_async(&mut conn)
                .await;
            match reply {
                Ok((version, deployed_at_ms, _epoch)) => return Ok((version, deployed_at_ms)),
                Err(err) if err.code() == Some("WASMQ_NO_UPLOAD") && !upload => continue,
                Err(err) => return Err(script_error(err)),
            }
        }
        Err(RegistryError::Corrupt(
            "the uploaded component disappeared before it was recorded".to_string(),
        ))
    }

    async fn upload(
        &self,
        upload_key: &str,
        bytes: &[u8],
        progress: &mut impl UploadProgress,
    ) -> Result<()> {
        let mut conn = self.conn.clone();
        let total = bytes.len() as u64;
        let mut sent = 0u64;
        progress.sent(0, total);
        for chunk in bytes.chunks(UPLOAD_CHUNK) {
            let () = redis::pipe()
                .append(upload_key, chunk)
                .ignore()
                .expire(upload_key, UPLOAD_TTL_SECS)
                .ignore()
                .query_async(&mut conn)
                .await?;
            sent += chunk.len() as u64;
            progress.sent(sent, total);
        }
        Ok(())
    }

    /// The current version of every handler.
    pub async fn current(&self) -> Result<BTreeMap<String, Version>> {
        let mut conn = self.conn.clone();
        let all: BTreeMap<String, String> = conn.hgetall(key("current")).await?;
        all.into_iter()
            .map(|(name, record)| Ok((name, Record::decode(&record)?)))
            .collect()
    }

    /// Every version of `name`, oldest first, and the number of the current one.
    pub async fn versions(&self, name: &str) -> Result<(u64, Vec<Version>)> {
        let mut conn = self.conn.clone();
        let fields: BTreeMap<String, String> = conn.hgetall(handler_key(name)).await?;
        if fields.is_empty() {
            return Err(RegistryError::NoHandler(name.to_string()));
        }
        let current = fields
            .get("current")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut versions = fields
            .iter()
            .filter(|(field, _)| field.starts_with("v:"))
            .map(|(_, record)| Record::decode(record))
            .collect::<Result<Vec<_>>>()?;
        versions.sort_by_key(|v| v.version);
        Ok((current, versions))
    }

    /// Makes `version` (or, with `None`, the newest version older than the current one) the
    /// current version of `name` again.
    pub async fn rollback(&self, name: &str, version: Option<u64>) -> Result<Version> {
        let mut conn = self.conn.clone();
        let (record, _epoch): (String, u64) = ROLLBACK
            .key(handler_key(name))
            .key(key("current"))
            .key(key("epoch"))
            .arg(name)
            .arg(version.map(|v| v.to_string()).unwrap_or_default())
            .arg(CHANGES_CHANNEL)
            .invoke_async(&mut conn)
            .await
            .map_err(script_error)?;
        Record::decode(&record)
    }

    /// Forgets `name` and all its versions. Returns how many versions there were (0: no such
    /// handler). Jobs already running finish; hosts stop starting new ones.
    pub async fn remove(&self, name: &str) -> Result<u64> {
        let mut conn = self.conn.clone();
        let removed: u64 = REMOVE
            .key(handler_key(name))
            .key(key("current"))
            .key(key("epoch"))
            .key(key("refs"))
            .arg(name)
            .arg(CHANGES_CHANNEL)
            .arg(key("blob:"))
            .invoke_async(&mut conn)
            .await
            .map_err(script_error)?;
        Ok(removed)
    }

    /// The bytes of a stored component, checked against its address.
    pub async fn component(&self, sha256: &str) -> Result<Vec<u8>> {
        let mut conn = self.conn.clone();
        let bytes: Option<Vec<u8>> = conn.get(blob_key(sha256)).await?;
        let bytes = bytes
            .ok_or_else(|| RegistryError::Corrupt(format!("component {sha256} is not stored")))?;
        let actual = sha256_hex(&bytes);
        if actual != sha256 {
            return Err(RegistryError::Corrupt(format!(
                "component {sha256} has the SHA-256 {actual}"
            )));
        }
        Ok(bytes)
    }

    /// The change counter: different from the last value seen means something changed.
    pub async fn epoch(&self) -> Result<u64> {
        let mut conn = self.conn.clone();
        let epoch: Option<u64> = conn.get(key("epoch")).await?;
        Ok(epoch.unwrap_or(0))
    }
}
