//! `wasmq exec`: runs one job locally, without Redis, and prints what happened.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use serde::Serialize;

use crate::capability::{Capabilities, HostResources, KvStore, MemoryKv, SecretSource};
use crate::{
    Handler, JobInput, JobLimits, LogLine, Outcome, OutcomeClass, RunReport, Runtime, RuntimeConfig,
};

const EXIT_CODES: &str = "\
Exit codes:
  0   ok: the handler returned a result (printed to stdout)
  1   error: the handler could not be loaded, or a file could not be read
  2   usage: bad command-line arguments
  10  retry: the handler asked to be retried
  11  fail: the handler failed permanently
  12  timeout: the deadline passed and the job was stopped
  13  out_of_fuel: the fuel budget ran out
  14  memory_limit: the instance hit its memory cap
  15  stack_overflow: the guest exhausted its wasm stack
  16  trap: any other trap (panic, abort, out-of-bounds access, ...)
  17  suspended: the handler reached a durable sleep (a worker would resume it later)
  18  result_too_large: the result or error message was over 64 MiB";

/// Run a handler component once, locally, without Redis.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct ExecArgs {
    /// The handler component (.wasm) to run.
    pub handler: PathBuf,
    /// The job payload, as a string.
    #[arg(long, conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// Read the job payload from a file ('-' for stdin).
    #[arg(long)]
    pub payload_file: Option<PathBuf>,
    /// Wall-clock deadline (e.g. 500ms, 5s, 1m).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Memory cap of the instance (e.g. 64MiB, 1GiB).
    #[arg(long, default_value = "64MiB")]
    pub memory: bytesize::ByteSize,
    /// CPU budget in fuel units (turns fuel metering on).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Print one JSON object: outcome, result or error, duration_ms, logs.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub grants: super::handler::GrantArgs,
    /// A directory of secret files, read after the WASMQ_SECRET_<NAME> variables.
    #[arg(long, env = "WASMQ_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
}

/// Exit code of an outcome class, as documented in `--help`.
pub fn exit_code(class: OutcomeClass) -> u8 {
    match class {
        OutcomeClass::Ok => 0,
        OutcomeClass::Retry => 10,
        OutcomeClass::Fail => 11,
        OutcomeClass::Timeout => 12,
        OutcomeClass::OutOfFuel => 13,
        OutcomeClass::MemoryLimit => 14,
        OutcomeClass::StackOverflow => 15,
        OutcomeClass::Trap => 16,
        OutcomeClass::Suspended => 17,
        OutcomeClass::ResultTooLarge => 18,
    }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    duration_ms: f64,
    progress: Option<u8>,
    peak_memory: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    fuel_consumed: Option<u64>,
    logs: &'a [LogLine],
    logs_dropped: u64,
}

pub async fn run(mut args: ExecArgs) -> anyhow::Result<u8> {
    let payload = read_payload(&args)?;
    let config = RuntimeConfig {
        fuel: args.fuel.is_some(),
        // One job: a small pool is enough and reserves less address space.
        max_instances: 4,
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(config)?;
    let grants = std::mem::take(&mut args.grants);
    let (name, handler) = load(&runtime, &args, grants)?;
    let job = JobInput {
        id: "exec-1".to_string(),
        queue: "exec".to_string(),
        handler: name,
        payload,
        attempt: 1,
        max_attempts: 1,
    };
    let limits = JobLimits {
        timeout: args.timeout,
        memory: args.memory.as_u64(),
        fuel: args.fuel,
    };
    let report = runtime.run(&handler, job, &limits).await;
    if args.json {
        print_json(&report)?;
    } else {
        print_plain(&report)?;
    }
    Ok(exit_code(report.outcome.class()))
}

/// `--payload`, `--payload-file` (`-` for stdin), or none.
fn read_payload(args: &ExecArgs) -> anyhow::Result<Vec<u8>> {
    Ok(match (&args.payload, &args.payload_file) {
        (Some(p), _) => p.clone().into_bytes(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .context("reading the payload from stdin")?;
            buf
        }
        (None, Some(path)) => std::fs::read(path)
            .with_context(|| format!("reading the payload from {}", path.display()))?,
        (None, None) => Vec::new(),
    })
}

/// Loads the handler file with the granted capabilities; its name is the file's stem.
fn load(
    runtime: &Runtime,
    args: &ExecArgs,
    grants: super::handler::GrantArgs,
) -> anyhow::Result<(String, Handler)> {
    let handler = runtime
        .load_file(&args.handler)
        .with_context(|| format!("loading {}", args.handler.display()))?;
    let name = args
        .handler
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // One attempt, no Redis: its buckets live in memory and are gone when it ends.
    let kv: std::sync::Arc<dyn KvStore> = std::sync::Arc::new(MemoryKv::default());
    let host = HostResources {
        secrets: SecretSource {
            dir: args.secrets_dir.clone(),
        },
        observer: None,
        kv: Some(kv),
        ..HostResources::default()
    };
    let grants = grants.into_grants().map_err(anyhow::Error::msg)?;
    let caps = Capabilities::resolve(&name, &grants, &host).map_err(anyhow::Error::msg)?;
    if let Some(why) = caps.missing_secrets_message("exec") {
        anyhow::bail!("{why}");
    }
    Ok((name, handler.with_capabilities(std::sync::Arc::new(caps))))
}

/// `--json`: one object on stdout.
fn print_json(report: &RunReport) -> anyhow::Result<()> {
    let (result, result_base64) = match &report.outcome {
        Outcome::Ok(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => (Some(text.to_string()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ),
        },
        _ => (None, None),
    };
    let json = JsonReport {
        outcome: report.outcome.class().as_str(),
        result,
        result_base64,
        error: report.outcome.error_message(),
        duration_ms: report.duration.as_secs_f64() * 1000.0,
        progress: report.progress,
        peak_memory: report.peak_memory,
        fuel_consumed: report.fuel_consumed,
        logs: &report.logs,
        logs_dropped: report.logs_dropped,
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &json)?;
    writeln!(stdout)?;
    stdout.flush()?;
    Ok(())
}

/// The result on stdout; log lines, and the failure if any, on stderr.
fn print_plain(report: &RunReport) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    for line in &report.logs {
        writeln!(stderr, "[{:?}] {}", line.source, line.message)?;
    }
    match &report.outcome {
        Outcome::Ok(bytes) => stdout.write_all(bytes)?,
        other => writeln!(
            stderr,
            "{}: {} ({:.1} ms)",
            other.class(),
            other.error_message().unwrap_or_default(),
            report.duration.as_secs_f64() * 1000.0
        )?,
    }
    stdout.flush()?;
    Ok(())
}
