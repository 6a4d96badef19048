//! Instantiate + call of the `noop` handler: the runtime's fixed cost per job, with the pooling
//! instance allocator and without it (on-demand mmap per instance).
//!
//! Run: `cargo bench -p wasmq --bench runtime`. The guests are built first (bash
//! guest-examples/rust/build.sh); the figure in README's performance section comes from here.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use wasmq::{JobInput, JobLimits, Outcome, Runtime, RuntimeConfig};

fn noop_component() -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new("bash")
        .arg(root.join("guest-examples/rust/build.sh"))
        .status()
        .expect("run guest-examples/rust/build.sh");
    assert!(status.success(), "building the Rust guests failed");
    std::fs::read(root.join("guest-examples/rust/target/wasm32-wasip2/release/noop.wasm"))
        .expect("read noop.wasm")
}

fn instantiate_and_call(c: &mut Criterion) {
    let bytes = noop_component();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let job = JobInput {
        id: "bench".into(),
        queue: "bench".into(),
        handler: "noop".into(),
        payload: vec![0; 100],
        attempt: 1,
        max_attempts: 1,
    };
    let limits = JobLimits {
        timeout: Duration::from_secs(5),
        ..JobLimits::default()
    };

    let mut group = c.benchmark_group("instantiate_call_noop");
    for (name, pooling, keep_resident) in [
        ("pooling", true, RuntimeConfig::default().keep_resident),
        ("pooling_unmap_all", true, 0),
        ("on_demand", false, 0),
    ] {
        let runtime = Runtime::new(RuntimeConfig {
            pooling,
            keep_resident,
            ..RuntimeConfig::default()
        })
        .expect("runtime");
        let handler = runtime.load(&bytes).expect("load noop");
        group.bench_function(name, |b| {
            b.to_async(&tokio).iter(|| async {
                let report = runtime.run(&handler, job.clone(), &limits).await;
                assert!(matches!(report.outcome, Outcome::Ok(_)));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, instantiate_and_call);
criterion_main!(benches);
