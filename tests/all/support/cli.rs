//! Running the `wasmq` binary's commands against a test's Redis.

use std::process::{Command, Output};

use super::redis::RedisServer;

/// Runs `wasmq <args> --redis <the server's URL>`.
pub fn wasmq(redis: &RedisServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wasmq"))
        .args(args)
        .arg("--redis")
        .arg(redis.url())
        .output()
        .expect("run wasmq")
}

/// The command's stdout; fails the test, with both outputs, when it did not succeed.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "wasmq failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
