//! The chaos run, shared by the command (`bash bench/chaos.sh`, `host/benches/chaos/main.rs`)
//! and the CI test (`tests/all/chaos.rs`, which includes this file): N jobs across several
//! real `wasmq run` processes while hosts are SIGKILLed (and restarted) and Redis is SIGKILLed
//! (and restarted from its append-only file), then a check of every job.
//!
//! 1. Start a private redis-server with AOF and `appendfsync always` (`LocalRedis`), set the
//!    queue to keep every completed job and every event, start the hosts (handler `effect`,
//!    short lease).
//! 2. Enqueue the jobs in waves, one wave more than there are chaos events. Event `j` (a host
//!    kill or a Redis restart, in a seeded random order) fires once half of wave `j` has
//!    completed, so it always lands while jobs are in flight; wave `j + 1` is enqueued right
//!    after it. A kill takes a random host among those holding a lease. A host that exits by
//!    itself is restarted and counted.
//! 3. Drained: nothing waiting, delayed, active or retrying after the last wave. Then every
//!    host is killed and the check reads the jobs, the events stream and the hosts' logs.
//!
//! What counts (see bench/README.md):
//! - lost: an enqueued job whose hash is missing, that is not `completed` when the queue has
//!   drained (or at the deadline), or whose result is not its payload;
//! - executions: the `effect` guest writes `chaos-effect id=<id> attempt=<n>` to its host's log
//!   as its side effect, just before it returns; the hosts' logs are the record of every
//!   execution, even one whose host died before its outcome reached Redis;
//! - unexplained duplicate: a job with more than one `ok` attempt in its history, or more than
//!   one `completed` event, or an execution of an attempt that is neither the attempt recorded
//!   `ok` nor one recorded `lease_expired` (a lease lost: the host was killed, or Redis was away
//!   for longer than the lease), or two executions of the same attempt. Executions of attempts
//!   recorded `lease_expired` are the at-least-once re-runs the protocol allows: counted,
//!   explained.
//!
//! Every child process is killed when its guard drops (an error or a panic included); the
//! command also runs in a process group of its own (`bench/chaos.sh`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use wasmq::local_redis::{LocalRedis, LocalRedisOptions};
use wasmq::queue::{Backoff, Client, JobState, MAX_BULK, NewJob, QueueConfig};

/// The queue every chaos job goes to.
const QUEUE: &str = "chaos";
/// The handler name the hosts serve the `effect` component under.
const HANDLER: &str = "effect";
/// What the guest writes to the host's log as its side effect.
const EFFECT_MARK: &str = "chaos-effect ";
/// How often the driver looks at the queue's counts.
const POLL: Duration = Duration::from_millis(20);

/// The size and shape of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub jobs: u64,
    pub hosts: usize,
    /// Host SIGKILLs (each host restarted at once).
    pub kills: u32,
    /// Redis SIGKILLs (each restarted from its AOF after `redis_down_max` at most).
    pub redis_restarts: u32,
    /// `--concurrency` of each host.
    pub concurrency: usize,
    /// How long each job works (sleeps) before its side effect.
    pub work_ms: u64,
    /// `--lease` of each host: a killed host's jobs come back after it.
    pub lease: Duration,
    /// Each job's `max_attempts`: high, so that chaos cannot dead-letter a job.
    pub max_attempts: u32,
    /// Redis stays down for a random time up to this long before it is restarted.
    pub redis_down_max: Duration,
    /// The least time between two chaos events. Short: jobs run out quickly (a wave is a few
    /// hundred milliseconds of work), and a host that has not taken jobs yet is not picked.
    pub min_gap: Duration,
    /// The whole run (enqueue, chaos, drain) must end within this.
    pub deadline: Duration,
    /// Seeds the order of the events, the hosts killed and Redis's downtimes.
    pub seed: u64,
}

