//! Key-value buckets (`wasi:keyvalue`) through a real component (`kv-ops`, written with the
//! SDK's `kv` module) and a real Redis: every operation, buckets granted per handler and kept
//! apart, quotas, TTLs, `increment` under eight concurrent hosts, the `wasmq kv` commands, and
//! bucket keys that hold the wrong type.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use wasmq::capability::{Capabilities, Grants, HostResources, KvStore};
use wasmq::queue::{Backoff, Client, JobState, NewJob, bucket_keys};
use wasmq::{Handler, JobInput, JobLimits, Outcome, Runtime, RuntimeConfig};

use crate::support::cli::{ok, wasmq};
use crate::support::eventually;
use crate::support::guests;
use crate::support::host::HostProcess;
use crate::support::jobs::keep_everything;
use crate::support::redis::RedisServer;

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::new(RuntimeConfig {
            max_instances: 16,
            ..RuntimeConfig::default()
        })
        .unwrap()
    })
}

fn component() -> Handler {
    static H: OnceLock<Handler> = OnceLock::new();
    H.get_or_init(|| runtime().load(&guests::rust_bytes("kv-ops")).unwrap())
        .clone()
}

/// `kv-ops` as handler `name`, granted the buckets `kv`, its buckets in `client`'s Redis.
fn granted(client: &Client, name: &str, kv: &[&str]) -> Handler {
    let grants = Grants {
        kv: kv.iter().map(|s| s.to_string()).collect(),
        ..Grants::default()
    };
    let store: Arc<dyn KvStore> = Arc::new(client.clone());
    let host = HostResources {
        kv: Some(store),
        ..HostResources::default()
    };
    let caps = Capabilities::resolve(name, &grants, &host).unwrap();
    component().with_capabilities(Arc::new(caps))
}

/// Runs `ops` on `bucket` as `handler` and returns the outcome.
async fn run(handler: &Handler, bucket: &str, ops: Value) -> Outcome {
    let payload = serde_json::to_vec(&json!({ "bucket": bucket, "ops": ops })).unwrap();
    let job = JobInput {
        id: "kv-1".into(),
        queue: "kv".into(),
        handler: "kv-ops".into(),
        payload,
        attempt: 1,
        max_attempts: 1,
    };
    let limits = JobLimits {
        timeout: Duration::from_secs(20),
        ..JobLimits::default()
    };
    runtime().run(handler, job, &limits).await.outcome
}

/// Runs `ops` and returns one JSON result per op.
async fn results(handler: &Handler, bucket: &str, ops: Value) -> Vec<Value> {
    match run(handler, bucket, ops).await {
        Outcome::Ok(bytes) => serde_json::from_slice(&bytes).unwrap(),
        other => panic!("kv-ops did not complete: {other:?}"),
    }
}

#[tokio::test]
async fn every_operation_works_on_a_granted_bucket() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let h = granted(&client, "app", &["cache"]);
    let out = results(
        &h,
        "cache",
        json!([
            { "op": "get", "key": "a" },
            { "op": "set", "key": "a", "value": "one" },
            { "op": "get", "key": "a" },
            { "op": "exists", "key": "a" },
            { "op": "set_many", "pairs": [["b", "two"], ["c", "three"]] },
            { "op": "get_many", "keys": ["a", "missing", "c"] },
            { "op": "keys" },
            { "op": "incr", "key": "n", "delta": 5 },
            { "op": "incr", "key": "n", "delta": 2 },
            { "op": "incr", "key": "a", "delta": 1 },
            { "op": "delete", "key": "a" },
            { "op": "exists", "key": "a" },
            { "op": "delete_many", "keys": ["b", "c", "never"] },
            { "op": "keys" },
        ]),
    )
    .await;
    let expected = json!([
        { "ok": null },
        { "ok": null },
        { "ok": "one" },
        { "ok": true },
        { "ok": null },
        { "ok": ["one", null, "three"] },
        { "ok": ["a", "b", "c"] },
        { "ok": 5 },
        { "ok": 7 },
        { "err": "increment: the value is not a decimal number" },
        { "ok": null },
        { "ok": false },
        { "ok": null },
        { "ok": ["n"] },
    ]);
    assert_eq!(Value::Array(out), expected);
    // What the guest wrote is in Redis under the bucket's keys, and its size is counted.
    let [values, index, size] = bucket_keys("app", "cache");
    let mut conn = redis.connection().await;
    let n: Option<String> = redis::cmd("HGET")
        .arg(&values)
        .arg("n")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n.as_deref(), Some("7"));
    let members: u64 = redis::cmd("ZCARD")
        .arg(&index)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(members, 1);
    let bytes: String = redis::cmd("GET")
        .arg(&size)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(bytes, "2", "key `n` and value `7`");

    // Listing pages through a bucket larger than one page.
    let pairs: Vec<Value> = (0..250).map(|i| json!([format!("k{i:03}"), "v"])).collect();
    let out = results(
        &h,
        "cache",
        json!([{ "op": "set_many", "pairs": pairs }, { "op": "keys" }]),
    )
    .await;
    assert_eq!(out[1]["ok"].as_array().unwrap().len(), 251);
}

