//! Instantiate + call of `echo` in every guest language, as ratios to Rust, with each
//! component's size and its compile time in wasmtime.
//!
//! Run: `cargo bench -p wasmq --bench languages` (builds the guests first with
//! guest-examples/build-all.sh). A plain timing loop, not criterion: the figure of interest is
//! the ratio between languages measured in one process, one after the other, on one pool.
//! Prints a Markdown table. `WASMQ_BENCH_LANGS=Python,JavaScript` runs only those languages
//! (the ratio column then needs Rust among them); `WASMQ_BENCH_RUNS=N` sets the timed runs;
//! `WASMQ_BENCH_NO_BUILD=1` uses the guests as built (no build-all.sh);
//! `WASMQ_BENCH_CACHE=DIR` loads through an artifact cache there (the compile column then
//! shows a cache hit from the second run on).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wasmq::{ArtifactCache, JobInput, JobLimits, Outcome, Runtime, RuntimeConfig};

/// Timed runs per language (unless `WASMQ_BENCH_RUNS` says), after `WARMUP` untimed ones.
const RUNS: usize = 200;
const WARMUP: usize = 20;

/// CPU time this thread has used so far (`/proc/thread-self/schedstat`, nanoseconds). The
/// attempts run on this thread (`block_on`), so its CPU time per call is the attempt's cost
/// whatever else the machine runs, where wall-clock figures move with its load.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// Page faults this process has taken so far (minor + major, `/proc/self/stat` fields 10 and 12).
fn page_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3; minflt 10, majflt 12 (1-based, man 5 proc).
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(7) + field(9)
}

fn components() -> Vec<(&'static str, PathBuf)> {
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples");
    if std::env::var_os("WASMQ_BENCH_NO_BUILD").is_none() {
        let status = Command::new("bash")
            .arg(guests.join("build-all.sh"))
            .status()
            .expect("run guest-examples/build-all.sh");
        assert!(status.success(), "building the guests failed");
    }
    let all = vec![
        (
            "Rust",
            guests.join("rust/target/wasm32-wasip2/release/echo.wasm"),
        ),
        ("C", guests.join("c/out/echo.wasm")),
        ("JavaScript", guests.join("javascript/out/echo.wasm")),
        ("Python", guests.join("python/out/echo.wasm")),
    ];
    match std::env::var("WASMQ_BENCH_LANGS") {
        Ok(wanted) => all
            .into_iter()
            .filter(|(language, _)| wanted.split(',').any(|w| w.eq_ignore_ascii_case(language)))
            .collect(),
        Err(_) => all,
    }
}

struct Row {
    language: &'static str,
    size: u64,
    compile: Duration,
    median: Duration,
    p90: Duration,
    instantiation: Duration,
    peak_memory: u64,
    faults_per_call: f64,
    cpu_per_call: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported (all languages run).
    let components = components();
    let runs: usize = std::env::var("WASMQ_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RUNS);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let cache = std::env::var_os("WASMQ_BENCH_CACHE")
        .map(|dir| ArtifactCache::open(dir).expect("open the artifact cache"));
    let limits = JobLimits {
        timeout: Duration::from_secs(10),
        memory: 256 * 1024 * 1024,
        fuel: None,
    };
    let job = JobInput {
        id: "bench".into(),
        queue: "bench".into(),
        handler: "echo".into(),
        payload: vec![b'x'; 100],
        attempt: 1,
        max_attempts: 1,
    };

    let mut rows = Vec::new();
    for (language, path) in components {
        let bytes = std::fs::read(&path).expect("read component");
        let started = Instant::now();
        let handler = match &cache {
            Some(cache) => runtime.load_with_cache(&bytes, Some(cache)).map(|(h, _)| h),
            None => runtime.load(&bytes),
        }
        .expect("load echo");
        let compile = started.elapsed();
        let mut times = Vec::with_capacity(runs);
        let mut instantiation = Vec::with_capacity(runs);
        let mut peak_memory = 0;
        let mut faults = 0;
        let mut cpu = Duration::ZERO;
        for i in 0..WARMUP + runs {
            if i == WARMUP {
                faults = page_faults();
                cpu = thread_cpu();
            }
            let started = Instant::now();
            let report = tokio.block_on(runtime.run(&handler, job.clone(), &limits));
            let took = started.elapsed();
            assert!(
                matches!(report.outcome, Outcome::Ok(_)),
                "{language} echo: {:?}",
                report.outcome
            );
            if i >= WARMUP {
                times.push(took);
                instantiation.push(report.instantiation);
                peak_memory = report.peak_memory;
            }
        }
        let faults_per_call = (page_faults() - faults) as f64 / runs as f64;
        let cpu_per_call = (thread_cpu() - cpu) / runs as u32;
        times.sort();
        instantiation.sort();
        rows.push(Row {
            language,
            size: bytes.len() as u64,
            compile,
            median: percentile(&times, 0.5),
            p90: percentile(&times, 0.9),
            instantiation: percentile(&instantiation, 0.5),
            peak_memory,
            faults_per_call,
            cpu_per_call,
        });
    }

    let rust = rows
        .iter()
        .find(|row| row.language == "Rust")
        .map(|row| row.median.as_secs_f64());
    println!(
        "| language | component | compile (no cache) | instantiate + call, median | p90 | \
         of which instantiate | ratio to Rust | CPU / call (mean) | peak memory | \
         page faults / call |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let ratio = rust.map_or("n/a".to_string(), |rust| {
            format!("{:.1}x", row.median.as_secs_f64() / rust)
        });
        println!(
            "| {} | {:.1} KB | {:.2?} | {:.1?} | {:.1?} | {:.1?} | {ratio} | {:.1?} | {:.1} MB | {:.0} |",
            row.language,
            row.size as f64 / 1000.0,
            row.compile,
            row.median,
            row.p90,
            row.instantiation,
            row.cpu_per_call,
            row.peak_memory as f64 / 1e6,
            row.faults_per_call,
        );
    }
    println!("\n{runs} timed runs per language after {WARMUP} warm-up runs; pooling allocator.");
}
