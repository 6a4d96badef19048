//! Producers with a plain Redis client: enqueue.lua and counts.lua run by EVAL as the protocol
//! documents them, and the keys they refuse.

use std::time::Duration;

use redis::AsyncCommands;
use wasmq::queue::NewJob;

use super::{enqueue_keys, eval, fetch_one, start};

#[tokio::test]
async fn a_producer_with_a_plain_redis_client_can_enqueue_by_the_documented_protocol() {
    // The protocol page quotes enqueue.lua verbatim, so a producer can EVAL it from there.
    let doc_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    assert!(
        doc.contains(wasmq::queue::ENQUEUE_LUA.trim_end()),
        "docs/protocol.md must quote scripts/enqueue.lua verbatim"
    );

    let (server, client) = start().await;
    let mut conn = server.connection().await;
    // What the Python/Node example does: EVAL with the keys and field/value pairs.
    let reply: redis::Value = redis::cmd("EVAL")
        .arg(wasmq::queue::ENQUEUE_LUA)
        .arg(7)
        .arg(&[
            "wasmq:{emails}:job:",
            "wasmq:{emails}:config",
            "wasmq:{emails}:waiting",
            "wasmq:{emails}:delayed",
            "wasmq:{emails}:seq",
            "wasmq:{emails}:events",
            "wasmq:{emails}:wake",
        ])
        .arg(1)
        .arg("welcome-42")
        .arg(4)
        .arg(&[
            "handler",
            "send-email",
            "payload",
            "{\"to\":\"ada@example.com\"}",
            "priority",
            "5",
            "max_attempts",
            "5",
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    let expected = redis::Value::Array(vec![redis::Value::Array(vec![
        redis::Value::BulkString(b"welcome-42".to_vec()),
        redis::Value::BulkString(b"created".to_vec()),
        redis::Value::BulkString(b"waiting".to_vec()),
    ])]);
    assert_eq!(reply, expected);
    let leased = fetch_one(&client, "emails").await;
    assert_eq!(
        (leased.id.as_str(), leased.handler.as_str()),
        ("welcome-42", "send-email")
    );
    assert_eq!((leased.priority, leased.max_attempts), (5, 5));
    assert_eq!(leased.payload, b"{\"to\":\"ada@example.com\"}");
}

#[tokio::test]
async fn enqueue_refuses_keys_that_are_not_the_queues_own_in_order() {
    let (server, _client) = start().await;
    let good = enqueue_keys("q");
    let mut swapped = good.clone();
    swapped.swap(2, 3);
    let mut other_queue = good.clone();
    other_queue[4] = "wasmq:{other}:seq".into();
    let no_tag: Vec<String> = good.iter().map(|k| k.replace("{q}", "q")).collect();
    // (keys, what the script says, whether the keys span hash slots: a Redis Cluster refuses
    // those itself, CROSSSLOT, before the script runs, and so writes nothing either)
    let table: Vec<(Vec<String>, &str, bool)> = vec![
        (swapped, "KEYS[3] must be wasmq:{q}:waiting", false),
        (other_queue, "KEYS[5] must be wasmq:{q}:seq", true),
        (no_tag, "KEYS[1] must be wasmq:{<queue>}:job:", true),
        (good[..8].to_vec(), "give the 11 keys of the queue", false),
        (good[..1].to_vec(), "give the 11 keys of the queue", false),
        (
            [&good[..], &["wasmq:{q}:dedupe:".to_string()]].concat(),
            "give the 11 keys of the queue",
            false,
        ),
        (
            [
                &good[..],
                &[
                    "wasmq:{q}:debounce:".to_string(),
                    "wasmq:{q}:dedupe:".to_string(),
                ],
            ]
            .concat(),
            "KEYS[10] must be wasmq:{q}:dedupe:",
            false,
        ),
    ];
    let before = server.snapshot().await;
    for (keys, message, spans_slots) in table {
        let err = eval(
            &server,
            wasmq::queue::ENQUEUE_LUA,
            &keys,
            &["1", "j", "1", "handler", "h"],
        )
        .await
        .unwrap_err();
        if spans_slots && server.is_cluster() {
            assert_eq!(err.code(), Some("CROSSSLOT"), "{keys:?}: {err}");
            continue;
        }
        assert_eq!(err.code(), Some("WASMQ_INVALID"), "{keys:?}: {err}");
        assert!(
            err.to_string().contains(message),
            "{err} should say {message:?}"
        );
    }
    assert_eq!(
        server.snapshot().await,
        before,
        "refused keys must write nothing"
    );
    // The same call with the right keys enqueues.
    eval(
        &server,
        wasmq::queue::ENQUEUE_LUA,
        &good,
        &["1", "j", "1", "handler", "h"],
    )
    .await
    .unwrap();
}

// Redis keeps a script's writes when a later command fails: a key of the wrong type met
// half-way would have left the jobs already written in no set. enqueue.lua checks every key it
// writes before its first write and answers WASMQ_WRONGTYPE, so "nothing written" holds for
// every error it returns.
#[tokio::test]
async fn a_key_of_the_wrong_type_refuses_the_enqueue_before_anything_is_written() {
    let (server, _client) = start().await;
    let mut conn = server.connection().await;
    let table: [(&str, &str); 7] = [
        ("config", "string"),
        ("waiting", "string"),
        ("delayed", "list"),
        ("seq", "hash"),
        ("seq", "not a number"),
        ("groups", "string"),
        ("g:t1:waiting", "hash"),
    ];
    for (n, (key, kind)) in table.iter().enumerate() {
        let queue = format!("q{n}");
        let full = format!("wasmq:{{{queue}}}:{key}");
        let () = match *kind {
            "list" => conn.rpush(&full, "x").await.unwrap(),
            "hash" => conn.hset(&full, "x", "y").await.unwrap(),
            "not a number" => conn.set(&full, "abc").await.unwrap(),
            _ => conn.set(&full, "x").await.unwrap(),
        };
        let before = server.snapshot().await;
        // A plain job, a delayed one and a grouped one: every set enqueue writes.
        let args = [
            "3", "a", "1", "handler", "h", "b", "2", "handler", "h", "delay_ms", "60000", "c", "2",
            "handler", "h", "group", "t1",
        ];
        let err = eval(
            &server,
            wasmq::queue::ENQUEUE_LUA,
            &enqueue_keys(&queue),
            &args,
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Some("WASMQ_WRONGTYPE"), "{key} {kind}: {err}");
        assert!(err.to_string().contains(&full), "{err} should name {full}");
        assert_eq!(
            server.snapshot().await,
            before,
            "{key} {kind}: nothing written"
        );
    }
    // A job key of another type under an id being enqueued.
    let () = conn.set("wasmq:{qj}:job:b", "x").await.unwrap();
    let before = server.snapshot().await;
    let args = ["2", "a", "1", "handler", "h", "b", "1", "handler", "h"];
    let err = eval(
        &server,
        wasmq::queue::ENQUEUE_LUA,
        &enqueue_keys("qj"),
        &args,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Some("WASMQ_WRONGTYPE"), "{err}");
    assert!(err.to_string().contains("wasmq:{qj}:job:b string"), "{err}");
    assert_eq!(server.snapshot().await, before, "nothing written");
}

#[tokio::test]
async fn counts_lua_is_a_standalone_script_a_producer_can_eval() {
    let (server, client) = start().await;
    client
        .enqueue("q", &NewJob::new("h", vec![]))
        .await
        .unwrap();
    client
        .enqueue("q", &NewJob::new("h", vec![]).with_group("t1"))
        .await
        .unwrap();
    client
        .enqueue(
            "q",
            &NewJob::new("h", vec![]).with_delay(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    fetch_one(&client, "q").await;
    client.pause("q").await.unwrap();
    let keys: Vec<String> = [
        "config",
        "waiting",
        "delayed",
        "active",
        "retry",
        "completed",
        "dead",
        "g:",
        "groups",
    ]
    .iter()
    .map(|k| format!("wasmq:{{q}}:{k}"))
    .collect();
    let reply = eval(&server, wasmq::queue::COUNTS_LUA, &keys, &[])
        .await
        .unwrap();
    let redis::Value::Array(items) = reply else {
        panic!("counts replied {reply:?}")
    };
    let numbers: Vec<i64> = items
        .into_iter()
        .map(|v| redis::from_redis_value(v).unwrap())
        .collect();
    // waiting 1 (the grouped job; the plain one is active), delayed, active, retry,
    // completed, dead, paused, now.
    assert_eq!(numbers[..7], [1, 1, 1, 0, 0, 0, 1]);
    assert!(numbers[7] >= server.now_ms().await as i64 - 10_000);
    let counts = client.counts("q").await.unwrap();
    assert_eq!((counts.waiting, counts.delayed, counts.active), (1, 1, 1));
}
