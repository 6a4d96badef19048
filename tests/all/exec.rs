//! `wasmq exec` as a user runs it: a real process, real components, exit codes per outcome.

use std::process::{Command, Output};

use crate::support::guests;

fn wasmq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmq"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run wasmq")
}

fn exec(guest: &str, extra: &[&str]) -> Output {
    let path = guests::rust(guest);
    let mut args = vec!["exec", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    wasmq(&args)
}

#[test]
fn exec_prints_the_result_and_exits_zero() {
    let out = exec("echo", &["--payload", "hello there"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"hello there");
}

#[test]
fn exec_reads_the_payload_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, b"from a file").unwrap();
    let out = exec("echo", &["--payload-file", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"from a file");
}

#[test]
fn exec_json_reports_outcome_duration_and_logs() {
    let out = exec("echo", &["--payload", "abc", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "ok");
    assert_eq!(report["result"], "abc");
    assert!(report["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(report["logs"][0]["source"], "info");
    assert_eq!(report["logs"][0]["message"], "echo 3 bytes");

    let out = exec("fail", &["--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "fail");
    assert_eq!(report["error"], "permanent failure");
}

#[test]
fn exec_exit_code_names_the_outcome_class() {
    let cases: &[(&str, &[&str], i32)] = &[
        ("retry", &[], 10),
        ("fail", &[], 11),
        ("infinite-loop", &["--timeout", "200ms"], 12),
        ("infinite-loop", &["--fuel", "1000000"], 13),
        ("memory-bomb", &["--memory", "16MiB"], 14),
        ("deep-recursion", &[], 15),
        ("panic", &[], 16),
        // One byte over what a host takes from a handler (64 MiB).
        (
            "hostile",
            &[
                "--payload",
                "huge-result:67108865",
                "--memory",
                "96MiB",
                "--timeout",
                "60s",
            ],
            18,
        ),
    ];
    for &(guest, extra, code) in cases {
        let out = exec(guest, extra);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{guest} {extra:?}: stderr {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn exec_refuses_a_core_module_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("core.wasm");
    std::fs::write(&file, wat::parse_str("(module)").unwrap()).unwrap();
    let out = wasmq(&["exec", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a component"), "{stderr}");
}

/// A JavaScript handler the project did not special-case: an `async` `handle` that awaits
/// `fetch()` (componentize-js with fetch left on), run by `wasmq exec` with a grant, a config
/// value and a secret from the environment, against a loopback server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_an_async_javascript_fetch_handler_with_a_grant_and_a_secret() {
    let server = crate::support::http_server::TestServer::start().await;
    let path = guests::javascript("notify");
    let url = server.url("/ok");
    let origin = server.origin();
    let run = |grant: bool| {
        let (path, url, origin) = (path.clone(), url.clone(), origin.clone());
        tokio::task::spawn_blocking(move || {
            let config = format!("url={url}");
            let mut args = vec![
                "exec",
                path.to_str().unwrap(),
                "--payload",
                r#"{"user":7}"#,
                "--config",
                &config,
                "--secret",
                "NOTIFY_TOKEN",
                "--timeout",
                "60s",
                "--memory",
                "256MiB",
            ];
            if grant {
                args.extend(["--allow-outbound", &origin]);
            }
            Command::new(env!("CARGO_BIN_EXE_wasmq"))
                .args(&args)
                .env_remove("RUST_LOG")
                .env_remove("WASMQ_SECRETS_DIR")
                .env("WASMQ_SECRET_NOTIFY_TOKEN", "tok-exec-31c4")
                .output()
                .expect("run wasmq")
        })
    };

    let out = run(true).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello");
    let seen = server.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].headers["authorization"], "Bearer tok-exec-31c4");
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["payload"], serde_json::json!({ "user": 7 }));
    assert!(body["job"].is_string(), "{body}");

    // Without the grant: denied, logged by the host, and nothing reached the server. fetch()
    // gives the guest no error code, so notify.js retries (exit code 10) on any network error.
    let out = run(false).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "stderr {stderr}");
    assert!(stderr.contains("outbound request denied"), "{stderr}");
    assert!(!stderr.contains("tok-exec-31c4"), "{stderr}");
    assert_eq!(server.seen().len(), 1);
}

/// `wasmq exec --kv`: the run's buckets live in memory, with the grant's quotas; a bucket not
/// granted does not open.
#[test]
fn exec_grants_key_value_buckets_in_memory() {
    let payload = r#"{"bucket":"cache","ops":[
        {"op":"set","key":"a","value":"one"},{"op":"incr","key":"n","delta":3},
        {"op":"get","key":"a"},{"op":"set","key":"b","value":"two"}]}"#;
    let out = exec(
        "kv-ops",
        &["--kv", "cache:max_keys=2", "--payload", payload],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results[1]["ok"], 3);
    assert_eq!(results[2]["ok"], "one");
    assert!(
        results[3]["err"]
            .as_str()
            .is_some_and(|e| e.contains("at most 2 keys")),
        "{results}"
    );
    let denied = exec("kv-ops", &["--payload", payload]);
    assert_ne!(denied.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("key-value bucket not granted")
            || String::from_utf8_lossy(&denied.stdout).contains("key-value bucket not granted"),
        "{denied:?}"
    );
    let bad = exec("kv-ops", &["--kv", "cache:ttl=soon", "--payload", payload]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("ttl"),
        "{bad:?}"
    );
}
