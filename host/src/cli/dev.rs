//! `wasmq dev`: a first look in one command. Starts a private redis-server, a host with the
//! example handlers, and a stream of sample jobs (well-behaved and hostile), with live progress.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::local_redis::{LocalRedis, LocalRedisOptions};
use crate::queue::{Backoff, Client, NewJob, QueueConfig};
use crate::worker::{DEFAULT_HANDLER_TIMEOUT, HandlerSpec, Phase, Worker, WorkerConfig};

const QUEUE: &str = "dev";
const MIB: u64 = 1024 * 1024;

/// Try wasmq locally: a private Redis, a host running the example handlers, sample jobs.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// How many sample jobs to enqueue.
    #[arg(long, default_value_t = 2000)]
    pub jobs: u64,
    /// Jobs enqueued per second.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Where the example components are (built by guest-examples/rust/build.sh).
    #[arg(
        long,
        default_value = "guest-examples/rust/target/wasm32-wasip2/release"
    )]
    pub examples: PathBuf,
    /// After the sample jobs, keep the host and Redis running until Ctrl-C.
    #[arg(long)]
    pub keep_running: bool,
}

/// The example handlers `dev` runs: (name, component file, memory cap).
const HANDLERS: [(&str, &str, u64); 6] = [
    ("echo", "echo.wasm", 64 * MIB),
    ("sleep", "sleep.wasm", 64 * MIB),
    ("retry", "retry.wasm", 64 * MIB),
    ("fail", "fail.wasm", 64 * MIB),
    ("infinite-loop", "infinite_loop.wasm", 64 * MIB),
    ("memory-bomb", "memory_bomb.wasm", 32 * MIB),
];

/// The i-th sample job: mostly well-behaved, some that fail, some hostile.
fn sample(i: u64) -> NewJob {
    let once = |job: NewJob| job.with_max_attempts(1);
    match i % 100 {
        0..70 => NewJob::new("echo", format!("{{\"n\":{i}}}").into_bytes()),
        70..85 => NewJob::new("sleep", (20 + i % 180).to_string().into_bytes()),
        85..93 => NewJob::new("retry", Vec::new())
            .with_max_attempts(2)
            .with_backoff(Backoff::fixed(Duration::from_millis(200))),
        93..96 => NewJob::new("fail", Vec::new()),
        96..98 => {
            once(NewJob::new("infinite-loop", Vec::new()).with_timeout(Duration::from_millis(300)))
        }
        _ => once(NewJob::new("memory-bomb", Vec::new())),
    }
}

