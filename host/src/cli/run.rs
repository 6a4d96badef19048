//! `wasmq run`: the worker host. Merges its settings (`worker::config`), starts the
//! [`Worker`] and beside it the HTTP API (`--http`, bound first so that a busy port fails at
//! once) and the alerts, one `Metrics` for all three; and turns signals into the worker's
//! shutdown phases: a first SIGTERM or SIGINT is [`Phase::Draining`], a second [`Phase::Stop`]
//! (the grace cut to zero); later ones are ignored.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::alerts::{AlertFlags, Alerts, AlertsConfig};
use crate::capability::SecretSource;
use crate::units::{parse_bytes, parse_duration};
use crate::worker::{
    DEFAULT_REDIS_URL, FileConfig, Phase, Worker, WorkerConfig, merge_handlers, parse_handler_flag,
};

/// Run a worker host: take jobs from Redis and run them in the sandbox.
///
/// Settings come from flags, then WASMQ_* environment variables, then the --config TOML file,
/// then defaults. SIGTERM or SIGINT: stop fetching, let in-flight jobs finish within --grace,
/// release the rest back to waiting, exit 0. A second signal shortens the grace to zero.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Redis URL: redis://host:port/db, or redis+cluster://host:port,host:port,... for a
    /// Redis Cluster (seed nodes); rediss:// and rediss+cluster:// over TLS, with
    /// ?tls_ca=FILE&tls_cert=FILE&tls_key=FILE for a private CA and a client certificate [default: redis://127.0.0.1:6379]
    #[arg(long, env = "WASMQ_REDIS_URL", hide_env_values = true)]
    pub redis: Option<String>,
    /// Queues to serve, comma-separated [default: default]
    #[arg(long, env = "WASMQ_QUEUES", value_delimiter = ',')]
    pub queues: Option<Vec<String>>,
    /// A handler: NAME=path.wasm (repeatable; comma-separated in WASMQ_HANDLERS).
    #[arg(long = "handler", env = "WASMQ_HANDLERS", value_delimiter = ',', value_parser = parse_handler_flag)]
    pub handlers: Vec<(String, PathBuf)>,
    /// Most jobs running at once on this host [default: 64]
    #[arg(long, env = "WASMQ_CONCURRENCY")]
    pub concurrency: Option<usize>,
    /// Sum of the memory caps of the jobs running at once [default: 4GiB]
    #[arg(long, env = "WASMQ_MEMORY_BUDGET")]
    pub memory_budget: Option<String>,
    /// How long in-flight jobs may finish after SIGTERM [default: 30s]
    #[arg(long, env = "WASMQ_GRACE")]
    pub grace: Option<String>,
    /// Lease length; heartbeats renew it every third of it [default: 30s]
    #[arg(long, env = "WASMQ_LEASE")]
    pub lease: Option<String>,
    /// Most jobs leased per fetch [default: 64]
    #[arg(long, env = "WASMQ_BATCH")]
    pub batch: Option<usize>,
    /// Most jobs a slot leases ahead of the one it runs while its jobs take under a
    /// millisecond, so short jobs cost Redis one call per run of jobs, not per job; 0 turns
    /// it off [default: 16]
    #[arg(long, env = "WASMQ_PREFETCH")]
    pub prefetch: Option<usize>,
    /// Jobs count as short, to lease ahead, below this; those leased ahead go back to the queue
    /// when the job before them runs ten times as long [default: 1ms]
    #[arg(long, env = "WASMQ_PREFETCH_BELOW")]
    pub prefetch_below: Option<String>,
    /// This host's id in leases and attempt history [default: hostname-pid-random]
    #[arg(long, env = "WASMQ_HOST_ID")]
    pub host_id: Option<String>,
    /// Where compiled handlers are kept across restarts [default: ~/.cache/wasmq/artifacts]
    #[arg(long, env = "WASMQ_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// A directory of secret files, one per secret, named after it (the Kubernetes layout),
    /// read after the WASMQ_SECRET_<NAME> variables (docs/capabilities.md).
    #[arg(long, env = "WASMQ_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Compile every handler at start; keep no compiled artifacts on disk.
    #[arg(long, env = "WASMQ_NO_CACHE")]
    pub no_cache: bool,
    #[command(flatten)]
    pub compile: super::compile::CompileArgs,
    /// Most registry handlers compiled at once; jobs of a handler still compiling wait,
    /// uncounted [default: 2]
    #[arg(long, env = "WASMQ_COMPILE_CONCURRENCY")]
    pub compile_concurrency: Option<usize>,
    /// Bytes one job's durable steps may hold in all (names and results): a step saved past
    /// it is refused, and what the host reads for a job each attempt stays under it
    /// [default: 16MiB]
    #[arg(long, env = "WASMQ_MAX_JOB_STEP_BYTES")]
    pub max_job_step_bytes: Option<String>,
    /// Deepest generation of child jobs (a child of a child of ...): a job this deep may
    /// enqueue none; give every host the same [default: 16]
    #[arg(long, env = "WASMQ_MAX_CHILD_DEPTH")]
    pub max_child_depth: Option<u32>,
    /// A TOML file with any of the settings above, and [handlers.NAME] / [queue.NAME] tables.
    #[arg(long, env = "WASMQ_CONFIG")]
    pub config: Option<PathBuf>,
    /// Also serve the HTTP API here, like `wasmq serve`.
    #[arg(long, env = "WASMQ_HTTP")]
    pub http: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub http_limits: super::serve::HttpLimitArgs,
    /// Bearer token of the HTTP API; required off loopback (prefer the environment variable
    /// or `api_token` in --config: flags show in `ps`).
    #[arg(long, env = "WASMQ_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// File of more API tokens, one `<name> <token>` per line: a request made with one records
    /// its name (who cancelled a job); --api-token's name is `api`. Keep the file private.
    #[arg(long, env = "WASMQ_API_TOKEN_FILE")]
    pub api_token_file: Option<std::path::PathBuf>,
    /// Webhook that gets alerts: dead-lettered jobs, queue backlogs (see docs/alerts.md; more
    /// settings, e-mail and digests in the [alerts] table of --config).
    #[arg(long, env = "WASMQ_ALERT_WEBHOOK", hide_env_values = true)]
    pub alert_webhook: Option<String>,
    /// Key that signs alerts (HMAC-SHA256), required with a webhook (prefer the environment
    /// variable: flags show in `ps`).
    #[arg(long, env = "WASMQ_ALERT_SECRET", hide_env_values = true)]
    pub alert_secret: Option<String>,
    /// The webhook's body: json (signed, docs/alerts.md) or slack (an incoming-webhook
    /// message) [default: json]
    #[arg(long, env = "WASMQ_ALERT_FORMAT")]
    pub alert_format: Option<String>,
    /// The dashboard's URL (as users open it), for links in Slack and e-mail alerts.
    #[arg(long, env = "WASMQ_ALERT_DASHBOARD_URL")]
    pub alert_dashboard_url: Option<String>,
}

