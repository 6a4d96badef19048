//! The dead-letter queue: a page of it, replay (back to waiting, attempts reset, history
//! kept) and purge (deleted for good), by id or oldest first. Nothing leaves it otherwise.

use super::client::Client;
use super::error::Result;
use super::job::{Job, JobState};
use super::keys::QueueKeys;
use super::reply::Reply;
use super::scripts::{Call, SCRIPTS};

/// Outcome of replay, purge: the jobs acted on, and the others with the state they are in
/// (`not_found` when there is no such job).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DlqReport {
    pub done: Vec<String>,
    pub skipped: Vec<(String, String)>,
}

impl Client {
    /// One page of the dead-letter queue, oldest first.
    pub async fn dead_letters(&self, queue: &str, offset: u64, limit: u64) -> Result<Vec<Job>> {
        self.list(queue, JobState::Dead, offset, limit).await
    }

    /// Moves the given dead jobs back to waiting, attempts reset to 0, history kept.
    pub async fn replay(&self, queue: &str, ids: &[String]) -> Result<DlqReport> {
        self.dlq_call(queue, "replay", ids, 0).await
    }

    /// Replays the `limit` oldest dead jobs.
    pub async fn replay_oldest(&self, queue: &str, limit: u64) -> Result<DlqReport> {
        self.dlq_call(queue, "replay", &[], limit).await
    }

    /// Deletes the given dead jobs for good.
    pub async fn purge(&self, queue: &str, ids: &[String]) -> Result<DlqReport> {
        self.dlq_call(queue, "purge", ids, 0).await
    }

    /// Deletes the `limit` oldest dead jobs for good.
    pub async fn purge_oldest(&self, queue: &str, limit: u64) -> Result<DlqReport> {
        self.dlq_call(queue, "purge", &[], limit).await
    }

    async fn dlq_call(
        &self,
        queue: &str,
        which: &'static str,
        ids: &[String],
        limit: u64,
    ) -> Result<DlqReport> {
        let keys = QueueKeys::new(queue)?;
        let mut invocation = if which == "replay" {
            Call::on(&SCRIPTS.replay, &keys)
        } else {
            Call::on(&SCRIPTS.purge, &keys)
        };
        invocation.arg(limit);
        for id in ids {
            invocation.arg(id);
        }
        let reply = Reply::of(which);
        let [done, skipped] = reply.tuple(self.invoke(&invocation).await?)?;
        Ok(DlqReport {
            done: reply.strings(done)?,
            skipped: reply.pairs(skipped)?,
        })
    }
}
