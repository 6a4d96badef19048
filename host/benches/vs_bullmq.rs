//! Run with `bash bench/run.sh [--quick]` (it builds what this needs first); see bench/README.md.
//!
//! wasmq beside BullMQ 6.7.0 on one private redis-server, in one run, on the same workloads,
//! alternating the two systems, repetitions each: throughput (no-op jobs, 100 B payload, bulk
//! enqueued, timed from worker start to the N-th completion), pickup latency (idle worker, open
//! loop at 500/s, enqueue call to handler start), Redis cost (commands per job counted by
//! `INFO commandstats` after `CONFIG RESETSTAT`, script-internal calls included; Redis CPU
//! seconds per 10k jobs), host RSS with 1,000 sleeping jobs in flight, and throughput with a
//! deep queue. Writes `<out>/<timestamp>.md` and `.json`.
//!
//! 1. Start redis-server (`LocalRedis`: free loopback port, no persistence).
//! 2. For each workload and repetition, run wasmq then BullMQ (the order flips every
//!    repetition), with FLUSHALL before each run.
//! 3. wasmq's side is a real `wasmq run` process started per run; its clock starts before the
//!    process is spawned, so loading and compiling the component counts against wasmq.
//!    BullMQ's side is `node bench/bullmq/bench.js` (see that file for its line protocol).
//! 4. Every child is killed on drop, so an error or panic leaves no process behind.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use serde_json::{Value as Json, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use wasmq::local_redis::{LocalRedis, LocalRedisOptions};
use wasmq::queue::{Client, MAX_BULK, NewJob, QueueConfig};

const PAYLOAD_BYTES: usize = 100;
/// The longest any one run may take before it counts as failed.
const RUN_DEADLINE: Duration = Duration::from_secs(900);

struct Plan {
    quick: bool,
    reps: usize,
    throughput: Vec<(u64, usize)>,
    latency_n: usize,
    latency_c: Vec<usize>,
    latency_rate: f64,
    memory_jobs: usize,
    memory_sleep_ms: u64,
    depth: Vec<u64>,
    depth_n: u64,
    depth_c: usize,
    /// Real work: jobs per run and the concurrencies of the `work` workloads.
    work_n: u64,
    work_c: Vec<usize>,
    /// The light-task race: jobs enqueued at once on one idle worker of concurrency 1.
    race_n: u64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                reps: 1,
                // C=1 pays the round trips per job; C=50 the batched steady state.
                throughput: vec![(2_000, 1), (2_000, 50)],
                latency_n: 200,
                latency_c: vec![1],
                latency_rate: 500.0,
                memory_jobs: 1_000,
                memory_sleep_ms: 1_000,
                depth: vec![],
                depth_n: 0,
                depth_c: 50,
                work_n: 300,
                work_c: vec![50],
                race_n: 400,
            }
        } else {
            let mut throughput = Vec::new();
            for n in [20_000, 100_000] {
                for c in [1, 10, 50, 200] {
                    throughput.push((n, c));
                }
            }
            Plan {
                quick,
                reps: 3,
                throughput,
                latency_n: 2_000,
                latency_c: vec![1, 10],
                latency_rate: 500.0,
                memory_jobs: 1_000,
                memory_sleep_ms: 1_000,
                depth: vec![10_000, 1_000_000],
                depth_n: 10_000,
                depth_c: 50,
                work_n: 3_000,
                work_c: vec![1, 50],
                race_n: 400,
            }
        }
    }
}

struct Paths {
    root: PathBuf,
    wasmq: PathBuf,
    noop: PathBuf,
    sleep: PathBuf,
    stamp: PathBuf,
    /// The real-work handlers: Rust `http-fetch` and `transform`, JavaScript `transform`.
    http_fetch: PathBuf,
    transform_rust: PathBuf,
    transform_js: PathBuf,
    bullmq: PathBuf,
    out: PathBuf,
    logs: PathBuf,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(str::to_string).collect());
    // `--max-n 20000` leaves out the throughput runs with larger N (a shorter full run).
    let max_n: Option<u64> = args
        .iter()
        .position(|a| a == "--max-n")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let guests = root.join("guest-examples/rust/target/wasm32-wasip2/release");
    let stamp_dir = root.join("bench/guest/target/wasm32-wasip2/release");
    let stamp_ts = timestamp();
    let paths = Paths {
        wasmq: std::env::var_os("WASMQ_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| target.join("release/wasmq")),
        noop: guests.join("noop.wasm"),
        sleep: guests.join("sleep.wasm"),
        stamp: stamp_dir.join("stamp.wasm"),
        http_fetch: guests.join("http_fetch.wasm"),
        transform_rust: guests.join("transform.wasm"),
        transform_js: root.join("guest-examples/javascript/out/transform.wasm"),
        bullmq: root.join("bench/bullmq"),
        out: root.join("bench/results"),
        logs: root.join(format!("bench/results/{stamp_ts}-logs")),
        root,
    };
    for p in [
        &paths.wasmq,
        &paths.noop,
        &paths.sleep,
        &paths.stamp,
        &paths.http_fetch,
        &paths.transform_rust,
        &paths.transform_js,
    ] {
        if !p.exists() {
            bail!(
                "{} is missing: run bench/run.sh, which builds it",
                p.display()
            );
        }
    }
    if !paths.bullmq.join("node_modules/bullmq").exists() {
        bail!(
            "bench/bullmq/node_modules is missing: run `npm ci` in bench/bullmq (bench/run.sh does)"
        );
    }
    std::fs::create_dir_all(&paths.logs)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut plan = Plan::new(quick);
    if let Some(max) = max_n {
        plan.throughput.retain(|&(n, _)| n <= max);
    }
    runtime.block_on(run(plan, paths, stamp_ts, only))
}

fn timestamp() -> String {
    let out = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y%m%dT%H%M%SZ")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    out.trim().to_string()
}

/// Everything measured, in the order it ran; written whole as the raw JSON.
struct Bench {
    redis: LocalRedis,
    client: Client,
    conn: MultiplexedConnection,
    paths: Paths,
    runs: Vec<Json>,
    run_counter: usize,
}

