//! What a handler can cost a host, at most (docs/costs.md): each bound there that is not
//! checked elsewhere, through the real binary and a real Redis: a guest's `memory.fill` loop
//! against a deadline, the steps of a queue's dead jobs under its `dead_step_bytes` (the
//! steps one job may hold are in `steps.rs`), and a result over what a host takes, never
//! copied out of the guest (its outcome for every kind of guest is in the corpus).

use std::process::Command;
use std::time::Duration;

use wasmq::queue::{Client, Failure, JobState, NewJob, QueueConfig, StepSave};

use crate::corpus::table::Wat;
use crate::support::cli::{ok, wasmq};
use crate::support::guests;
use crate::support::host::HostProcess;
use crate::support::jobs::keep_everything;
use crate::support::redis::RedisServer;
use crate::support::{eventually, resident};

const Q: &str = "costs";

/// The deadline of the `memory.fill` test (the issue's: 100 ms).
const DEADLINE: Duration = Duration::from_millis(100);

/// The slowest this test lets one `memory.fill` of fresh pages be, bytes per second: a fifth
/// of the slowest docs/costs.md measured on a loaded 2-core VM (about 0.6 GB/s for pages
/// touched the first time), so that a busy machine does not fail it, while an overrun that
/// grew with anything but the memory cap (a fill the deadline does not end, a loop of them)
/// still does.
const SLOWEST_FILL: f64 = 100e6;

/// A handler that grows its memory to `cap_mib` and then fills all of it, again and again,
/// one `memory.fill` instruction each time: epoch interruption, which enforces deadlines,
/// cannot stop one such instruction, only the loop around it.
fn fill_handler(cap_mib: u64) -> Vec<u8> {
    let pages = cap_mib * 16;
    // One fill of all of it; for a 4 GiB memory, all but its last page (an i32 length).
    let bytes = (pages * 65536).min(u64::from(u32::MAX) - 65535) as u32 as i32;
    Wat {
        imports: "",
        memory: r#"(memory (export "memory") 1)"#,
        items: "",
        body: &format!(
            "(drop (memory.grow (i32.const {})))
             (loop $fill
               (memory.fill (i32.const 0) (local.get 8) (i32.const {bytes}))
               (br $fill))
             (i32.const 16)",
            pages - 1
        ),
    }
    .component()
}

