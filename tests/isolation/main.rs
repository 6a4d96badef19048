//! Tests that measure latency and need the machine to themselves: their own test binary
//! (`test = false` in host/Cargo.toml), so neither `cargo test` nor `scripts/test.sh` runs it;
//! run it by name, alone: `cargo test -p wasmq --test isolation -- --nocapture`. Real `wasmq
//! run` processes, real Redis, real components.

#![allow(clippy::unwrap_used)]

#[path = "../all/support/mod.rs"]
mod support;

// The load-time half of the table is the main suite's business.
#[allow(dead_code)]
#[path = "../all/corpus/table.rs"]
mod corpus_table;

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmq::queue::{Client, NewJob, QueueConfig};

use support::eventually;
use support::guests;
use support::host::HostProcess;
use support::redis::RedisServer;

/// The pickup-latency probe of bench/ (`bench/guest/stamp`): it returns the wall-clock time at
/// which its guest code started, in ns since the Unix epoch. Built here the way bench/run.sh
/// builds it, so both measure latency with the same handler.
fn stamp_guest() -> PathBuf {
    let dir = guests::repo_root().join("bench/guest");
    let status = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--locked",
        ])
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .current_dir(&dir)
        .status()
        .expect("run cargo build in bench/guest");
    assert!(status.success(), "building bench/guest/stamp failed");
    let path = dir.join("target/wasm32-wasip2/release/stamp.wasm");
    assert!(path.exists(), "no guest component at {}", path.display());
    path
}

fn now_us() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since_epoch.as_micros()).unwrap()
}

/// The value at quantile `q` of `sorted` (nearest rank).
fn quantile(sorted: &[u64], q: f64) -> u64 {
    let rank = (sorted.len() as f64 * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn percentiles(sorted: &[u64]) -> String {
    format!(
        "n={:4} p50={:6} p90={:6} p99={:6} max={:6} µs",
        sorted.len(),
        quantile(sorted, 0.50),
        quantile(sorted, 0.90),
        quantile(sorted, 0.99),
        sorted[sorted.len() - 1],
    )
}

/// CPU time used so far by the whole machine and by our own processes (the test, redis-server
/// and the host), in clock ticks, and the machine's total ticks (busy or idle, all cores):
/// what tells a failure caused by the hostile queue from one caused by other processes.
/// `None` where /proc cannot be read.
#[derive(Clone, Copy)]
struct CpuTicks {
    total: u64,
    busy: u64,
    ours: u64,
}

impl CpuTicks {
    fn read(our_pids: &[u32]) -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal: time stolen by the hypervisor counts
        // as busy, it is a core taken from us just the same.
        let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = cpu[..] else {
            return None;
        };
        let busy = user + nice + system + irq + softirq + steal;
        let total = busy + idle + iowait;
        let mut ours = 0;
        for pid in our_pids {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name may hold spaces; the fields after it start with the state
            // (field 3), so utime and stime (fields 14 and 15) are at 11 and 12.
            let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
            ours += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        }
        Some(CpuTicks { total, busy, ours })
    }

    /// The share of the machine's CPU (all cores) that other processes used since `earlier`.
    fn others_since(self, earlier: CpuTicks) -> f64 {
        let others = (self.busy - earlier.busy).saturating_sub(self.ours - earlier.ours);
        others as f64 / (self.total - earlier.total).max(1) as f64
    }
}

/// One stamp job of a round.
struct Sample {
    /// The clock reading taken just before its enqueue call, in µs since the Unix epoch.
    enqueued_us: u64,
    /// From then to the moment its guest started, in µs.
    latency_us: u64,
    /// When a host fetched it, in ms since the Unix epoch (Redis's clock, the same machine's):
    /// what splits a latency into waiting in Redis and waiting in the host.
    fetched_ms: u64,
}

/// One round of the measurement.
struct Round {
    hostile: bool,
    samples: Vec<Sample>,
    /// Sorted.
    latencies_us: Vec<u64>,
    /// Share of the machine's CPU used by other processes during the round.
    others: Option<f64>,
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let load = if self.hostile { "hostile " } else { "baseline" };
        write!(f, "{load} {}", percentiles(&self.latencies_us))?;
        if let Some(others) = self.others {
            write!(
                f,
                "; other processes used {:.0}% of the CPU",
                others * 100.0
            )?;
        }
        Ok(())
    }
}