impl Plan {
    /// The full size: 10,000 jobs, 3 hosts, 50 host kills, 5 Redis restarts.
    pub fn full() -> Plan {
        Plan {
            jobs: 10_000,
            hosts: 3,
            kills: 50,
            redis_restarts: 5,
            concurrency: 4,
            work_ms: 10,
            lease: Duration::from_secs(2),
            max_attempts: 100,
            // Longer than the lease at times: leases then expire while their hosts still run the
            // jobs, and those hosts come back to Redis with outcomes it must refuse.
            redis_down_max: Duration::from_secs(3),
            min_gap: Duration::from_millis(50),
            deadline: Duration::from_secs(20 * 60),
            seed: rand::random(),
        }
    }

    /// What CI runs: the same code path, small enough for well under a minute.
    pub fn ci() -> Plan {
        Plan {
            jobs: 300,
            kills: 3,
            redis_restarts: 1,
            deadline: Duration::from_secs(50),
            ..Plan::full()
        }
    }

    fn events(&self) -> usize {
        self.kills as usize + self.redis_restarts as usize
    }

    /// Wave sizes: one wave more than there are events, the remainder spread over the first.
    fn waves(&self) -> Vec<u64> {
        let count = self.events() as u64 + 1;
        (0..count)
            .map(|i| self.jobs / count + u64::from(i < self.jobs % count))
            .collect()
    }

    fn validate(&self) -> Result<()> {
        if self.hosts == 0 || self.concurrency == 0 {
            bail!("a chaos run needs at least one host and a concurrency of at least 1");
        }
        // Each wave must keep every host busy when its event fires.
        let least = 2 * (self.events() as u64 + 1) * (self.hosts * self.concurrency) as u64;
        if self.jobs < least {
            bail!(
                "{} jobs are too few for {} events across {} hosts at concurrency {}: at least {least}",
                self.jobs,
                self.events(),
                self.hosts,
                self.concurrency
            );
        }
        if !(1..=1000).contains(&self.max_attempts) {
            bail!("max attempts must be within 1..=1000");
        }
        Ok(())
    }
}

/// What the run needs from the file system.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The `wasmq` binary the hosts run.
    pub wasmq: PathBuf,
    /// The `effect` component (guest-examples/rust/effect).
    pub handler: PathBuf,
    /// Where each host incarnation's log is written (`host<slot>-<n>.log`) and read back.
    pub logs: PathBuf,
}

/// One chaos event as it happened.
#[derive(Debug, Clone)]
pub struct ChaosEvent {
    /// Since the hosts were started.
    pub at: Duration,
    /// `kill <host id>` or `redis down <ms> ms`.
    pub what: String,
    /// Completed jobs when it fired.
    pub completed: u64,
}

/// The outcome of a run: what happened and what the check found.
#[derive(Debug, Clone)]
pub struct Report {
    pub plan: Plan,
    pub events: Vec<ChaosEvent>,
    pub kills_done: u32,
    pub redis_restarts_done: u32,
    /// Hosts that exited without being killed (each was restarted): `(host id, status)`.
    pub unexpected_exits: Vec<(String, String)>,
    /// From the hosts' start to the queue's drain; `None` when the deadline came first.
    pub drain: Option<Duration>,
    /// `(job id, why)`.
    pub lost: Vec<(String, String)>,
    /// `(job id, why)`.
    pub unexplained_duplicates: Vec<(String, String)>,
    pub completed: u64,
    /// Side effects seen in the hosts' logs.
    pub executions: u64,
    /// Executions of attempts recorded `lease_expired`: re-runs the protocol allows.
    pub explained_reexecutions: u64,
    /// Jobs by their final attempt number.
    pub attempts: BTreeMap<u32, u64>,
    /// Attempts by outcome (`ok`, `lease_expired`, ...) over every job's history.
    pub outcomes: BTreeMap<String, u64>,
    /// Jobs taken back (`lease_expired`) from each killed host.
    pub taken_back_per_kill: Vec<u64>,
    /// Leases that expired on hosts that were not killed (Redis was away for longer).
    pub lease_losses_without_kill: u64,
    /// Instrument checks: completed jobs whose `ok` attempt left no side effect in any log,
    /// and enqueued ids missing from the events stream (it was trimmed). Both must be 0 for
    /// the duplicate count to mean anything.
    pub completions_without_execution: Vec<String>,
    pub ids_missing_from_events: u64,
}

