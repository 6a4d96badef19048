//! Queue commands: `enqueue`, `job`, `queue stats|pause|resume|limit|check`,
//! `dlq list|replay|purge`.
//! Each is a thin call into [`crate::queue::Client`]; the output is for people, `--json` for
//! scripts.

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::queue::{
    Attempt, Backoff, CallEntry, Client, EnqueueOutcome, Expiry, Job, JobState, NewJob, RateLimit,
    system_time,
};

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Enqueue one job.
    Enqueue(Box<EnqueueArgs>),
    /// Show one job: state, attempts, history, payload.
    Job(JobArgs),
    /// Cancel jobs whatever their state (a running one is stopped on its host), or every job
    /// of a handler or a group that has not started.
    Cancel(super::cancel::CancelArgs),
    /// Inspect or control a queue.
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
    /// The dead-letter queue: list, replay or purge dead jobs.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Debug, Args)]
pub struct RedisArgs {
    /// Redis URL: redis://host:port/db, or redis+cluster://host:port,host:port,... for a
    /// Redis Cluster (seed nodes); rediss:// and rediss+cluster:// over TLS, with
    /// ?tls_ca=FILE&tls_cert=FILE&tls_key=FILE for a private CA and a client certificate.
    #[arg(
        long = "redis",
        env = "WASMQ_REDIS_URL",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    pub url: String,
}

impl RedisArgs {
    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
        Client::connect(&self.url)
            .await
            .with_context(|| self.cannot_connect())
    }

    /// "cannot connect to Redis at <url>", the URL without its credentials.
    pub(crate) fn cannot_connect(&self) -> String {
        format!(
            "cannot connect to Redis at {}",
            crate::connection::redact(&self.url)
        )
    }
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    pub queue: String,
    /// Handler name.
    pub handler: String,
    /// Payload, as text.
    #[arg(long, conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// Payload read from a file (`-` reads standard input).
    #[arg(long)]
    pub payload_file: Option<PathBuf>,
    /// Job id; an id that already exists is not enqueued again.
    #[arg(long)]
    pub id: Option<String>,
    /// Priority, -1000..=1000; higher runs first.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    /// Run after this delay (e.g. 5s, 10m).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "run_at")]
    pub delay: Option<Duration>,
    /// Run at this time (RFC 3339, e.g. 2030-01-01T09:00:00Z).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub run_at: Option<SystemTime>,
    /// Attempts in total [default: the handler's retry policy, else 3].
    #[arg(long)]
    pub attempts: Option<u32>,
    /// Backoff between attempts: exponential:<base>[:<cap>] or fixed:<delay> [default: the
    /// handler's retry policy, else exponential:1s].
    #[arg(long)]
    pub backoff: Option<Backoff>,
    /// Per-attempt timeout (default: the handler's).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Group key (e.g. a tenant id): the queue's per-group rate limit applies to it, and
    /// groups take turns.
    #[arg(long)]
    pub group: Option<String>,
    /// The W3C trace context the job continues (00-<trace id>-<parent id>-<flags>), e.g.
    /// the calling script's span; its attempts' spans join that trace.
    #[arg(long)]
    pub traceparent: Option<String>,
    /// The W3C tracestate that goes with --traceparent.
    #[arg(long, requires = "traceparent")]
    pub tracestate: Option<String>,
    /// Dead-letter the job (outcome expired) if it has not started within this time (e.g.
    /// 30s, 1h).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "expires_at")]
    pub expires_in: Option<Duration>,
    /// Dead-letter the job (outcome expired) if it has not started by this time (RFC 3339).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub expires_at: Option<SystemTime>,
    /// Throttle key: while it lives (--dedupe-ttl), another job with it is not created.
    #[arg(long, requires = "dedupe_ttl")]
    pub dedupe_key: Option<String>,
    /// How long a --dedupe-key lives (e.g. 10m).
    #[arg(long, value_parser = humantime::parse_duration, requires = "dedupe_key")]
    pub dedupe_ttl: Option<Duration>,
    /// Debounce key: the last enqueue within --debounce wins (the key's pending job takes this
    /// payload, and starts --debounce later).
    #[arg(long, requires = "debounce", conflicts_with_all = ["delay", "run_at", "dedupe_key"])]
    pub debounce_key: Option<String>,
    /// The debounce window (e.g. 2s).
    #[arg(long, value_parser = humantime::parse_duration, requires = "debounce_key")]
    pub debounce: Option<Duration>,
    /// The longest debouncing may delay the job after its first enqueue (e.g. 1m).
    #[arg(long, value_parser = humantime::parse_duration, requires = "debounce_key")]
    pub debounce_max_wait: Option<Duration>,
    #[command(flatten)]
    pub redis: RedisArgs,
}

