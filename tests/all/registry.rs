//! Handlers as data: `wasmq handler deploy|list|versions|rollback|remove` against a real Redis,
//! and real `wasmq run` hosts that pick up deploys without a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use wasmq::queue::{Backoff, Client, JobState, NewJob};
use wasmq::registry::{HandlerSettings, Registry, RegistryError};
use wasmq::{LoadError, Runtime, RuntimeConfig};

use crate::support::cli::{ok, wasmq};
use crate::support::eventually;
use crate::support::guests;
use crate::support::host::HostProcess;
use crate::support::redis::RedisServer;

const Q: &str = "deploys";

fn deploy(redis: &RedisServer, name: &str, file: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "handler",
        "deploy",
        name,
        file.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    ok(&wasmq(redis, &args))
}

/// Enqueues one echo job and returns its result once it completed.
async fn run_one(client: &Client, payload: &str) -> String {
    let id = client
        .enqueue(Q, &NewJob::new("greet", payload.as_bytes().to_vec()))
        .await
        .unwrap()
        .id;
    eventually(
        &format!("job {payload} completed"),
        Duration::from_secs(30),
        || async {
            let job = client.get(Q, &id).await.ok()??;
            (job.state == JobState::Completed).then(|| {
                String::from_utf8_lossy(job.result.as_deref().unwrap_or_default()).into_owned()
            })
        },
    )
    .await
}