/// The `[queue.NAME]` tables of the --config file: each must name a queue this host serves.
fn merge_queue_tables(file: &FileConfig, config: &mut WorkerConfig) -> anyhow::Result<()> {
    for (queue, q) in &file.queue {
        // A table for a queue this host does not serve is a typo or a forgotten --queues:
        // its settings would silently apply to nothing.
        if !config.queues.contains(queue) {
            anyhow::bail!(
                "[queue.{queue}] configures queue {queue:?}, which this host does not serve \
                 (it serves {}); add it to --queues / queues, or remove the table",
                config.queues.join(", ")
            );
        }
        if let Some(n) = q.concurrency {
            config.queue_concurrency.insert(queue.clone(), n);
        }
    }
    Ok(())
}

impl RunArgs {
    /// Merges flags (and environment, which clap has folded in) over `file` (the --config
    /// file, [`RunArgs::file`]) over defaults.
    pub fn to_config(&self, file: &FileConfig) -> anyhow::Result<WorkerConfig> {
        let mut config = WorkerConfig::new(
            self.redis
                .clone()
                .or(file.redis.clone())
                .unwrap_or_else(|| DEFAULT_REDIS_URL.to_string()),
        );
        if let Some(queues) = self.queues.clone().or(file.queues.clone()) {
            config.queues = queues;
        }
        config.handlers =
            merge_handlers(&self.handlers, &file.handlers).map_err(anyhow::Error::msg)?;
        self.merge_capacity(file, &mut config)?;
        self.merge_host(file, &mut config);
        self.merge_limits(file, &mut config)?;
        merge_queue_tables(file, &mut config)?;
        config.runtime.max_instances = u32::try_from(config.concurrency)
            .unwrap_or(u32::MAX)
            .saturating_add(8);
        Ok(config)
    }

