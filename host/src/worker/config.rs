//! Worker settings and where they come from: command-line flags, then `WASMQ_*` environment
//! variables, then a TOML file (`--config`), then defaults, in that precedence. The flags and
//! the environment are clap's business (each flag names its variable); this module merges the
//! result with the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::capability::{Grants, HttpLimitOverrides};
use crate::queue::RateLimit;
use crate::runtime::RuntimeConfig;
use crate::units::{parse_bytes, parse_duration};

/// Limits and concurrency of one handler on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerSpec {
    pub name: String,
    pub path: PathBuf,
    /// Per-instance memory cap; also what a running job holds of the host's memory budget.
    pub memory: u64,
    /// Default deadline of an attempt (a job's own timeout wins).
    pub timeout: Duration,
    /// CPU budget per attempt in fuel units.
    pub fuel: Option<u64>,
    /// Most jobs of this handler running at once on this host.
    pub concurrency: Option<usize>,
    /// Most starts of this handler's jobs per window per key (the job's group), per queue.
    pub throttle: Option<RateLimit>,
    /// What it may reach outside its sandbox (docs/capabilities.md).
    pub grants: Grants,
}

/// Everything `wasmq run` needs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub redis_url: String,
    pub queues: Vec<String>,
    pub handlers: Vec<HandlerSpec>,
    /// Most jobs running at once on this host.
    pub concurrency: usize,
    /// Sum of the memory caps of the jobs running at once.
    pub memory_budget: u64,
    /// Most jobs running at once per queue (queues not listed: no limit beyond the host's).
    pub queue_concurrency: BTreeMap<String, usize>,
    /// How long in-flight jobs may run on after SIGTERM/SIGINT.
    pub grace: Duration,
    /// Lease length; heartbeats renew it every third of it.
    pub lease: Duration,
    /// Most jobs one fetch leases.
    pub batch: usize,
    /// Most jobs a slot leases ahead of the one it runs, when its jobs are short (see
    /// `worker::executor`); 0 turns leasing ahead off.
    pub prefetch: usize,
    /// A slot leases ahead only while its jobs take less than this; jobs leased ahead go back
    /// to the queue if the one before them runs ten times as long.
    pub prefetch_below: Duration,
    /// How long an idle fetcher blocks waiting for a wake-up before it fetches anyway.
    pub idle_wait: Duration,
    /// This host's name in leases and attempt history.
    pub host_id: String,
    /// Where compiled handlers are kept across restarts (`None`: compile at every start).
    pub cache_dir: Option<PathBuf>,
    /// A directory of secret files, one per secret named after it, read after the
    /// `WASMQ_SECRET_<NAME>` variables (docs/capabilities.md).
    pub secrets_dir: Option<PathBuf>,
    /// Most registry handlers compiled at once; each compile may take `runtime.compile`'s
    /// memory and time.
    pub compile_concurrency: usize,
    /// Deepest generation of child jobs: a job at this depth (a child of a child of ...,
    /// counted from the producer's job at 0) may enqueue no children (docs/workflows.md).
    pub max_child_depth: u32,
    pub runtime: RuntimeConfig,
}

/// Most jobs a slot may lease ahead of the one it runs.
pub const MAX_PREFETCH: usize = 256;

pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
pub use crate::registry::{DEFAULT_HANDLER_MEMORY, DEFAULT_HANDLER_TIMEOUT};
/// Default of [`WorkerConfig::compile_concurrency`].
pub const DEFAULT_COMPILE_CONCURRENCY: usize = 2;
/// Default of [`WorkerConfig::max_child_depth`].
pub const DEFAULT_MAX_CHILD_DEPTH: u32 = 16;