/// Enqueues `n` stamp jobs one at a time, open loop at 200/s, and waits for them all. Returns
/// each job's id with the clock reading (µs since the Unix epoch) taken just before its
/// enqueue call.
async fn stamp_stream(client: &Client, queue: &str, n: usize) -> Vec<(String, u64)> {
    let mut sent = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    for _ in 0..n {
        tick.tick().await;
        let job = NewJob::new("stamp", Vec::new());
        let enqueued_us = now_us();
        let id = client.enqueue(queue, &job).await.unwrap().id;
        sent.push((id, enqueued_us));
    }
    eventually("stamp jobs done", Duration::from_secs(30), || async {
        let c = client.counts(queue).await.ok()?;
        (c.active + c.waiting == 0).then_some(())
    })
    .await;
    sent
}

/// Each job `sent` by [`stamp_stream`], with its latency: the guest's start time minus the
/// clock reading taken just before the enqueue call.
async fn samples(client: &Client, queue: &str, sent: &[(String, u64)]) -> Vec<Sample> {
    let mut samples = Vec::with_capacity(sent.len());
    for (id, enqueued_us) in sent {
        let job = client.get(queue, id).await.unwrap().unwrap();
        let result = job
            .result
            .unwrap_or_else(|| panic!("job {id} has no result"));
        let started_ns: u64 = String::from_utf8(result).unwrap().parse().unwrap();
        samples.push(Sample {
            enqueued_us: *enqueued_us,
            latency_us: (started_ns / 1000).saturating_sub(*enqueued_us),
            fetched_ms: job.started_at_ms.unwrap_or(0),
        });
    }
    samples
}

/// One attempt of a hostile job, from its fetch to its end, in ms since the Unix epoch.
struct HostileRun {
    handler: String,
    started_ms: u64,
    finished_ms: u64,
}

/// The hostile jobs among `ids` that ran (a paused queue keeps the others for later rounds).
async fn hostile_runs(client: &Client, ids: &[String]) -> Vec<HostileRun> {
    let mut runs = Vec::new();
    for id in ids {
        let job = client.get("hostile", id).await.unwrap().unwrap();
        if let (Some(started_ms), Some(finished_ms)) = (job.started_at_ms, job.finished_at_ms) {
            runs.push(HostileRun {
                handler: job.handler,
                started_ms,
                finished_ms,
            });
        }
    }
    runs
}

/// The slowest samples of the hostile rounds, each with where its time went (in Redis until
/// a host fetched it, then in the host) and the hostile jobs that started or ended while it
/// waited: what to look at first when the bound fails.
fn slowest(rounds: &[Round], runs: &[HostileRun], n: usize) -> Vec<String> {
    let mut slow: Vec<&Sample> = rounds
        .iter()
        .filter(|r| r.hostile)
        .flat_map(|r| &r.samples)
        .collect();
    slow.sort_unstable_by_key(|s| std::cmp::Reverse(s.latency_us));
    slow.iter()
        .take(n)
        .map(|s| {
            let from = s.enqueued_us / 1000;
            let to = (s.enqueued_us + s.latency_us) / 1000 + 1;
            let near = |t: u64| t + 3 >= from && t <= to;
            let mut nearby: Vec<&str> = runs
                .iter()
                .filter(|r| near(r.started_ms) || near(r.finished_ms))
                .map(|r| r.handler.as_str())
                .collect();
            nearby.sort_unstable();
            nearby.dedup();
            format!(
                "  {:6} µs, fetched after {} ms; hostile jobs starting or ending meanwhile: {}",
                s.latency_us,
                s.fetched_ms.saturating_sub(from),
                nearby.join(", ")
            )
        })
        .collect()
}

