//! Cron schedules with real hosts: `wasmq run` processes enqueue one job per tick however
//! many run, apply the missed-tick policy on start, skip paused schedules, and `wasmq
//! schedule add` refuses bad input with nothing written. (DST and time zone maths are unit
//! tests with fixed clocks in `host/src/schedule`.)

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use redis::AsyncCommands;
use wasmq::schedule::{ScheduleSpec, Schedules};

use crate::support::eventually;
use crate::support::guests::handler;
use crate::support::host::HostProcess;
use crate::support::jobs::keep_everything;
use crate::support::redis::RedisServer;

const Q: &str = "sched-q";

fn spec(name: &str, cron: &str, catch_up: u32) -> ScheduleSpec {
    ScheduleSpec {
        name: name.to_string(),
        cron: cron.to_string(),
        tz: "UTC".to_string(),
        queue: Q.to_string(),
        handler: "echo".to_string(),
        payload: b"tick".to_vec(),
        catch_up,
    }
}

/// The tick times (Unix ms) of every job schedule `name` enqueued in `Q`, read from the ids.
async fn ticks(redis: &RedisServer, name: &str) -> BTreeSet<u64> {
    let mut conn = redis.connection().await;
    let prefix = format!("wasmq:{{{Q}}}:job:sched:{name}:");
    let keys: Vec<String> = conn.keys(format!("{prefix}*")).await.unwrap();
    keys.iter()
        .filter_map(|k| k.strip_prefix(&prefix)?.parse().ok())
        .collect()
}

#[tokio::test]
async fn two_hosts_enqueue_exactly_one_job_per_tick() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let store = Schedules::connect(&redis.url()).await.unwrap();
    let echo = handler("echo", "echo");
    let _a = HostProcess::builder(&redis.url())
        .args(["--queues", Q, "--handler", &echo])
        .start();
    let _b = HostProcess::builder(&redis.url())
        .args(["--queues", Q, "--handler", &echo])
        .start();
    store
        .add(&spec("every-second", "*/1 * * * * *", 0))
        .await
        .unwrap();
    eventually("the first tick", Duration::from_secs(30), || async {
        (!ticks(&redis, "every-second").await.is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(store.remove("every-second").await.unwrap());
    // A pass that read the schedule before the removal may still enqueue its tick.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let seen = ticks(&redis, "every-second").await;
    let seen: Vec<u64> = seen.into_iter().collect();
    assert!(
        (10..=12).contains(&seen.len()),
        "about 10 s of ticks (plus the first), got {}: {seen:?}",
        seen.len()
    );
    for pair in seen.windows(2) {
        assert_eq!(pair[1] - pair[0], 1000, "consecutive seconds: {seen:?}");
    }
    assert!(seen.iter().all(|t| t % 1000 == 0), "{seen:?}");
    // Each id is one job, and every one of them ran once.
    eventually(
        "every scheduled job completed",
        Duration::from_secs(20),
        || async {
            let counts = client.counts(Q).await.ok()?;
            (counts.get(wasmq::queue::JobState::Completed) == seen.len() as u64).then_some(())
        },
    )
    .await;
    for tick in &seen {
        let job = client
            .get(Q, &wasmq::schedule::job_id("every-second", *tick))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job.attempt, 1, "{job:?}");
    }
}

#[tokio::test]
async fn missed_ticks_follow_the_catch_up_policy_and_paused_schedules_wait() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let store = Schedules::connect(&redis.url()).await.unwrap();
    let hour = 3_600_000;
    let now = store.now_ms().await.unwrap();
    // Hourly, at the minute half an hour away from now: no tick is anywhere near on time.
    let minute = (now / 60_000 + 30) % 60;
    let cron = format!("0 {minute} * * * *");
    let mut newest = now - now % hour + minute * 60_000;
    if newest > now {
        newest -= hour;
    }
    store.add(&spec("catch-up", &cron, 2)).await.unwrap();
    store.add(&spec("skip", &cron, 0)).await.unwrap();
    store.add(&spec("paused", "* * * * * *", 0)).await.unwrap();
    assert!(store.pause("paused").await.unwrap());
    // As if no host had run for a day (docs/protocol.md: last_tick_ms).
    let mut conn = redis.connection().await;
    for name in ["catch-up", "skip"] {
        let () = conn
            .hset(
                format!("wasmq:{{@schedules}}:schedule:{name}"),
                "last_tick_ms",
                now - 24 * hour,
            )
            .await
            .unwrap();
    }

    let _host = HostProcess::builder(&redis.url())
        .args(["--queues", Q, "--handler", &handler("echo", "echo")])
        .start();
    eventually(
        "both schedules dealt with",
        Duration::from_secs(30),
        || async {
            let skip = store.get("skip").await.ok()??;
            let caught = store.get("catch-up").await.ok()??;
            (skip.last_tick_ms == newest && caught.last_tick_ms == newest).then_some(())
        },
    )
    .await;
    // Passes after the first find nothing more to do.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ticks(&redis, "catch-up").await,
        BTreeSet::from([newest - hour, newest])
    );
    assert_eq!(ticks(&redis, "skip").await, BTreeSet::new());
    assert_eq!(ticks(&redis, "paused").await, BTreeSet::new());

    // Resuming does not flood: the ticks that fell while paused are missed ticks, skipped
    // under the default policy; the ticks after the resume run.
    let resumed_at = store.now_ms().await.unwrap();
    assert!(store.resume("paused").await.unwrap());
    let after = eventually(
        "ticks after the resume",
        Duration::from_secs(10),
        || async {
            let after = ticks(&redis, "paused").await;
            (after.len() >= 2).then_some(after)
        },
    )
    .await;
    assert!(
        after.iter().all(|&t| t > resumed_at),
        "{after:?} {resumed_at}"
    );
}

#[test]
fn bad_schedules_are_refused_with_a_clear_message_and_nothing_written() {
    let redis = RedisServer::start();
    let url = redis.url();
    let cases: &[(&[&str], &str)] = &[
        (&["--cron", "61 * * * *"], "cron expression"),
        (&["--cron", "* * *"], "has 3 fields"),
        (&["--tz", "Mars/Olympus"], "unknown time zone"),
        (&["--queue", "bad queue"], "queue name"),
        (&["--handler", "bad handler"], "handler name"),
    ];
    for (change, message) in cases {
        let mut args = vec![
            "schedule",
            "add",
            "nightly",
            "--cron",
            "0 9 * * *",
            "--tz",
            "Asia/Seoul",
            "--queue",
            Q,
            "--handler",
            "echo",
            "--redis",
            &url,
        ];
        for pair in change.chunks(2) {
            let at = args.iter().position(|a| *a == pair[0]).unwrap();
            args[at + 1] = pair[1];
        }
        let out = Command::new(env!("CARGO_BIN_EXE_wasmq"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{change:?}: {stderr}");
        assert!(stderr.contains(message), "{change:?}: {stderr}");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys: Vec<String> = rt.block_on(async {
        let mut conn = redis.connection().await;
        conn.keys("wasmq:{@schedules}:*").await.unwrap()
    });
    assert!(keys.is_empty(), "{keys:?}");
}
