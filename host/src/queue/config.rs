//! A queue's settings, kept in the hash `wasmq:{q}:config` with its pause flag
//! (docs/protocol.md, "Queue config"): [`QueueConfig`], [`Client::config`] and
//! [`Client::set_config`], [`Client::pause`] and [`Client::resume`].

use std::collections::HashMap;
use std::time::Duration;

use super::client::{Client, millis};
use super::error::{QueueError, Result};
use super::job::{
    DEFAULT_COMPLETED_KEEP, DEFAULT_DEAD_STEP_BYTES, DEFAULT_EVENTS_MAXLEN,
    DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_MAX_RESULT_BYTES,
};
use super::keys::QueueKeys;
use super::limit::RateLimit;
use super::reply::Reply;
use super::scripts::{Call, SCRIPTS};

/// Per-queue settings, kept in the hash `wasmq:{q}:config` (see docs/protocol.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Largest payload enqueue accepts.
    pub max_payload_bytes: u64,
    /// Largest result complete stores; a bigger one dead-letters its job.
    pub max_result_bytes: u64,
    /// Completed jobs kept, newest first; `None` keeps all, `Some(0)` keeps none.
    pub completed_keep: Option<u64>,
    /// Completed jobs older than this are deleted; `None` keeps them regardless of age.
    pub completed_max_age: Option<Duration>,
    /// Approximate length of the events stream; 0 turns events off.
    pub events_maxlen: u64,
    /// Most job starts per window in the whole queue, across every host; `None` is unlimited.
    pub rate: Option<RateLimit>,
    /// Most job starts per window in each group (jobs enqueued with a group); `None` is
    /// unlimited. Groups take turns whether limited or not.
    pub group_rate: Option<RateLimit>,
    /// Most jobs of any one group (jobs enqueued with a group) that run at once, across every
    /// host; `None` is unlimited. A group at its limit is skipped while the others take turns.
    pub group_concurrency: Option<u64>,
    /// Most bytes the durable steps of the queue's dead jobs may hold in all; past it those
    /// of the jobs that died first are deleted (the jobs stay, marked `steps_dropped`).
    /// `None`: no cap.
    pub dead_step_bytes: Option<u64>,
    /// Most jobs not finished (waiting, delayed, retry, active: the backlog) that enqueue
    /// accepts: a call whose new jobs
    /// would pass it is refused with [`QueueError::QueueFull`]. `None` is unlimited.
    pub max_waiting: Option<u64>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
            completed_keep: Some(DEFAULT_COMPLETED_KEEP.unsigned_abs()),
            completed_max_age: None,
            events_maxlen: DEFAULT_EVENTS_MAXLEN,
            rate: None,
            group_rate: None,
            group_concurrency: None,
            dead_step_bytes: Some(DEFAULT_DEAD_STEP_BYTES),
            max_waiting: None,
        }
    }
}

