//! Reads behind the dashboard's run timeline and duration percentiles (docs/dashboard.md):
//! nothing here writes, and every read is bounded, so neither costs the job path anything.
//!
//! - [`Client::step_saves`] - a job's durable-step saves, from the `step` entries of its
//!   queue's events stream (whose ids are the Redis time of each save), at most a given
//!   number of entries read.
//! - [`Client::recent_attempts`] - the attempt histories of the jobs a queue finished
//!   (completed or dead) since a time, newest first, at most a given number of jobs.
//!
//! Both read what the scripts already record: no field, key or command was added to any
//! transition for them.

use std::collections::HashMap;

use redis::Value;

use super::client::Client;
use super::error::Result;
use super::job::Attempt;
use super::keys::QueueKeys;
use super::reply::Reply;

/// One durable step saved by a job (`step_save.lua`'s `step` event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedStep {
    /// The step hash's field: `run:<name>`.
    pub field: String,
    /// The attempt that saved it.
    pub attempt: u32,
    /// When it was saved (the stream entry's time, ms on the Redis clock).
    pub at_ms: u64,
}

/// What [`Client::step_saves`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepSaves {
    pub saves: Vec<SavedStep>,
    /// Stream entries read (of every job and kind).
    pub read: usize,
    /// The read stopped at its bound before the end of the range: later saves may be missing.
    pub truncated: bool,
    /// The time of the newest entry the stream deleted (trimmed), when that is within the
    /// range: saves up to it may be gone. `None` when the range is whole.
    pub trimmed_before_ms: Option<u64>,
}

/// What [`Client::recent_attempts`] found: per finished job, its handler and its history.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecentAttempts {
    /// `(handler, attempts)` of each job read.
    pub jobs: Vec<(String, Vec<Attempt>)>,
    /// More jobs finished in the window than were read: the oldest of it are left out.
    pub truncated: bool,
    /// Jobs whose hash was gone (deleted between the reads) or unreadable, skipped.
    pub skipped: usize,
    /// Jobs left out because their history is over [`MAX_HISTORY_BYTES`], or would take the
    /// read past [`MAX_HISTORIES_BYTES`].
    pub oversize: usize,
}

/// Longest history [`Client::recent_attempts`] reads (a job with many attempts and logs).
pub const MAX_HISTORY_BYTES: u64 = 256 * 1024;
/// Most history bytes one [`Client::recent_attempts`] reads in all.
pub const MAX_HISTORIES_BYTES: u64 = 32 * 1024 * 1024;

/// A job's `handler` and `history` fields, as `HMGET` answers them.
type HandlerAndHistory = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The time part of a stream id (`<ms>-<n>`).
fn stream_ms(id: &str) -> Option<u64> {
    id.split('-').next().and_then(|ms| ms.parse().ok())
}

/// Job `id`'s step save in one entry of the events stream, if it is one.
fn step_save_of(reply: &Reply, entry: Value, id: &str) -> Result<Option<SavedStep>> {
    let [stream_id, fields] = reply.tuple(entry)?;
    let stream_id = reply.string(stream_id)?;
    let mut fields_map = HashMap::new();
    let mut iter = reply.array(fields)?.into_iter();
    while let (Some(field), Some(value)) = (iter.next(), iter.next()) {
        fields_map.insert(reply.string(field)?, reply.bytes(value)?);
    }
    if fields_map.get("event").map(Vec::as_slice) != Some(b"step".as_slice()) {
        return Ok(None);
    }
    // An entry written by hand that does not parse is not this job's save.
    let attempt = fields_map
        .get("jobs")
        .and_then(|j| serde_json::from_slice::<Vec<(String, u32)>>(j).ok())
        .and_then(|jobs| jobs.into_iter().find(|(job, _)| job == id))
        .map(|(_, attempt)| attempt);
    let field = fields_map
        .get("field")
        .map(|f| String::from_utf8_lossy(f).into_owned());
    Ok(match (attempt, field, stream_ms(&stream_id)) {
        (Some(attempt), Some(field), Some(at_ms)) => Some(SavedStep {
            field,
            attempt,
            at_ms,
        }),
        _ => None,
    })
}

/// The time of the largest id the stream ever deleted (trimming, `XDEL`; Redis 7.0+), from
/// `XINFO STREAM`'s answer; 0 when none.
fn max_deleted_ms(info: &HashMap<String, Value>) -> u64 {
    info.get("max-deleted-entry-id")
        .cloned()
        .and_then(|id| redis::from_redis_value::<String>(id).ok())
        .and_then(|id| stream_ms(&id))
        .unwrap_or(0)
}

