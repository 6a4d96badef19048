//! Schedule commands: `schedule add|list|pause|resume|remove`. Each is a thin call into
//! [`crate::schedule::Schedules`]; the output is for people, `--json` for scripts.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use chrono::Utc;
use clap::{Args, Subcommand};
use serde_json::json;

use super::queue::RedisArgs;
use crate::schedule::{Schedule, ScheduleSpec, Schedules};

/// Next run times shown per schedule.
const NEXT_RUNS: usize = 3;

#[derive(Debug, Subcommand)]
pub enum ScheduleAction {
    /// Create a schedule, or replace the one with this name.
    Add(AddArgs),
    /// Every schedule, with its next run times in its zone and in UTC.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Stop a schedule from enqueueing jobs.
    Pause {
        name: String,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Let a paused schedule enqueue again (ticks missed while paused follow --catch-up).
    Resume {
        name: String,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Forget a schedule (jobs it enqueued stay).
    Remove {
        name: String,
        #[command(flatten)]
        redis: RedisArgs,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Schedule name: ASCII letters, digits, '-', '_', '.'.
    pub name: String,
    /// Cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6-7 with
    /// seconds first (and a year last), or @hourly/@daily/@weekly/@monthly/@yearly.
    #[arg(long)]
    pub cron: String,
    /// IANA time zone the expression is read in.
    #[arg(long, default_value = "UTC")]
    pub tz: String,
    /// Queue the jobs go to.
    #[arg(long)]
    pub queue: String,
    /// Handler name of the jobs.
    #[arg(long)]
    pub handler: String,
    /// Payload of every job, as text.
    #[arg(long, conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// Payload read from a file (`-` reads standard input).
    #[arg(long)]
    pub payload_file: Option<PathBuf>,
    /// Ticks missed while no host ran (or while paused) to enqueue when hosts are back: the
    /// N most recent ones [default: 0, skip them].
    #[arg(long, default_value_t = 0)]
    pub catch_up: u32,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub redis: RedisArgs,
}

async fn connect(redis: &RedisArgs) -> anyhow::Result<Schedules> {
    Schedules::connect(&redis.url)
        .await
        .with_context(|| redis.cannot_connect())
}

fn read_payload(args: &AddArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(text) = &args.payload {
        return Ok(text.clone().into_bytes());
    }
    match &args.payload_file {
        None => Ok(Vec::new()),
        Some(path) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read the payload from standard input")?;
            Ok(bytes)
        }
        Some(path) => std::fs::read(path)
            .with_context(|| format!("cannot read the payload file {}", path.display())),
    }
}

/// A schedule as `--json` prints it (and the HTTP API returns it).
pub fn schedule_json(s: &Schedule, now_ms: u64) -> serde_json::Value {
    let next: Vec<serde_json::Value> = s
        .next_runs(now_ms, NEXT_RUNS)
        .iter()
        .map(|t| {
            json!({
                "local": t.to_rfc3339(),
                "utc": t.with_timezone(&Utc).to_rfc3339(),
            })
        })
        .collect();
    json!({
        "name": s.spec.name,
        "cron": s.spec.cron,
        "tz": s.spec.tz,
        "queue": s.spec.queue,
        "handler": s.spec.handler,
        "payload": String::from_utf8_lossy(&s.spec.payload),
        "catch_up": s.spec.catch_up,
        "paused": s.paused,
        "created_at_ms": s.created_at_ms,
        "last_tick_ms": s.last_tick_ms,
        "next_runs": next,
    })
}

fn describe(s: &Schedule, now_ms: u64) -> String {
    let state = if s.paused { "paused" } else { "running" };
    let mut out = format!(
        "{}  {:?} {}  -> queue {} handler {}  catch-up {}  {state}",
        s.spec.name, s.spec.cron, s.spec.tz, s.spec.queue, s.spec.handler, s.spec.catch_up
    );
    for t in s.next_runs(now_ms, NEXT_RUNS) {
        out.push_str(&format!(
            "\n    next {}  ({})",
            t.format("%Y-%m-%d %H:%M:%S %Z"),
            t.with_timezone(&Utc).format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    out
}

pub async fn run(action: ScheduleAction) -> anyhow::Result<u8> {
    match action {
        ScheduleAction::Add(args) => {
            let spec = ScheduleSpec {
                name: args.name.clone(),
                cron: args.cron.clone(),
                tz: args.tz.clone(),
                queue: args.queue.clone(),
                handler: args.handler.clone(),
                payload: read_payload(&args)?,
                catch_up: args.catch_up,
            };
            // Refused before connecting: a bad schedule needs no Redis to say so.
            if let Err(reason) = spec.validate() {
                anyhow::bail!("invalid schedule: {reason}");
            }
            let store = connect(&args.redis).await?;
            let (created, stored) = store.add(&spec).await?;
            let now = store.now_ms().await?;
            if args.json {
                let mut value = schedule_json(&stored, now);
                value["created"] = json!(created);
                say!("{value}");
            } else {
                let verb = if created { "added" } else { "replaced" };
                say!("{verb} {}", describe(&stored, now));
            }
        }
        ScheduleAction::List { json, redis } => {
            let store = connect(&redis).await?;
            let now = store.now_ms().await?;
            let all = store.list().await?;
            if json {
                let list: Vec<_> = all.iter().map(|s| schedule_json(s, now)).collect();
                say!("{}", json!({ "schedules": list }));
            } else if all.is_empty() {
                say!("no schedules");
            } else {
                for s in &all {
                    say!("{}", describe(s, now));
                }
            }
        }
        ScheduleAction::Pause { name, redis } => {
            let changed = connect(&redis).await?.pause(&name).await?;
            say!(
                "{name}: {}",
                if changed { "paused" } else { "already paused" }
            );
        }
        ScheduleAction::Resume { name, redis } => {
            let changed = connect(&redis).await?.resume(&name).await?;
            say!("{name}: {}", if changed { "resumed" } else { "not paused" });
        }
        ScheduleAction::Remove { name, redis } => {
            if !connect(&redis).await?.remove(&name).await? {
                anyhow::bail!("no schedule named {name:?}");
            }
            say!("{name}: removed");
        }
    }
    Ok(0)
}