impl WorkerConfig {
    /// A configuration with defaults for everything but the queues and handlers.
    pub fn new(redis_url: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            queues: vec!["default".to_string()],
            handlers: Vec::new(),
            concurrency: 64,
            memory_budget: 4 * 1024 * 1024 * 1024,
            queue_concurrency: BTreeMap::new(),
            grace: Duration::from_secs(30),
            lease: Duration::from_secs(30),
            batch: 64,
            prefetch: 16,
            prefetch_below: Duration::from_millis(1),
            idle_wait: Duration::from_secs(1),
            host_id: default_host_id(),
            cache_dir: default_cache_dir(),
            secrets_dir: None,
            compile_concurrency: DEFAULT_COMPILE_CONCURRENCY,
            max_child_depth: DEFAULT_MAX_CHILD_DEPTH,
            runtime: host_runtime(),
        }
    }

    /// Checks what can be checked before connecting to anything.
    pub fn validate(&self) -> Result<(), String> {
        if self.queues.is_empty() {
            return Err("no queues to serve: give --queues".to_string());
        }
        for q in &self.queues {
            crate::queue::validate_queue_name(q).map_err(|e| format!("queue {q:?}: {e}"))?;
        }
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".to_string());
        }
        if self.compile_concurrency == 0 {
            return Err("compile concurrency must be at least 1".to_string());
        }
        if self.runtime.max_job_step_bytes < 1024 {
            return Err("max_job_step_bytes must be at least 1KiB".to_string());
        }
        if self.lease < Duration::from_millis(300) {
            return Err("the lease must be at least 300ms".to_string());
        }
        if self.batch == 0 || self.batch > crate::queue::MAX_BULK {
            return Err(format!("batch must be in 1..={}", crate::queue::MAX_BULK));
        }
        if self.prefetch > MAX_PREFETCH {
            return Err(format!("prefetch must be in 0..={MAX_PREFETCH}"));
        }
        for h in &self.handlers {
            if h.memory > self.memory_budget {
                return Err(format!(
                    "handler {}: its memory cap ({}) is over the host's memory budget ({}), so it could never run",
                    h.name,
                    bytesize::ByteSize(h.memory),
                    bytesize::ByteSize(self.memory_budget)
                ));
            }
            if h.fuel.is_some() && !self.runtime.fuel {
                return Err(format!(
                    "handler {}: a fuel budget needs fuel metering, which this host's runtime has off",
                    h.name
                ));
            }
            if h.memory > self.runtime.max_memory_per_instance {
                return Err(format!(
                    "handler {}: its memory cap is over the runtime's per-instance maximum",
                    h.name
                ));
            }
        }
        Ok(())
    }
}

/// The engine settings of a host, and what `wasmq handler deploy` validates under: fuel
/// metering on, so that a deployed handler's fuel budget is honoured whatever host runs it,
/// and every host compiles alike (one artifact cache key, one validation).
pub fn host_runtime() -> RuntimeConfig {
    RuntimeConfig {
        fuel: true,
        ..RuntimeConfig::default()
    }
}

/// `$XDG_CACHE_HOME/wasmq/artifacts`, else `$HOME/.cache/wasmq/artifacts`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        })?;
    Some(base.join("wasmq").join("artifacts"))
}