/// The memory cap of the test, MiB: 256, or `WASMQ_FILL_CAP_MIB` (the figures of
/// docs/costs.md were taken with 256, 1024 and 4096).
fn cap_mib() -> u64 {
    std::env::var("WASMQ_FILL_CAP_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

#[test]
fn a_memory_fill_loop_overruns_its_deadline_by_at_most_one_fill_of_the_memory_cap() {
    let cap = cap_mib();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fill.wasm");
    std::fs::write(&path, fill_handler(cap)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wasmq"))
        .arg("exec")
        .arg(&path)
        .args(["--timeout", &format!("{}ms", DEADLINE.as_millis())])
        .args(["--memory", &format!("{cap}MiB"), "--json"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(report["outcome"], "timeout", "{report}");
    let took = Duration::from_secs_f64(report["duration_ms"].as_f64().unwrap() / 1000.0);
    let overrun = took.saturating_sub(DEADLINE);
    // The deadline is checked between two fills: at worst one whole fill after it, the
    // first (every page touched for the first time) being the slowest.
    let one_fill = Duration::from_secs_f64((cap * 1024 * 1024) as f64 / SLOWEST_FILL);
    eprintln!("memory.fill of {cap} MiB against a {DEADLINE:?} deadline: ended after {took:?}");
    assert!(
        overrun <= one_fill,
        "a {cap} MiB memory.fill loop ran {overrun:?} past its deadline; one fill of the cap \
         at {:.2} GB/s takes {one_fill:?}",
        SLOWEST_FILL / 1e9
    );
}

fn steps_key(id: &str) -> String {
    format!("wasmq:{{{Q}}}:steps:{id}")
}

async fn cap_dead_steps(client: &Client, cap: u64) {
    let config = QueueConfig {
        completed_keep: None,
        dead_step_bytes: Some(cap),
        ..QueueConfig::default()
    };
    client.set_config(Q, &config).await.unwrap();
}

/// Leases job `id` (enqueued now), saves one step of `size` bytes under its lease, and
/// dead-letters it.
async fn die_with_steps(client: &Client, id: &str, size: usize) {
    client
        .enqueue(Q, &NewJob::new("h", id.as_bytes().to_vec()).with_id(id))
        .await
        .unwrap();
    let leased = client
        .fetch(Q, 1, Duration::from_secs(30), "test-host")
        .await
        .unwrap();
    let job = &leased[0];
    assert_eq!(job.id, id);
    let saved = client
        .save_step(Q, id, &job.token, "run:a", &vec![b's'; size])
        .await
        .unwrap();
    assert_eq!(saved, StepSave::Saved);
    client
        .dead_letter(Q, &[Failure::new(job, "fail", "on purpose")])
        .await
        .unwrap();
}

/// The steps of a queue's dead jobs stay under its `dead_step_bytes`: past it, those of the
/// jobs that died first are deleted, oldest first, counted a few jobs per call; each job
/// keeps its record, marked. A replayed job runs from the start and, dead again, is counted
/// again as the newest; a counting key of another type is refused with nothing written.
#[tokio::test]
async fn the_steps_of_dead_jobs_are_dropped_oldest_first_past_the_queues_byte_cap() {
    const STEP: usize = 200 * 1024;
    const CAP: u64 = 1024 * 1024;
    let redis = RedisServer::start();
    let client = redis.client().await;
    cap_dead_steps(&client, CAP).await;
    let ids: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        die_with_steps(&client, id, STEP).await;
        if i == 4 {
            // A dead job without steps, among them: never counted, never marked.
            client
                .enqueue(Q, &NewJob::new("h", b"plain".to_vec()).with_id("plain"))
                .await
                .unwrap();
            let leased = client
                .fetch(Q, 1, Duration::from_secs(30), "test-host")
                .await
                .unwrap();
            client
                .dead_letter(Q, &[Failure::new(&leased[0], "fail", "no steps")])
                .await
                .unwrap();
        }
    }
    // Three dead jobs counted per call: the first calls count, the later ones drop.
    let mut dropped = Vec::new();
    let mut held = 0;
    for _ in 0..5 {
        let report = client.trim_dead_steps(Q, 3).await.unwrap();
        assert!(report.held_bytes <= CAP, "{report:?}");
        dropped.extend(report.dropped);
        held = report.held_bytes;
    }
    let per_job = (STEP + "run:a".len()) as u64;
    let kept = CAP / per_job;
    assert_eq!(held, kept * per_job);
    let first = 10 - kept as usize;
    assert_eq!(
        dropped,
        ids[..first],
        "the first to die lose their steps first"
    );
    for (i, id) in ids.iter().enumerate() {
        let job = client.get(Q, id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Dead, "{id}: the record stays");
        assert_eq!(job.payload, id.as_bytes());
        assert_eq!(job.history.len(), 1);
        let was_dropped = i < first;
        assert_eq!(
            job.steps_dropped.as_deref(),
            was_dropped.then_some("dead_letter_byte_cap"),
            "{id}"
        );
        assert_eq!(redis.exists(&steps_key(id)).await, !was_dropped, "{id}");
    }
    let plain = client.get(Q, "plain").await.unwrap().unwrap();
    assert_eq!((plain.state, plain.steps_dropped), (JobState::Dead, None));
    assert_eq!(client.counts(Q).await.unwrap().dead, 11);

    // Replayed, d0 has no steps to resume from: it runs from the start, its marker kept;
    // dead again with new steps, it is counted again as the newest, and the oldest counted
    // (d5) makes room.
    let replayed = client.replay(Q, &["d0".to_string()]).await.unwrap();
    assert_eq!(replayed.done, ["d0"], "{replayed:?}");
    let leased = client
        .fetch(Q, 1, Duration::from_secs(30), "test-host")
        .await
        .unwrap();
    assert_eq!(leased[0].id, "d0");
    assert!(client.load_steps(Q, "d0").await.unwrap().is_empty());
    let saved = client
        .save_step(Q, "d0", &leased[0].token, "run:a", &vec![b's'; STEP])
        .await
        .unwrap();
    assert_eq!(saved, StepSave::Saved);
    client
        .dead_letter(Q, &[Failure::new(&leased[0], "fail", "again")])
        .await
        .unwrap();
    let report = client.trim_dead_steps(Q, 3).await.unwrap();
    assert_eq!((report.counted, report.held_bytes), (1, held), "{report:?}");
    assert_eq!(report.dropped, [ids[first].clone()]);
    assert!(redis.exists(&steps_key("d0")).await);

    // A counting key of another type: refused before the first write.
    let mut conn = redis.connection().await;
    let meta = format!("wasmq:{{{Q}}}:dead_steps_meta");
    let before: Vec<String> = redis::cmd("HGETALL")
        .arg(&meta)
        .query_async(&mut conn)
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg(format!("wasmq:{{{Q}}}:dead_steps"))
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = client.trim_dead_steps(Q, 3).await.unwrap_err();
    assert!(format!("{err:#}").contains("dead_steps"), "{err:#}");
    let after: Vec<String> = redis::cmd("HGETALL")
        .arg(&meta)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(before, after);
}

/// Through a real host: jobs that die holding steps (a hostile guest saving past the per-job
/// limit) are counted by the host's watchman, and the steps of the first to die are dropped
/// once the queue's dead jobs hold more than its cap; the HTTP API and the CLI show it.
#[tokio::test]
async fn a_hosts_watchman_keeps_dead_jobs_steps_under_the_queues_cap() {
    const STEP: usize = 256 * 1024;
    let redis = RedisServer::start();
    let client = redis.client().await;
    // Room for two jobs' steps: each dies holding one step, refused the second.
    let cap = 2 * (STEP + "run:s0".len()) as u64;
    cap_dead_steps(&client, cap).await;
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = format!(
        "queues = [{Q:?}]\nlease = \"600ms\"\nmax_job_step_bytes = \"300KiB\"\n\
         http = \"{http}\"\n[handlers.hostile]\npath = {:?}\n",
        guests::rust("hostile")
    );
    let _host = HostProcess::builder(&redis.url()).config(&toml).start();
    let mut ids = Vec::new();
    for i in 0..4 {
        let id = format!("h{i}");
        let job = NewJob::new("hostile", format!("steps:10:{STEP}").into_bytes())
            .with_id(&id)
            .with_max_attempts(1);
        client.enqueue(Q, &job).await.unwrap();
        eventually(&format!("{id} dead"), Duration::from_secs(60), || async {
            let job = client.get(Q, &id).await.ok()??;
            (job.state == JobState::Dead).then_some(())
        })
        .await;
        ids.push(id);
    }
    eventually(
        "the first two dead jobs' steps dropped",
        Duration::from_secs(30),
        || async {
            let mut marked = Vec::new();
            for id in &ids {
                let job = client.get(Q, id).await.ok()??;
                marked.push(job.steps_dropped.is_some());
            }
            (marked == [true, true, false, false]).then_some(())
        },
    )
    .await;
    for (i, id) in ids.iter().enumerate() {
        let job = client.get(Q, id).await.unwrap().unwrap();
        assert_eq!(job.last_outcome.as_deref(), Some("fail"));
        assert!(job.last_error.unwrap().contains("bytes per job"));
        assert_eq!(redis.exists(&steps_key(id)).await, i >= 2, "{id}");
    }
    let api = reqwest::Client::new();
    let get = |path: String| {
        let api = api.clone();
        async move {
            let response = api
                .get(format!("http://{http}{path}"))
                .send()
                .await
                .unwrap();
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    let h0 = get(format!("/api/queues/{Q}/jobs/h0")).await;
    assert_eq!(h0["steps_dropped"], "dead_letter_byte_cap", "{h0}");
    let h3 = get(format!("/api/queues/{Q}/jobs/h3")).await;
    assert!(h3["steps_dropped"].is_null(), "{h3}");
    let queue = get(format!("/api/queues/{Q}")).await;
    assert_eq!(queue["config"]["dead_step_bytes"], cap, "{queue}");
    let shown = ok(&wasmq(&redis, &["job", Q, "h0"]));
    assert!(
        shown.contains("steps dropped: dead-letter byte cap of the queue"),
        "{shown}"
    );
    assert!(!ok(&wasmq(&redis, &["job", Q, "h3"])).contains("steps dropped"));
}

/// Waits (up to a minute) for job `id` to be dead, and returns its last outcome and error.
async fn dead_outcome(client: &Client, id: &str) -> (String, String) {
    eventually(
        &format!("job {id} dead"),
        Duration::from_secs(60),
        || async {
            let job = client.get(Q, id).await.ok()??;
            (job.state == JobState::Dead).then(|| {
                (
                    job.last_outcome.unwrap_or_default(),
                    job.last_error.unwrap_or_default(),
                )
            })
        },
    )
    .await
}

/// A result or error message over what a host takes from a handler is measured where it lies,
/// in the guest's memory, and never copied out: a handler returning 136 MiB (error: 64 MiB and
/// a byte) made the host hold it twice, its guest's memory and a copy of it, only to refuse
/// the copy. Through a real host: its peak resident memory grows by about what the guest
/// built, well short of twice that.
#[tokio::test]
async fn a_result_over_what_a_host_takes_is_measured_in_the_guest_and_never_copied() {
    const MIB: u64 = 1024 * 1024;
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let toml = format!(
        "queues = [{Q:?}]\n[handlers.hostile]\npath = {:?}\nmemory = \"256MiB\"\n",
        guests::rust("hostile")
    );
    let host = HostProcess::builder(&redis.url()).config(&toml).start();
    let run = |id: &'static str, payload: String| {
        let client = &client;
        async move {
            let job = NewJob::new("hostile", payload.into_bytes())
                .with_id(id)
                .with_max_attempts(1);
            client.enqueue(Q, &job).await.unwrap();
        }
    };
    // Up, with the handler compiled and one instance's memory touched, before the baseline.
    run("warm", "huge-result:1024".to_string()).await;
    eventually("job warm", Duration::from_secs(60), || async {
        let job = client.get(Q, "warm").await.ok()??;
        (job.state == JobState::Completed).then_some(())
    })
    .await;

    let limit = wasmq::MAX_RETURNED_BYTES as u64;
    for (id, payload, built, what) in [
        (
            "error",
            format!("huge-error:{}", limit + 1),
            limit,
            "error message",
        ),
        (
            "result",
            format!("huge-result:{}", 136 * MIB),
            136 * MIB,
            "result",
        ),
    ] {
        // The peak starts again from now (Linux: `5` to `clear_refs` resets `VmHWM`).
        std::fs::write(format!("/proc/{}/clear_refs", host.pid()), "5").unwrap();
        let (before, _) = resident(host.pid());
        run(id, payload).await;
        let (outcome, error) = dead_outcome(&client, id).await;
        assert_eq!(outcome, "result_too_large", "{id}: {error}");
        assert!(
            error.starts_with(&format!("{what} of ")) && error.contains("over the limit"),
            "{id}: {error}"
        );
        let (_, peak) = resident(host.pid());
        let grew = peak.saturating_sub(before);
        eprintln!(
            "{id}: the guest built {} MiB; the host's peak grew by {} MiB",
            built / MIB,
            grew / MIB
        );
        assert!(
            grew < built + built / 2,
            "{id}: the host's peak resident memory grew by {} MiB for a {} MiB {what}: it was \
             copied out of the guest",
            grew / MIB,
            built / MIB
        );
    }
}