impl Client {
    /// The `step` entries of job `id` on its queue's events stream from `from_ms` to `to_ms`
    /// (`None`: to the end), reading at most `limit` entries of the stream (one `XRANGE`,
    /// and `XINFO STREAM` to tell whether entries from `from_ms` on were trimmed).
    pub async fn step_saves(
        &self,
        queue: &str,
        id: &str,
        from_ms: u64,
        to_ms: Option<u64>,
        limit: usize,
    ) -> Result<StepSaves> {
        let keys = QueueKeys::new(queue)?;
        let mut conn = self.conn.clone();
        let end = to_ms.map_or_else(|| "+".to_string(), |ms| ms.to_string());
        // XINFO answers an error for a stream that does not exist (no event yet, or events
        // off): that answer alone, not the whole pipeline's.
        let (entries, info): (
            redis::RedisResult<Value>,
            redis::RedisResult<HashMap<String, Value>>,
        ) = redis::pipe()
            .ignore_errors()
            .cmd("XRANGE")
            .arg(keys.events())
            .arg(from_ms)
            .arg(&end)
            .arg("COUNT")
            .arg(limit)
            .cmd("XINFO")
            .arg("STREAM")
            .arg(keys.events())
            .query_async(&mut conn)
            .await?;
        let mut found = StepSaves::default();
        // The stream is a record, not state: one of another type (`queue check` reports
        // it) has no saves to give, and the answer says they may be missing.
        let Ok(entries) = entries else {
            found.truncated = true;
            return Ok(found);
        };
        let reply = Reply::of("XRANGE events");
        for entry in reply.array(entries)? {
            found.read += 1;
            if let Some(save) = step_save_of(&reply, entry, id)? {
                found.saves.push(save);
            }
        }
        found.truncated = found.read >= limit;
        // When the stream deleted entries at or after `from_ms`, saves in the range may be gone.
        let deleted = info.ok().map_or(0, |info| max_deleted_ms(&info));
        found.trimmed_before_ms = (deleted >= from_ms).then_some(deleted);
        Ok(found)
    }

    /// The histories of the jobs of `queue` that completed or died at `since_ms` or later,
    /// newest first: at most `max_jobs` of each set (`ZRANGE ... BYSCORE REV LIMIT`), then
    /// one pipeline of `HSTRLEN history` and one of `HMGET handler history` for those whose
    /// history fits [`MAX_HISTORY_BYTES`] while the total stays within
    /// [`MAX_HISTORIES_BYTES`], all in one slot. A queue keeps its
    /// completed jobs per its retention (`completed_keep`, `completed_max_age_ms`), so what
    /// was deleted is not counted.
    pub async fn recent_attempts(
        &self,
        queue: &str,
        since_ms: u64,
        max_jobs: usize,
    ) -> Result<RecentAttempts> {
        let keys = QueueKeys::new(queue)?;
        let mut conn = self.conn.clone();
        let mut ids: Vec<String> = Vec::new();
        let mut truncated = false;
        for set in [keys.completed(), keys.dead()] {
            // One more than asked, to know whether the window held more.
            let found: Vec<String> = redis::cmd("ZRANGE")
                .arg(&set)
                .arg("+inf")
                .arg(since_ms)
                .arg("BYSCORE")
                .arg("REV")
                .arg("LIMIT")
                .arg(0)
                .arg(max_jobs + 1)
                .query_async(&mut conn)
                .await?;
            truncated |= found.len() > max_jobs;
            ids.extend(found.into_iter().take(max_jobs));
        }
        let mut found = RecentAttempts {
            truncated,
            ..RecentAttempts::default()
        };
        if ids.is_empty() {
            return Ok(found);
        }
        // First the sizes: a history may hold up to 1000 attempts with their logs, so the
        // histories read are bounded in bytes too, each and in all.
        let mut sizes = redis::pipe();
        for id in &ids {
            sizes.cmd("HSTRLEN").arg(keys.job(id)).arg("history");
        }
        // A key of another type answers its own error, not the whole pipeline's.
        let sizes: Vec<redis::RedisResult<u64>> =
            sizes.ignore_errors().query_async(&mut conn).await?;
        let mut budget = MAX_HISTORIES_BYTES;
        let mut chosen = Vec::with_capacity(ids.len());
        for (id, size) in ids.iter().zip(sizes) {
            match size {
                Ok(size) if size > 0 && size <= MAX_HISTORY_BYTES && size <= budget => {
                    budget -= size;
                    chosen.push(id);
                }
                Ok(size) if size > MAX_HISTORY_BYTES || size > budget => found.oversize += 1,
                _ => found.skipped += 1,
            }
        }
        if chosen.is_empty() {
            return Ok(found);
        }
        let mut pipe = redis::pipe();
        for id in &chosen {
            pipe.cmd("HMGET")
                .arg(keys.job(id))
                .arg("handler")
                .arg("history");
        }
        let replies: Vec<redis::RedisResult<HandlerAndHistory>> =
            pipe.ignore_errors().query_async(&mut conn).await?;
        for reply in replies {
            let (handler, history) = reply.unwrap_or_default();
            let attempts = history.and_then(|bytes| {
                serde_json::from_str::<Vec<Attempt>>(&String::from_utf8_lossy(&bytes)).ok()
            });
            match (handler, attempts) {
                (Some(handler), Some(attempts)) => found
                    .jobs
                    .push((String::from_utf8_lossy(&handler).into_owned(), attempts)),
                _ => found.skipped += 1,
            }
        }
        Ok(found)
    }
}

impl Client {
    /// The Redis server's time in ms (`TIME`): the clock every job time is on.
    pub async fn now_ms(&self) -> Result<u64> {
        let mut conn = self.conn.clone();
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
        Ok(secs.saturating_mul(1000).saturating_add(micros / 1000))
    }
}
