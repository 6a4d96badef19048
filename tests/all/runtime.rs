//! The sandbox, driven through real compiled components: every outcome, every limit, hostile
//! guests side by side with a well-behaved one, and refusal of anything that is not a handler.

use std::sync::OnceLock;
use std::time::Duration;

use wasmq::{
    JobInput, JobLimits, LoadError, LogSource, Outcome, OutcomeClass, RunReport, Runtime,
    RuntimeConfig,
};

use crate::support::guests;

const MIB: u64 = 1024 * 1024;

/// One runtime for the whole test binary, as in a host: tests share its pool.
fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            max_instances: 300,
            log_capacity: 16 * 1024,
            ..RuntimeConfig::default()
        })
        .unwrap()
    })
}

fn fuel_runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            fuel: true,
            max_instances: 8,
            ..RuntimeConfig::default()
        })
        .unwrap()
    })
}

fn job(payload: &[u8]) -> JobInput {
    JobInput {
        id: "job-1".into(),
        queue: "default".into(),
        handler: "test".into(),
        payload: payload.to_vec(),
        attempt: 1,
        max_attempts: 3,
    }
}

fn limits(timeout_ms: u64, memory_mib: u64) -> JobLimits {
    JobLimits {
        timeout: Duration::from_millis(timeout_ms),
        memory: memory_mib * MIB,
        fuel: None,
    }
}

async fn run_on(rt: &Runtime, guest: &str, payload: &[u8], limits: &JobLimits) -> RunReport {
    let handler = rt.load(&guests::rust_bytes(guest)).unwrap();
    rt.run(&handler, job(payload), limits).await
}

async fn run(guest: &str, payload: &[u8], limits: &JobLimits) -> RunReport {
    run_on(runtime(), guest, payload, limits).await
}

#[tokio::test]
async fn every_outcome_is_produced_by_its_guest_and_classified() {
    let cases: &[(&str, OutcomeClass)] = &[
        ("echo", OutcomeClass::Ok),
        ("noop", OutcomeClass::Ok),
        ("retry", OutcomeClass::Retry),
        ("fail", OutcomeClass::Fail),
        ("panic", OutcomeClass::Trap),
        ("infinite-loop", OutcomeClass::Timeout),
        ("memory-bomb", OutcomeClass::MemoryLimit),
        ("deep-recursion", OutcomeClass::StackOverflow),
    ];
    for &(guest, expected) in cases {
        // Only the loop should meet its deadline: the others get room to meet their own fate
        // while the rest of the suite keeps the cores busy.
        let timeout_ms = if guest == "infinite-loop" {
            500
        } else {
            30_000
        };
        let report = run(guest, b"payload", &limits(timeout_ms, 32)).await;
        assert_eq!(
            report.outcome.class(),
            expected,
            "{guest}: got {:?}",
            report.outcome
        );
    }
    let report = run("echo", b"payload", &limits(500, 32)).await;
    assert_eq!(report.outcome, Outcome::Ok(b"payload".to_vec()));
    let report = run("retry", b"", &limits(500, 32)).await;
    assert_eq!(
        report.outcome,
        Outcome::Retry("try again (attempt 1 of 3)".into())
    );
}

#[tokio::test]
async fn fuel_budget_stops_a_busy_guest_as_out_of_fuel() {
    let limits = JobLimits {
        fuel: Some(5_000_000),
        ..limits(5_000, 32)
    };
    let report = run_on(fuel_runtime(), "infinite-loop", b"", &limits).await;
    assert_eq!(report.outcome, Outcome::OutOfFuel);
    assert!(report.duration < Duration::from_secs(5));
    let consumed = report.fuel_consumed.unwrap();
    assert!(consumed >= 5_000_000, "consumed {consumed}");

    let report = run_on(fuel_runtime(), "echo", b"x", &limits).await;
    assert_eq!(report.outcome, Outcome::Ok(b"x".to_vec()));
    assert!(report.fuel_consumed.unwrap() < 5_000_000);
}