#[tokio::test]
async fn buckets_are_granted_per_handler_and_kept_apart() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let a = granted(&client, "handler-a", &["cache"]);
    let b = granted(&client, "handler-b", &["cache"]);
    let none = granted(&client, "handler-c", &[]);

    results(
        &a,
        "cache",
        json!([{ "op": "set", "key": "k", "value": "from-a" }]),
    )
    .await;
    let out = results(
        &b,
        "cache",
        json!([{ "op": "get", "key": "k" }, { "op": "keys" }]),
    )
    .await;
    assert_eq!(Value::Array(out), json!([{ "ok": null }, { "ok": [] }]));

    // Not granted: the bucket does not open, for a handler with no buckets and for a name
    // the handler was not given.
    for (h, bucket) in [(&none, "cache"), (&a, "other")] {
        let outcome = run(h, bucket, json!([])).await;
        assert!(
            matches!(&outcome, Outcome::Fail(m) if m == "open: key-value bucket not granted"),
            "{outcome:?}"
        );
    }
    let out = results(&a, "cache", json!([{ "op": "get", "key": "k" }])).await;
    assert_eq!(out[0]["ok"], "from-a");
}

#[tokio::test]
async fn quotas_refuse_the_write_and_write_nothing_of_it() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let h = granted(
        &client,
        "quota",
        &["small:max_keys=3:max_bytes=30B:max_value=10B"],
    );
    let out = results(
        &h,
        "small",
        json!([
            { "op": "set", "key": "a", "value": "1" },
            { "op": "set", "key": "b", "value": "2" },
            { "op": "set_bytes", "key": "big", "len": 11 },
            // Three more keys at once: over max_keys, so none of them is written.
            { "op": "set_many", "pairs": [["c", "3"], ["d", "4"]] },
            { "op": "keys" },
            // Overwriting a key adds none.
            { "op": "set", "key": "a", "value": "one" },
            { "op": "set", "key": "c", "value": "3" },
            // Bytes of keys and values: 15, then 13, then 25; replacing b's 1-byte value by
            // 10 bytes would make 34, over 30.
            { "op": "set_bytes", "key": "a", "len": 10 },
            { "op": "delete", "key": "c" },
            { "op": "set_bytes", "key": "dd", "len": 10 },
            { "op": "set_bytes", "key": "b", "len": 10 },
            { "op": "keys" },
        ]),
    )
    .await;
    let err = |i: usize| out[i]["err"].as_str().unwrap_or_default().to_string();
    assert!(err(2).contains("at most 10 bytes"), "{out:?}");
    assert!(err(3).contains("at most 3 keys"), "{out:?}");
    assert_eq!(out[4]["ok"], json!(["a", "b"]));
    assert_eq!(out[5], json!({ "ok": null }));
    assert_eq!(out[6], json!({ "ok": null }));
    assert_eq!(out[7], json!({ "ok": null }));
    assert_eq!(out[9], json!({ "ok": null }));
    assert!(err(10).contains("at most 30 bytes"), "{out:?}");
    assert_eq!(out[11]["ok"], json!(["a", "b", "dd"]));
}

#[tokio::test]
async fn entries_of_a_bucket_with_a_ttl_expire_and_so_do_its_keys() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let h = granted(&client, "ttl", &["marks:ttl=1s"]);
    let out = results(
        &h,
        "marks",
        json!([
            { "op": "set", "key": "job-1", "value": "done" },
            { "op": "incr", "key": "count", "delta": 1 },
            { "op": "get", "key": "job-1" },
        ]),
    )
    .await;
    assert_eq!(out[2]["ok"], "done");
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let out = results(
        &h,
        "marks",
        json!([{ "op": "get", "key": "job-1" }, { "op": "keys" }]),
    )
    .await;
    assert_eq!(Value::Array(out), json!([{ "ok": null }, { "ok": [] }]));
    // The bucket's Redis keys expire with its last entry: nothing is left behind.
    let mut conn = redis.connection().await;
    for key in bucket_keys("ttl", "marks") {
        let exists: u64 = eventually("the bucket's keys expired", Duration::from_secs(5), || {
            let mut conn = conn.clone();
            let key = key.clone();
            async move {
                let n: u64 = redis::cmd("EXISTS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                (n == 0).then_some(n)
            }
        })
        .await;
        assert_eq!(exists, 0);
    }
    let _ = &mut conn;
}

#[tokio::test]
async fn a_bucket_key_of_the_wrong_type_is_a_clear_error_and_nothing_is_written() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let h = granted(&client, "typed", &["cache"]);
    let [values, index, _] = bucket_keys("typed", "cache");
    let mut conn = redis.connection().await;
    let _: () = redis::cmd("SET")
        .arg(&values)
        .arg("by hand")
        .query_async(&mut conn)
        .await
        .unwrap();
    let out = results(
        &h,
        "cache",
        json!([{ "op": "set", "key": "a", "value": "1" }, { "op": "get", "key": "a" }]),
    )
    .await;
    for r in &out {
        let err = r["err"].as_str().unwrap_or_default();
        assert!(err.contains("holds a string, not a hash"), "{out:?}");
    }
    let exists: u64 = redis::cmd("EXISTS")
        .arg(&index)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "nothing written");
}