impl EnqueueArgs {
    /// The job `wasmq enqueue` sends for these arguments, given the payload it read
    /// (`--payload`, `--payload-file` or nothing); [`crate::queue::Client::enqueue`] checks it
    /// ([`NewJob::validate`]) before anything reaches Redis. `fuzz/` drives this with arbitrary
    /// command lines.
    pub fn job(&self, payload: Vec<u8>) -> NewJob {
        let mut job = NewJob::new(self.handler.clone(), payload).with_priority(self.priority);
        job.options.max_attempts = self.attempts;
        job.options.backoff = self.backoff;
        job.options.id = self.id.clone();
        job.options.group = self.group.clone();
        job.options.traceparent = self.traceparent.clone();
        job.options.tracestate = self.tracestate.clone();
        if let Some(delay) = self.delay {
            job = job.with_delay(delay);
        }
        if let Some(at) = self.run_at {
            job = job.with_run_at(at);
        }
        job.options.timeout = self.timeout;
        job.options.expires = self
            .expires_in
            .map(Expiry::In)
            .or(self.expires_at.map(Expiry::At));
        if let (Some(key), Some(ttl)) = (&self.dedupe_key, self.dedupe_ttl) {
            job = job.with_dedupe(key.clone(), ttl);
        }
        if let (Some(key), Some(window)) = (&self.debounce_key, self.debounce) {
            job = job.with_debounce(key.clone(), window, self.debounce_max_wait);
        }
        job
    }
}

#[derive(Debug, Args)]
pub struct JobArgs {
    pub queue: String,
    pub id: String,
    /// Print the job as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub redis: RedisArgs,
}