fn default_host_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "host".to_string());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// The TOML file, every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub redis: Option<String>,
    pub queues: Option<Vec<String>>,
    pub concurrency: Option<usize>,
    pub memory_budget: Option<String>,
    pub grace: Option<String>,
    pub lease: Option<String>,
    pub batch: Option<usize>,
    pub prefetch: Option<usize>,
    pub prefetch_below: Option<String>,
    pub host_id: Option<String>,
    pub cache_dir: Option<PathBuf>,
    /// `--secrets-dir`.
    pub secrets_dir: Option<PathBuf>,
    pub compile_memory: Option<String>,
    pub compile_timeout: Option<String>,
    pub compile_concurrency: Option<usize>,
    /// `--max-job-step-bytes`.
    pub max_job_step_bytes: Option<String>,
    pub max_child_depth: Option<u32>,
    #[serde(default)]
    pub handlers: BTreeMap<String, FileHandler>,
    #[serde(default)]
    pub queue: BTreeMap<String, FileQueue>,
    /// `text` or `json` (see `wasmq run --log-format`).
    pub log_format: Option<String>,
    /// Alerts: webhook, Slack, e-mail, digests (see docs/alerts.md).
    pub alerts: Option<crate::alerts::FileAlerts>,
    /// Serve the HTTP API here too (`wasmq run --http`).
    pub http: Option<std::net::SocketAddr>,
    /// The HTTP API's bearer token (`--api-token`); keep the file private.
    pub api_token: Option<String>,
    /// `--http-header-timeout`.
    pub http_header_timeout: Option<String>,
    /// `--http-max-connections`.
    pub http_max_connections: Option<usize>,
    /// OpenTelemetry export (docs/observability.md); the `OTEL_*` variables win.
    pub tracing: Option<crate::telemetry::FileTracing>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHandler {
    pub path: Option<PathBuf>,
    pub memory: Option<String>,
    pub timeout: Option<String>,
    pub fuel: Option<u64>,
    pub concurrency: Option<usize>,
    /// `N/period`, like `10/1m`.
    pub throttle: Option<String>,
    /// Outbound HTTP patterns (docs/capabilities.md).
    #[serde(default)]
    pub allow_outbound: Vec<String>,
    /// Plain config values.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Names of secrets, resolved by this host.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Outbound HTTP limits as `NAME=VALUE`, like `["requests=10", "response_body=1MiB"]`.
    #[serde(default)]
    pub http_limits: Vec<String>,
    /// Key-value buckets, like `["cache", "marks:ttl=7d"]`.
    #[serde(default)]
    pub kv: Vec<String>,
    /// Postgres databases, like `{ main = "secret:APP_DB_URL" }`.
    #[serde(default)]
    pub databases: BTreeMap<String, String>,
    /// Where child jobs may go besides the job's queue, like `["payments/charge", "mail/*"]`.
    #[serde(default)]
    pub may_enqueue: Vec<String>,
    /// As `may_enqueue`, keeping the child ids the handler gives as they are.
    #[serde(default)]
    pub may_enqueue_raw_ids: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileQueue {
    pub concurrency: Option<usize>,
}

impl FileConfig {
    /// Reads a TOML file; relative handler paths are taken relative to the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut file: FileConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for handler in file.handlers.values_mut() {
            if let Some(p) = &handler.path
                && p.is_relative()
            {
                handler.path = Some(base.join(p));
            }
        }
        Ok(file)
    }
}

/// Parses `NAME=path.wasm`; NAME must be a valid handler name (what jobs name).
pub fn parse_handler_flag(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            crate::queue::validate_handler_name(name)?;
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!("{text:?}: expected NAME=path.wasm")),
    }
}

