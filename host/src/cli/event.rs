//! `wasmq event send`: start every handler subscribed to an event (docs/events.md).

use anyhow::Context;
use clap::Subcommand;

use super::queue::RedisArgs;
use crate::events;
use crate::registry::Registry;

#[derive(Debug, Subcommand)]
pub enum EventAction {
    /// Send an event: one job for each handler subscribed to its name (`handler deploy
    /// --on NAME`), on that handler's event queue. Sending the same --id again enqueues
    /// nothing new.
    Send {
        /// The event's name, like order/created.
        name: String,
        /// The event's data, JSON [default: null].
        data: Option<String>,
        /// The event's id, for idempotent sends [default: a fresh ULID].
        #[arg(long)]
        id: Option<String>,
        /// Print what was enqueued as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        redis: RedisArgs,
    },
}

pub async fn run(action: EventAction) -> anyhow::Result<u8> {
    match action {
        EventAction::Send {
            name,
            data,
            id,
            json,
            redis,
        } => {
            let data: serde_json::Value = match data {
                Some(text) => serde_json::from_str(&text)
                    .with_context(|| format!("the event data is not JSON: {text:?}"))?,
                None => serde_json::Value::Null,
            };
            let registry = Registry::connect(&redis.url)
                .await
                .with_context(|| redis.cannot_connect())?;
            let client = redis.client().await?;
            let sent = events::send(&registry, &client, &name, data, id).await?;
            if json {
                say!("{}", serde_json::to_string_pretty(&sent)?);
            } else if sent.jobs.is_empty() {
                say!("event {} ({name}): no handler is subscribed", sent.id);
            } else {
                for job in &sent.jobs {
                    say!(
                        "{} -> {} on {}: job {} ({})",
                        name,
                        job.handler,
                        job.queue,
                        job.job_id,
                        if job.created {
                            job.state.as_str()
                        } else {
                            "already sent"
                        }
                    );
                }
                say!("event {}: {} jobs", sent.id, sent.jobs.len());
            }
            Ok(0)
        }
    }
}