/// Jobs enqueued per round, at 200/s: 1.5 s of samples.
const ROUND_JOBS: usize = 300;

/// Hostile jobs enqueued (while the hostile queue is paused) before each hostile round of
/// [`hostile_queue_leaves_the_echo_queue_latency_within_twice_its_baseline`]: more than its 8
/// slots get through in a round, since each infinite loop holds its slot for its whole 1 s
/// deadline and each memory bomb for a few ms.
fn hostile_jobs() -> Vec<NewJob> {
    (0..40)
        .map(|i| {
            let job = if i % 4 == 0 {
                NewJob::new("bomb", Vec::new())
            } else {
                NewJob::new("loop", Vec::new())
            };
            job.with_max_attempts(1)
        })
        .collect()
}

/// The pid of the redis-server behind `redis`, from `INFO server`.
async fn redis_pid(redis: &RedisServer) -> u32 {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut redis.connection().await)
        .await
        .unwrap();
    let pid = info.lines().find_map(|l| l.strip_prefix("process_id:"));
    pid.unwrap().trim().parse().unwrap()
}

/// What runs on the hostile queue while the echo queue's latency is measured.
struct HostileLoad {
    /// The TOML sections (`[handlers.<name>]`) of the hostile queue's handlers.
    handlers: String,
    /// Enqueued, while the hostile queue is paused, before each hostile round.
    jobs: Vec<NewJob>,
    /// Hostile rounds; a baseline round comes before the first and after each one.
    rounds: usize,
    /// Run once before the first round, like the echo queue's warm-up: a handler's first
    /// instance builds what the later ones reuse (its memory image), once per host.
    warm_up: Vec<NewJob>,
}

/// The echo queue's p99 under load and at baseline, in µs, its slowest job of all the
/// hostile rounds, and a report of every round.
struct Measurement {
    baseline_p99: u64,
    loaded_p99: u64,
    loaded_max: u64,
    report: String,
}

/// The longest any one echo job of a hostile round may wait, in µs: not a speed figure (the
/// slowest of 1,500 jobs on a shared machine is noise, tens of ms), but what no neighbour
/// should see. A p99 leaves out 15 of them; the multi-second stalls of issue 20 (a neighbour's
/// short attempt queued for a CPU slot behind a hostile job that held it for seconds) were
/// one or two jobs in a run.
const MAX_STALL_US: u64 = 500_000;

impl Measurement {
    /// Fails the test unless the loaded p99 is within twice the baseline and no job of the
    /// hostile rounds waited longer than [`MAX_STALL_US`].
    fn assert_within_twice_the_baseline(&self) {
        let Measurement {
            baseline_p99: baseline,
            loaded_p99: loaded,
            loaded_max,
            report,
        } = self;
        assert!(
            *loaded <= 2 * baseline,
            "echo p99 {loaded} µs under hostile load vs {baseline} µs baseline (limit: twice \
             the baseline); every round:\n{report}"
        );
        assert!(
            *loaded_max <= MAX_STALL_US,
            "an echo job waited {loaded_max} µs under hostile load (limit: {MAX_STALL_US} µs); \
             every round:\n{report}"
        );
    }
}

