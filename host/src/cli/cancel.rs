//! `wasmq cancel`: cancel jobs by id whatever their state, or every job of a handler or a group
//! that has not started, a page at a time.

use clap::Args;

use super::queue::RedisArgs;
use crate::queue::{CancelBy, CancelFilter, CancelOutcome, Client, MAX_CANCEL_PAGE};

/// Who a cancel from the command line is recorded as (`cancelled_by`).
pub const CLI_CANCEL_BY: &str = "cli";

#[derive(Debug, Args)]
pub struct CancelArgs {
    pub queue: String,
    /// Job ids: waiting, delayed (sleeping too), retrying or running jobs. Each is
    /// dead-lettered with outcome `cancelled` (its history kept, `wasmq dlq replay` runs it
    /// again); a running one is stopped on its host.
    #[arg(required_unless_present_any = ["handler", "group"], conflicts_with_all = ["handler", "group"])]
    pub ids: Vec<String>,
    /// Instead of ids: every waiting, delayed or retrying job of this handler (running ones
    /// are left alone).
    #[arg(long, conflicts_with = "group")]
    pub handler: Option<String>,
    /// Instead of ids: every waiting, delayed or retrying job of this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Why, kept on each cancelled job.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// With --handler or --group: job ids looked at per Redis call (each call is one page,
    /// 1..=10000); the command goes on page by page until every job was looked at.
    #[arg(long, default_value_t = 1000)]
    pub page: usize,
    /// With --handler or --group: start from this cursor (printed by an interrupted run).
    #[arg(long)]
    pub cursor: Option<String>,
    #[command(flatten)]
    pub redis: RedisArgs,
}

pub async fn run(args: CancelArgs) -> anyhow::Result<u8> {
    let who = CancelBy::new(CLI_CANCEL_BY, args.reason.clone());
    let filter = match (&args.handler, &args.group) {
        (Some(handler), _) => Some(CancelFilter::Handler(handler.clone())),
        (None, Some(group)) => Some(CancelFilter::Group(group.clone())),
        (None, None) => None,
    };
    if filter.is_some() && !(1..=MAX_CANCEL_PAGE).contains(&args.page) {
        anyhow::bail!("--page must be 1 to {MAX_CANCEL_PAGE}");
    }
    let client = args.redis.client().await?;
    match filter {
        Some(filter) => by_filter(&client, &args, &filter, &who).await,
        None => by_ids(&client, &args, &who).await,
    }
}

async fn by_ids(client: &Client, args: &CancelArgs, who: &CancelBy) -> anyhow::Result<u8> {
    let mut refused = 0;
    for (id, outcome) in client.cancel_by(&args.queue, &args.ids, who).await? {
        match outcome {
            CancelOutcome::Cancelled => say!("cancelled {id}"),
            CancelOutcome::NotFound => {
                refused += 1;
                eprintln!("not cancelled {id}: no such job in queue {}", args.queue);
            }
            CancelOutcome::NotCancellable(state) => {
                refused += 1;
                eprintln!("not cancelled {id}: it is {state}");
            }
        }
    }
    Ok(if refused == 0 { 0 } else { super::EXIT_ERROR })
}

async fn by_filter(
    client: &Client,
    args: &CancelArgs,
    filter: &CancelFilter,
    who: &CancelBy,
) -> anyhow::Result<u8> {
    let mut cursor = args.cursor.clone();
    let (mut cancelled, mut examined) = (0u64, 0u64);
    loop {
        let page = client
            .cancel_matching(&args.queue, filter, who, cursor.as_deref(), args.page)
            .await
            .map_err(|err| {
                let at = cursor.as_deref().unwrap_or("the start");
                anyhow::anyhow!("{err} (resume with --cursor {at})")
            })?;
        cancelled += page.cancelled.len() as u64;
        examined += page.examined;
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    say!(
        "cancelled {cancelled} job(s) in queue {} ({examined} looked at)",
        args.queue
    );
    Ok(0)
}