/// Runs jobs one after another from now until one returns `want`; returns how long after
/// `since` the job that first saw it was enqueued.
async fn switched_after(client: &Client, since: Instant, want: &str) -> Duration {
    loop {
        let enqueued = Instant::now();
        let result = run_one(client, "x").await;
        if result == want {
            return enqueued.duration_since(since);
        }
        assert!(
            since.elapsed() < Duration::from_secs(20),
            "still {result:?}, not {want:?}, 20 s after the change"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn deploys_reach_running_hosts_within_a_second_and_roll_back() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let v1 = guests::rust("echo");
    let v2 = guests::rust("echo-prefix");
    let out = deploy(&redis, "greet", &v1, &[]);
    assert!(out.contains("deployed greet version 1"), "{out}");

    // Two hosts, no --handler: everything comes from the registry.
    let hosts = [
        HostProcess::builder(&redis.url())
            .args(["--queues", Q, "--host-id", "host-a"])
            .start(),
        HostProcess::builder(&redis.url())
            .args(["--queues", Q, "--host-id", "host-b"])
            .start(),
    ];
    assert_eq!(run_one(&client, "hello").await, "hello");

    let deployed = Instant::now();
    let out = deploy(&redis, "greet", &v2, &["--memory", "32MiB"]);
    assert!(out.contains("deployed greet version 2"), "{out}");
    let took = switched_after(&client, deployed, "v2:x").await;
    assert!(
        took <= Duration::from_secs(1),
        "v2 seen {took:?} after deploy"
    );
    // Both hosts switched: every job from now on runs v2, whichever host takes it, and each
    // host logged the install.
    for host in &hosts {
        eventually("both hosts on v2", Duration::from_secs(2), || async {
            host.log_text()
                .lines()
                .any(|l| l.contains("handler version installed") && l.contains("version=2:"))
                .then_some(())
        })
        .await;
    }
    for i in 0..20 {
        assert_eq!(run_one(&client, &i.to_string()).await, format!("v2:{i}"));
    }
    let listed = ok(&wasmq(&redis, &["handler", "list"]));
    assert!(
        listed.contains("greet") && listed.contains("v2"),
        "{listed}"
    );
    let versions = ok(&wasmq(&redis, &["handler", "versions", "greet", "--json"]));
    let versions: serde_json::Value = serde_json::from_str(&versions).unwrap();
    assert_eq!(versions[0]["version"], 1);
    assert_eq!(versions[0]["current"], false);
    assert_eq!(versions[1]["version"], 2);
    assert_eq!(versions[1]["current"], true);
    assert_eq!(versions[1]["memory"], 32 * 1024 * 1024);

    // Rollback (to the version before the current one) reaches the hosts the same way.
    let rolled = Instant::now();
    let out = ok(&wasmq(&redis, &["handler", "rollback", "greet"]));
    assert!(out.contains("version 1"), "{out}");
    let took = switched_after(&client, rolled, "x").await;
    assert!(
        took <= Duration::from_secs(1),
        "v1 seen {took:?} after rollback"
    );
    for host in &hosts {
        eventually("both hosts back on v1", Duration::from_secs(2), || async {
            host.log_text()
                .lines()
                .filter(|l| l.contains("handler version installed") && l.contains("version=1:"))
                .nth(1)
                .map(|_| ())
        })
        .await;
    }
    // ...and to a named version.
    ok(&wasmq(&redis, &["handler", "rollback", "greet", "2"]));
    switched_after(&client, Instant::now(), "v2:x").await;

    // Removed: hosts stop starting its jobs (they fail as unknown_handler and dead-letter).
    let out = ok(&wasmq(&redis, &["handler", "remove", "greet"]));
    assert!(out.contains("2 versions"), "{out}");
    for host in &hosts {
        eventually(
            "both hosts dropped greet",
            Duration::from_secs(10),
            || async {
                host.log_text()
                    .lines()
                    .any(|l| l.contains("handler removed from the registry") && l.contains("greet"))
                    .then_some(())
            },
        )
        .await;
    }
    let id = client
        .enqueue(
            Q,
            &NewJob::new("greet", b"orphan".to_vec()).with_max_attempts(1),
        )
        .await
        .unwrap()
        .id;
    let job = eventually("orphan dead", Duration::from_secs(10), || async {
        let job = client.get(Q, &id).await.ok()??;
        (job.state == JobState::Dead).then_some(job)
    })
    .await;
    assert_eq!(job.history[0].outcome, "unknown_handler");
    // Both components are gone from Redis with the last version that used them.
    let keys = redis.snapshot().await;
    assert!(
        !keys.keys().any(|k| k.contains(":blob:")),
        "blobs left: {:?}",
        keys.keys().collect::<Vec<_>>()
    );
    let out = wasmq(&redis, &["handler", "remove", "greet"]);
    assert!(!out.status.success());
}

#[tokio::test]
async fn invalid_uploads_are_refused_with_the_reason_and_change_nothing() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let echo = guests::rust_bytes("echo");
    // One good deploy first, so "unchanged" covers existing handler data too.
    deploy(&redis, "greet", &guests::rust("echo"), &[]);
    ok(&wasmq(&redis, &["handler", "max-upload", "1MiB"]));
    let before = redis.snapshot().await;

    let big = {
        // A valid component padded past the limit with a custom section.
        let mut bytes = echo.clone();
        let payload = vec![0u8; 1024 * 1024];
        let name = b"padding";
        let mut section = vec![name.len() as u8];
        section.extend_from_slice(name);
        section.extend_from_slice(&payload);
        bytes.push(0); // custom section id
        let mut len = section.len();
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                bytes.push(byte);
                break;
            }
            bytes.push(byte | 0x80);
        }
        bytes.extend_from_slice(&section);
        bytes
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "random bytes",
            b"\x13\x37 not wasm".to_vec(),
            "not a WebAssembly binary",
        ),
        (
            "core module",
            wat::parse_str("(module (func (export \"handle\")))").unwrap(),
            "core WebAssembly module, not a component",
        ),
        (
            "another world",
            wat::parse_str(
                r#"(component
                (import "acme:billing/ledger@1.0.0" (instance (export "charge" (func))))
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (export "handle" (func $f)))"#,
            )
            .unwrap(),
            "needs an import the host does not provide",
        ),
        (
            "no handle export",
            wat::parse_str("(component)").unwrap(),
            "does not export `handle`",
        ),
        (
            "truncated file",
            echo[..echo.len() / 2].to_vec(),
            "invalid component",
        ),
        ("oversize", big, "over the registry's upload limit"),
    ];
    for (what, bytes, reason) in cases {
        let file = dir.path().join(format!("{}.wasm", what.replace(' ', "-")));
        std::fs::write(&file, &bytes).unwrap();
        let out = wasmq(
            &redis,
            &["handler", "deploy", "greet", file.to_str().unwrap()],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted");
        assert!(
            stderr.contains(reason),
            "{what}: stderr lacks {reason:?}:\n{stderr}"
        );
        assert_eq!(redis.snapshot().await, before, "{what}: Redis changed");
    }
    // Bad settings are refused before anything is read or written, too.
    for (flag, value, reason) in [
        ("--max-attempts", "0", "max attempts"),
        ("--backoff", "sometimes", "backoff"),
        ("--concurrency", "0", "concurrency"),
        ("--memory", "1KiB", "memory"),
    ] {
        let out = wasmq(
            &redis,
            &[
                "handler",
                "deploy",
                "greet",
                guests::rust("echo").to_str().unwrap(),
                flag,
                value,
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value}: accepted");
        assert!(stderr.contains(reason), "{flag} {value}: {stderr}");
    }
    let out = wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "bad name",
            guests::rust("echo").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert_eq!(redis.snapshot().await, before, "Redis changed");
}

/// The library API refuses the same way, with typed errors, and shares stored components.
#[tokio::test]
async fn registry_api_stores_components_once_and_types_its_errors() {
    let redis = RedisServer::start();
    let registry = Registry::connect(&redis.url()).await.unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        pooling: false,
        ..wasmq::worker::host_runtime()
    })
    .unwrap();
    let echo = guests::rust_bytes("echo");
    let settings = HandlerSettings::default();
    let mut progress = Vec::new();
    let a = registry
        .deploy(&runtime, "a", echo.clone(), &settings, |sent, total| {
            progress.push((sent, total))
        })
        .await
        .unwrap();
    assert_eq!(
        progress.last(),
        Some(&(echo.len() as u64, echo.len() as u64))
    );
    let b = registry
        .deploy(&runtime, "b", echo.clone(), &settings, |_, _| {})
        .await
        .unwrap();
    assert_eq!(a.sha256, b.sha256);
    assert_eq!((a.version, b.version), (1, 1));
    let keys = redis.snapshot().await;
    assert_eq!(keys.keys().filter(|k| k.contains(":blob:")).count(), 1);
    // Removing one keeps the component the other still uses.
    assert_eq!(registry.remove("a").await.unwrap(), 1);
    assert_eq!(registry.component(&b.sha256).await.unwrap(), echo);

    match registry
        .deploy(&runtime, "c", b"nope".to_vec(), &settings, |_, _| {})
        .await
    {
        Err(RegistryError::Refused(LoadError::NotWasm)) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    match registry.rollback("b", None).await {
        Err(RegistryError::NoVersion(msg)) => assert!(msg.contains("no version before 1"), "{msg}"),
        other => panic!("expected no earlier version, got {other:?}"),
    }
    match registry.rollback("nobody", None).await {
        Err(RegistryError::NoHandler(_)) => {}
        other => panic!("expected no such handler, got {other:?}"),
    }
    assert!(matches!(
        registry.versions("nobody").await,
        Err(RegistryError::NoHandler(_))
    ));
}

