//! The cost of tracing on the no-op job path: one attempt of the `noop` handler as the worker
//! runs it (`worker/executor.rs`: an attempt's `process` span, made current, around
//! `Runtime::run`, which adds its `instantiate` and `run` spans), with tracing off, or on with
//! every span sampled and exported to an exporter that drops them (no network in the figure).
//!
//! Tracing is process-wide and cannot be turned off once on, so one run measures one mode,
//! chosen by `WASMQ_BENCH_TRACING` (`off`, the default, or `on`); compare modes by running the
//! bench alternately, as docs/observability.md ("Cost") does:
//!
//! ```text
//! for i in 1 2 3; do for mode in off on; do
//!   WASMQ_BENCH_TRACING=$mode cargo bench -p wasmq --bench telemetry -- --noplot
//! done; done
//! ```
//!
//! The guests are built first (bash guest-examples/rust/build.sh).

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::trace::{Span as _, TraceContextExt as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use wasmq::{JobInput, JobLimits, Outcome, Runtime, RuntimeConfig, telemetry};

/// Drops every batch: the SDK's work (building, batching) is measured, not a network's.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        drop(batch);
        Ok(())
    }
}

fn noop_component() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guest-examples/rust/target/wasm32-wasip2/release/noop.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build the guests: bash guest-examples/rust/build.sh)",
            path.display()
        )
    })
}

fn noop_job_path(c: &mut Criterion) {
    let on = std::env::var("WASMQ_BENCH_TRACING").is_ok_and(|v| v == "on");
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if on {
        tokio
            .block_on(async { telemetry::init_with_exporter(Discard) })
            .expect("tracing on");
    }
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let handler = runtime.load(&noop_component()).expect("load noop");
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
    let name = if on { "tracing_on" } else { "tracing_off" };
    let mut group = c.benchmark_group("noop_job_path");
    group.bench_function(name, |b| {
        b.to_async(&tokio).iter(|| async {
            let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
            // As the executor does: the start time only when tracing is on.
            let started = telemetry::tracer().map(|_| std::time::SystemTime::now());
            let span = started.and_then(|started| {
                telemetry::process_span("bench", "bench", "noop", 1, Some(tp), None, started)
            });
            let running = runtime.run(&handler, job.clone(), &limits);
            let report = match &span {
                Some(span) => {
                    let cx = opentelemetry::Context::new()
                        .with_remote_span_context(span.span_context().clone());
                    opentelemetry::context::FutureExt::with_context(running, cx).await
                }
                None => running.await,
            };
            assert!(matches!(report.outcome, Outcome::Ok(_)));
            if let Some(span) = span {
                telemetry::end_process(span, "ok", Some("1"));
            }
        });
    });
    group.finish();
    if on {
        telemetry::shutdown();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8));
    targets = noop_job_path
}
criterion_main!(benches);