async fn run(plan: Plan, paths: Paths, stamp: String, only: Option<Vec<String>>) -> Result<()> {
    let redis = LocalRedis::start(LocalRedisOptions::default())?;
    let url = redis.url();
    eprintln!("redis-server on {url}");
    let client = Client::connect(&url).await?;
    // No response timeout: FLUSHALL after a million-job run takes seconds.
    let conn = blocking_connection(&url).await?;
    let mut bench = Bench {
        redis,
        client,
        conn,
        paths,
        runs: Vec::new(),
        run_counter: 0,
    };
    let started = Instant::now();
    let load_before = load_average();
    let wants = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));

    if wants("throughput") {
        for &(n, c) in &plan.throughput {
            for rep in 0..plan.reps {
                for system in order(rep) {
                    let r = bench.throughput(system, n, n, c).await?;
                    bench.record("throughput", system, rep, json!({"n": n, "c": c}), r);
                }
            }
        }
    }
    if wants("latency") {
        for &c in &plan.latency_c {
            for rep in 0..plan.reps {
                for system in order(rep) {
                    let r = bench.latency(system, c, &plan).await?;
                    bench.record(
                        "latency",
                        system,
                        rep,
                        json!({"c": c, "n": plan.latency_n}),
                        r,
                    );
                }
            }
        }
    }
    if wants("memory") {
        for rep in 0..plan.reps {
            for system in order(rep) {
                let r = bench.memory(system, &plan).await?;
                let params = json!({"jobs": plan.memory_jobs, "sleep_ms": plan.memory_sleep_ms});
                bench.record("memory", system, rep, params, r);
            }
        }
    }
    if wants("depth") {
        for &depth in &plan.depth {
            for rep in 0..plan.reps {
                for system in order(rep) {
                    let r = bench
                        .throughput(system, depth, plan.depth_n, plan.depth_c)
                        .await?;
                    let params = json!({"depth": depth, "n": plan.depth_n, "c": plan.depth_c});
                    bench.record("depth", system, rep, params, r);
                }
            }
        }
    }

    if wants("work") {
        // The loopback server the HTTP jobs call; both systems call the same one.
        let server = LoopbackHttp::start().await?;
        let json_file = bench.paths.logs.join("payload-100k.json");
        std::fs::write(&json_file, json_payload())?;
        for work in Work::real(&bench.paths, &server.url, &json_file)? {
            for &c in &plan.work_c {
                for rep in 0..plan.reps {
                    for system in order(rep) {
                        let r = bench
                            .throughput_of(system, &work, plan.work_n, plan.work_n, c)
                            .await?;
                        let params = json!({"work": work.name, "n": plan.work_n, "c": c});
                        bench.record("work", system, rep, params, r);
                    }
                }
            }
        }
        server.task.abort();
    }
    if wants("race") {
        for rep in 0..plan.reps {
            for system in order(rep) {
                let r = bench.race(system, plan.race_n).await?;
                bench.record("race", system, rep, json!({"n": plan.race_n}), r);
            }
        }
    }

    let env = environment(&bench, load_before, started.elapsed()).await;
    let report = json!({"quick": plan.quick, "environment": env, "runs": bench.runs});
    let md = markdown(&report);
    std::fs::create_dir_all(&bench.paths.out)?;
    let base = bench.paths.out.join(&stamp);
    std::fs::write(
        base.with_extension("json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(base.with_extension("md"), &md)?;
    println!("{md}");
    eprintln!("written: {}.md and .json", base.display());
    bench.redis.stop();
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum System {
    Wasmq,
    Bullmq,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Wasmq => "wasmq",
            System::Bullmq => "bullmq",
        }
    }
}

/// Alternate which system goes first, so neither always runs on a warmer (or more loaded)
/// machine.
fn order(rep: usize) -> [System; 2] {
    if rep.is_multiple_of(2) {
        [System::Wasmq, System::Bullmq]
    } else {
        [System::Bullmq, System::Wasmq]
    }
}

impl Bench {
    fn record(&mut self, workload: &str, system: System, rep: usize, params: Json, result: Json) {
        eprintln!("{workload} {} rep {rep} {params}: {result}", system.name());
        self.runs.push(json!({
            "workload": workload, "system": system.name(), "rep": rep,
            "params": params, "result": result,
        }));
    }

    fn next_queue(&mut self) -> String {
        self.run_counter += 1;
        format!("bench{}", self.run_counter)
    }

    async fn flush(&mut self) -> Result<()> {
        let () = redis::cmd("FLUSHALL").query_async(&mut self.conn).await?;
        Ok(())
    }

