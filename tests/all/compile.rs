//! Compile bombs (issue #20): a small component that takes gigabytes and minutes to compile is
//! refused within the compile limits by the deploy CLI and by hosts that meet one in the
//! registry, and a host compiling one keeps serving the handlers that are ready, keeps its
//! jobs waiting (never dead-lettered), and stops within its grace.
//!
//! The bombs are scaled for CI: each test sets limits (hundreds of MB, seconds) that a bomb
//! passes within a few seconds, so no test compiles one for long.

use std::path::Path;
use std::time::{Duration, Instant};

use wasmq::queue::{Client, JobState, NewJob};
use wasmq::registry::{CHANGES_CHANNEL, DEFAULT_MAX_UPLOAD, sha256_hex};

use crate::corpus::table::{BLOCK_BOMB_DEPTH, LOOP_BOMB_DEPTH, block_bomb, loop_bomb};
use crate::support::cli::{ok, wasmq};
use crate::support::guests;
use crate::support::host::HostProcess;
use crate::support::jobs::keep_everything;
use crate::support::redis::RedisServer;
use crate::support::{eventually, resident};

const Q: &str = "bombs";

/// Writes `bytes` as the current version of `name` the way a registry written by an older
/// wasmq (which did not bound compiles) holds it: the real deploy script, without the compile.
pub async fn deploy_unchecked(redis: &RedisServer, name: &str, bytes: &[u8]) {
    let mut conn = redis.connection().await;
    let sha = sha256_hex(bytes);
    let key = |suffix: &str| format!("wasmq:{{@registry}}:{suffix}");
    let upload = key("upload:unchecked");
    let () = redis::cmd("SET")
        .arg(&upload)
        .arg(bytes)
        .query_async(&mut conn)
        .await
        .unwrap();
    let record = serde_json::json!({
        "name": name,
        "sha256": sha,
        "size": bytes.len(),
        "memory": 64 * 1024 * 1024,
        "timeout_ms": 30_000,
    });
    let _: (u64, u64, u64) =
        redis::Script::new(include_str!("../../host/src/registry/scripts/deploy.lua"))
            .key(key(&format!("handler:{name}")))
            .key(key("current"))
            .key(key("epoch"))
            .key(key(&format!("blob:{sha}")))
            .key(&upload)
            .key(key("refs"))
            .key(key("config"))
            .arg(name)
            .arg(&sha)
            .arg(bytes.len())
            .arg(record.to_string())
            .arg(CHANGES_CHANNEL)
            .arg(DEFAULT_MAX_UPLOAD)
            .invoke_async(&mut conn)
            .await
            .unwrap();
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

/// The pids of the compiler processes (`wasmq compile-child`) whose parent is `parent`.
fn compile_children(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `pid (comm) state ppid ...`: comm may hold spaces, so split after its `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let is_compiler = cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == b"compile-child");
        if ppid == Some(parent) && is_compiler {
            found.push(pid);
        }
    }
    found
}

/// Whether process `pid` has ended (exited, or a zombie nobody has reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.contains(") Z "),
        Err(_) => true,
    }
}

async fn enqueue(client: &Client, handler: &str, id: &str) {
    client
        .enqueue(Q, &NewJob::new(handler, id.as_bytes().to_vec()).with_id(id))
        .await
        .unwrap();
}

async fn completed(client: &Client, id: &str, within: Duration) {
    eventually(&format!("job {id} completed"), within, || async {
        let job = client.get(Q, id).await.ok()??;
        (job.state == JobState::Completed).then_some(())
    })
    .await;
}

/// Asserts that `id` waits, uncounted: never run, never dead-lettered, whatever hosts leased
/// it and gave it back meanwhile (then it is briefly active).
async fn assert_waits_uncounted(client: &Client, id: &str) {
    let job = eventually(&format!("{id} waiting"), Duration::from_secs(5), || async {
        let job = client.get(Q, id).await.ok()??;
        assert!(
            !matches!(job.state, JobState::Dead | JobState::Completed),
            "{id} is {:?}: {:?}",
            job.state,
            job.last_error
        );
        matches!(job.state, JobState::Waiting | JobState::Delayed).then_some(job)
    })
    .await;
    assert_eq!(job.attempt, 0, "{id} counted an attempt: {:?}", job.history);
    assert!(job.history.is_empty(), "{:?}", job.history);
}

#[test]
fn a_compile_bomb_is_refused_at_deploy_naming_the_limit_and_nothing_is_written() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let memory_bomb = write(dir.path(), "loops.wasm", &loop_bomb(LOOP_BOMB_DEPTH));
    let time_bomb = write(dir.path(), "blocks.wasm", &block_bomb(BLOCK_BOMB_DEPTH));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let before = runtime.block_on(redis.snapshot());

    let started = Instant::now();
    let out = wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "bomb",
            &memory_bomb,
            "--compile-memory",
            "256MiB",
            "--compile-timeout",
            "60s",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("compile memory limit (256.0 MiB"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let out = wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "bomb",
            &time_bomb,
            "--compile-memory",
            "512MiB",
            "--compile-timeout",
            "1s",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("compile time limit (1s"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    assert!(
        runtime.block_on(redis.snapshot()) == before,
        "a refused deploy wrote to Redis"
    );

    // The same limits let an ordinary handler through, at once.
    let echo = guests::rust("echo");
    let out = ok(&wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "greet",
            echo.to_str().unwrap(),
            "--compile-memory",
            "256MiB",
            "--compile-timeout",
            "20s",
        ],
    ));
    assert!(out.contains("deployed greet version 1"), "{out}");
}

/// The stall: a host compiled registry handlers one after another, in its own
/// process, so a bomb kept every other handler from being installed and their jobs were
/// dead-lettered as `unknown_handler`.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_compiling_a_bomb_serves_the_other_handlers_meanwhile_and_refuses_it() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    // Sorted first, so a host compiling in turn would start with them: one over the time
    // limit, one over the memory limit.
    deploy_unchecked(&redis, "a-bomb", &block_bomb(BLOCK_BOMB_DEPTH)).await;
    deploy_unchecked(&redis, "b-bomb", &loop_bomb(LOOP_BOMB_DEPTH)).await;
    ok(&wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "greet",
            guests::rust("echo").to_str().unwrap(),
        ],
    ));
    enqueue(&client, "a-bomb", "bomb-1").await;
    enqueue(&client, "b-bomb", "bomb-2").await;
    enqueue(&client, "greet", "greet-1").await;

    let host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            Q,
            "--no-cache",
            "--compile-concurrency",
            "3",
            "--compile-memory",
            "512MiB",
            "--compile-timeout",
            "10s",
        ])
        .start();
    completed(&client, "greet-1", Duration::from_secs(9)).await;
    // Served while a bomb was still compiling (the slow one compiles for 10 s).
    assert!(
        !compile_children(host.pid()).is_empty(),
        "{}",
        host.log_text()
    );
    assert_waits_uncounted(&client, "bomb-1").await;
    assert_waits_uncounted(&client, "bomb-2").await;

    eventually("the bombs refused", Duration::from_secs(30), || async {
        compile_children(host.pid()).is_empty().then_some(())
    })
    .await;
    // Refused here, their jobs still wait for a host that can run them, uncounted.
    enqueue(&client, "greet", "greet-2").await;
    completed(&client, "greet-2", Duration::from_secs(10)).await;
    assert_waits_uncounted(&client, "bomb-1").await;
    assert_waits_uncounted(&client, "bomb-2").await;
    let rss = resident(host.pid()).1;
    assert!(rss < 400 * 1024 * 1024, "the host peaked at {rss} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_compile_honours_the_grace_and_stops_the_compiler() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    deploy_unchecked(&redis, "a-bomb", &block_bomb(BLOCK_BOMB_DEPTH)).await;
    enqueue(&client, "a-bomb", "bomb-1").await;
    let mut host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            Q,
            "--no-cache",
            "--grace",
            "1s",
            "--compile-memory",
            "512MiB",
            "--compile-timeout",
            "60s",
        ])
        .start();
    let compiler = eventually("the bomb compiling", Duration::from_secs(20), || async {
        compile_children(host.pid()).first().copied()
    })
    .await;
    // Logged once its signal handlers are installed.
    eventually("the host running", Duration::from_secs(20), || async {
        host.log_text().contains("wasmq host running").then_some(())
    })
    .await;

    let signalled = Instant::now();
    host.sigterm();
    let status = host.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "exit took {:?} with a grace of 1s",
        signalled.elapsed()
    );
    eventually("the compiler gone", Duration::from_secs(5), || async {
        gone(compiler).then_some(())
    })
    .await;
    assert_waits_uncounted(&client, "bomb-1").await;
}

/// A host SIGKILLed mid-compile cannot kill its compiler: the compiler ends itself a second
/// past its time limit.
#[tokio::test(flavor = "multi_thread")]
async fn the_compiler_of_a_sigkilled_host_ends_at_its_time_limit() {
    let redis = RedisServer::start();
    deploy_unchecked(&redis, "a-bomb", &block_bomb(BLOCK_BOMB_DEPTH)).await;
    let mut host = HostProcess::builder(&redis.url())
        .args([
            "--queues",
            Q,
            "--no-cache",
            "--compile-memory",
            "512MiB",
            "--compile-timeout",
            "3s",
        ])
        .start();
    let compiler = eventually("the bomb compiling", Duration::from_secs(20), || async {
        compile_children(host.pid()).first().copied()
    })
    .await;
    host.sigkill();
    let killed = Instant::now();
    eventually(
        "the orphaned compiler gone",
        Duration::from_secs(10),
        || async { gone(compiler).then_some(()) },
    )
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(6),
        "the compiler lasted {:?} past its host",
        killed.elapsed()
    );
}