/// Builds the handler list: handlers of the file, with `--handler` flags overriding paths (and
/// adding handlers the file does not name); limits come from the file or the defaults.
pub fn merge_handlers(
    flags: &[(String, PathBuf)],
    file: &BTreeMap<String, FileHandler>,
) -> Result<Vec<HandlerSpec>, String> {
    let mut names: Vec<&String> = file.keys().collect();
    for (name, _) in flags {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let mut out = Vec::new();
    for name in names {
        crate::queue::validate_handler_name(name)
            .map_err(|reason| format!("[handlers]: {reason}"))?;
        let from_file = file.get(name);
        let path = flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .or_else(|| from_file.and_then(|f| f.path.clone()))
            .ok_or_else(|| format!("handler {name}: no path (give --handler {name}=path.wasm)"))?;
        let memory = match from_file.and_then(|f| f.memory.as_deref()) {
            Some(m) => parse_bytes(&format!("handler {name} memory"), m)?,
            None => DEFAULT_HANDLER_MEMORY,
        };
        let timeout = match from_file.and_then(|f| f.timeout.as_deref()) {
            Some(t) => parse_duration(&format!("handler {name} timeout"), t)?,
            None => DEFAULT_HANDLER_TIMEOUT,
        };
        let throttle = match from_file.and_then(|f| f.throttle.as_deref()) {
            Some(t) => Some(
                t.parse::<RateLimit>()
                    .map_err(|err| format!("handler {name} throttle: {err}"))?,
            ),
            None => None,
        };
        let grants = Grants {
            allow_outbound: from_file
                .map(|f| f.allow_outbound.clone())
                .unwrap_or_default(),
            config: from_file.map(|f| f.config.clone()).unwrap_or_default(),
            secrets: from_file.map(|f| f.secrets.clone()).unwrap_or_default(),
            http_limits: HttpLimitOverrides::parse_all(
                from_file.map_or(&[][..], |f| f.http_limits.as_slice()),
            )
            .map_err(|why| format!("handler {name}: {why}"))?,
            kv: from_file.map(|f| f.kv.clone()).unwrap_or_default(),
            databases: from_file.map(|f| f.databases.clone()).unwrap_or_default(),
            may_enqueue: from_file.map(|f| f.may_enqueue.clone()).unwrap_or_default(),
            may_enqueue_raw_ids: from_file
                .map(|f| f.may_enqueue_raw_ids.clone())
                .unwrap_or_default(),
        };
        grants
            .validate()
            .map_err(|why| format!("handler {name}: {why}"))?;
        out.push(HandlerSpec {
            grants,
            name: name.clone(),
            path,
            memory,
            timeout,
            fuel: from_file.and_then(|f| f.fuel),
            concurrency: from_file.and_then(|f| f.concurrency),
            throttle,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_paths_and_file_sets_limits() {
        let file: FileConfig = toml::from_str(
            r#"
            queues = ["a"]
            [handlers.echo]
            path = "/srv/echo.wasm"
            memory = "32MiB"
            timeout = "5s"
            concurrency = 2
            [handlers.other]
            path = "/srv/other.wasm"
            "#,
        )
        .unwrap();
        let flags = vec![
            ("echo".to_string(), PathBuf::from("/tmp/echo.wasm")),
            ("extra".to_string(), PathBuf::from("/tmp/extra.wasm")),
        ];
        let specs = merge_handlers(&flags, &file.handlers).unwrap();
        let echo = specs.iter().find(|h| h.name == "echo").unwrap();
        assert_eq!(echo.path, PathBuf::from("/tmp/echo.wasm"));
        assert_eq!(echo.memory, 32 * 1024 * 1024);
        assert_eq!(echo.timeout, Duration::from_secs(5));
        assert_eq!(echo.concurrency, Some(2));
        let extra = specs.iter().find(|h| h.name == "extra").unwrap();
        assert_eq!(extra.memory, DEFAULT_HANDLER_MEMORY);
        assert_eq!(specs.len(), 3);
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_errors() {
        assert!(toml::from_str::<FileConfig>("concurency = 3").is_err());
        let file: FileConfig =
            toml::from_str("[handlers.x]\npath = \"x.wasm\"\nmemory = \"lots\"").unwrap();
        assert!(merge_handlers(&[], &file.handlers).is_err());
        assert!(parse_handler_flag("noequals").is_err());
        assert!(parse_handler_flag("=x.wasm").is_err());
    }

    #[test]
    fn a_handler_table_grants_databases_by_secret_and_refuses_a_url() {
        let file: FileConfig = toml::from_str(
            r#"
            [handlers.orders]
            path = "orders.wasm"
            databases = { main = "secret:APP_DB_URL" }
            allow_outbound = ["postgres://db.internal"]
            "#,
        )
        .unwrap();
        let specs = merge_handlers(&[], &file.handlers).unwrap();
        assert_eq!(specs[0].grants.databases["main"], "secret:APP_DB_URL");
        let file: FileConfig = toml::from_str(
            "[handlers.orders]\npath = \"o.wasm\"\ndatabases = { main = \"postgres://u:pw@db/x\" }",
        )
        .unwrap();
        let err = merge_handlers(&[], &file.handlers).unwrap_err();
        assert!(
            err.contains("handler orders") && !err.contains("pw@"),
            "{err}"
        );
    }

    #[test]
    fn a_handler_cap_over_the_budget_is_refused() {
        let mut c = WorkerConfig::new(DEFAULT_REDIS_URL);
        c.memory_budget = 64 * 1024 * 1024;
        c.handlers.push(HandlerSpec {
            name: "big".into(),
            path: "big.wasm".into(),
            memory: 128 * 1024 * 1024,
            timeout: DEFAULT_HANDLER_TIMEOUT,
            fuel: None,
            concurrency: None,
            throttle: None,
            grants: Default::default(),
        });
        assert!(c.validate().unwrap_err().contains("memory budget"));
    }
}