#[derive(Debug, Subcommand)]
pub enum QueueAction {
    /// Jobs per state, and whether the queue is paused.
    Stats {
        queue: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Stop workers from fetching this queue's jobs (enqueue still works).
    Pause {
        queue: String,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Let workers fetch this queue's jobs again.
    Resume {
        queue: String,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Set or show the queue's rate limits and backlog limit, enforced across every host.
    /// Without options, shows them.
    Limit {
        queue: String,
        /// Most job starts per window in the queue, as N/duration (e.g. 100/1s).
        #[arg(long)]
        rate: Option<RateLimit>,
        /// Most job starts per window in each group (jobs enqueued with --group).
        #[arg(long)]
        group_rate: Option<RateLimit>,
        /// Most jobs of any one group that run at once, across every host (a group at its
        /// limit waits while the others go on). 0 removes the limit.
        #[arg(long, value_name = "N")]
        group_concurrency: Option<u64>,
        /// Most jobs not finished (waiting, delayed, retrying, running): an enqueue that would
        /// pass it is refused (producers
        /// get an error; child jobs wait in their parent's outbox). 0 removes the limit.
        #[arg(long, value_name = "N")]
        max_waiting: Option<u64>,
        /// Remove every limit (before applying the other options, if given).
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Find what is out of step in the queue's keys: ids with no job, malformed jobs, jobs in
    /// no set, in the wrong one or in two, groups out of step, keys of the wrong type. Exits 1
    /// when something is left as it was found (always, without --repair, if anything is
    /// found). Safe while hosts run.
    Check {
        queue: String,
        /// Put each finding right: a job back into the set its state names, a malformed one
        /// into the dead-letter queue (outcome `malformed`), a dangling id out of its set.
        /// Idempotent, in bounded batches.
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        redis: RedisArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// List dead jobs, oldest first.
    List {
        queue: String,
        #[arg(long, default_value_t = 0)]
        offset: u64,
        #[arg(long, default_value_t = 50)]
        limit: u64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Move dead jobs back to waiting (attempts reset, history kept).
    Replay {
        queue: String,
        /// Job ids; without ids, --all is required.
        ids: Vec<String>,
        /// Replay every dead job.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Delete dead jobs for good.
    Purge {
        queue: String,
        /// Job ids; without ids, --all is required.
        ids: Vec<String>,
        /// Purge every dead job.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[command(flatten)]
        redis: RedisArgs,
    },
}

pub async fn run(cmd: QueueCommand) -> anyhow::Result<u8> {
    match cmd {
        QueueCommand::Enqueue(args) => enqueue(*args).await,
        QueueCommand::Job(args) => show_job(args).await,
        QueueCommand::Cancel(args) => super::cancel::run(args).await,
        QueueCommand::Queue { action } => queue(action).await,
        QueueCommand::Dlq { action } => dlq(action).await,
    }
}

async fn enqueue(args: EnqueueArgs) -> anyhow::Result<u8> {
    let client = args.redis.client().await?;
    // The queue's limit first, so an oversize file is refused before it is read into memory
    // or sent to Redis.
    let limit = client.config(&args.queue).await?.max_payload_bytes;
    let too_large = |size: u64| {
        anyhow::anyhow!(
            "the payload is {size} bytes, over queue {}'s limit of {limit} bytes \
             (max_payload_bytes); nothing was enqueued",
            args.queue
        )
    };
    let payload = match (&args.payload, &args.payload_file) {
        (Some(text), _) => text.clone().into_bytes(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            read_at_most(std::io::stdin().lock(), limit)
                .context("cannot read the payload from standard input")?
                .ok_or_else(|| too_large(limit.saturating_add(1)))?
        }
        (None, Some(path)) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot read the payload file {}", path.display()))?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            if size > limit {
                return Err(too_large(size));
            }
            // The file may grow between the check and the read.
            read_at_most(file, limit)
                .with_context(|| format!("cannot read the payload file {}", path.display()))?
                .ok_or_else(|| too_large(limit.saturating_add(1)))?
        }
        (None, None) => Vec::new(),
    };
    let job = args.job(payload);
    let enqueued = client.enqueue(&args.queue, &job).await?;
    let state = enqueued.state.map_or("no longer kept", |s| s.as_str());
    match enqueued.outcome {
        EnqueueOutcome::Created => {}
        EnqueueOutcome::Exists => eprintln!(
            "job {} already exists ({state}); nothing was enqueued",
            enqueued.id
        ),
        EnqueueOutcome::Deduplicated => eprintln!(
            "the dedupe key is taken by job {} ({state}); nothing was enqueued",
            enqueued.id
        ),
        EnqueueOutcome::Debounced => eprintln!(
            "debounced into the pending job {} ({state}): it took this payload",
            enqueued.id
        ),
    }
    say!("{}", enqueued.id);
    Ok(0)
}

async fn show_job(args: JobArgs) -> anyhow::Result<u8> {
    let client = args.redis.client().await?;
    let Some(job) = client.get(&args.queue, &args.id).await? else {
        bail!("no job {} in queue {}", args.id, args.queue);
    };
    if args.json {
        say!(
            "{}",
            serde_json::to_string_pretty(&crate::api::job_view(&job))?
        );
        return Ok(0);
    }
    print_job(&job);
    print_history(&job.history);
    Ok(0)
}

/// The job's fields, one `name: value` line each.
fn print_job(job: &Job) {
    let time = |ms: Option<u64>| ms.map_or_else(|| "-".to_string(), format_ms);
    say!("id:           {}", shown(&job.id));
    say!("queue:        {}", shown(&job.queue));
    say!("handler:      {}", shown(&job.handler));
    say!("state:        {}", job.state);
    say!("priority:     {}", job.priority);
    if let Some(group) = &job.group {
        say!("group:        {}", shown(group));
    }
    if let Some(traceparent) = &job.traceparent {
        say!("traceparent:  {}", shown(traceparent));
    }
    if let Some(tracestate) = &job.tracestate {
        say!("tracestate:   {}", shown(tracestate));
    }
    say!("attempts:     {} of {}", job.attempt, job.max_attempts);
    say!("backoff:      {}", describe_backoff(&job.backoff));
    say!(
        "timeout:      {}",
        job.timeout.map_or_else(
            || "handler default".to_string(),
            |t| humantime::format_duration(t).to_string()
        )
    );
    say!("created:      {}", time(Some(job.created_at_ms)));
    say!("run at:       {}", time(job.run_at_ms));
    say!("started:      {}", time(job.started_at_ms));
    say!("finished:     {}", time(job.finished_at_ms));
    if let Some(expiry) = job.lease_expires_at_ms {
        say!(
            "lease:        {} until {}",
            shown(job.host.as_deref().unwrap_or("-")),
            format_ms(expiry)
        );
    }
    if job.replays > 0 {
        say!("replays:      {}", job.replays);
    }
    if let Some(why) = &job.steps_dropped {
        say!("steps:        {}", steps_dropped_reason(why));
    }
    if job.last_outcome.as_deref() == Some("cancelled") {
        say!(
            "cancelled:    by {}{}",
            shown(job.cancelled_by.as_deref().unwrap_or("-")),
            job.cancel_reason
                .as_deref()
                .map(|why| format!(": {}", shown(why)))
                .unwrap_or_default()
        );
    }
    say!("payload:      {}", preview(&job.payload));
    if let Some(result) = &job.result {
        say!("result:       {}", preview(result));
    }
    if let Some(error) = &job.last_error {
        say!(
            "last error:   [{}] {}",
            shown(job.last_outcome.as_deref().unwrap_or("-")),
            shown(error)
        );
    }
}

/// The job's attempts, one line each, with their progress and log lines under them.
fn print_history(history: &[Attempt]) {
    if history.is_empty() {
        return;
    }
    say!("history:");
    for attempt in history {
        say!("{}", history_line(attempt));
        if let Some(progress) = attempt.progress {
            say!("      progress {progress}%");
        }
        for call in attempt.calls.iter().flatten() {
            say!("      {}", call_line(call));
        }
        if let Some(dropped) = attempt.calls_dropped {
            say!("      ... {dropped} more calls (not recorded)");
        }
        for line in attempt.logs.as_deref().unwrap_or_default().lines() {
            say!("      | {}", shown(line));
        }
    }
}

/// One call of an attempt's record: `+<at> ms <what> -> <status or outcome> (<n> ms)`, e.g.
/// `+12 ms GET http://api:80 -> 200 (31 ms)` or `+50 ms sql SELECT (app) -> ok (2 ms)`.
fn call_line(call: &CallEntry) -> String {
    let what = if call.kind == "http" {
        format!(
            "{} {}",
            shown(call.method.as_deref().unwrap_or("?")),
            shown(call.target.as_deref().unwrap_or("?"))
        )
    } else {
        format!(
            "{} {} ({})",
            shown(&call.kind),
            shown(call.op.as_deref().unwrap_or("?")),
            shown(call.db.as_deref().unwrap_or("?"))
        )
    };
    let end = match (call.status, call.outcome.as_deref()) {
        (Some(status), _) => status.to_string(),
        (None, Some(outcome)) => shown(outcome),
        (None, None) => "ok".to_string(),
    };
    format!(
        "+{} ms {what} -> {end} ({} ms)",
        call.at_ms, call.duration_ms
    )
}

/// `  #<attempt> <outcome> (version v) on <host> at <time> (<n> ms): <error>`.
fn history_line(attempt: &Attempt) -> String {
    format!(
        "  #{} {}{} on {} at {} ({} ms){}",
        attempt.attempt,
        attempt.outcome,
        attempt
            .version
            .as_deref()
            .map_or_else(String::new, |v| format!(" (version {})", shown(v))),
        if attempt.host.is_empty() {
            "-".to_string()
        } else {
            shown(&attempt.host)
        },
        format_ms(attempt.started_at),
        attempt.finished_at.saturating_sub(attempt.started_at),
        if attempt.error.is_empty() {
            String::new()
        } else {
            format!(": {}", shown(&attempt.error))
        }
    )
}

async fn queue(action: QueueAction) -> anyhow::Result<u8> {
    match action {
        QueueAction::Check {
            queue,
            repair,
            json,
            redis,
        } => return check_queue(&redis.client().await?, &queue, repair, json).await,
        QueueAction::Stats { queue, json, redis } => {
            show_counts(&redis.client().await?, &queue, json).await?;
        }
        QueueAction::Pause { queue, redis } => {
            let changed = redis.client().await?.pause(&queue).await?;
            say!(
                "queue {queue} {}",
                if changed {
                    "paused"
                } else {
                    "was already paused"
                }
            );
        }
        QueueAction::Resume { queue, redis } => {
            let changed = redis.client().await?.resume(&queue).await?;
            say!(
                "queue {queue} {}",
                if changed { "resumed" } else { "was not paused" }
            );
        }
        QueueAction::Limit {
            queue,
            rate,
            group_rate,
            group_concurrency,
            max_waiting,
            clear,
            redis,
        } => {
            let limits = Limits {
                rate,
                group_rate,
                group_concurrency,
                max_waiting,
                clear,
            };
            set_limits(&redis.client().await?, &queue, limits).await?;
        }
    }
    Ok(0)
}

/// `wasmq queue check`: prints what the check found (and repaired); exits 1 when something is
/// left unrepaired.
async fn check_queue(client: &Client, queue: &str, repair: bool, json: bool) -> anyhow::Result<u8> {
    let report = client.check(queue, repair).await?;
    if json {
        say!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for finding in &report.findings {
            say!(
                "{:<18} {}  {}{}",
                finding.kind,
                finding.subject.escape_debug(),
                finding.detail.escape_debug(),
                if finding.repaired { "  (repaired)" } else { "" }
            );
        }
        let left = report.unrepaired();
        say!(
            "queue {queue}: {} checked, {} found, {} repaired, {left} left",
            report.checked,
            report.findings.len(),
            report.findings.len() - left
        );
    }
    Ok(u8::from(report.unrepaired() > 0))
}

/// `wasmq queue stats`: jobs per state, and whether the queue is paused.
async fn show_counts(client: &Client, queue: &str, json: bool) -> anyhow::Result<()> {
    let counts = client.counts(queue).await?;
    if json {
        let mut value = json!({ "queue": queue, "paused": counts.paused });
        for state in JobState::ALL {
            value[state.as_str()] = json!(counts.get(state));
        }
        say!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        say!(
            "queue {queue}{}",
            if counts.paused { " (paused)" } else { "" }
        );
        for state in JobState::ALL {
            say!("  {:<10} {}", state.as_str(), counts.get(state));
        }
    }
    Ok(())
}

/// What `wasmq queue limit` was asked to change.
struct Limits {
    rate: Option<RateLimit>,
    group_rate: Option<RateLimit>,
    group_concurrency: Option<u64>,
    max_waiting: Option<u64>,
    clear: bool,
}

/// `wasmq queue limit`: applies `limits` (written only when they change something), then
/// prints the queue's limits.
async fn set_limits(client: &Client, queue: &str, limits: Limits) -> anyhow::Result<()> {
    let mut config = client.config(queue).await?;
    let before = config;
    if limits.clear {
        config.rate = None;
        config.group_rate = None;
        config.group_concurrency = None;
        config.max_waiting = None;
    }
    config.rate = limits.rate.or(config.rate);
    config.group_rate = limits.group_rate.or(config.group_rate);
    if let Some(n) = limits.group_concurrency {
        config.group_concurrency = (n > 0).then_some(n);
    }
    if let Some(n) = limits.max_waiting {
        config.max_waiting = (n > 0).then_some(n);
    }
    if config != before {
        client.set_config(queue, &config).await?;
    }
    let show = |limit: Option<RateLimit>| limit.map_or("unlimited".into(), |l| l.to_string());
    say!("queue {queue}");
    say!("  rate        {}", show(config.rate));
    say!("  group rate  {}", show(config.group_rate));
    say!(
        "  group concurrency {}",
        config
            .group_concurrency
            .map_or("unlimited".into(), |n| n.to_string())
    );
    say!(
        "  max waiting {}",
        config
            .max_waiting
            .map_or("unlimited".into(), |n| n.to_string())
    );
    Ok(())
}

/// How many dead jobs one replay/purge call handles when acting on all of them.
const DLQ_CHUNK: u64 = 1000;

async fn dlq(action: DlqAction) -> anyhow::Result<u8> {
    match action {
        DlqAction::List {
            queue,
            offset,
            limit,
            json,
            redis,
        } => {
            let jobs = redis
                .client()
                .await?
                .dead_letters(&queue, offset, limit)
                .await?;
            if json {
                let list: Vec<_> = jobs.iter().map(crate::api::job_view).collect();
                say!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for job in &jobs {
                    say!(
                        "{}  {}  attempts {}/{}  died {}  [{}] {}",
                        shown(&job.id),
                        shown(&job.handler),
                        job.attempt,
                        job.max_attempts,
                        job.finished_at_ms
                            .map_or_else(|| "-".to_string(), format_ms),
                        shown(job.last_outcome.as_deref().unwrap_or("-")),
                        shown(job.last_error.as_deref().unwrap_or(""))
                    );
                }
                if jobs.is_empty() {
                    eprintln!("no dead jobs in queue {queue} at offset {offset}");
                }
            }
        }
        DlqAction::Replay {
            queue,
            ids,
            all,
            redis,
        } => {
            let client = redis.client().await?;
            let count = dlq_apply(&client, &queue, &ids, all, true).await?;
            say!("replayed {count} job(s) in queue {queue}");
        }
        DlqAction::Purge {
            queue,
            ids,
            all,
            redis,
        } => {
            let client = redis.client().await?;
            let count = dlq_apply(&client, &queue, &ids, all, false).await?;
            say!("purged {count} job(s) from queue {queue}");
        }
    }
    Ok(0)
}

/// Replays or purges the named dead jobs, or (with `all`) the ones dead when the command
/// started: a replayed job that dies again meanwhile is not replayed twice.
async fn dlq_apply(
    client: &Client,
    queue: &str,
    ids: &[String],
    all: bool,
    replay: bool,
) -> anyhow::Result<u64> {
    if !ids.is_empty() {
        let report = if replay {
            client.replay(queue, ids).await?
        } else {
            client.purge(queue, ids).await?
        };
        for (id, state) in &report.skipped {
            eprintln!("skipped {id}: {}", state.replace('_', " "));
        }
        return Ok(report.done.len() as u64);
    }
    if !all {
        bail!("name the job ids, or pass --all to act on every dead job");
    }
    let mut remaining = client.counts(queue).await?.dead;
    let mut done = 0;
    while remaining > 0 {
        let chunk = remaining.min(DLQ_CHUNK);
        let report = if replay {
            client.replay_oldest(queue, chunk).await?
        } else {
            client.purge_oldest(queue, chunk).await?
        };
        if report.done.is_empty() {
            break;
        }
        done += report.done.len() as u64;
        remaining = remaining.saturating_sub(report.done.len() as u64);
    }
    Ok(done)
}

pub(super) fn format_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(system_time(ms)).to_string()
}

fn describe_backoff(backoff: &Backoff) -> String {
    let human = |d: Duration| humantime::format_duration(d).to_string();
    match *backoff {
        Backoff::Fixed { delay, jitter } => {
            format!("fixed {} ±{:.0}%", human(delay), jitter * 100.0)
        }
        Backoff::Exponential { base, cap, jitter } => format!(
            "exponential from {} capped at {} ±{:.0}%",
            human(base),
            human(cap),
            jitter * 100.0
        ),
    }
}

/// Everything `reader` holds when that is at most `limit` bytes; `None` when there is more.
fn read_at_most(reader: impl Read, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

/// The payload as text when it is short UTF-8, else its size; control characters escaped
/// ([`shown`]).
/// What `steps_dropped` on a job means, for a person.
fn steps_dropped_reason(why: &str) -> String {
    match why {
        "dead_letter_byte_cap" => "steps dropped: dead-letter byte cap of the queue".to_string(),
        other => format!("steps dropped: {}", shown(other)),
    }
}

pub(super) fn preview(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.chars().count() <= 200 => shown(text),
        Ok(text) => {
            let cut = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
            format!("{}… ({} bytes)", shown(&text[..cut]), bytes.len())
        }
        Err(_) => format!("<{} bytes of binary data>", bytes.len()),
    }
}

/// `text` with control characters (escape sequences, carriage returns, newlines) and the
/// invisible characters that reorder text (bidi controls) written as `\u{..}` escapes:
/// what a job holds was written by producers and handlers, and printed raw it could rewrite
/// the reader's terminal or disguise itself.
pub(super) fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let invisible = matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        );
        if c.is_control() || invisible {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}