    async fn reset_stats(&mut self) -> Result<(f64, Instant)> {
        let () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut self.conn)
            .await?;
        Ok((self.redis_cpu().await?, Instant::now()))
    }

    async fn redis_cpu(&mut self) -> Result<f64> {
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .query_async(&mut self.conn)
            .await?;
        let field = |name: &str| -> f64 {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        Ok(field("used_cpu_sys") + field("used_cpu_user"))
    }

    /// Calls per command since the last reset, script-internal calls included.
    async fn commandstats(&mut self) -> Result<BTreeMap<String, u64>> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.conn)
            .await?;
        let mut out = BTreeMap::new();
        for l in info.lines() {
            if let Some(rest) = l.strip_prefix("cmdstat_")
                && let Some((name, stats)) = rest.split_once(':')
                && let Some(calls) = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|v| v.parse().ok())
            {
                out.insert(name.to_string(), calls);
            }
        }
        Ok(out)
    }

    /// Redis cost of the measured phase: commands (without the driver's own INFO, CONFIG and
    /// `driver_xread` XREAD calls) and CPU seconds.
    async fn redis_cost(&mut self, cpu0: f64, driver_xread: u64, jobs: u64) -> Result<Json> {
        let cpu1 = self.redis_cpu().await?;
        let mut stats = self.commandstats().await?;
        stats.remove("info");
        stats.remove("config|resetstat");
        stats.remove("config");
        if let Some(x) = stats.get_mut("xread") {
            *x = x.saturating_sub(driver_xread);
        }
        stats.retain(|_, v| *v > 0);
        let total: u64 = stats.values().sum();
        let cpu = cpu1 - cpu0;
        Ok(json!({
            "redis_commands": total,
            "redis_commands_per_job": total as f64 / jobs as f64,
            "redis_cpu_s": cpu,
            "redis_cpu_s_per_10k_jobs": cpu * 10_000.0 / jobs as f64,
            "commandstats": stats,
        }))
    }

    fn log_file(&self, name: &str) -> Result<std::fs::File> {
        Ok(std::fs::File::create(self.paths.logs.join(name))?)
    }

    /// `wasmq run` on `queue`, with `handler` given as a file, or (None) with the handlers of
    /// a `--config` file in `extra`.
    fn spawn_wasmq(
        &mut self,
        queue: &str,
        handler: Option<(&str, &Path)>,
        extra: &[&str],
    ) -> Result<Child> {
        let log = format!("{queue}-wasmq.log");
        let mut cmd = Command::new(&self.paths.wasmq);
        cmd.arg("run")
            .arg("--redis")
            .arg(self.redis.url())
            .arg("--queues")
            .arg(queue);
        if let Some((name, path)) = handler {
            cmd.arg("--handler")
                .arg(format!("{name}={}", path.display()));
        }
        cmd.args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(self.log_file(&log)?)
            .stderr(self.log_file(&format!("{queue}-wasmq.err"))?)
            .kill_on_drop(true);
        cmd.spawn().context("spawning wasmq run")
    }

    fn spawn_node(&mut self, queue: &str, mode: &str, params: Json) -> Result<Node> {
        let mut params = params;
        params["url"] = json!(self.redis.url());
        params["queue"] = json!(queue);
        params["payload_bytes"] = json!(PAYLOAD_BYTES);
        let mut child = Command::new("node")
            .current_dir(&self.paths.bullmq)
            .arg("bench.js")
            .arg(mode)
            .arg(params.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(self.log_file(&format!("{queue}-{mode}-node.err"))?)
            .kill_on_drop(true)
            .spawn()
            .context("spawning node (Node 20 must be on PATH)")?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        Ok(Node {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    async fn enqueue_wasmq(
        &mut self,
        queue: &str,
        handler: &str,
        payload: &[u8],
        n: u64,
    ) -> Result<f64> {
        let t0 = Instant::now();
        let mut left = n as usize;
        let mut pending = Vec::new();
        while left > 0 {
            let k = left.min(MAX_BULK);
            let jobs: Vec<NewJob> = (0..k)
                .map(|_| NewJob::new(handler, payload.to_vec()))
                .collect();
            let client = self.client.clone();
            let queue = queue.to_string();
            // Two bulk calls in flight: one is built while the other runs in Redis.
            pending.push(tokio::spawn(async move {
                client.enqueue_bulk(&queue, &jobs).await
            }));
            if pending.len() >= 2 {
                pending.remove(0).await??;
            }
            left -= k;
        }
        for p in pending {
            p.await??;
        }
        Ok(t0.elapsed().as_secs_f64())
    }

    /// Enqueue `depth` no-op jobs, then time a worker at concurrency `c` until `n` completed.
    async fn throughput(&mut self, system: System, depth: u64, n: u64, c: usize) -> Result<Json> {
        let noop = Work::noop(&self.paths);
        self.throughput_of(system, &noop, depth, n, c).await
    }

    /// Enqueue `depth` jobs of `work`, then time a worker at concurrency `c` until `n`
    /// completed. Fails if any job failed: a figure of failing jobs measures nothing.
    async fn throughput_of(
        &mut self,
        system: System,
        work: &Work,
        depth: u64,
        n: u64,
        c: usize,
    ) -> Result<Json> {
        self.flush().await?;
        let queue = self.next_queue();
        match system {
            System::Wasmq => {
                let config = QueueConfig {
                    completed_keep: Some(0),
                    ..QueueConfig::default()
                };
                self.client.set_config(&queue, &config).await?;
                let enqueue_s = self
                    .enqueue_wasmq(&queue, work.handler, &work.payload, depth)
                    .await?;
                let events_key = format!("wasmq:{{{queue}}}:events");
                let mut reader = blocking_connection(&self.redis.url()).await?;
                let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
                    .arg(&events_key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut reader)
                    .await?;
                let mut last_id = last.first().map_or("0-0".to_string(), |e| e.0.clone());
                let (cpu0, _) = self.reset_stats().await?;
                let t0 = Instant::now();
                let mut args = vec!["--concurrency".to_string(), c.to_string()];
                args.extend(work.wasmq_args.iter().cloned());
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                // A handler with grants is given in a --config file (`wasmq run` takes grants
                // only there); the others as a file.
                let handler = (!work.wasmq_args.iter().any(|a| a == "--config"))
                    .then_some((work.handler, work.component.as_path()));
                let mut child = self.spawn_wasmq(&queue, handler, &args)?;
                let pid = child.id().ok_or_else(|| anyhow!("wasmq exited at once"))?;
                let mut completed = 0u64;
                let mut first_active: Option<f64> = None;
                let mut xreads = 0u64;
                while completed < n {
                    if t0.elapsed() > RUN_DEADLINE {
                        bail!("wasmq throughput run: {completed}/{n} after {RUN_DEADLINE:?}");
                    }
                    if let Some(status) = child.try_wait()? {
                        bail!(
                            "wasmq run exited early ({status}); see {}",
                            self.paths.logs.display()
                        );
                    }
                    let reply: redis::Value = redis::cmd("XREAD")
                        .arg("COUNT")
                        .arg(1000)
                        .arg("BLOCK")
                        .arg(1000)
                        .arg("STREAMS")
                        .arg(&events_key)
                        .arg(&last_id)
                        .query_async(&mut reader)
                        .await?;
                    xreads += 1;
                    for (id, event, jobs) in parse_xread(reply)? {
                        last_id = id;
                        if event == "completed" {
                            completed += jobs;
                        } else if event == "active" && first_active.is_none() {
                            first_active = Some(t0.elapsed().as_secs_f64());
                        } else if event == "retried" || event == "dead" {
                            bail!(
                                "wasmq {}: a job {event}; see {}",
                                work.name,
                                self.paths.logs.display()
                            );
                        }
                    }
                }
                let seconds = t0.elapsed().as_secs_f64();
                let cpu = proc_cpu_seconds(pid);
                let cost = self.redis_cost(cpu0, xreads, n).await?;
                stop_wasmq(&mut child).await;
                let counts = self.client.counts(&queue).await?;
                let mut out = json!({
                    "enqueue_s": enqueue_s,
                    "enqueue_jobs_per_s": depth as f64 / enqueue_s,
                    "seconds": seconds,
                    "jobs_per_s": n as f64 / seconds,
                    "startup_to_first_active_s": first_active,
                    "jobs_per_s_after_first_active": first_active.map(|f| n as f64 / (seconds - f)),
                    "worker_cpu_s": cpu,
                    "worker_cpu_s_per_10k_jobs": cpu.map(|c| c * 10_000.0 / n as f64),
                    "left_waiting": counts.waiting, "dead": counts.dead,
                });
                merge(&mut out, cost);
                Ok(out)
            }
            System::Bullmq => {
                let mut params = work.node.clone();
                merge(&mut params, json!({"n": n, "depth": depth, "c": c}));
                let mut node = self.spawn_node(&queue, "throughput", params)?;
                let enq = node.expect("enqueued").await?;
                let (cpu0, _) = self.reset_stats().await?;
                node.send("go").await?;
                let done = node.expect("done").await?;
                if done["failed"].as_u64().unwrap_or(0) > 0 {
                    bail!("bullmq {}: jobs failed: {done}", work.name);
                }
                let cost = self.redis_cost(cpu0, 0, n).await?;
                node.send("exit").await?;
                node.finish().await;
                let seconds = done["seconds"].as_f64().unwrap_or(f64::NAN);
                let enqueue_s = enq["seconds"].as_f64().unwrap_or(f64::NAN);
                let cpu = done["cpu"]["user"].as_f64().unwrap_or(0.0)
                    + done["cpu"]["system"].as_f64().unwrap_or(0.0);
                let mut out = json!({
                    "enqueue_s": enqueue_s,
                    "enqueue_jobs_per_s": depth as f64 / enqueue_s,
                    "seconds": seconds,
                    "jobs_per_s": n as f64 / seconds,
                    "worker_cpu_s": cpu,
                    "worker_cpu_s_per_10k_jobs": cpu * 10_000.0 / n as f64,
                });
                merge(&mut out, cost);
                Ok(out)
            }
        }
    }

    /// One idle worker at concurrency `c`; `latency_n` jobs enqueued one at a time, open loop;
    /// latency from the clock reading just before the enqueue call to the handler's first
    /// clock reading, both CLOCK_REALTIME of this host.
    async fn latency(&mut self, system: System, c: usize, plan: &Plan) -> Result<Json> {
        self.flush().await?;
        let queue = self.next_queue();
        let n = plan.latency_n;
        let warmup = 20;
        let settle = Duration::from_millis(500);
        let mut lat_ms: Vec<f64> = match system {
            System::Wasmq => {
                let config = QueueConfig {
                    completed_keep: None,
                    ..QueueConfig::default()
                };
                self.client.set_config(&queue, &config).await?;
                let mut child = self.spawn_wasmq(
                    &queue,
                    Some(("stamp", &self.paths.stamp.clone())),
                    &["--concurrency", &c.to_string()],
                )?;
                for i in 0..warmup {
                    let job = NewJob::new("stamp", b"w".to_vec()).with_id(format!("w{i}"));
                    self.client.enqueue(&queue, &job).await?;
                }
                self.wait_completed(&queue, warmup as u64, &mut child)
                    .await?;
                tokio::time::sleep(settle).await;
                let interval = Duration::from_secs_f64(1.0 / plan.latency_rate);
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut tasks = Vec::with_capacity(n);
                for i in 0..n {
                    tick.tick().await;
                    let client = self.client.clone();
                    let queue = queue.clone();
                    tasks.push(tokio::spawn(async move {
                        let job = NewJob::new("stamp", vec![b'x'; PAYLOAD_BYTES])
                            .with_id(format!("j{i}"));
                        let t = realtime_ns();
                        client.enqueue(&queue, &job).await.map(|_| t)
                    }));
                }
                let mut sent = Vec::with_capacity(n);
                for t in tasks {
                    sent.push(t.await??);
                }
                self.wait_completed(&queue, (warmup + n) as u64, &mut child)
                    .await?;
                stop_wasmq(&mut child).await;
                let mut pipe = redis::pipe();
                for i in 0..n {
                    pipe.cmd("HGET")
                        .arg(format!("wasmq:{{{queue}}}:job:j{i}"))
                        .arg("result");
                }
                let results: Vec<Option<String>> = pipe.query_async(&mut self.conn).await?;
                let mut out = Vec::with_capacity(n);
                for (t, r) in sent.iter().zip(results) {
                    let start: u128 = r.ok_or_else(|| anyhow!("a job has no result"))?.parse()?;
                    out.push((start as f64 - *t as f64) / 1e6);
                }
                out
            }
            System::Bullmq => {
                let mut worker = self.spawn_node(&queue, "worker", json!({"c": c, "n": n}))?;
                worker.expect("ready").await?;
                let mut producer = self.spawn_node(
                    &queue,
                    "producer",
                    json!({"n": n, "warmup": warmup, "rate": plan.latency_rate,
                           "settle_ms": settle.as_millis() as u64}),
                )?;
                producer.expect("produced").await?;
                producer.finish().await;
                let lat = worker.expect("latencies").await?;
                worker.send("exit").await?;
                worker.finish().await;
                lat["ms"]
                    .as_array()
                    .ok_or_else(|| anyhow!("no latencies"))?
                    .iter()
                    .filter_map(Json::as_f64)
                    .collect()
            }
        };
        lat_ms.sort_by(|a, b| a.total_cmp(b));
        Ok(json!({
            "samples": lat_ms.len(),
            "p50_ms": percentile(&lat_ms, 0.50),
            "p90_ms": percentile(&lat_ms, 0.90),
            "p99_ms": percentile(&lat_ms, 0.99),
            "max_ms": lat_ms.last(),
            "min_ms": lat_ms.first(),
        }))
    }

    /// The light-task race: one idle, warmed-up worker of concurrency 1; `n` no-op jobs
    /// enqueued in one bulk call; timed from just before that call to the `n`-th completion.
    async fn race(&mut self, system: System, n: u64) -> Result<Json> {
        self.flush().await?;
        let queue = self.next_queue();
        let warmup = 20u64;
        match system {
            System::Wasmq => {
                let config = QueueConfig {
                    completed_keep: Some(0),
                    ..QueueConfig::default()
                };
                self.client.set_config(&queue, &config).await?;
                let events_key = format!("wasmq:{{{queue}}}:events");
                let mut reader = blocking_connection(&self.redis.url()).await?;
                let mut child = self.spawn_wasmq(
                    &queue,
                    Some(("noop", &self.paths.noop.clone())),
                    &["--concurrency", "1"],
                )?;
                let payload = [b'x'; PAYLOAD_BYTES];
                let mut last_id = "0-0".to_string();
                self.enqueue_wasmq(&queue, "noop", &payload, warmup).await?;
                self.await_completions(&mut reader, &events_key, &mut last_id, warmup, &mut child)
                    .await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let t0 = Instant::now();
                let jobs: Vec<NewJob> = (0..n)
                    .map(|_| NewJob::new("noop", payload.to_vec()))
                    .collect();
                self.client.enqueue_bulk(&queue, &jobs).await?;
                let enqueued = t0.elapsed().as_secs_f64();
                self.await_completions(&mut reader, &events_key, &mut last_id, n, &mut child)
                    .await?;
                let seconds = t0.elapsed().as_secs_f64();
                stop_wasmq(&mut child).await;
                Ok(
                    json!({"seconds": seconds, "enqueue_s": enqueued, "jobs_per_s": n as f64 / seconds}),
                )
            }
            System::Bullmq => {
                let mut node =
                    self.spawn_node(&queue, "race", json!({"n": n, "warmup": warmup}))?;
                node.expect("ready").await?;
                node.send("go").await?;
                let done = node.expect("done").await?;
                node.send("exit").await?;
                node.finish().await;
                let seconds = done["seconds"].as_f64().unwrap_or(f64::NAN);
                Ok(json!({
                    "seconds": seconds,
                    "enqueue_s": done["enqueue_s"],
                    "jobs_per_s": n as f64 / seconds,
                }))
            }
        }
    }

    /// Reads `events_key` from `last_id` on until `n` more jobs completed; fails on a failed
    /// job, an early exit of `child` or the run deadline.
    async fn await_completions(
        &mut self,
        reader: &mut MultiplexedConnection,
        events_key: &str,
        last_id: &mut String,
        n: u64,
        child: &mut Child,
    ) -> Result<()> {
        let t0 = Instant::now();
        let mut completed = 0u64;
        while completed < n {
            if t0.elapsed() > RUN_DEADLINE {
                bail!("{completed}/{n} completed after {RUN_DEADLINE:?}");
            }
            if let Some(status) = child.try_wait()? {
                bail!("wasmq run exited early ({status})");
            }
            let reply: redis::Value = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(1000)
                .arg("BLOCK")
                .arg(1000)
                .arg("STREAMS")
                .arg(events_key)
                .arg(last_id.as_str())
                .query_async(reader)
                .await?;
            for (id, event, jobs) in parse_xread(reply)? {
                *last_id = id;
                match event.as_str() {
                    "completed" => completed += jobs,
                    "retried" | "dead" => bail!("a job {event}"),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    async fn wait_completed(&mut self, queue: &str, n: u64, child: &mut Child) -> Result<()> {
        let deadline = Instant::now() + RUN_DEADLINE;
        loop {
            let counts = self.client.counts(queue).await?;
            if counts.completed >= n {
                return Ok(());
            }
            if counts.dead > 0 {
                bail!("{} jobs dead-lettered in {queue}", counts.dead);
            }
            if let Some(status) = child.try_wait()? {
                bail!("wasmq run exited early ({status})");
            }
            if Instant::now() > deadline {
                bail!(
                    "{queue}: {}/{n} completed before the deadline",
                    counts.completed
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// RSS of the worker process with `memory_jobs` jobs in flight, each sleeping.
    async fn memory(&mut self, system: System, plan: &Plan) -> Result<Json> {
        self.flush().await?;
        let queue = self.next_queue();
        let jobs = plan.memory_jobs;
        let observe = Duration::from_millis(100);
        match system {
            System::Wasmq => {
                let payload = plan.memory_sleep_ms.to_string().into_bytes();
                self.enqueue_wasmq(&queue, "sleep", &payload, jobs as u64)
                    .await?;
                let t0 = Instant::now();
                let mut child = self.spawn_wasmq(
                    &queue,
                    Some(("sleep", &self.paths.sleep.clone())),
                    &[
                        "--concurrency",
                        &jobs.to_string(),
                        "--memory-budget",
                        "64GiB",
                    ],
                )?;
                let pid = child.id().ok_or_else(|| anyhow!("wasmq exited at once"))?;
                let counts = loop {
                    let c = self.client.counts(&queue).await?;
                    if c.active >= jobs as u64 || c.completed > 0 || t0.elapsed() > RUN_DEADLINE {
                        break c;
                    }
                    if let Some(status) = child.try_wait()? {
                        bail!("wasmq run exited early ({status})");
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                };
                let reached = t0.elapsed().as_secs_f64();
                tokio::time::sleep(observe).await;
                let rss = proc_status_kib(pid, "VmRSS:");
                let after = self.client.counts(&queue).await?;
                let hwm = proc_status_kib(pid, "VmHWM:");
                stop_wasmq(&mut child).await;
                Ok(json!({
                    "rss_kib": rss, "hwm_kib": hwm,
                    "active_when_reached": counts.active,
                    "completed_when_reached": counts.completed,
                    "active_when_measured": after.active,
                    "completed_when_measured": after.completed,
                    "seconds_to_all_active": reached,
                }))
            }
            System::Bullmq => {
                let mut node = self.spawn_node(
                    &queue,
                    "memory",
                    json!({"n": jobs, "c": jobs, "sleep_ms": plan.memory_sleep_ms}),
                )?;
                let pid = node
                    .child
                    .id()
                    .ok_or_else(|| anyhow!("node exited at once"))?;
                let inflight = node.expect("inflight").await?;
                tokio::time::sleep(observe).await;
                let rss = proc_status_kib(pid, "VmRSS:");
                let hwm = proc_status_kib(pid, "VmHWM:");
                node.send("exit").await?;
                node.finish().await;
                Ok(json!({
                    "rss_kib": rss, "hwm_kib": hwm,
                    "active_when_reached": inflight["in_flight"],
                }))
            }
        }
    }
}

/// One kind of job the throughput workloads time, on both systems.
struct Work {
    /// Its name in the report.
    name: &'static str,
    /// wasmq's handler: its name, its component, the payload of every job, and what
    /// `wasmq run` needs besides (grants).
    handler: &'static str,
    component: PathBuf,
    payload: Vec<u8>,
    wasmq_args: Vec<String>,
    /// bench.js's parameters for the same work (`work`: `noop`, `http` or `json`).
    node: Json,
}

impl Work {
    fn noop(paths: &Paths) -> Work {
        Work {
            name: "noop",
            handler: "noop",
            component: paths.noop.clone(),
            payload: vec![b'x'; PAYLOAD_BYTES],
            wasmq_args: Vec::new(),
            node: json!({"work": "noop"}),
        }
    }

    /// The real-work jobs: one HTTP GET to a loopback server (the Rust `http-fetch` handler,
    /// granted that host, vs Node's `fetch`), and the `transform` of a 100 KB JSON document
    /// (the Rust and the JavaScript handler vs the same computation in Node).
    fn real(paths: &Paths, url: &str, json_file: &Path) -> Result<Vec<Work>> {
        let json = std::fs::read(json_file)?;
        // `wasmq run` takes a handler's grants from its --config file.
        let fetch_config = paths.logs.join("fetch.toml");
        std::fs::write(
            &fetch_config,
            format!(
                "[handlers.fetch]\npath = {:?}\nallow_outbound = [{:?}]\n",
                paths.http_fetch.display().to_string(),
                url
            ),
        )?;
        let json_node = json!({"work": "json", "json_file": json_file});
        Ok(vec![
            Work {
                name: "http GET, loopback (Rust)",
                handler: "fetch",
                component: paths.http_fetch.clone(),
                payload: json!({"url": format!("{url}/")}).to_string().into_bytes(),
                wasmq_args: vec!["--config".to_string(), fetch_config.display().to_string()],
                node: json!({"work": "http", "http_url": format!("{url}/")}),
            },
            Work {
                name: "JSON 100 KB transform (Rust)",
                handler: "transform",
                component: paths.transform_rust.clone(),
                payload: json.clone(),
                wasmq_args: Vec::new(),
                node: json_node.clone(),
            },
            Work {
                name: "JSON 100 KB transform (JavaScript)",
                handler: "transform",
                component: paths.transform_js.clone(),
                payload: json,
                wasmq_args: Vec::new(),
                node: json_node,
            },
        ])
    }
}

/// `{"numbers":[...]}` of about 100 KB: integers below 10^6, as the `transform` handlers take.
fn json_payload() -> Vec<u8> {
    let mut out = String::from("{\"numbers\":[");
    let mut i: u64 = 0;
    while out.len() < 100_000 - 10 {
        if i > 0 {
            out.push(',');
        }
        out += &((i * 7919 + 13) % 1_000_000).to_string();
        i += 1;
    }
    out += "]}";
    out.into_bytes()
}

/// A loopback HTTP/1.1 server answering every request with `200 ok` (keep-alive), for the
/// HTTP jobs of both systems.
struct LoopbackHttp {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl LoopbackHttp {
    async fn start() -> Result<LoopbackHttp> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_request| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(LoopbackHttp { url, task })
    }
}

struct Node {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Node {
    async fn expect(&mut self, phase: &str) -> Result<Json> {
        let read = async {
            loop {
                let Some(line) = self.lines.next_line().await? else {
                    bail!("node exited before phase {phase} (see its .err log)");
                };
                let v: Json = match serde_json::from_str(&line) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                if v["phase"] == phase {
                    return Ok(v);
                }
            }
        };
        tokio::time::timeout(RUN_DEADLINE, read)
            .await
            .map_err(|_| anyhow!("node: no {phase} within {RUN_DEADLINE:?}"))?
    }

    async fn send(&mut self, line: &str) -> Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn finish(mut self) {
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// SIGTERM (graceful: the host releases or finishes its jobs), then SIGKILL after 10 s.
async fn stop_wasmq(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

async fn blocking_connection(url: &str) -> Result<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new().set_response_timeout(None);
    Ok(redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// `(stream id, event, number of jobs)` for each entry of an XREAD reply on one stream.
fn parse_xread(reply: redis::Value) -> Result<Vec<(String, String, u64)>> {
    use redis::Value as V;
    let mut out = Vec::new();
    let streams = match reply {
        V::Nil => return Ok(out),
        V::Array(s) => s,
        V::Map(m) => m.into_iter().map(|(k, v)| V::Array(vec![k, v])).collect(),
        other => bail!("unexpected XREAD reply {other:?}"),
    };
    for stream in streams {
        let V::Array(mut pair) = stream else { continue };
        let Some(V::Array(entries)) = pair.pop() else {
            continue;
        };
        for entry in entries {
            let V::Array(parts) = entry else { continue };
            let mut parts = parts.into_iter();
            let id: String = redis::from_redis_value(parts.next().unwrap_or(V::Nil))?;
            let fields: Vec<String> = redis::from_redis_value(parts.next().unwrap_or(V::Nil))?;
            let mut event = String::new();
            let mut jobs = 0u64;
            for kv in fields.chunks(2) {
                match kv {
                    [k, v] if k == "event" => event = v.clone(),
                    [k, v] if k == "jobs" => {
                        let list: Vec<(String, u32)> = serde_json::from_str(v)?;
                        jobs = list.len() as u64;
                    }
                    _ => {}
                }
            }
            out.push((id, event, jobs));
        }
    }
    Ok(out)
}

fn realtime_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// utime + stime of a process, in seconds.
fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15 (1-based, man 5 proc).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    Some((utime + stime) / hz)
}

fn merge(into: &mut Json, from: Json) {
    if let (Json::Object(a), Json::Object(b)) = (into, from) {
        a.extend(b);
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn command_output(program: &str, args: &[&str], dir: &Path) -> String {
    std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

async fn environment(bench: &Bench, load_before: String, elapsed: Duration) -> Json {
    let root = &bench.paths.root;
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let bullmq_version =
        std::fs::read_to_string(bench.paths.bullmq.join("node_modules/bullmq/package.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<Json>(&s).ok())
            .map(|v| v["version"].clone())
            .unwrap_or(Json::Null);
    let ioredis_version =
        std::fs::read_to_string(bench.paths.bullmq.join("node_modules/ioredis/package.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<Json>(&s).ok())
            .map(|v| v["version"].clone())
            .unwrap_or(Json::Null);
    let dirty = !command_output("git", &["status", "--porcelain", "--", "host"], root).is_empty();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_gib": mem_kib as f64 / 1024.0 / 1024.0,
        "cpu": command_output("sh", &["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], root),
        "kernel": command_output("uname", &["-r"], root),
        "node": command_output("node", &["--version"], root),
        "bullmq": bullmq_version,
        "ioredis": ioredis_version,
        "redis_server": command_output("redis-server", &["--version"], root),
        "wasmq_rev": command_output("git", &["rev-parse", "--short", "HEAD"], root),
        "wasmq_host_dirty": dirty,
        "load_average_start": load_before,
        "load_average_end": load_average(),
        "elapsed_s": elapsed.as_secs_f64(),
    })
}

// ----- the report --------------------------------------------------------------------------

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn values(runs: &[Json], workload: &str, system: &str, params: &Json, field: &str) -> Vec<f64> {
    runs.iter()
        .filter(|r| r["workload"] == workload && r["system"] == system && &r["params"] == params)
        .filter_map(|r| r["result"][field].as_f64())
        .collect()
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    match v {
        None => "n/a".to_string(),
        Some(x) if x.abs() >= 1000.0 => {
            let s = format!("{:.0}", x);
            let (sign, digits_s) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
            let mut out = String::new();
            for (i, ch) in digits_s.chars().enumerate() {
                if i > 0 && (digits_s.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(ch);
            }
            format!("{sign}{out}")
        }
        Some(x) => format!("{x:.digits$}"),
    }
}

fn all_reps(v: &[f64], digits: usize) -> String {
    v.iter()
        .map(|x| fmt(Some(*x), digits))
        .collect::<Vec<_>>()
        .join(" / ")
}

fn markdown(report: &Json) -> String {
    let runs = report["runs"].as_array().cloned().unwrap_or_default();
    let env = &report["environment"];
    let mut s = String::new();
    let quick = report["quick"].as_bool().unwrap_or(false);
    s += &format!(
        "# wasmq vs BullMQ{}\n\n",
        if quick {
            " (quick smoke run: small samples, one repetition, not for quoting)"
        } else {
            ""
        }
    );
    s += &format!(
        "Machine: {} cores ({}), {:.1} GiB, kernel {}. Load average {} at start, {} at end. \
         Versions: node {}, bullmq {}, ioredis {}, {}, wasmq {}{}. Took {:.0} s.\n\n",
        env["nproc"],
        env["cpu"].as_str().unwrap_or(""),
        env["mem_gib"].as_f64().unwrap_or(0.0),
        env["kernel"].as_str().unwrap_or(""),
        env["load_average_start"].as_str().unwrap_or(""),
        env["load_average_end"].as_str().unwrap_or(""),
        env["node"].as_str().unwrap_or(""),
        env["bullmq"].as_str().unwrap_or(""),
        env["ioredis"].as_str().unwrap_or(""),
        env["redis_server"]
            .as_str()
            .unwrap_or("")
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        env["wasmq_rev"].as_str().unwrap_or(""),
        if env["wasmq_host_dirty"].as_bool().unwrap_or(false) {
            " (host/ has uncommitted changes)"
        } else {
            ""
        },
        env["elapsed_s"].as_f64().unwrap_or(0.0),
    );
    s += "Everything (Redis, workers, producers, this driver) shares the machine's cores. Medians of \
          the repetitions; every repetition is listed under \"reps\" (wasmq first). Ratio = wasmq / BullMQ.\n\n";

    // Summary: one row per figure.
    s += "| figure | wasmq | BullMQ | wasmq / BullMQ |\n|---|---:|---:|---:|\n";
    let mut row = |name: String, w: Option<f64>, b: Option<f64>, digits: usize| {
        let ratio = match (w, b) {
            (Some(w), Some(b)) if b != 0.0 => format!("{:.2}x", w / b),
            _ => "n/a".to_string(),
        };
        s += &format!(
            "| {name} | {} | {} | {ratio} |\n",
            fmt(w, digits),
            fmt(b, digits)
        );
    };
    let param_list = |workload: &str| -> Vec<Json> {
        let mut seen: Vec<Json> = Vec::new();
        for r in runs.iter().filter(|r| r["workload"] == workload) {
            if !seen.contains(&r["params"]) {
                seen.push(r["params"].clone());
            }
        }
        seen
    };
    let tp = param_list("throughput");
    let lat = param_list("latency");
    let mem = param_list("memory");
    let depth = param_list("depth");
    let work = param_list("work");
    let race = param_list("race");
    let med = |w: &str, sys: &str, p: &Json, f: &str| median(values(&runs, w, sys, p, f));
    for p in &tp {
        row(
            format!("throughput, jobs/s (N={}, C={})", p["n"], p["c"]),
            med("throughput", "wasmq", p, "jobs_per_s"),
            med("throughput", "bullmq", p, "jobs_per_s"),
            0,
        );
    }
    for p in &tp {
        if p["c"] == 50 {
            row(
                format!("bulk enqueue, jobs/s (N={})", p["n"]),
                med("throughput", "wasmq", p, "enqueue_jobs_per_s"),
                med("throughput", "bullmq", p, "enqueue_jobs_per_s"),
                0,
            );
            row(
                format!("Redis commands / job (N={}, C=50)", p["n"]),
                med("throughput", "wasmq", p, "redis_commands_per_job"),
                med("throughput", "bullmq", p, "redis_commands_per_job"),
                2,
            );
            row(
                format!("Redis CPU s / 10k jobs (N={}, C=50)", p["n"]),
                med("throughput", "wasmq", p, "redis_cpu_s_per_10k_jobs"),
                med("throughput", "bullmq", p, "redis_cpu_s_per_10k_jobs"),
                3,
            );
            row(
                format!("worker CPU s / 10k jobs (N={}, C=50)", p["n"]),
                med("throughput", "wasmq", p, "worker_cpu_s_per_10k_jobs"),
                med("throughput", "bullmq", p, "worker_cpu_s_per_10k_jobs"),
                3,
            );
        }
    }
    for p in &lat {
        for (f, label) in [
            ("p50_ms", "p50"),
            ("p90_ms", "p90"),
            ("p99_ms", "p99"),
            ("max_ms", "max"),
        ] {
            row(
                format!(
                    "pickup latency {label}, ms (C={}, {} jobs at 500/s)",
                    p["c"], p["n"]
                ),
                med("latency", "wasmq", p, f),
                med("latency", "bullmq", p, f),
                2,
            );
        }
    }
    for p in &mem {
        row(
            format!(
                "worker RSS, MiB, {} jobs in flight (sleep {} ms)",
                p["jobs"], p["sleep_ms"]
            ),
            med("memory", "wasmq", p, "rss_kib").map(|k| k / 1024.0),
            med("memory", "bullmq", p, "rss_kib").map(|k| k / 1024.0),
            0,
        );
    }
    for p in &depth {
        row(
            format!(
                "throughput, jobs/s, first {} of {} waiting (C={})",
                p["n"], p["depth"], p["c"]
            ),
            med("depth", "wasmq", p, "jobs_per_s"),
            med("depth", "bullmq", p, "jobs_per_s"),
            0,
        );
    }

    for p in &work {
        // wasmq's rate from its first lease (its start-up and compile left out, as BullMQ's
        // clock starts at worker.run()).
        row(
            format!(
                "{}, jobs/s (N={}, C={})",
                p["work"].as_str().unwrap_or(""),
                p["n"],
                p["c"]
            ),
            med("work", "wasmq", p, "jobs_per_s_after_first_active"),
            med("work", "bullmq", p, "jobs_per_s"),
            0,
        );
    }
    for p in &race {
        row(
            format!("{} tiny jobs on one worker (C=1), end to end, ms", p["n"]),
            med("race", "wasmq", p, "seconds").map(|s| s * 1000.0),
            med("race", "bullmq", p, "seconds").map(|s| s * 1000.0),
            1,
        );
    }

    // Details, every repetition.
    s += "\n## Throughput, every repetition\n\n";
    s += "| N | C | system | jobs/s (reps) | jobs/s after first fetch (reps) | enqueue jobs/s | Redis cmds/job | Redis CPU s/10k | worker CPU s/10k |\n";
    s += "|---:|---:|---|---|---|---:|---:|---:|---:|\n";
    for (w, list) in [("throughput", &tp), ("depth", &depth)] {
        for p in list {
            for sys in ["wasmq", "bullmq"] {
                let v = |f: &str| values(&runs, w, sys, p, f);
                let n_label = if w == "depth" {
                    format!("{} of {}", p["n"], p["depth"])
                } else {
                    p["n"].to_string()
                };
                s += &format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    n_label,
                    p["c"],
                    sys,
                    all_reps(&v("jobs_per_s"), 0),
                    if sys == "wasmq" {
                        all_reps(&v("jobs_per_s_after_first_active"), 0)
                    } else {
                        "-".into()
                    },
                    fmt(median(v("enqueue_jobs_per_s")), 0),
                    fmt(median(v("redis_commands_per_job")), 2),
                    fmt(median(v("redis_cpu_s_per_10k_jobs")), 3),
                    fmt(median(v("worker_cpu_s_per_10k_jobs")), 3),
                );
            }
        }
    }
    if !work.is_empty() {
        s += "\n## Real work, every repetition\n\n| work | N | C | system | jobs/s (reps) | worker CPU s/10k | Redis CPU s/10k |\n|---|---:|---:|---|---|---:|---:|\n";
        for p in &work {
            for sys in ["wasmq", "bullmq"] {
                let v = |f: &str| values(&runs, "work", sys, p, f);
                let rate = if sys == "wasmq" {
                    "jobs_per_s_after_first_active"
                } else {
                    "jobs_per_s"
                };
                s += &format!(
                    "| {} | {} | {} | {} | {} | {} | {} |\n",
                    p["work"].as_str().unwrap_or(""),
                    p["n"],
                    p["c"],
                    sys,
                    all_reps(&v(rate), 0),
                    fmt(median(v("worker_cpu_s_per_10k_jobs")), 3),
                    fmt(median(v("redis_cpu_s_per_10k_jobs")), 3),
                );
            }
        }
    }
    if !race.is_empty() {
        s += "\n## Light-task race, every repetition (ms)\n\n| N | system | end to end (reps) | of which enqueue (reps) |\n|---:|---|---|---|\n";
        for p in &race {
            for sys in ["wasmq", "bullmq"] {
                let ms = |f: &str| {
                    values(&runs, "race", sys, p, f)
                        .iter()
                        .map(|s| s * 1000.0)
                        .collect::<Vec<_>>()
                };
                s += &format!(
                    "| {} | {} | {} | {} |\n",
                    p["n"],
                    sys,
                    all_reps(&ms("seconds"), 1),
                    all_reps(&ms("enqueue_s"), 1)
                );
            }
        }
    }
    if !lat.is_empty() {
        s += "\n## Pickup latency, every repetition (ms)\n\n| C | system | p50 | p90 | p99 | max |\n|---:|---|---|---|---|---|\n";
        for p in &lat {
            for sys in ["wasmq", "bullmq"] {
                let v = |f: &str| all_reps(&values(&runs, "latency", sys, p, f), 2);
                s += &format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    p["c"],
                    sys,
                    v("p50_ms"),
                    v("p90_ms"),
                    v("p99_ms"),
                    v("max_ms")
                );
            }
        }
    }
    if !mem.is_empty() {
        s += "\n## Worker RSS, every repetition (MiB)\n\n| system | RSS (reps) | peak RSS (reps) | jobs in flight when measured |\n|---|---|---|---|\n";
        for p in &mem {
            for sys in ["wasmq", "bullmq"] {
                let mib = |f: &str| {
                    values(&runs, "memory", sys, p, f)
                        .iter()
                        .map(|k| k / 1024.0)
                        .collect::<Vec<_>>()
                };
                let inflight = values(&runs, "memory", sys, p, "active_when_reached");
                s += &format!(
                    "| {} | {} | {} | {} |\n",
                    sys,
                    all_reps(&mib("rss_kib"), 0),
                    all_reps(&mib("hwm_kib"), 0),
                    all_reps(&inflight, 0)
                );
            }
        }
    }
    s
}
