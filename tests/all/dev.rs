//! `wasmq dev`, the one-command first look: a real process, its own redis-server, the example
//! components, sample jobs through the real host.

use std::process::Command;

use crate::support::guests;

fn examples_dir() -> std::path::PathBuf {
    guests::rust("echo")
        .parent()
        .expect("guest dir")
        .to_path_buf()
}

#[test]
fn dev_runs_sample_jobs_to_completion_or_the_dead_letter_queue() {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmq"))
        .args(["dev", "--jobs", "200", "--examples"])
        .arg(examples_dir())
        .output()
        .expect("run wasmq dev");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "<completed> completed, <dead> dead-lettered in ..."
    let line = stdout
        .lines()
        .find(|l| l.contains(" completed, "))
        .expect("summary line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(numbers[0] + numbers[1], 200, "{line}");
    // 200 samples hold 140 echo and 30 sleep jobs, which all complete.
    assert!(numbers[0] >= 170, "{line}");
    // The hostile samples were stopped by the sandbox and classified.
    assert!(stdout.contains("infinite-loop (timeout)"), "{stdout}");
    assert!(stdout.contains("memory-bomb (memory_limit)"), "{stdout}");
}

#[test]
fn dev_without_redis_server_says_how_to_install_it() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wasmq"))
        .args(["dev", "--jobs", "1", "--examples"])
        .arg(examples_dir())
        .env("PATH", empty.path())
        .output()
        .expect("run wasmq dev");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("apt-get install -y redis-server"),
        "{stderr}"
    );
}