impl Report {
    /// 0 lost, 0 unexplained duplicates, every planned event done, drained before the deadline,
    /// and the instruments sound.
    pub fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.unexplained_duplicates.is_empty()
            && self.drain.is_some()
            && self.kills_done == self.plan.kills
            && self.redis_restarts_done == self.plan.redis_restarts
            && self.completions_without_execution.is_empty()
            && self.ids_missing_from_events == 0
    }

    /// The report as Markdown; `command` is how the run was started, `date` when.
    pub fn markdown(&self, command: &str, date: &str) -> String {
        let plan = &self.plan;
        let mut out = String::new();
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "# wasmq chaos run: {verdict}\n");
        let _ = writeln!(out, "- date: {date}");
        let _ = writeln!(out, "- command: `{command}`");
        let _ = writeln!(
            out,
            "- plan: {} jobs ({} ms of work each) across {} hosts (concurrency {}, lease {:?}), \
             {} host SIGKILLs, {} Redis SIGKILL + restarts (AOF, appendfsync always, down up to \
             {:?}), max attempts {}, seed {}",
            plan.jobs,
            plan.work_ms,
            plan.hosts,
            plan.concurrency,
            plan.lease,
            plan.kills,
            plan.redis_restarts,
            plan.redis_down_max,
            plan.max_attempts,
            plan.seed
        );
        let _ = writeln!(
            out,
            "- chaos done: {} of {} host kills, {} of {} Redis restarts; hosts that exited by \
             themselves: {}",
            self.kills_done,
            plan.kills,
            self.redis_restarts_done,
            plan.redis_restarts,
            self.unexpected_exits.len()
        );
        match self.drain {
            Some(drain) => {
                let _ = writeln!(
                    out,
                    "- time to drain: {:.1} s (hosts started to queue empty, chaos included; {:.0} \
                     jobs/s)",
                    drain.as_secs_f64(),
                    plan.jobs as f64 / drain.as_secs_f64().max(0.001)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "- time to drain: did not drain within {:?}",
                    plan.deadline
                );
            }
        }
        let _ = writeln!(out, "\n| check | result |\n|---|---|");
        let _ = writeln!(out, "| lost (must be 0) | {} |", self.lost.len());
        let _ = writeln!(
            out,
            "| completed more than once without a lease loss (must be 0) | {} |",
            self.unexplained_duplicates.len()
        );
        let _ = writeln!(out, "| completed | {} of {} |", self.completed, plan.jobs);
        let _ = writeln!(
            out,
            "| executions (side effects in the hosts' logs) | {} |",
            self.executions
        );
        let _ = writeln!(
            out,
            "| re-executions after a lease loss (explained) | {} |",
            self.explained_reexecutions
        );
        let taken: u64 = self.taken_back_per_kill.iter().sum();
        let caught = self.taken_back_per_kill.iter().filter(|&&n| n > 0).count();
        let _ = writeln!(
            out,
            "| host kills that caught jobs in flight | {caught} of {} ({taken} jobs taken back) |",
            self.taken_back_per_kill.len()
        );
        let _ = writeln!(
            out,
            "| leases lost on hosts that were not killed (Redis away longer than the lease) | {} |",
            self.lease_losses_without_kill
        );
        let _ = writeln!(
            out,
            "| instrument: completions without a logged execution / ids missing from events (must be 0) | {} / {} |",
            self.completions_without_execution.len(),
            self.ids_missing_from_events
        );
        let attempts: Vec<String> = self
            .attempts
            .iter()
            .map(|(attempt, jobs)| format!("{attempt}: {jobs}"))
            .collect();
        let _ = writeln!(out, "| jobs by attempts used | {} |", attempts.join(", "));
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(outcome, n)| format!("{outcome}: {n}"))
            .collect();
        let _ = writeln!(out, "| attempts by outcome | {} |", outcomes.join(", "));
        for (title, list) in [
            ("Lost", &self.lost),
            ("Unexplained duplicates", &self.unexplained_duplicates),
            ("Hosts that exited by themselves", &self.unexpected_exits),
        ] {
            if !list.is_empty() {
                let _ = writeln!(out, "\n## {title} ({}; first 50)\n", list.len());
                for (id, why) in list.iter().take(50) {
                    let _ = writeln!(out, "- `{id}`: {why}");
                }
            }
        }
        if !self.completions_without_execution.is_empty() {
            let _ = writeln!(
                out,
                "\n## Completions without a logged execution (first 50)\n"
            );
            for id in self.completions_without_execution.iter().take(50) {
                let _ = writeln!(out, "- `{id}`");
            }
        }
        let _ = writeln!(out, "\n## Events\n");
        for event in &self.events {
            let _ = writeln!(
                out,
                "- {:>7.2} s, {:>6} completed: {}",
                event.at.as_secs_f64(),
                event.completed,
                event.what
            );
        }
        out
    }
}