pub async fn run(args: DevArgs) -> anyhow::Result<u8> {
    let handlers = example_handlers(&args.examples)?;
    let redis = LocalRedis::start(LocalRedisOptions::default())?;
    let url = redis.url();
    let client = Client::connect(&url)
        .await
        .context("connecting to the dev redis-server")?;
    client
        .set_config(
            QUEUE,
            &QueueConfig {
                completed_keep: None,
                ..QueueConfig::default()
            },
        )
        .await?;

    let mut config = WorkerConfig::new(url.clone());
    config.queues = vec![QUEUE.to_string()];
    config.handlers = handlers;
    config.concurrency = 32;
    config.memory_budget = 2 * 1024 * MIB;
    config.grace = Duration::from_secs(5);
    config.runtime.max_instances = 64;
    let worker = Worker::new(config).await.context("starting the dev host")?;
    let (phase_tx, phase_rx) = watch::channel(Phase::Running);
    let host = tokio::spawn(worker.run(phase_rx));

    let mut out = std::io::stderr().lock();
    writeln!(
        out,
        "wasmq dev: redis-server at {url} (private, gone at exit)"
    )?;
    writeln!(
        out,
        "running {} sample jobs on queue {QUEUE:?}: echo, sleep, retry, fail, and hostile \
         infinite-loop / memory-bomb guests that the sandbox stops",
        args.jobs
    )?;
    drop(out);

    let enqueued = Arc::new(AtomicU64::new(0));
    let producer = tokio::spawn(produce(
        client.clone(),
        args.jobs,
        args.rate,
        enqueued.clone(),
    ));
    let started = Instant::now();
    let interrupted = watch_progress(&client, args.jobs, &enqueued).await?;
    producer.abort();
    summary(&client, started.elapsed()).await?;

    if args.keep_running && !interrupted {
        keep_running(&url)?;
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = phase_tx.send(Phase::Draining);
    let _ = host.await;
    drop(redis);
    Ok(0)
}

/// The example handlers, from the built examples in `examples`.
fn example_handlers(examples: &std::path::Path) -> anyhow::Result<Vec<HandlerSpec>> {
    let mut handlers = Vec::new();
    for (name, file, memory) in HANDLERS {
        let path = examples.join(file);
        if !path.exists() {
            anyhow::bail!(
                "example component {} not found: build the examples first with \
                 `bash guest-examples/rust/build.sh` (or point --examples at them)",
                path.display()
            );
        }
        handlers.push(HandlerSpec {
            name: name.to_string(),
            path,
            memory,
            timeout: DEFAULT_HANDLER_TIMEOUT,
            fuel: None,
            concurrency: None,
            throttle: None,
            grants: Default::default(),
        });
    }
    Ok(handlers)
}

/// Shows a progress bar until `total` jobs are completed or dead; true if Ctrl-C came first.
async fn watch_progress(client: &Client, total: u64, enqueued: &AtomicU64) -> anyhow::Result<bool> {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} done  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut interrupted = false;
    loop {
        let counts = client.counts(QUEUE).await?;
        let done = counts.completed + counts.dead;
        bar.set_position(done);
        bar.set_message(format!(
            "enqueued {} | waiting {} active {} retry {} | completed {} dead {}",
            enqueued.load(Ordering::Relaxed),
            counts.waiting,
            counts.active,
            counts.retry,
            counts.completed,
            counts.dead
        ));
        if done >= total {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = tokio::signal::ctrl_c() => { interrupted = true; break; }
        }
    }
    bar.finish();
    Ok(interrupted)
}

/// Says what to try against the host that keeps running.
fn keep_running(url: &str) -> std::io::Result<()> {
    let mut out = std::io::stderr().lock();
    writeln!(out, "\nthe host keeps running; try:")?;
    writeln!(
        out,
        "  wasmq enqueue {QUEUE} echo --payload hello --redis {url}"
    )?;
    writeln!(out, "  wasmq queue stats {QUEUE} --redis {url}")?;
    writeln!(out, "  wasmq dlq list {QUEUE} --redis {url}")?;
    writeln!(out, "Ctrl-C stops it.")
}

async fn produce(client: Client, total: u64, rate: u64, enqueued: Arc<AtomicU64>) {
    let tick = Duration::from_millis(20);
    let per_tick = (rate.max(1) * tick.as_millis() as u64 / 1000).max(1);
    let mut interval = tokio::time::interval(tick);
    let mut i = 0;
    while i < total {
        interval.tick().await;
        let n = per_tick.min(total - i);
        let jobs: Vec<NewJob> = (i..i + n).map(sample).collect();
        match client.enqueue_bulk(QUEUE, &jobs).await {
            Ok(_) => {
                i += n;
                enqueued.store(i, Ordering::Relaxed);
            }
            Err(err) => tracing::warn!(%err, "enqueueing sample jobs"),
        }
    }
}

async fn summary(client: &Client, elapsed: Duration) -> anyhow::Result<()> {
    let counts = client.counts(QUEUE).await?;
    let mut by_outcome: BTreeMap<String, u64> = BTreeMap::new();
    let mut offset = 0;
    loop {
        let dead = client.dead_letters(QUEUE, offset, 500).await?;
        if dead.is_empty() {
            break;
        }
        offset += dead.len() as u64;
        for job in dead {
            let outcome = job.last_outcome.unwrap_or_else(|| "unknown".to_string());
            *by_outcome
                .entry(format!("{} ({outcome})", job.handler))
                .or_default() += 1;
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\n{} completed, {} dead-lettered in {:.1}s ({:.0} jobs/s)",
        counts.completed,
        counts.dead,
        elapsed.as_secs_f64(),
        (counts.completed + counts.dead) as f64 / elapsed.as_secs_f64().max(0.001)
    )?;
    if !by_outcome.is_empty() {
        writeln!(out, "dead-letter queue, by handler and outcome:")?;
        for (what, n) in by_outcome {
            writeln!(out, "  {n:>6}  {what}")?;
        }
    }
    Ok(())
}