impl Client {
    /// The queue's settings (defaults for unset fields).
    pub async fn config(&self, queue: &str) -> Result<QueueConfig> {
        let keys = QueueKeys::new(queue)?;
        let mut conn = self.conn.clone();
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keys.config())
            .query_async(&mut conn)
            .await?;
        let mut config = QueueConfig::default();
        let number = |name: &str| -> Result<Option<i64>> {
            hash.get(name)
                .map(|text| {
                    text.parse::<i64>().map_err(|_| {
                        QueueError::InvalidArgument(format!(
                            "config field {name} of queue {queue} is not an integer: {text:?}"
                        ))
                    })
                })
                .transpose()
        };
        if let Some(n) = number("max_payload_bytes")? {
            config.max_payload_bytes = n.max(0).unsigned_abs();
        }
        if let Some(n) = number("max_result_bytes")? {
            config.max_result_bytes = n.max(0).unsigned_abs();
        }
        if let Some(n) = number("completed_keep")? {
            config.completed_keep = (n >= 0).then_some(n.unsigned_abs());
        }
        if let Some(n) = number("completed_max_age_ms")? {
            config.completed_max_age = (n > 0).then(|| Duration::from_millis(n.unsigned_abs()));
        }
        if let Some(n) = number("events_maxlen")? {
            config.events_maxlen = n.max(0).unsigned_abs();
        }
        let limit = |max: &str, window: &str| -> Result<Option<RateLimit>> {
            let max = number(max)?.unwrap_or(0).max(0).unsigned_abs();
            let window = number(window)?.unwrap_or(0).max(0).unsigned_abs();
            Ok(RateLimit::from_fields(max, window))
        };
        if let Some(n) = number("dead_step_bytes")? {
            config.dead_step_bytes = (n >= 0).then_some(n.unsigned_abs());
        }
        config.rate = limit("rate_max", "rate_window_ms")?;
        config.group_rate = limit("group_rate_max", "group_rate_window_ms")?;
        config.group_concurrency = number("group_concurrency")?
            .filter(|n| *n > 0)
            .map(i64::unsigned_abs);
        config.max_waiting = number("max_waiting")?
            .filter(|n| *n > 0)
            .map(i64::unsigned_abs);
        Ok(config)
    }

    /// Writes the queue's settings (one HSET; the pause flag is left alone), then brings back
    /// into the round robin the groups that fetch parked at a limit, so that a limit changed
    /// takes effect on the next fetch (`ready_parked_groups`).
    pub async fn set_config(&self, queue: &str, config: &QueueConfig) -> Result<()> {
        let keys = QueueKeys::new(queue)?;
        let keep = config
            .completed_keep
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let max_age = config.completed_max_age.map_or(0, millis);
        let mut conn = self.conn.clone();
        let () = redis::cmd("HSET")
            .arg(keys.config())
            .arg("max_payload_bytes")
            .arg(config.max_payload_bytes)
            .arg("max_result_bytes")
            .arg(config.max_result_bytes)
            .arg("completed_keep")
            .arg(keep)
            .arg("completed_max_age_ms")
            .arg(max_age)
            .arg("events_maxlen")
            .arg(config.events_maxlen)
            .arg("rate_max")
            .arg(config.rate.map_or(0, |r| r.max))
            .arg("rate_window_ms")
            .arg(config.rate.map_or(0, |r| r.window_ms()))
            .arg("group_rate_max")
            .arg(config.group_rate.map_or(0, |r| r.max))
            .arg("group_rate_window_ms")
            .arg(config.group_rate.map_or(0, |r| r.window_ms()))
            .arg("dead_step_bytes")
            .arg(
                config
                    .dead_step_bytes
                    .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)),
            )
            .arg("max_waiting")
            .arg(config.max_waiting.unwrap_or(0))
            .arg("group_concurrency")
            .arg(config.group_concurrency.unwrap_or(0))
            .query_async(&mut conn)
            .await?;
        ready_parked_groups(&mut conn, &keys).await
    }

    /// Stops fetch from leasing this queue's jobs. Returns false if it was already paused.
    pub async fn pause(&self, queue: &str) -> Result<bool> {
        let keys = QueueKeys::new(queue)?;
        let invocation = Call::on(&SCRIPTS.pause, &keys);
        Ok(Reply::of("pause").int(self.invoke(&invocation).await?)? == 1)
    }

    /// Lets fetch lease this queue's jobs again. Returns false if it was not paused.
    pub async fn resume(&self, queue: &str) -> Result<bool> {
        let keys = QueueKeys::new(queue)?;
        let invocation = Call::on(&SCRIPTS.resume, &keys);
        Ok(Reply::of("resume").int(self.invoke(&invocation).await?)? == 1)
    }
}

/// Most parked groups [`ready_parked_groups`] brings back per command, and most commands.
const PARKED_CHUNK: usize = 1000;
const PARKED_ROUNDS: usize = 100;

/// Scores every group of `groups` that fetch parked in the future (at a group rate limit, or
/// at its group concurrency limit: docs/protocol.md, "Group concurrency") at the Redis time
/// now, so the next fetch looks at it under the config just written. Always safe: fetch parks
/// again a group still at a limit. Not one script: each command leaves `groups` valid, and a
/// group parked again meanwhile only waits for its next turn. Bounded: at most
/// `PARKED_ROUNDS` chunks of `PARKED_CHUNK` groups; groups past them come back at their own
/// time or with a job's end.
async fn ready_parked_groups(
    conn: &mut crate::connection::RedisConnection,
    keys: &QueueKeys,
) -> Result<()> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
    let now = secs * 1000 + micros / 1000;
    for _ in 0..PARKED_ROUNDS {
        let parked: Vec<String> = redis::cmd("ZRANGE")
            .arg(keys.groups())
            .arg(format!("({now}"))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(PARKED_CHUNK)
            .query_async(conn)
            .await?;
        if parked.is_empty() {
            break;
        }
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(keys.groups()).arg("XX").arg("LT");
        for group in &parked {
            zadd.arg(now).arg(group);
        }
        let _: u64 = zadd.query_async(conn).await?;
        if parked.len() < PARKED_CHUNK {
            break;
        }
    }
    Ok(())
}