/// One host slot's current process.
struct Host {
    id: String,
    child: Child,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The host processes, one per slot, and what it takes to start another.
struct Fleet<'a> {
    plan: &'a Plan,
    paths: &'a Paths,
    url: String,
    cache: PathBuf,
    hosts: Vec<Host>,
    /// Processes started per slot, so each incarnation has its own id and log.
    started: Vec<u32>,
}

impl Fleet<'_> {
    fn spawn(&mut self, slot: usize) -> Result<Host> {
        self.started[slot] += 1;
        let id = format!("host{slot}-{}", self.started[slot]);
        let log_path = self.paths.logs.join(format!("{id}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;
        let child = Command::new(&self.paths.wasmq)
            .arg("run")
            .arg("--redis")
            .arg(&self.url)
            .arg("--queues")
            .arg(QUEUE)
            .arg("--handler")
            .arg(format!("{HANDLER}={}", self.paths.handler.display()))
            .arg("--concurrency")
            .arg(self.plan.concurrency.to_string())
            .arg("--lease")
            .arg(format!("{}ms", self.plan.lease.as_millis()))
            .arg("--host-id")
            .arg(&id)
            .arg("--cache-dir")
            .arg(&self.cache)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", self.paths.wasmq.display()))?;
        Ok(Host { id, child })
    }

    /// SIGKILLs the host in `slot` and starts its next incarnation. Returns the killed id.
    fn kill_and_restart(&mut self, slot: usize) -> Result<String> {
        let host = &mut self.hosts[slot];
        // std's `Child::kill` is SIGKILL on Unix. A host that already exited by itself is
        // reaped here and restarted all the same.
        let _ = host.child.kill();
        host.child.wait().context("reap a killed host")?;
        let next = self.spawn(slot)?;
        let old = std::mem::replace(&mut self.hosts[slot], next);
        Ok(old.id.clone())
    }

    /// Restarts every host that exited without being killed; returns their ids and statuses.
    fn supervise(&mut self) -> Result<Vec<(String, String)>> {
        let mut exited = Vec::new();
        for slot in 0..self.hosts.len() {
            if let Some(status) = self.hosts[slot].child.try_wait()? {
                let next = self.spawn(slot)?;
                let old = std::mem::replace(&mut self.hosts[slot], next);
                exited.push((old.id.clone(), status.to_string()));
            }
        }
        Ok(exited)
    }
}

#[derive(Debug, Clone, Copy)]
enum Chaos {
    KillHost,
    RestartRedis,
}

/// Runs the plan: start everything, enqueue, cause the chaos, drain, check every job.
pub async fn run(plan: &Plan, paths: &Paths) -> Result<Report> {
    plan.validate()?;
    for (what, path) in [("wasmq binary", &paths.wasmq), ("handler", &paths.handler)] {
        if !path.exists() {
            bail!("the {what} {} is missing", path.display());
        }
    }
    std::fs::create_dir_all(&paths.logs)
        .with_context(|| format!("create {}", paths.logs.display()))?;
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let mut redis = LocalRedis::start(LocalRedisOptions {
        aof: true,
        ..LocalRedisOptions::default()
    })?;
    let client = Client::connect(&redis.url()).await?;
    client
        .set_config(
            QUEUE,
            &QueueConfig {
                completed_keep: None,
                // Every event is kept: the check counts `completed` events per job.
                events_maxlen: 100 * plan.jobs.max(1_000),
                ..QueueConfig::default()
            },
        )
        .await?;

    let mut chaos: Vec<Chaos> = std::iter::repeat_n(Chaos::KillHost, plan.kills as usize)
        .chain(std::iter::repeat_n(
            Chaos::RestartRedis,
            plan.redis_restarts as usize,
        ))
        .collect();
    chaos.shuffle(&mut rng);
    let waves = plan.waves();
    let payload = |i: u64| format!("{} {}", plan.work_ms, job_id(i));

    let cache = tempfile::Builder::new()
        .prefix("wasmq-chaos-cache-")
        .tempdir()?;
    let mut fleet = Fleet {
        plan,
        paths,
        url: redis.url(),
        cache: cache.path().to_path_buf(),
        hosts: Vec::new(),
        started: vec![0; plan.hosts],
    };
    let started = Instant::now();
    let deadline = started + plan.deadline;
    for slot in 0..plan.hosts {
        let host = fleet.spawn(slot)?;
        fleet.hosts.push(host);
    }

    let mut report = Report {
        plan: plan.clone(),
        events: Vec::new(),
        kills_done: 0,
        redis_restarts_done: 0,
        unexpected_exits: Vec::new(),
        drain: None,
        lost: Vec::new(),
        unexplained_duplicates: Vec::new(),
        completed: 0,
        executions: 0,
        explained_reexecutions: 0,
        attempts: BTreeMap::new(),
        outcomes: BTreeMap::new(),
        taken_back_per_kill: Vec::new(),
        lease_losses_without_kill: 0,
        completions_without_execution: Vec::new(),
        ids_missing_from_events: 0,
    };
    let mut killed_hosts: Vec<String> = Vec::new();
    let mut enqueued = 0u64;
    let mut last_event = Instant::now();
    let mut next = 0usize;
    enqueue_wave(&client, plan, &payload, &mut enqueued, waves[0], deadline).await?;
    loop {
        let exited = fleet.supervise()?;
        report.unexpected_exits.extend(exited);
        let now = Instant::now();
        if now > deadline {
            break;
        }
        // Redis is away during a restart (and answers LOADING while it reads its AOF): the
        // counts are simply read again on the next poll.
        if let Ok(counts) = client.counts(QUEUE).await {
            let pending = [
                JobState::Waiting,
                JobState::Delayed,
                JobState::Active,
                JobState::Retry,
            ]
            .into_iter()
            .map(|state| counts.get(state))
            .sum::<u64>();
            if next == chaos.len() && pending == 0 {
                report.drain = Some(started.elapsed());
                break;
            }
            // Half of the current wave is done. A dead-lettered or lost job never completes: it
            // counts here (the check reports it), and an empty queue lets the chaos go on.
            let half_of_wave = enqueued - waves[next.min(waves.len() - 1)] / 2;
            let done = counts.completed + counts.dead;
            if next < chaos.len()
                && (done >= half_of_wave || pending == 0)
                && last_event.elapsed() >= plan.min_gap
            {
                let what = match chaos[next] {
                    Chaos::KillHost => {
                        let (slot, leases) = pick_busy_host(&client, &fleet, &mut rng).await;
                        let id = fleet.kill_and_restart(slot)?;
                        report.kills_done += 1;
                        killed_hosts.push(id.clone());
                        format!(
                            "SIGKILL {id} (holding {leases} leases), restarted as {}",
                            fleet.hosts[slot].id
                        )
                    }
                    Chaos::RestartRedis => {
                        let down = rng.random_range(0..=millis(plan.redis_down_max));
                        redis.kill();
                        tokio::time::sleep(Duration::from_millis(down)).await;
                        redis = restart(redis).await?;
                        report.redis_restarts_done += 1;
                        format!("SIGKILL redis-server, down {down} ms, restarted from its AOF")
                    }
                };
                report.events.push(ChaosEvent {
                    at: now - started,
                    what,
                    completed: counts.completed,
                });
                next += 1;
                last_event = Instant::now();
                enqueue_wave(
                    &client,
                    plan,
                    &payload,
                    &mut enqueued,
                    waves[next],
                    deadline,
                )
                .await?;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    // Nothing moves any more (or the deadline passed): stop every host before reading.
    drop(fleet);

    check(&client, plan, paths, &payload, &killed_hosts, &mut report).await?;
    drop(redis);
    Ok(report)
}

/// A random host among those that hold a lease right now (Redis's view), so the kill lands
/// mid-job; any host when none does (or Redis cannot say). Returns the slot and the leases
/// its host holds.
async fn pick_busy_host(client: &Client, fleet: &Fleet<'_>, rng: &mut StdRng) -> (usize, usize) {
    let active = match client.list(QUEUE, JobState::Active, 0, 10_000).await {
        Ok(active) => active,
        Err(err) => {
            eprintln!("chaos: cannot list the active jobs ({err}); killing any host");
            Vec::new()
        }
    };
    let leases = |slot: usize| {
        let id = &fleet.hosts[slot].id;
        active
            .iter()
            .filter(|job| job.host.as_ref() == Some(id))
            .count()
    };
    let busy: Vec<usize> = (0..fleet.hosts.len())
        .filter(|&slot| leases(slot) > 0)
        .collect();
    let slot = match busy.choose(rng) {
        Some(&slot) => slot,
        None => rng.random_range(0..fleet.hosts.len()),
    };
    (slot, leases(slot))
}

fn job_id(i: u64) -> String {
    format!("job-{i:06}")
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `LocalRedis::restart` waits (blocking) for the server to answer: off the async threads.
async fn restart(mut redis: LocalRedis) -> Result<LocalRedis> {
    let (redis, restarted) = tokio::task::spawn_blocking(move || {
        let restarted = redis.restart();
        (redis, restarted)
    })
    .await?;
    restarted?;
    Ok(redis)
}

/// Enqueues the next `size` jobs. Enqueue is idempotent by id, so a call that failed (Redis
/// restarting) is simply made again until the deadline.
async fn enqueue_wave(
    client: &Client,
    plan: &Plan,
    payload: &impl Fn(u64) -> String,
    enqueued: &mut u64,
    size: u64,
    deadline: Instant,
) -> Result<()> {
    let end = *enqueued + size;
    let backoff = Backoff::fixed(Duration::from_millis(100)).with_jitter(0.0);
    let mut from = *enqueued;
    while from < end {
        let to = (from + MAX_BULK as u64).min(end);
        let jobs: Vec<NewJob> = (from..to)
            .map(|i| {
                NewJob::new(HANDLER, payload(i))
                    .with_id(job_id(i))
                    .with_max_attempts(plan.max_attempts)
                    .with_backoff(backoff)
            })
            .collect();
        match client.enqueue_bulk(QUEUE, &jobs).await {
            Ok(_) => from = to,
            Err(err) if Instant::now() < deadline => {
                eprintln!("chaos: enqueue failed ({err}); trying again");
                tokio::time::sleep(POLL).await;
            }
            Err(err) => return Err(err).context("enqueue a wave of jobs"),
        }
    }
    *enqueued = end;
    Ok(())
}

/// Reads every job, the events stream and the hosts' logs, and fills in the verdict.
async fn check(
    client: &Client,
    plan: &Plan,
    paths: &Paths,
    payload: &impl Fn(u64) -> String,
    killed_hosts: &[String],
    report: &mut Report,
) -> Result<()> {
    let executions = read_executions(&paths.logs)?;
    report.executions = executions.values().map(|v| v.len() as u64).sum();

    let mut completed_events: HashMap<String, Vec<u32>> = HashMap::new();
    let mut seen_enqueued: HashMap<String, ()> = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = client.events(QUEUE, after.as_deref(), 1_000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.stream_id.clone());
        for event in page {
            match event.event.as_str() {
                "completed" => {
                    for (id, attempt) in event.jobs {
                        completed_events.entry(id).or_default().push(attempt);
                    }
                }
                "enqueued" => {
                    for (id, _) in event.jobs {
                        seen_enqueued.insert(id, ());
                    }
                }
                _ => {}
            }
        }
    }

    let mut taken_back: HashMap<&str, u64> = HashMap::new();
    for i in 0..plan.jobs {
        let id = job_id(i);
        if !seen_enqueued.contains_key(&id) {
            report.ids_missing_from_events += 1;
        }
        let Some(job) = client.get(QUEUE, &id).await? else {
            report.lost.push((id, "no job hash".to_string()));
            continue;
        };
        *report.attempts.entry(job.attempt).or_default() += 1;
        for attempt in &job.history {
            *report.outcomes.entry(attempt.outcome.clone()).or_default() += 1;
            if attempt.outcome == "lease_expired" {
                match killed_hosts.iter().find(|h| **h == attempt.host) {
                    Some(host) => *taken_back.entry(host.as_str()).or_default() += 1,
                    None => report.lease_losses_without_kill += 1,
                }
            }
        }
        if job.state != JobState::Completed {
            report.lost.push((
                id.clone(),
                format!(
                    "state {} after {} attempts (last outcome {:?})",
                    job.state.as_str(),
                    job.attempt,
                    job.last_outcome
                ),
            ));
        } else if job.result.as_deref() != Some(payload(i).as_bytes()) {
            report.lost.push((
                id.clone(),
                format!(
                    "result {:?} is not its payload",
                    job.result.as_deref().map(String::from_utf8_lossy)
                ),
            ));
        } else {
            report.completed += 1;
        }

        let ok: Vec<u32> = job
            .history
            .iter()
            .filter(|a| a.outcome == "ok")
            .map(|a| a.attempt)
            .collect();
        let events = completed_events.get(&id).map_or(&[][..], Vec::as_slice);
        let ran = executions.get(&id).map_or(&[][..], Vec::as_slice);
        let mut why = Vec::new();
        if ok.len() > 1 {
            why.push(format!("{} ok attempts in its history ({ok:?})", ok.len()));
        }
        if events.len() > 1 {
            why.push(format!("{} completed events ({events:?})", events.len()));
        }
        let mut counted: BTreeMap<u32, u32> = BTreeMap::new();
        for &attempt in ran {
            *counted.entry(attempt).or_default() += 1;
        }
        for (&attempt, &times) in &counted {
            if times > 1 {
                why.push(format!("attempt {attempt} executed {times} times"));
            }
            if ok.contains(&attempt) {
                continue;
            }
            let lease_lost = job
                .history
                .iter()
                .any(|a| a.attempt == attempt && a.outcome == "lease_expired");
            if lease_lost {
                report.explained_reexecutions += u64::from(times);
            } else {
                why.push(format!(
                    "attempt {attempt} executed, but its history records neither ok nor a lease \
                     loss for it"
                ));
            }
        }
        if job.state == JobState::Completed && !ok.iter().any(|a| counted.contains_key(a)) {
            report.completions_without_execution.push(id.clone());
        }
        if !why.is_empty() {
            report.unexplained_duplicates.push((id, why.join("; ")));
        }
    }
    report.taken_back_per_kill = killed_hosts
        .iter()
        .map(|host| taken_back.get(host.as_str()).copied().unwrap_or(0))
        .collect();
    Ok(())
}

/// Every `chaos-effect id=<id> attempt=<n>` line in the hosts' logs: job id to the attempts
/// that reached their side effect (one entry per execution).
fn read_executions(logs: &Path) -> Result<HashMap<String, Vec<u32>>> {
    let mut executions: HashMap<String, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir(logs).with_context(|| format!("read {}", logs.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|ext| ext != "log") {
            continue;
        }
        // A host killed mid-write may leave a torn last line: only lines with their newline
        // count, and the bytes are read as they are, not as strict UTF-8.
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes);
        let whole = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        for line in whole.lines() {
            let Some(at) = line.find(EFFECT_MARK) else {
                continue;
            };
            let mut id = None;
            let mut attempt = None;
            for word in line[at + EFFECT_MARK.len()..].split_whitespace().take(2) {
                if let Some(value) = word.strip_prefix("id=") {
                    id = Some(value.to_string());
                } else if let Some(value) = word.strip_prefix("attempt=") {
                    attempt = value.parse::<u32>().ok();
                }
            }
            if let (Some(id), Some(attempt)) = (id, attempt) {
                executions.entry(id).or_default().push(attempt);
            }
        }
    }
    Ok(executions)
}