/// One measurement at a time: the tests of this binary would otherwise run side by side and
/// each be the other's load.
static MACHINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The echo queue's p99 latency (from just before the enqueue call to the moment the guest
/// starts, in µs) with the hostile queue busy beside it, against its baseline with the hostile
/// queue paused. Baseline and hostile rounds alternate (B H B H ... B), so load from other
/// processes that comes and goes during the test falls on both alike; each p99 is taken over
/// all rounds of its kind but its worst one (the one of highest p99), so that no single burst
/// of it decides a p99. A hostile load that raises the latency does so in every hostile round.
async fn measure_echo_latency(load: HostileLoad) -> Measurement {
    let _machine = MACHINE.lock().await;
    let redis = RedisServer::start();
    let client = redis.client().await;
    for q in ["echo", "hostile"] {
        let config = QueueConfig {
            completed_keep: None,
            ..QueueConfig::default()
        };
        client.set_config(q, &config).await.unwrap();
    }
    client.pause("hostile").await.unwrap();
    let toml = format!(
        "queues = [\"echo\", \"hostile\"]\nconcurrency = 32\n\
             [handlers.stamp]\npath = {:?}\n{}\
             [queue.hostile]\nconcurrency = 8\n",
        stamp_guest(),
        load.handlers,
    );
    let mut host = HostProcess::builder(&redis.url()).config(&toml).start();
    let our_pids = [std::process::id(), redis_pid(&redis).await, host.pid()];

    // Warm up (first instantiations, connections).
    stamp_stream(&client, "echo", 50).await;
    if !load.warm_up.is_empty() {
        client.enqueue_bulk("hostile", &load.warm_up).await.unwrap();
        client.resume("hostile").await.unwrap();
        eventually("hostile warm-up done", Duration::from_secs(60), || async {
            let c = client.counts("hostile").await.ok()?;
            (c.waiting + c.active == 0).then_some(())
        })
        .await;
        client.pause("hostile").await.unwrap();
    }

    let mut rounds: Vec<Round> = Vec::new();
    let mut hostile_ids: Vec<String> = Vec::new();
    for i in 0..=2 * load.rounds {
        let hostile = i % 2 == 1;
        if hostile {
            let enqueued = client.enqueue_bulk("hostile", &load.jobs).await.unwrap();
            hostile_ids.extend(enqueued.into_iter().map(|e| e.id));
            client.resume("hostile").await.unwrap();
            eventually("hostile jobs running", Duration::from_secs(10), || async {
                let c = client.counts("hostile").await.ok()?;
                (c.active >= 8).then_some(())
            })
            .await;
        }
        let before = CpuTicks::read(&our_pids);
        let sent = stamp_stream(&client, "echo", ROUND_JOBS).await;
        let others = CpuTicks::read(&our_pids)
            .zip(before)
            .map(|(after, before)| after.others_since(before));
        if hostile {
            let c = client.counts("hostile").await.unwrap();
            assert!(
                c.waiting > 0,
                "the hostile queue drained before round {i} ended: {c:?}"
            );
            // Running jobs stop at their deadline at the latest; none start after the pause.
            client.pause("hostile").await.unwrap();
            eventually("hostile jobs stopped", Duration::from_secs(10), || async {
                let c = client.counts("hostile").await.ok()?;
                (c.active == 0).then_some(())
            })
            .await;
        }
        let samples = samples(&client, "echo", &sent).await;
        let mut latencies_us: Vec<u64> = samples.iter().map(|s| s.latency_us).collect();
        latencies_us.sort_unstable();
        rounds.push(Round {
            hostile,
            samples,
            latencies_us,
            others,
        });
    }
    assert!(host.is_running(), "the host died:\n{}", host.log_text());

    let pooled = |hostile: bool, but_the_worst: bool| {
        let mut kind: Vec<&Round> = rounds.iter().filter(|r| r.hostile == hostile).collect();
        if but_the_worst {
            kind.sort_by_key(|r| quantile(&r.latencies_us, 0.99));
            kind.pop();
        }
        let mut all: Vec<u64> = kind
            .iter()
            .flat_map(|r| r.latencies_us.iter().copied())
            .collect();
        all.sort_unstable();
        all
    };
    let (baseline, loaded) = (pooled(false, true), pooled(true, true));
    let mut report: Vec<String> = rounds.iter().map(Round::to_string).collect();
    report.push(format!(
        "all baseline rounds {}",
        percentiles(&pooled(false, false))
    ));
    let all_loaded = pooled(true, false);
    report.push(format!("all hostile rounds  {}", percentiles(&all_loaded)));
    report.push("compared, each kind without its worst round:".to_string());
    report.push(format!("baseline {}", percentiles(&baseline)));
    report.push(format!("hostile  {}", percentiles(&loaded)));
    report.push(format!(
        "hostile p99 / baseline p99 = {:.2}",
        quantile(&loaded, 0.99) as f64 / quantile(&baseline, 0.99).max(1) as f64
    ));
    report.push("slowest samples of the hostile rounds:".to_string());
    report.extend(slowest(
        &rounds,
        &hostile_runs(&client, &hostile_ids).await,
        10,
    ));
    // Not a reason to pass: with other processes on its cores, the OS gives the host less CPU
    // than it has cores, and the hostile jobs take their share of it from the echo queue too.
    // Linux shares the CPU between sessions (autogroups) first: a host whose CPU slot is busy
    // uses up its session's share, and its other threads then wait for the session's turn,
    // which an idle baseline host does not. On this project's 2-core machine, with other
    // sessions using 75% of it, that alone made the hostile p99 up to 3 times the baseline;
    // with this test's session given more weight (`echo -10 > /proc/self/autogroup`), under
    // the same load, 0.6 to 1.0 times. The note tells that case from a slower host.
    let busiest = rounds.iter().filter_map(|r| r.others).fold(0.0, f64::max);
    if busiest > 0.25 {
        report.push(format!(
            "other processes used up to {:.0}% of the CPU in a round: this test needs the \
             machine to itself (or its session given more weight than theirs)",
            busiest * 100.0
        ));
    }
    let report = report.join("\n");
    eprintln!("{report}");
    Measurement {
        baseline_p99: quantile(&baseline, 0.99),
        loaded_p99: quantile(&loaded, 0.99),
        loaded_max: all_loaded[all_loaded.len() - 1],
        report,
    }
}

