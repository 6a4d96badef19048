//! The chaos run at CI size: the same driver as `bash bench/chaos.sh` (`host/benches/chaos/`),
//! with 300 jobs across 3 real `wasmq run` processes, 3 host SIGKILLs and 1 Redis SIGKILL +
//! restart from its AOF. Every job must complete exactly once, short of re-runs after a lease
//! loss.

use std::time::Instant;

use crate::support::guests;

#[path = "../../host/benches/chaos/driver.rs"]
mod driver;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_job_is_lost_or_completed_twice_while_hosts_and_redis_are_killed() {
    let logs = tempfile::tempdir().unwrap();
    let plan = driver::Plan::ci();
    let paths = driver::Paths {
        wasmq: env!("CARGO_BIN_EXE_wasmq").into(),
        handler: guests::rust("effect"),
        logs: logs.path().to_path_buf(),
    };
    let started = Instant::now();
    let report = driver::run(&plan, &paths).await.unwrap();
    let markdown = report.markdown("cargo test --test all chaos", "now");
    eprintln!("{markdown}\n(took {:?})", started.elapsed());
    assert!(report.lost.is_empty(), "lost jobs:\n{markdown}");
    assert!(
        report.unexplained_duplicates.is_empty(),
        "unexplained duplicates:\n{markdown}"
    );
    assert!(report.passed(), "{markdown}");
    assert_eq!(report.completed, plan.jobs);
}