/// Eight hosts run 80 jobs at once, each incrementing one counter 125 times: the counter ends
/// at exactly 10,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increment_loses_no_update_under_eight_concurrent_hosts() {
    const Q: &str = "kv-count";
    let redis = RedisServer::start();
    let client = redis.client().await;
    keep_everything(&client, Q).await;
    let toml = format!(
        "[handlers.counter]\npath = {:?}\nkv = [\"counts\"]\n",
        guests::rust("kv-ops").display().to_string()
    );
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap().to_string();
    let hosts: Vec<HostProcess> = (0..8)
        .map(|_| {
            HostProcess::builder(&redis.url())
                .config(&toml)
                .args([
                    "--queues",
                    Q,
                    "--concurrency",
                    "4",
                    "--cache-dir",
                    &cache_dir,
                ])
                .start()
        })
        .collect();
    let ops: Vec<Value> = (0..125)
        .map(|_| json!({ "op": "incr", "key": "total", "delta": 1 }))
        .collect();
    let payload = serde_json::to_vec(&json!({ "bucket": "counts", "ops": ops })).unwrap();
    let mut ids = Vec::new();
    for _ in 0..80 {
        let job = NewJob::new("counter", payload.clone())
            .with_max_attempts(1)
            .with_backoff(Backoff::fixed(Duration::from_millis(50)));
        ids.push(client.enqueue(Q, &job).await.unwrap().id);
    }
    for id in &ids {
        let job = eventually("the job ended", Duration::from_secs(120), || async {
            let job = client.get(Q, id).await.ok()??;
            matches!(job.state, JobState::Completed | JobState::Dead).then_some(job)
        })
        .await;
        assert_eq!(job.state, JobState::Completed, "{:?}", job.last_error);
        let results: Vec<Value> = serde_json::from_slice(&job.result.unwrap()).unwrap();
        assert!(results.iter().all(|r| r["ok"].is_u64()), "{results:?}");
    }
    let total = client
        .kv_get("counter", "counts", &["total".to_string()])
        .await
        .unwrap();
    assert_eq!(total, vec![Some(b"10000".to_vec())]);
    // Every host ran some of them: the increments really raced.
    let busy = hosts
        .iter()
        .filter(|h| h.log_text().contains("handler loaded"))
        .count();
    assert_eq!(busy, 8);
}

#[tokio::test]
async fn the_kv_commands_list_read_and_delete_and_deploy_stores_the_grant() {
    let redis = RedisServer::start();
    let client = redis.client().await;
    let h = granted(&client, "mailer", &["marks"]);
    results(
        &h,
        "marks",
        json!([
            { "op": "set", "key": "welcome-1", "value": "sent" },
            { "op": "set", "key": "welcome-2", "value": "sent" },
        ]),
    )
    .await;
    let listed = ok(&wasmq(&redis, &["kv", "list", "mailer", "marks"]));
    assert_eq!(listed, "welcome-1\nwelcome-2\n");
    let got = ok(&wasmq(
        &redis,
        &["kv", "get", "mailer", "marks", "welcome-2"],
    ));
    assert_eq!(got, "sent");
    ok(&wasmq(
        &redis,
        &["kv", "delete", "mailer", "marks", "welcome-2"],
    ));
    let missing = wasmq(&redis, &["kv", "get", "mailer", "marks", "welcome-2"]);
    assert_eq!(missing.status.code(), Some(1));
    let listed = ok(&wasmq(&redis, &["kv", "list", "mailer", "marks", "--json"]));
    assert_eq!(
        serde_json::from_str::<Value>(&listed).unwrap(),
        json!(["welcome-1"])
    );
    let bad = wasmq(&redis, &["kv", "list", "mailer", "no/such"]);
    assert!(!bad.status.success());

    // Deploy: the grant is validated (a bad one writes nothing) and stored with the version.
    let component = guests::rust("kv-ops");
    let path = component.to_str().unwrap();
    let refused = wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "mailer",
            path,
            "--kv",
            "marks:ttl=never",
        ],
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("ttl"),
        "{refused:?}"
    );
    ok(&wasmq(
        &redis,
        &[
            "handler",
            "deploy",
            "mailer",
            path,
            "--kv",
            "marks:ttl=7d",
            "--kv",
            "cache",
        ],
    ));
    let versions = ok(&wasmq(&redis, &["handler", "versions", "mailer", "--json"]));
    let versions: Value = serde_json::from_str(&versions).unwrap();
    assert_eq!(
        versions[0]["kv"],
        json!(["marks:ttl=7d", "cache"]),
        "{versions}"
    );
    assert_eq!(
        versions.as_array().unwrap().len(),
        1,
        "the refused deploy wrote nothing"
    );
}
