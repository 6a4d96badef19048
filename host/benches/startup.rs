//! Loading a handler at host start: cold (compiled, then stored in the artifact cache) vs warm
//! (deserialized from the cache), for the Rust and the Python `echo`, as a ratio.
//!
//! Run: `cargo bench -p wasmq --bench startup` (builds the Rust and Python guests first). A plain
//! timing loop, not criterion: a Python compile takes seconds, so a few samples are all a run
//! can afford, and the figure of interest is the ratio measured in one process. Prints a
//! Markdown table.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wasmq::{ArtifactCache, JobInput, JobLimits, LoadSource, Outcome, Runtime, RuntimeConfig};

/// Timed loads per component: (cold, warm).
const RUST_SAMPLES: (usize, usize) = (5, 20);
const PYTHON_SAMPLES: (usize, usize) = (3, 10);

fn build(guests: &Path, lang: &str) {
    let status = Command::new("bash")
        .arg(guests.join(lang).join("build.sh"))
        .status()
        .expect("run a guest build.sh");
    assert!(status.success(), "building the {lang} guests failed");
}

fn size(bytes: u64) -> String {
    if bytes < 1_000_000 {
        format!("{:.0} KB", bytes as f64 / 1e3)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples");
    build(&guests, "rust");
    build(&guests, "python");
    let components = [
        (
            "Rust",
            guests.join("rust/target/wasm32-wasip2/release/echo.wasm"),
            RUST_SAMPLES,
        ),
        (
            "Python",
            guests.join("python/out/echo.wasm"),
            PYTHON_SAMPLES,
        ),
    ];
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let job = JobInput {
        id: "bench".into(),
        queue: "bench".into(),
        handler: "echo".into(),
        payload: b"{\"n\":1}".to_vec(),
        attempt: 1,
        max_attempts: 1,
    };
    let limits = JobLimits {
        timeout: Duration::from_secs(10),
        memory: 256 * 1024 * 1024,
        fuel: None,
    };

    println!("| handler | component | artifact | cold (compile) | warm (cache) | cold / warm |");
    println!("|---|---|---|---|---|---|");
    for (language, path, (cold_runs, warm_runs)) in components {
        let bytes = std::fs::read(&path).expect("read component");
        let mut cold = Vec::new();
        let mut artifact = 0;
        for _ in 0..cold_runs {
            let dir = tempfile::tempdir().expect("temp dir");
            let cache = ArtifactCache::open(dir.path()).expect("open cache");
            let started = Instant::now();
            let (_, source) = runtime.load_with_cache(&bytes, Some(&cache)).expect("load");
            cold.push(started.elapsed());
            assert_eq!(source, LoadSource::Compiled);
            artifact = std::fs::read_dir(dir.path())
                .expect("list cache")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".cwasm"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>();
        }

        let dir = tempfile::tempdir().expect("temp dir");
        let cache = ArtifactCache::open(dir.path()).expect("open cache");
        runtime
            .load_with_cache(&bytes, Some(&cache))
            .expect("fill the cache");
        let compiles = runtime.compiles();
        let mut warm = Vec::new();
        for _ in 0..warm_runs {
            let started = Instant::now();
            let (handler, source) = runtime.load_with_cache(&bytes, Some(&cache)).expect("load");
            warm.push(started.elapsed());
            assert_eq!(source, LoadSource::Cached);
            let report = tokio.block_on(runtime.run(&handler, job.clone(), &limits));
            assert!(
                matches!(report.outcome, Outcome::Ok(_)),
                "{language} echo from the cache: {:?}",
                report.outcome
            );
        }
        assert_eq!(runtime.compiles(), compiles, "a warm load compiled");

        let (cold, warm) = (median(cold), median(warm));
        println!(
            "| {language} echo | {} | {} | {:.0} ms | {:.1} ms | {:.0}x |",
            size(bytes.len() as u64),
            size(artifact),
            cold.as_secs_f64() * 1e3,
            warm.as_secs_f64() * 1e3,
            cold.as_secs_f64() / warm.as_secs_f64(),
        );
    }
}