    /// How much this host runs at once and how it leases: concurrency, memory budget, grace,
    /// lease, prefetch and batch.
    fn merge_capacity(&self, file: &FileConfig, config: &mut WorkerConfig) -> anyhow::Result<()> {
        if let Some(n) = self.concurrency.or(file.concurrency) {
            config.concurrency = n;
        }
        if let Some(text) = self
            .memory_budget
            .as_deref()
            .or(file.memory_budget.as_deref())
        {
            config.memory_budget =
                parse_bytes("memory budget", text).map_err(anyhow::Error::msg)?;
        }
        let duration = |flag: &Option<String>, file: &Option<String>, what: &str| {
            flag.as_deref()
                .or(file.as_deref())
                .map(|t| parse_duration(what, t))
                .transpose()
                .map_err(anyhow::Error::msg)
        };
        if let Some(d) = duration(&self.grace, &file.grace, "grace")? {
            config.grace = d;
        }
        if let Some(d) = duration(&self.lease, &file.lease, "lease")? {
            config.lease = d;
        }
        if let Some(d) = duration(&self.prefetch_below, &file.prefetch_below, "prefetch_below")? {
            config.prefetch_below = d;
        }
        if let Some(n) = self.batch.or(file.batch) {
            config.batch = n;
        }
        if let Some(n) = self.prefetch.or(file.prefetch) {
            config.prefetch = n;
        }
        Ok(())
    }

    /// Who this host is and where it keeps things: host id, artifact cache, secrets.
    fn merge_host(&self, file: &FileConfig, config: &mut WorkerConfig) {
        if let Some(id) = self.host_id.clone().or(file.host_id.clone()) {
            config.host_id = id;
        }
        if let Some(dir) = self.cache_dir.clone().or(file.cache_dir.clone()) {
            config.cache_dir = Some(dir);
        }
        if self.no_cache {
            config.cache_dir = None;
        }
        config.secrets_dir = self.secrets_dir.clone().or(file.secrets_dir.clone());
    }

    /// Compile limits and what one job may hold: step bytes, child depth.
    fn merge_limits(&self, file: &FileConfig, config: &mut WorkerConfig) -> anyhow::Result<()> {
        config.runtime.compile = self.compile.config(
            file.compile_memory.as_deref(),
            file.compile_timeout.as_deref(),
        )?;
        if let Some(n) = self.compile_concurrency.or(file.compile_concurrency) {
            config.compile_concurrency = n;
        }
        if let Some(text) = self
            .max_job_step_bytes
            .as_deref()
            .or(file.max_job_step_bytes.as_deref())
        {
            let bytes = parse_bytes("max_job_step_bytes", text).map_err(anyhow::Error::msg)?;
            config.runtime.max_job_step_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        }
        if let Some(n) = self.max_child_depth.or(file.max_child_depth) {
            config.max_child_depth = n;
        }
        Ok(())
    }

    /// The `[tracing]` table of the --config file, if any (read before the host starts, to
    /// turn tracing on; `--config` is read again, with its warnings, by the host).
    pub fn tracing_file(&self) -> anyhow::Result<Option<crate::telemetry::FileTracing>> {
        let Some(path) = &self.config else {
            return Ok(None);
        };
        Ok(FileConfig::load(path).map_err(anyhow::Error::msg)?.tracing)
    }

    /// The --config file (empty without one). Warns when the file holds a secret (the API
    /// token, the alert secret) and every user of the machine may read it.
    pub fn file(&self) -> anyhow::Result<FileConfig> {
        match &self.config {
            Some(path) => {
                let file = FileConfig::load(path).map_err(anyhow::Error::msg)?;
                let secrets: Vec<&str> = [
                    file.api_token.as_ref().map(|_| "api_token"),
                    file.alerts
                        .as_ref()
                        .and_then(|a| a.secret.as_ref())
                        .map(|_| "[alerts] secret"),
                    file.tracing
                        .as_ref()
                        .filter(|t| !t.headers.is_empty())
                        .map(|_| "[tracing] headers"),
                ]
                .into_iter()
                .flatten()
                .collect();
                if !secrets.is_empty() && world_readable(path) {
                    tracing::warn!(
                        path = %path.display(),
                        "the config file holds {} and every user of this machine can read it: \
                         `chmod 600 {}`, or set WASMQ_API_TOKEN / WASMQ_ALERT_SECRET in the \
                         environment instead",
                        secrets.join(" and "),
                        path.display()
                    );
                }
                Ok(file)
            }
            None => Ok(FileConfig::default()),
        }
    }

