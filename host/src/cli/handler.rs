//! Handler commands: `handler deploy|list|versions|rollback|remove|max-upload`. Each is a thin
//! call into [`crate::registry::Registry`]; the output is for people, `--json` for scripts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::queue::RedisArgs;
use crate::registry::{HandlerSettings, Registry, Version};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::worker::{DEFAULT_HANDLER_MEMORY, DEFAULT_HANDLER_TIMEOUT, host_runtime};

#[derive(Debug, Subcommand)]
pub enum HandlerAction {
    /// Validate a component and make it the current version of a handler on every host.
    Deploy(Box<DeployArgs>),
    /// The current version of every handler.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Every version of a handler, marking the current one.
    Versions {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Make an earlier version current again (default: the one before the current one).
    Rollback {
        name: String,
        version: Option<u64>,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Forget a handler and all its versions; hosts stop starting its jobs.
    Remove {
        name: String,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Show, or set, the largest component a deploy accepts (e.g. 128MiB).
    MaxUpload {
        size: Option<String>,
        #[command(flatten)]
        redis: RedisArgs,
    },
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    pub name: String,
    /// The component (`.wasm`) implementing the wasmq:job/handler world.
    pub file: PathBuf,
    /// Per-instance memory cap [default: 64MiB].
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Default deadline of an attempt [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// CPU budget per attempt, in fuel units.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Attempts in total for this handler's jobs that do not set their own [default: 3].
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Backoff between attempts, for this handler's jobs that do not set their own:
    /// exponential:<base>[:<cap>] or fixed:<delay> [default: exponential:1s].
    #[arg(long)]
    pub backoff: Option<String>,
    /// Most jobs of this handler running at once per host.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Most starts of this handler's jobs per period per key (the job's group) in each queue,
    /// like 10/1m; jobs over it wait, uncounted (docs/workflows.md).
    #[arg(long)]
    pub throttle: Option<String>,
    /// Subscribe to this event: `wasmq event send <name>` enqueues a job of this handler
    /// (repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub on: Vec<String>,
    /// The queue the event jobs go to [default: default].
    #[arg(long)]
    pub on_queue: Option<String>,
    #[command(flatten)]
    pub grants: GrantArgs,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub compile: super::compile::CompileArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
}

/// What a handler may reach outside its sandbox (docs/capabilities.md); `deploy` and `exec`.
#[derive(Debug, Args, Default)]
pub struct GrantArgs {
    /// Allow outbound HTTP to `scheme://host[:port]` (repeatable): a name, `*.example.com`
    /// (subdomains), an IP address or CIDR range; port a number, `*` or a range.
    #[arg(long = "allow-outbound", value_name = "PATTERN")]
    pub allow_outbound: Vec<String>,
    /// A config value the handler reads with `wasi:config` (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = crate::capability::parse_config_flag)]
    pub config: Vec<(String, String)>,
    /// A secret the handler reads with `wasi:config` under this name (repeatable); each host
    /// resolves its value from `WASMQ_SECRET_<NAME>` or `--secrets-dir`. Only the name is
    /// stored.
    #[arg(long = "secret", value_name = "NAME")]
    pub secrets: Vec<String>,
    /// One of the handler's outbound HTTP limits (repeatable): requests=N,
    /// response_body=SIZE, request_body=SIZE, connect_timeout=DURATION,
    /// first_byte_timeout=DURATION, between_bytes_timeout=DURATION, connections=N.
    #[arg(long = "http-limit", value_name = "NAME=VALUE")]
    pub http_limits: Vec<String>,
    /// A key-value bucket the handler may open with `wasi:keyvalue` (repeatable):
    /// `NAME[:OPTION=VALUE]...`, options ttl=DURATION, max_keys=N, max_bytes=SIZE,
    /// max_value=SIZE (like `marks:ttl=7d`).
    #[arg(long = "kv", value_name = "BUCKET")]
    pub kv: Vec<String>,
    /// A Postgres database the handler may open with `sql` (repeatable): `NAME=secret:SECRET`,
    /// the URL (`postgres://user:password@host:port/db`) held in the host secret SECRET, whose
    /// host:port `--allow-outbound` must allow (like `postgres://db.internal:5432`).
    #[arg(long = "database", value_name = "NAME=secret:SECRET", value_parser = crate::capability::parse_database_flag)]
    pub databases: Vec<(String, String)>,
    /// Let the handler enqueue child jobs for HANDLER in QUEUE (repeatable; `QUEUE/*` for any
    /// handler of QUEUE). Without it, children go only into the job's own queue.
    #[arg(long = "may-enqueue", value_name = "QUEUE/HANDLER")]
    pub may_enqueue: Vec<String>,
    /// As --may-enqueue, and the ids the handler gives those children are kept as given
    /// instead of namespaced by the parent (repeatable).
    #[arg(long = "may-enqueue-raw-ids", value_name = "QUEUE/HANDLER")]
    pub may_enqueue_raw_ids: Vec<String>,
}

impl GrantArgs {
    pub fn into_grants(self) -> Result<crate::capability::Grants, String> {
        Ok(crate::capability::Grants {
            http_limits: crate::capability::HttpLimitOverrides::parse_all(&self.http_limits)?,
            allow_outbound: self.allow_outbound,
            config: self.config.into_iter().collect(),
            secrets: self.secrets,
            kv: self.kv,
            databases: self.databases.into_iter().collect(),
            may_enqueue: self.may_enqueue,
            may_enqueue_raw_ids: self.may_enqueue_raw_ids,
        })
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    crate::units::parse_bytes("size", text)
}

async fn connect(redis: &RedisArgs) -> anyhow::Result<Registry> {
    Registry::connect(&redis.url)
        .await
        .with_context(|| redis.cannot_connect())
}

/// A version as JSON: the HTTP API's view, so `--json` and the API cannot drift apart.
fn version_json(v: &Version, current: bool) -> serde_json::Value {
    serde_json::to_value(crate::api::version_view(v, current)).unwrap_or_default()
}

fn describe(v: &Version) -> String {
    let s = &v.settings;
    let mut out = format!(
        "v{:<4} sha256:{}  {}  memory {}  timeout {}",
        v.version,
        &v.sha256[..12],
        bytesize::ByteSize(v.size),
        bytesize::ByteSize(s.memory),
        humantime::format_duration(s.timeout)
    );
    if let Some(fuel) = s.fuel {
        out += &format!("  fuel {fuel}");
    }
    if let Some(n) = s.max_attempts {
        out += &format!("  attempts {n}");
    }
    if let Some(b) = &s.backoff {
        out += &format!("  backoff {b}");
    }
    if let Some(n) = s.concurrency {
        out += &format!("  concurrency {n}");
    }
    if let Some(t) = &s.throttle {
        out += &format!("  throttle {t}");
    }
    if !s.on.is_empty() {
        let queue = s
            .on_queue
            .as_deref()
            .unwrap_or(crate::events::DEFAULT_EVENT_QUEUE);
        out += &format!("  on {} -> {queue}", s.on.join(","));
    }
    let g = &s.grants;
    if !g.allow_outbound.is_empty() {
        out += &format!("  allow-outbound {}", g.allow_outbound.join(","));
    }
    if !g.config.is_empty() {
        let keys: Vec<&str> = g.config.keys().map(String::as_str).collect();
        out += &format!("  config {}", keys.join(","));
    }
    if !g.secrets.is_empty() {
        out += &format!("  secrets {}", g.secrets.join(","));
    }
    if !g.kv.is_empty() {
        out += &format!("  kv {}", g.kv.join(","));
    }
    if !g.databases.is_empty() {
        let dbs: Vec<String> = g
            .databases
            .iter()
            .map(|(n, s)| format!("{n}={s}"))
            .collect();
        out += &format!("  databases {}", dbs.join(","));
    }
    if !g.may_enqueue.is_empty() {
        out += &format!("  may-enqueue {}", g.may_enqueue.join(","));
    }
    if !g.may_enqueue_raw_ids.is_empty() {
        out += &format!("  may-enqueue-raw-ids {}", g.may_enqueue_raw_ids.join(","));
    }
    let at = std::time::UNIX_EPOCH + Duration::from_millis(v.deployed_at_ms);
    out += &format!("  deployed {}", humantime::format_rfc3339_seconds(at));
    out
}

pub async fn run(action: HandlerAction) -> anyhow::Result<u8> {
    match action {
        HandlerAction::Deploy(args) => deploy(*args).await,
        HandlerAction::List { json, redis } => {
            let current = connect(&redis).await?.current().await?;
            if json {
                let all: Vec<_> = current.values().map(|v| version_json(v, true)).collect();
                say!("{}", serde_json::Value::Array(all));
            } else if current.is_empty() {
                say!("no handlers deployed");
            } else {
                for (name, v) in &current {
                    say!("{name:<24} {}", describe(v));
                }
            }
            Ok(0)
        }
        HandlerAction::Versions { name, json, redis } => {
            let (current, versions) = connect(&redis).await?.versions(&name).await?;
            if json {
                let all: Vec<_> = versions
                    .iter()
                    .map(|v| version_json(v, v.version == current))
                    .collect();
                say!("{}", serde_json::Value::Array(all));
            } else {
                for v in &versions {
                    let mark = if v.version == current { "*" } else { " " };
                    say!("{mark} {}", describe(v));
                }
            }
            Ok(0)
        }
        HandlerAction::Rollback {
            name,
            version,
            redis,
        } => {
            let v = connect(&redis).await?.rollback(&name, version).await?;
            say!(
                "{name} is at version {} again (sha256:{}); hosts switch within a second",
                v.version,
                &v.sha256[..12]
            );
            Ok(0)
        }
        HandlerAction::Remove { name, redis } => {
            let removed = connect(&redis).await?.remove(&name).await?;
            if removed == 0 {
                anyhow::bail!("no handler named {name:?}");
            }
            say!(
                "removed {name} ({removed} versions); hosts stop starting its jobs within a second"
            );
            Ok(0)
        }
        HandlerAction::MaxUpload { size, redis } => {
            let registry = connect(&redis).await?;
            if let Some(text) = size {
                let bytes =
                    crate::units::parse_bytes("upload limit", &text).map_err(anyhow::Error::msg)?;
                registry.set_max_upload(bytes).await?;
            }
            say!("{}", bytesize::ByteSize(registry.max_upload().await?));
            Ok(0)
        }
    }
}

async fn deploy(args: DeployArgs) -> anyhow::Result<u8> {
    let settings = HandlerSettings {
        memory: args.memory.unwrap_or(DEFAULT_HANDLER_MEMORY),
        timeout: args.timeout.unwrap_or(DEFAULT_HANDLER_TIMEOUT),
        fuel: args.fuel,
        max_attempts: args.max_attempts,
        backoff: args.backoff,
        concurrency: args.concurrency,
        throttle: args.throttle,
        on: args.on,
        on_queue: args.on_queue,
        grants: args.grants.into_grants().map_err(anyhow::Error::msg)?,
    };
    settings.validate().map_err(anyhow::Error::msg)?;
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let registry = connect(&args.redis).await?;
    // Validate under the engine settings hosts run with, compiling in a child process
    // within the compile limits; no pool is needed for one compile.
    let runtime = Runtime::new(RuntimeConfig {
        pooling: false,
        compile: args.compile.config(None, None)?,
        ..host_runtime()
    })?;
    let bar = indicatif::ProgressBar::new(bytes.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "uploading {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Only large uploads take long enough to watch.
    if bytes.len() < 1024 * 1024 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let version = registry
        .deploy(&runtime, &args.name, bytes, &settings, |sent, _total| {
            bar.set_position(sent)
        })
        .await
        .with_context(|| format!("deploying {} as {}", args.file.display(), args.name))?;
    bar.finish_and_clear();
    if args.json {
        say!("{}", version_json(&version, true));
    } else {
        say!(
            "deployed {} version {} (sha256:{}, {}); hosts switch within a second",
            version.name,
            version.version,
            &version.sha256[..12],
            bytesize::ByteSize(version.size)
        );
    }
    Ok(0)
}
