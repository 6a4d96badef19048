//! Queue commands: enqueue, job, queue stats|pause|resume, dlq list|replay|purge.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum QueueCommand {}

pub async fn run(cmd: QueueCommand) -> anyhow::Result<u8> {
    match cmd {}
}
