//! `wasmq jobs`: find a queue's jobs by state, handler, group, id prefix, payload text and
//! time, a page at a time (`queue::Client::search`).

use anyhow::Context as _;
use clap::Args;

use super::queue::{RedisArgs, format_ms, preview, shown};
use crate::queue::{
    JobSearch, JobState, SEARCH_LIMIT_DEFAULT, SEARCH_LIMIT_MAX, SEARCH_SCAN_DEFAULT,
    SEARCH_SCAN_MAX, TimeField, TimePoint,
};

/// Find jobs: every filter given must match. Prints one page (at most --limit jobs, after
/// examining at most --scan of the queue's entries) and, when the search is not over, the
/// --cursor of the next page on standard error.
#[derive(Debug, Args)]
pub struct JobsArgs {
    pub queue: String,
    /// Only jobs in this state: waiting, delayed, active, retry, completed or dead.
    #[arg(long)]
    pub state: Option<JobState>,
    /// Only jobs of this handler.
    #[arg(long)]
    pub handler: Option<String>,
    /// Only jobs of this group.
    #[arg(long)]
    pub group: Option<String>,
    /// Only jobs whose payload contains this text (plain, case-sensitive).
    #[arg(long)]
    pub search: Option<String>,
    /// Only jobs whose id starts with this.
    #[arg(long)]
    pub id_prefix: Option<String>,
    /// Enqueued (or, with --time finished, finished) at or after: ms since the epoch, an RFC
    /// 3339 time, or a span before now (e.g. 2h).
    #[arg(long)]
    pub since: Option<TimePoint>,
    /// Enqueued (or finished) at or before, as --since.
    #[arg(long)]
    pub until: Option<TimePoint>,
    /// The time --since and --until apply to: enqueued or finished.
    #[arg(long, default_value = "enqueued")]
    pub time: TimeField,
    /// Where the previous page ended (the cursor it printed); use the same filters.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Jobs to print, at most.
    #[arg(long, default_value_t = SEARCH_LIMIT_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(SEARCH_LIMIT_MAX)))]
    pub limit: u32,
    /// Queue entries to examine, at most: the bound on the page's Redis work (about one
    /// command each).
    #[arg(long, default_value_t = SEARCH_SCAN_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(SEARCH_SCAN_MAX)))]
    pub scan: u32,
    /// Print the page as JSON (the shape of GET /api/queues/{queue}/search).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub redis: RedisArgs,
}

pub async fn run(args: JobsArgs) -> anyhow::Result<u8> {
    let client = args.redis.client().await?;
    let search = JobSearch {
        state: args.state,
        handler: args.handler,
        group: args.group,
        id_prefix: args.id_prefix,
        text: args.search,
        time: args.time,
        since: args.since,
        until: args.until,
        cursor: args.cursor,
        limit: args.limit,
        scan: args.scan,
    };
    let page = client
        .search(&args.queue, &search)
        .await
        .with_context(|| format!("cannot search queue {}", args.queue))?;
    if args.json {
        let body = crate::api::search_response(&page);
        say!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(0);
    }
    for job in &page.jobs {
        say!(
            "{}  {}  {}  {}  enqueued {}  {}",
            shown(&job.id),
            job.state,
            shown(&job.handler),
            shown(job.group.as_deref().unwrap_or("-")),
            format_ms(job.created_at_ms),
            preview(&job.payload)
        );
    }
    for bad in &page.malformed {
        say!("{}  malformed: {}", shown(&bad.id), shown(&bad.reason));
    }
    match &page.cursor {
        Some(cursor) => eprintln!(
            "{} found, {} examined; next page: --cursor {cursor}",
            page.jobs.len() + page.malformed.len(),
            page.examined
        ),
        None => eprintln!(
            "{} found, {} examined; the search is over",
            page.jobs.len() + page.malformed.len(),
            page.examined
        ),
    }
    Ok(0)
}