#[tokio::test]
async fn memory_bomb_is_stopped_at_the_configured_cap() {
    for cap_mib in [16, 48] {
        let report = run("memory-bomb", b"", &limits(10_000, cap_mib)).await;
        assert_eq!(report.outcome, Outcome::MemoryLimit, "cap {cap_mib} MiB");
        let cap = cap_mib * MIB;
        assert!(
            report.peak_memory <= cap,
            "peak {} > cap {cap}",
            report.peak_memory
        );
        // The bomb grows in 1 MiB blocks (plus allocator slack): it got close to the cap
        // before it was refused, so the cap and not something else stopped it.
        assert!(
            report.peak_memory >= cap - 4 * MIB,
            "peak {} far below cap {cap}",
            report.peak_memory
        );
    }
}

#[tokio::test]
async fn infinite_loop_is_stopped_within_twice_its_timeout() {
    let timeout = Duration::from_millis(300);
    let report = run("infinite-loop", b"", &limits(300, 32)).await;
    assert_eq!(report.outcome, Outcome::Timeout);
    assert!(report.duration >= timeout, "{:?}", report.duration);
    assert!(report.duration < 2 * timeout, "{:?}", report.duration);
}

#[tokio::test]
async fn handler_logs_and_progress_are_captured() {
    let report = run("echo", b"four", &limits(1_000, 32)).await;
    assert_eq!(report.progress, Some(100));
    assert!(
        report
            .logs
            .iter()
            .any(|l| l.source == LogSource::Info && l.message == "echo 4 bytes"),
        "{:?}",
        report.logs
    );
}

