//! Instantiate + call of `echo` in every guest language, as ratios to Rust, with each
//! component's size and its compile time in wasmtime.
//!
//! Run: `cargo bench -p wasmq --bench languages` (builds the guests first with
//! guest-examples/build-all.sh). A plain timing loop, not criterion: the figure of interest is
//! the ratio between languages measured in one process, one after the other, on one pool.
//! Prints a Markdown table.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use wasmq::{JobInput, JobLimits, Outcome, Runtime, RuntimeConfig};

/// Timed runs per language, after `WARMUP` untimed ones.
const RUNS: usize = 200;
const WARMUP: usize = 20;

fn components() -> Vec<(&'static str, PathBuf)> {
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples");
    let status = Command::new("bash")
        .arg(guests.join("build-all.sh"))
        .status()
        .expect("run guest-examples/build-all.sh");
    assert!(status.success(), "building the guests failed");
    vec![
        (
            "Rust",
            guests.join("rust/target/wasm32-wasip2/release/echo.wasm"),
        ),
        ("C", guests.join("c/out/echo.wasm")),
        ("JavaScript", guests.join("javascript/out/echo.wasm")),
        ("Python", guests.join("python/out/echo.wasm")),
    ]
}

struct Row {
    language: &'static str,
    size: u64,
    compile: Duration,
    median: Duration,
    p90: Duration,
    instantiation: Duration,
    peak_memory: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported (all languages run).
    let components = components();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
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
        let handler = runtime.load(&bytes).expect("load echo");
        let compile = started.elapsed();
        let mut times = Vec::with_capacity(RUNS);
        let mut instantiation = Vec::with_capacity(RUNS);
        let mut peak_memory = 0;
        for i in 0..WARMUP + RUNS {
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
        });
    }

    let rust = rows[0].median.as_secs_f64();
    println!(
        "| language | component | compile (no cache) | instantiate + call, median | p90 | \
         of which instantiate | ratio to Rust | peak memory |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {:.1} KB | {:.2?} | {:.1?} | {:.1?} | {:.1?} | {:.1}x | {:.1} MB |",
            row.language,
            row.size as f64 / 1000.0,
            row.compile,
            row.median,
            row.p90,
            row.instantiation,
            row.median.as_secs_f64() / rust,
            row.peak_memory as f64 / 1e6,
        );
    }
    println!("\n{RUNS} timed runs per language after {WARMUP} warm-up runs; pooling allocator.");
}
