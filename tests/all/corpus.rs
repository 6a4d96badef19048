//! The hostile-guest corpus (`corpus/table.rs`): every component a handler author could
//! upload to hurt a host, and what the host must make of it. Load-time entries go through
//! `Runtime::load_async` (configured as a host configures it, compiling in a child process
//! under limits) and must be refused with their reason;
//! run-time entries run as jobs through a real `wasmq run` process and private Redis, and each
//! job's recorded outcome must be its entry's class. The host must be alive afterwards and
//! still serve an ordinary job.

pub mod table;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use wasmq::queue::{JobState, NewJob};
use wasmq::{CompileConfig, Runtime, RuntimeConfig, worker};

use crate::support::eventually;
use crate::support::guests;
use crate::support::host::HostProcess;
use crate::support::jobs::{enqueue_ids, keep_everything};
use crate::support::redis::RedisServer;

use table::{Expect, load_entries, load_error_kind, run_entries};

/// `MAX_ERROR_LEN` of host/src/queue/job.rs: the longest error message kept for a job.
const MAX_ERROR_LEN: usize = 4096;

#[tokio::test]
async fn every_component_that_is_not_a_handler_is_refused_at_load_with_its_reason() {
    // Compiled as hosts compile, in a `wasmq compile-child` process under limits (scaled for
    // CI: the compile bomb needs gigabytes).
    let rt = Runtime::new(RuntimeConfig {
        compile: CompileConfig {
            program: Some(env!("CARGO_BIN_EXE_wasmq").into()),
            memory: 256 * 1024 * 1024,
            timeout: Duration::from_secs(3),
        },
        ..worker::host_runtime()
    })
    .unwrap();
    let entries = load_entries();
    let mut wrong = Vec::new();
    for entry in entries.iter() {
        let started = Instant::now();
        let got = match rt.load_async(entry.bytes.clone().into(), None).await {
            Ok(_) => "accepted",
            Err(err) => load_error_kind(&err),
        };
        // A refusal costs the host no compile of note, whatever the component claims to hold.
        let elapsed = started.elapsed();
        if got != entry.refused_as || elapsed > Duration::from_secs(5) {
            wrong.push(format!(
                "{}: expected {}, got {got} in {elapsed:?}",
                entry.name, entry.refused_as
            ));
        }
    }
    assert!(entries.len() >= 12, "{} load entries", entries.len());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_hostile_job_ends_in_its_class_and_the_host_keeps_serving() {
    const Q: &str = "corpus";
    let redis = RedisServer::start();
    let client = redis.client().await;
    for q in [Q, "echo"] {
        keep_everything(&client, q).await;
    }
    // Anything that reached this listener got through the sandbox.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let entries = run_entries(&listener.local_addr().unwrap().to_string());
    assert!(entries.len() >= 25, "{} run-time entries", entries.len());

    let dir = tempfile::tempdir().unwrap();
    let mut toml = format!(
        "queues = [\"{Q}\", \"echo\"]\n[handlers.echo]\npath = {:?}\n",
        guests::rust("echo")
    );
    for entry in &entries {
        let path = dir.path().join(format!("{}.wasm", entry.name));
        std::fs::write(&path, entry.build.bytes()).unwrap();
        toml += &entry.limits.toml(entry.name, &path);
    }
    let mut host = HostProcess::builder(&redis.url()).config(&toml).start();

    let started = Instant::now();
    let jobs: Vec<NewJob> = entries
        .iter()
        .map(|e| NewJob::new(e.name, e.payload.clone()).with_max_attempts(1))
        .collect();
    let ids = enqueue_ids(&client, Q, &jobs).await;
    let n = entries.len() as u64;
    eventually(
        "every corpus job finished",
        Duration::from_secs(120),
        || async {
            let c = client.counts(Q).await.ok()?;
            (c.completed + c.dead == n).then_some(())
        },
    )
    .await;
    eprintln!("corpus: {n} jobs finished in {:?}", started.elapsed());

    let mut wrong = BTreeMap::new();
    for (entry, id) in entries.iter().zip(&ids) {
        let job = client.get(Q, id).await.unwrap().unwrap();
        let as_expected = match (&entry.expect, job.state) {
            (Expect::Completed(want), JobState::Completed) => job.result.as_ref() == Some(want),
            (Expect::Dead(want), JobState::Dead) => job.last_outcome.as_deref() == Some(*want),
            _ => false,
        };
        if !as_expected {
            let got = match &job.result {
                Some(r) if r.len() > 64 => format!("{:?}, a {} B result", job.state, r.len()),
                Some(r) => format!("{:?}, {:?}", job.state, String::from_utf8_lossy(r)),
                None => format!("{:?}, outcome {:?}", job.state, job.last_outcome),
            };
            let want = match &entry.expect {
                Expect::Completed(r) if r.len() > 64 => format!("completed, {} B", r.len()),
                Expect::Completed(r) => format!("completed, {:?}", String::from_utf8_lossy(r)),
                Expect::Dead(outcome) => format!("dead, {outcome}"),
            };
            let error = wasmq::queue::truncate_utf8(job.last_error.as_deref().unwrap_or(""), 300);
            wrong.insert(
                entry.name,
                format!(
                    "expected {want}, got {got} ({}; error {error:?})",
                    entry.build.describe()
                ),
            );
        }
        // One attempt each, recorded with bounded text, whatever the guest wrote or returned.
        assert_eq!(job.history.len(), 1, "{}: {:?}", entry.name, job.history);
        let attempt = &job.history[0];
        assert!(attempt.error.len() <= MAX_ERROR_LEN, "{}", entry.name);
        assert!(
            attempt.logs.as_ref().map_or(0, String::len) <= wasmq::queue::MAX_ATTEMPT_LOG_LEN,
            "{}",
            entry.name
        );
    }
    assert!(
        wrong.is_empty(),
        "{} of {n} entries misclassified:\n{}",
        wrong.len(),
        wrong
            .iter()
            .map(|(name, what)| format!("{name}: {what}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        listener.accept().is_err(),
        "a guest connected to the test's listener"
    );

    assert!(host.is_running(), "the host died:\n{}", host.log_text());
    let echo = client
        .enqueue("echo", &NewJob::new("echo", b"still serving".to_vec()))
        .await
        .unwrap();
    let result = eventually("echo after the corpus", Duration::from_secs(10), || async {
        let job = client.get("echo", &echo.id).await.ok()??;
        (job.state == JobState::Completed).then_some(job.result)
    })
    .await;
    assert_eq!(result.as_deref(), Some(&b"still serving"[..]));
    assert!(host.is_running());
}