/// Precompiled artifacts: a restart with a warm cache compiles nothing; a corrupt artifact is
/// discarded, compiled again, and the job still succeeds.
#[tokio::test]
async fn warm_restarts_load_compiled_handlers_from_the_cache() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().join("artifacts");
    let cache_arg = cache_dir.to_str().unwrap();
    deploy(&redis, "greet", &guests::rust("echo"), &[]);
    let installed_from = |host: &HostProcess| -> Vec<String> {
        host.log_text()
            .lines()
            .filter(|l| l.contains("handler version installed"))
            .map(|l| l.to_string())
            .collect()
    };

    let mut host = HostProcess::builder(&redis.url())
        .args(["--queues", Q, "--cache-dir", cache_arg])
        .start();
    assert_eq!(run_one(&client, "cold").await, "cold");
    let lines = installed_from(&host);
    assert!(
        lines.len() == 1 && lines[0].contains("source=Compiled"),
        "{lines:?}"
    );
    host.sigterm();
    assert!(host.wait_exit(Duration::from_secs(10)).success());

    let mut host = HostProcess::builder(&redis.url())
        .args(["--queues", Q, "--cache-dir", cache_arg])
        .start();
    assert_eq!(run_one(&client, "warm").await, "warm");
    let lines = installed_from(&host);
    assert!(
        lines.len() == 1 && lines[0].contains("source=Cached"),
        "{lines:?}"
    );
    assert!(
        host.log_text().contains("compiled=0"),
        "{}",
        host.log_text()
    );
    host.sigterm();
    assert!(host.wait_exit(Duration::from_secs(10)).success());

    // Damage every artifact: flip bytes in the middle.
    let mut damaged = 0;
    for entry in std::fs::read_dir(&cache_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            let mut bytes = std::fs::read(&path).unwrap();
            let mid = bytes.len() / 2;
            for b in &mut bytes[mid..mid + 64] {
                *b ^= 0xff;
            }
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert_eq!(damaged, 1);
    let host = HostProcess::builder(&redis.url())
        .args(["--queues", Q, "--cache-dir", cache_arg])
        .start();
    assert_eq!(run_one(&client, "mended").await, "mended");
    let lines = installed_from(&host);
    assert!(
        lines.len() == 1 && lines[0].contains("source=Recompiled"),
        "{lines:?}"
    );
}