/// A queue of infinite loops and memory bombs beside the echo queue.
#[tokio::test]
async fn hostile_queue_leaves_the_echo_queue_latency_within_twice_its_baseline() {
    let handlers = format!(
        "[handlers.loop]\npath = {:?}\ntimeout = \"1s\"\n\
         [handlers.bomb]\npath = {:?}\nmemory = \"32MiB\"\n",
        guests::rust("infinite-loop"),
        guests::rust("memory-bomb"),
    );
    let measured = measure_echo_latency(HostileLoad {
        handlers,
        jobs: hostile_jobs(),
        rounds: 5,
        warm_up: Vec::new(),
    })
    .await;
    measured.assert_within_twice_the_baseline();
}

/// Copies of the corpus enqueued before each hostile round: enough that the hostile queue's 8
/// slots are still busy when the round's 1.5 s of samples end.
const CORPUS_COPIES: usize = 8;
/// The corpus runs here under a shorter deadline than in the main suite, so that a paused
/// hostile queue empties quickly between rounds: what times out here instead of finishing
/// still ran for this long beside the echo queue.
const CORPUS_MAX_TIMEOUT: Duration = Duration::from_secs(2);

/// Every run-time entry of the hostile-guest corpus (tests/all/corpus/table.rs) on the hostile
/// queue: spinning loops, clock spinners, floods of stdout and log calls, bombs, traps in
/// start functions, huge results, sandbox probes.
#[tokio::test]
async fn hostile_corpus_leaves_the_echo_queue_latency_within_twice_its_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let entries = corpus_table::run_entries("127.0.0.1:9");
    let mut handlers = String::new();
    let mut jobs = Vec::new();
    for entry in &entries {
        let path = dir.path().join(format!("{}.wasm", entry.name));
        std::fs::write(&path, entry.build.bytes()).unwrap();
        let limits = corpus_table::Limits {
            timeout: entry.limits.timeout.min(CORPUS_MAX_TIMEOUT),
            ..entry.limits
        };
        handlers += &limits.toml(entry.name, &path);
        jobs.push(NewJob::new(entry.name, entry.payload.clone()).with_max_attempts(1));
    }
    let measured = measure_echo_latency(HostileLoad {
        handlers,
        jobs: (0..CORPUS_COPIES).flat_map(|_| jobs.clone()).collect(),
        rounds: 5,
        warm_up: jobs,
    })
    .await;
    measured.assert_within_twice_the_baseline();
}