    /// The alert settings, flags and environment over the file's `[alerts]`; `None` without a
    /// webhook or e-mail. `secrets` are the host's (`WASMQ_SECRET_<NAME>`, --secrets-dir), as
    /// handlers get them: the SMTP password comes from there. Also checks the file's
    /// `log_format`, read earlier by `init_tracing`, which cannot report errors.
    pub fn alerts_config(
        &self,
        file: &FileConfig,
        secrets: &SecretSource,
    ) -> anyhow::Result<Option<AlertsConfig>> {
        if let Some(text) = &file.log_format {
            super::LogFormat::parse(text).map_err(anyhow::Error::msg)?;
        }
        let flags = AlertFlags {
            webhook: self.alert_webhook.as_deref(),
            secret: self.alert_secret.as_deref(),
            format: self.alert_format.as_deref(),
            dashboard_url: self.alert_dashboard_url.as_deref(),
        };
        AlertsConfig::resolve(
            flags,
            file.alerts.as_ref(),
            |name| std::env::var(name).ok().filter(|v| !v.is_empty()),
            |name| secrets.get(name),
        )
        .map_err(anyhow::Error::msg)
    }
}

/// Whether every user of the machine may read `path`.
fn world_readable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    // The --config file is read once, here.
    let file = args.file()?;
    let config = args.to_config(&file)?;
    let secrets = SecretSource {
        dir: config.secrets_dir.clone(),
    };
    let alerts_config = args.alerts_config(&file, &secrets)?;
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    // Bound before the worker starts, so a busy port or a missing token fails at once.
    let api = match args.http.or(file.http) {
        Some(bind) => Some(
            crate::api::Server::bind(crate::api::ApiConfig {
                bind,
                redis_url: config.redis_url.clone(),
                token: args.api_token.clone().or(file.api_token),
                named_tokens: super::serve::named_tokens(args.api_token_file.as_deref())?,
                queues: config.queues.clone(),
                metrics: Some(metrics.clone()),
                compile: config.runtime.compile.clone(),
                limits: args.http_limits.limits(
                    file.http_header_timeout.as_deref(),
                    file.http_max_connections,
                )?,
            })
            .await
            .context("starting the HTTP API")?,
        ),
        None => None,
    };
    let (redis_url, queues) = (config.redis_url.clone(), config.queues.clone());
    let worker = Worker::with_metrics(config, metrics.clone())
        .await
        .with_context(|| {
            format!(
                "starting the worker (Redis at {})",
                crate::connection::redact(&redis_url)
            )
        })?;
    // Before the first fetch, so the consumer groups exist before this host dead-letters a job.
    let alerts = match alerts_config {
        Some(alerts) => Some(
            Alerts::start(alerts, &redis_url, &queues, worker.host_id())
                .await
                .context("starting alerts")?,
        ),
        None => None,
    };
    if let Some(alerts) = &alerts {
        metrics.set_alert_stats(alerts.stats());
    }
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    tokio::spawn(watch_signals(phase_tx));
    let api = api.map(|server| {
        tracing::info!(addr = %server.local_addr(), "HTTP API listening");
        server.spawn()
    });
    let phase = phase_rx.clone();
    worker.run(phase_rx).await;
    if let Some(alerts) = alerts {
        // A second signal cuts the alerts' grace too.
        let grace = match *phase.borrow() {
            Phase::Stop => Duration::ZERO,
            _ => crate::alerts::STOP_GRACE,
        };
        alerts.stop(grace).await;
    }
    if let Some(api) = api {
        api.stop().await;
    }
    Ok(0)
}

/// First SIGTERM/SIGINT: drain. Second: stop now.
async fn watch_signals(phase: watch::Sender<Phase>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the host with SIGKILL");
        return;
    };
    for next in [Phase::Draining, Phase::Stop] {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!(?next, "signal received");
        if phase.send(next).is_err() {
            return;
        }
    }
    // Later signals change nothing; keep them from killing the process mid-release.
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