/// Waits until job `id` of queue [`Q`] is dead and returns it.
async fn dead_job(client: &Client, id: &str) -> wasmq::queue::Job {
    eventually(
        &format!("job {id} dead"),
        Duration::from_secs(30),
        || async {
            let job = client.get(Q, id).await.ok()??;
            (job.state == JobState::Dead).then_some(job)
        },
    )
    .await
}

#[tokio::test]
async fn a_deployed_retry_policy_applies_and_every_attempt_records_its_version() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let retry = guests::rust("retry");
    let sha = wasmq::registry::sha256_hex(&std::fs::read(&retry).unwrap());
    deploy(
        &redis,
        "stubborn",
        &retry,
        &["--max-attempts", "2", "--backoff", "fixed:10ms"],
    );
    let _host = HostProcess::builder(&redis.url())
        .args(["--queues", Q])
        .start();

    // A job that leaves its policy to the handler gets two attempts, 10 ms apart, and the guest
    // is told so.
    let bare = client
        .enqueue(Q, &NewJob::new("stubborn", Vec::new()))
        .await
        .unwrap();
    let job = dead_job(&client, &bare.id).await;
    let errors: Vec<_> = job.history.iter().map(|a| a.error.as_str()).collect();
    assert_eq!(
        errors,
        ["try again (attempt 1 of 2)", "try again (attempt 2 of 2)"]
    );
    assert_eq!(job.max_attempts, 2);
    assert_eq!(job.backoff, Backoff::fixed(Duration::from_millis(10)));
    let v1 = format!("1:{}", &sha[..12]);
    for attempt in &job.history {
        assert_eq!(attempt.version.as_deref(), Some(v1.as_str()), "{attempt:?}");
    }

    // A producer's own attempts win over the handler's; its backoff is still the handler's.
    let own = client
        .enqueue(Q, &NewJob::new("stubborn", Vec::new()).with_max_attempts(3))
        .await
        .unwrap();
    let job = dead_job(&client, &own.id).await;
    assert_eq!(job.history.len(), 3);
    assert_eq!(job.history[2].error, "try again (attempt 3 of 3)");
    assert_eq!(job.backoff, Backoff::fixed(Duration::from_millis(10)));

    // A new version with another policy: the same component, version 2, four attempts.
    deploy(
        &redis,
        "stubborn",
        &retry,
        &["--max-attempts", "4", "--backoff", "fixed:10ms"],
    );
    let v2 = format!("2:{}", &sha[..12]);
    let job = eventually("a job on version 2", Duration::from_secs(10), || async {
        let id = client
            .enqueue(Q, &NewJob::new("stubborn", Vec::new()))
            .await
            .ok()?
            .id;
        let job = dead_job(&client, &id).await;
        (job.history[0].version.as_deref() == Some(v2.as_str())).then_some(job)
    })
    .await;
    assert_eq!(job.history.len(), 4, "{:?}", job.history);
    assert!(
        job.history
            .iter()
            .all(|a| a.version.as_deref() == Some(v2.as_str()))
    );

    // The CLI and the API show the version of each attempt.
    let shown = ok(&wasmq(&redis, &["job", Q, &job.id]));
    assert!(shown.contains(&format!("(version {v2})")), "{shown}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&wasmq(&redis, &["job", Q, &job.id, "--json"]))).unwrap();
    assert_eq!(json["history"][3]["version"], v2.as_str());
    assert_eq!(json["max_attempts"], 4);
    assert_eq!(json["own_policy"]["max_attempts"], false);
}