#[tokio::test]
async fn stdout_flood_is_bounded_and_marked_truncated() {
    // A runtime of its own: on the shared one, beside the four floods of
    // `hundred_hostile_jobs_at_once...`, five floods take turns on one long-job CPU slot, one
    // turn per stdout write, and in a debug build that ran past any deadline meant for one
    // flood (35 s). Sharing the slot is that test's business; this one checks the capture.
    let rt = Runtime::new(RuntimeConfig {
        max_instances: 4,
        log_capacity: 16 * 1024,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let report = run_on(&rt, "stdout-flood", b"", &limits(30_000, 32)).await;
    assert_eq!(report.outcome, Outcome::Ok(b"flooded".to_vec()));
    let cap = rt.config().log_capacity;
    let kept: usize = report
        .logs
        .iter()
        .filter(|l| l.source != LogSource::Host)
        .map(|l| l.message.len())
        .sum();
    assert!(kept <= cap, "kept {kept} bytes, cap {cap}");
    // 100 MiB of stdout (less the newlines, which are not part of any line) went somewhere:
    // dropped, not kept.
    assert!(report.logs_dropped >= 99 * MIB, "{}", report.logs_dropped);
    let last = report.logs.last().unwrap();
    assert_eq!(last.source, LogSource::Host);
    assert!(last.message.contains("truncated"));
}

#[tokio::test]
async fn panic_message_reaches_the_job_log() {
    let report = run("panic", b"", &limits(1_000, 32)).await;
    assert_eq!(report.outcome.class(), OutcomeClass::Trap);
    assert!(
        report
            .logs
            .iter()
            .any(|l| l.source == LogSource::Stderr && l.message.contains("handler panicked")),
        "{:?}",
        report.logs
    );
}

#[tokio::test]
async fn sandbox_grants_no_environment_arguments_files_or_network() {
    // A real listener the guest is told to connect to: if the sandbox leaked network access,
    // the connection would land here.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let report = run("sandbox-probe", addr.as_bytes(), &limits(5_000, 32)).await;
    let Outcome::Ok(bytes) = report.outcome else {
        panic!("probe did not complete: {:?}", report.outcome);
    };
    let text = String::from_utf8(bytes).unwrap();
    for probe in [
        "env",
        "args",
        "fs_root",
        "fs_cwd",
        "fs_write",
        "tcp_connect",
    ] {
        assert!(
            text.contains(&format!("{probe}=denied")),
            "{probe} not denied:\n{text}"
        );
    }
    assert!(listener.accept().is_err(), "the guest reached the listener");
}

#[tokio::test]
async fn hundred_hostile_jobs_at_once_leave_the_host_alive_and_echo_completes() {
    let rt = runtime();
    let hostile = [
        ("infinite-loop", OutcomeClass::Timeout),
        ("memory-bomb", OutcomeClass::MemoryLimit),
        ("deep-recursion", OutcomeClass::StackOverflow),
        ("panic", OutcomeClass::Trap),
        ("stdout-flood", OutcomeClass::Ok),
    ];
    let handlers: Vec<_> = hostile
        .iter()
        .map(|(name, class)| (rt.load(&guests::rust_bytes(name)).unwrap(), *class, *name))
        .collect();
    // 100 jobs: the first four kinds cycle, and four floods (each pushes 100 MiB through
    // WASI stdout, about two seconds of CPU apiece) run among them.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let kind = if i % 25 == 24 { 4 } else { i % 4 };
        let (handler, class, name) = handlers[kind].clone();
        let rt = rt.clone();
        tasks.push(tokio::spawn(async move {
            // The loops hold their cores until their deadline; the others get long enough to
            // meet their own fate on 2 busy cores.
            let timeout_ms = if name == "infinite-loop" {
                1_000
            } else {
                60_000
            };
            let report = rt.run(&handler, job(b""), &limits(timeout_ms, 16)).await;
            (name, class, report.outcome.class())
        }));
    }
    // The well-behaved neighbour, started while the hostile ones are running.
    let echo = run("echo", b"still here", &limits(10_000, 16)).await;
    assert_eq!(echo.outcome, Outcome::Ok(b"still here".to_vec()));

    for task in tasks {
        let (name, expected, got) = task.await.expect("job task panicked");
        assert_eq!(got, expected, "{name}");
    }
    let echo = run("echo", b"after", &limits(1_000, 16)).await;
    assert_eq!(echo.outcome, Outcome::Ok(b"after".to_vec()));
}

#[test]
fn anything_but_a_handler_component_is_refused_with_the_reason() {
    let echo = guests::rust_bytes("echo");
    let wat = |text: &str| wat::parse_str(text).unwrap();
    type Case = (&'static str, Vec<u8>, fn(&LoadError) -> bool);
    let cases: Vec<Case> = vec![
        ("random bytes", b"\x13\x37not wasm at all".to_vec(), |e| {
            matches!(e, LoadError::NotWasm)
        }),
        ("empty file", Vec::new(), |e| {
            matches!(e, LoadError::NotWasm)
        }),
        (
            "core module",
            wat("(module (func (export \"handle\")))"),
            |e| matches!(e, LoadError::CoreModule),
        ),
        (
            "truncated component",
            echo[..echo.len() / 2].to_vec(),
            |e| matches!(e, LoadError::Invalid(_)),
        ),
        ("component with no exports", wat("(component)"), |e| {
            matches!(e, LoadError::MissingExport)
        }),
        (
            "component of another world",
            wat(r#"(component
                (import "acme:billing/ledger@1.0.0" (instance (export "charge" (func))))
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (export "handle" (func $f)))"#),
            |e| matches!(e, LoadError::UnsupportedImport(_)),
        ),
        (
            "handle with the wrong signature",
            wat(r#"(component
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (export "handle" (func $f)))"#),
            |e| matches!(e, LoadError::WrongWorld(_)),
        ),
        (
            "handle that is not a function",
            wat(r#"(component
                (core module $m)
                (export "handle" (core module $m)))"#),
            |e| matches!(e, LoadError::WrongWorld(_)),
        ),
    ];
    for (what, bytes, expected) in cases {
        match runtime().load(&bytes) {
            Ok(_) => panic!("{what}: accepted"),
            Err(err) => assert!(expected(&err), "{what}: wrong reason: {err}"),
        }
    }
}

/// Every job starts from the component's initial memory, whatever the jobs before it left in
/// the same pool slot: with slots kept resident and reset in place (the default) and with
/// slots unmapped. One pool slot, so every job reuses the previous one's.
#[tokio::test]
async fn a_job_never_sees_what_an_earlier_job_left_in_memory() {
    for keep_resident in [RuntimeConfig::default().keep_resident, 0] {
        let rt = Runtime::new(RuntimeConfig {
            max_instances: 1,
            keep_resident,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let handler = rt.load(&guests::rust_bytes("leftovers")).unwrap();
        for i in 0..50u8 {
            let report = rt
                .run(
                    &handler,
                    job(&[i.wrapping_mul(7).max(1)]),
                    &limits(2000, 32),
                )
                .await;
            assert_eq!(
                report.outcome,
                Outcome::Ok(b"calls=1 heap=0 stack=0".to_vec()),
                "job {i}, keep_resident {keep_resident}"
            );
        }
    }
}

/// The same for the Python and JavaScript handlers, whose interpreters start from a memory
/// image of tens of MiB: module globals, a buffer inside the image and objects on the
/// interpreter's heap written by one job are never seen by the next, kept resident or not.
#[tokio::test]
async fn a_python_or_javascript_job_never_sees_what_an_earlier_job_left() {
    let guests = [
        (
            "Python",
            guests::python("leftovers"),
            "calls=1 buffer=0 builtins=0 dict=0",
        ),
        (
            "JavaScript",
            guests::javascript("leftovers"),
            "calls=1 buffer=0 global=0 map=0",
        ),
    ];
    for keep_resident in [RuntimeConfig::default().keep_resident, 0] {
        let rt = Runtime::new(RuntimeConfig {
            max_instances: 1,
            keep_resident,
            ..RuntimeConfig::default()
        })
        .unwrap();
        for (language, path, fresh) in &guests {
            let handler = rt.load_file(path).unwrap();
            for i in 0..10u8 {
                let report = rt
                    .run(&handler, job(&[b'a' + i]), &limits(10_000, 256))
                    .await;
                assert_eq!(
                    report.outcome,
                    Outcome::Ok(fresh.as_bytes().to_vec()),
                    "{language} job {i}, keep_resident {keep_resident}"
                );
            }
        }
    }
}

/// One `memory.fill` of most of a 128 MiB memory: a single instruction, which no epoch tick
/// can interrupt, holding its thread for tens of milliseconds (mostly page faults).
fn filler() -> Vec<u8> {
    crate::corpus::table::Wat {
        imports: "",
        memory: r#"(memory (export "memory") 2048)"#,
        items: "",
        body: &format!(
            "(memory.fill (i32.const 65536) (i32.const 0x5a) (i32.const {}))\n{}",
            127 * MIB,
            crate::corpus::table::RETURN_PAYLOAD
        ),
    }
    .component()
}

/// How long a short job takes, from its spawn to its end, when it is spawned just after two
/// jobs of `filler` on a runtime of two threads.
async fn echo_beside_two_fillers(rt: &Runtime, filler: &wasmq::Handler) -> Duration {
    let echo = rt.load(&guests::rust_bytes("echo")).unwrap();
    let fillers: Vec<_> = (0..2)
        .map(|_| {
            let (rt, filler) = (rt.clone(), filler.clone());
            tokio::spawn(async move { rt.run(&filler, job(b"f"), &limits(10_000, 256)).await })
        })
        .collect();
    // Long enough for both to be running (or, with a CPU slot, one to run and one to wait).
    // A thread sleep: this is not one of the runtime's threads, and its timers would wait for
    // a free one.
    std::thread::sleep(Duration::from_millis(5));
    let started = std::time::Instant::now();
    let rt2 = rt.clone();
    let report = tokio::spawn(async move { rt2.run(&echo, job(b"e"), &limits(10_000, 16)).await })
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(report.outcome, Outcome::Ok(b"e".to_vec()));
    for filler in fillers {
        assert_eq!(filler.await.unwrap().outcome, Outcome::Ok(b"f".to_vec()));
    }
    took
}

/// Runs `test` on a two-thread tokio runtime with a `Runtime` of one long-job CPU slot and
/// the `filler` handler (one `memory.fill` no epoch tick can interrupt) loaded in it.
fn with_one_cpu_slot<F, Fut>(test: F)
where
    F: FnOnce(Runtime, wasmq::Handler) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let threads = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    threads.block_on(async {
        let rt = Runtime::new(RuntimeConfig {
            max_instances: 8,
            long_job_cpu_slots: 1,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let filler = rt.load(&filler()).unwrap();
        test(rt, filler).await;
    });
}

/// A long job is one that has used `long_job_after` of CPU time, not one that started that
/// long ago: a short job that waits in a host call (a 10 ms sleep) is not sent, when it comes
/// back, to queue for the one long-job CPU slot behind jobs of a handler known to run long,
/// each of which holds the slot through a `memory.fill` no epoch tick can interrupt. Counted
/// by the clock on the wall it was (4 ms after its start), and it ended after the last of
/// them; a neighbour's 0.3 ms job waited 1.5 s that way behind a 136 MiB result
/// (tests/isolation).
#[test]
fn a_short_job_that_waited_is_not_a_long_job() {
    with_one_cpu_slot(|rt, filler| async move {
        let sleep = rt.load(&guests::rust_bytes("sleep")).unwrap();
        // Two fills that ran long: the handler's next jobs start long, one at a time in the
        // slot.
        for _ in 0..2 {
            let report = rt.run(&filler, job(b"f"), &limits(10_000, 256)).await;
            assert_eq!(report.outcome, Outcome::Ok(b"f".to_vec()));
        }
        let started = std::time::Instant::now();
        let fillers: Vec<_> = (0..4)
            .map(|_| {
                let (rt, filler) = (rt.clone(), filler.clone());
                tokio::spawn(async move {
                    let report = rt.run(&filler, job(b"f"), &limits(10_000, 256)).await;
                    assert_eq!(report.outcome, Outcome::Ok(b"f".to_vec()));
                    started.elapsed()
                })
            })
            .collect();
        // The first filling, the others queued for the slot. A thread sleep: this is not one
        // of the runtime's threads.
        std::thread::sleep(Duration::from_millis(5));
        let report = rt.run(&sleep, job(b"10"), &limits(10_000, 16)).await;
        let slept = started.elapsed();
        assert_eq!(
            report.outcome.class(),
            OutcomeClass::Ok,
            "{:?}",
            report.outcome
        );
        let mut filled = Vec::new();
        for filler in fillers {
            filled.push(filler.await.unwrap());
        }
        filled.sort_unstable();
        assert!(
            slept < filled[1],
            "the sleeping job ended {slept:?} after the fillers started, after the second of \
             them ({filled:?}): it queued for the CPU slot behind them"
        );
    });
}

/// A job that cannot be interrupted (one huge `memory.fill`) runs without a CPU slot the
/// first times, as every job starts short: two at once then hold both threads of a two-thread
/// runtime and a short job waits for them. Once two of its handler's last four attempts ran
/// long, its jobs take the one long-job slot before they start: one fills, the other waits
/// without a thread, and the short job runs on the free one.
#[test]
fn a_handler_whose_jobs_ran_long_starts_its_next_jobs_holding_a_cpu_slot() {
    with_one_cpu_slot(|rt, filler| async move {
        // A fresh handler: both fillers start at once, as short jobs.
        let first = echo_beside_two_fillers(&rt, &filler).await;
        // Those two ran long; the next ones start long.
        let fill = rt.run(&filler, job(b"f"), &limits(10_000, 256)).await;
        let then = echo_beside_two_fillers(&rt, &filler).await;
        assert!(
            then < fill.duration / 2,
            "the short job took {then:?} beside two fillers of a handler known to run long \
             ({:?} each; {first:?} beside two of a fresh handler)",
            fill.duration
        );
    });
}
