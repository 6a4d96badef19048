//! [`Monitor`]: what watching queues from outside the job path needs from Redis, on a
//! connection of its own. Alerts (`crate::alerts`) are its user; nothing here changes a job.
//!
//! - A **consumer group** over the queues' events streams (`wasmq:{q}:events`): every host
//!   reads through the same group, so each entry goes to one host, stays pending until that
//!   host acknowledges it, and is claimed by another host when its reader has been silent for
//!   too long. That is what makes an alert per dead-lettered job fire once fleet-wide, at least
//!   once.
//! - The **backlog** of a queue ([`Backlog`]: waiting jobs, the oldest one's due time), read
//!   atomically by `backlog.lua`.
//! - The **alert state** of a queue (`wasmq:{q}:alerts`, a hash of the conditions in force),
//!   changed with single commands (`HSETNX`, `HDEL`) whose reply says whether this caller made
//!   the change, so that of many hosts seeing a queue cross a threshold one announces it.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Value;

use super::error::{QueueError, Result};
use super::inspect::StreamEvent;
use super::keys::QueueKeys;
use super::reply::Reply;
use super::scripts::{Call, SCRIPTS};
use crate::connection::{ConnectOptions, RedisConnection, RedisTarget};

/// Entries read from a consumer group.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GroupRead {
    pub events: Vec<StreamEvent>,
    /// Entries delivered to the group but trimmed from the stream (`MAXLEN`) since: their
    /// content is gone. Acknowledge them so they leave the pending list.
    pub trimmed: Vec<String>,
    /// Entries whose fields do not decode (written by hand, or by a newer wasmq): nothing to
    /// act on. Acknowledge them, or they come back with every claim.
    pub malformed: Vec<String>,
    /// The id of the last entry of the reply (read or trimmed): where a paged read goes on.
    pub last_id: Option<String>,
}

/// Which entries [`Monitor::read`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom<'a> {
    /// Entries never delivered to anyone in the group (`>`).
    New,
    /// Entries delivered to this consumer earlier and not acknowledged, after this stream id
    /// (`"0"` for all): what a host that restarts under the same name had in hand.
    Own(&'a str),
}

/// The fields of a dead job an alert reports; each `None` when the hash lacks it (the job may
/// have been purged since).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeadJob {
    pub handler: Option<String>,
    pub last_error: Option<String>,
    pub last_outcome: Option<String>,
    pub max_attempts: Option<u32>,
}

/// How far behind a queue is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// Redis time of the reading (ms since the epoch).
    pub now_ms: u64,
    /// Waiting jobs, grouped or not.
    pub waiting: u64,
    /// When the longest-waiting job became due; `None` when nothing waits.
    pub oldest_due_ms: Option<u64>,
    pub paused: bool,
    /// The backlog conditions in force on the queue (`wasmq:{q}:alerts`), each with the time
    /// it started (ms).
    pub alerts: BTreeMap<String, u64>,
}

impl Backlog {
    /// How long the longest-waiting job has waited.
    pub fn oldest_age(&self) -> Duration {
        self.oldest_due_ms.map_or(Duration::ZERO, |due| {
            Duration::from_millis(self.now_ms.saturating_sub(due))
        })
    }
}

/// A connection for watching queues: one consumer (this host) of one consumer group.
#[derive(Clone)]
pub struct Monitor {
    conn: RedisConnection,
    group: String,
    consumer: String,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

/// Whether `err` says the consumer group does not exist (`NOGROUP`): the stream was deleted,
/// or Redis restarted without persistence. Create the group again.
pub fn is_missing_group(err: &QueueError) -> bool {
    matches!(err, QueueError::Redis(e) if e.code() == Some("NOGROUP"))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Monitor {
    /// Connects to Redis at `url` as `consumer` of the consumer group `group`.
    pub async fn connect(url: &str, group: &str, consumer: &str) -> Result<Monitor> {
        let conn = RedisTarget::open(url)?
            .connect(ConnectOptions::default())
            .await?;
        Ok(Monitor {
            conn,
            group: group.to_string(),
            consumer: consumer.to_string(),
        })
    }

    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let mut conn = self.conn.clone();
        Ok(cmd.query_async(&mut conn).await?)
    }

    /// Redis `TIME`, in ms since the epoch.
    pub async fn server_time_ms(&self) -> Result<u64> {
        let (secs, micros): (u64, u64) = self.query(&redis::cmd("TIME")).await?;
        Ok(secs.saturating_mul(1000) + micros / 1000)
    }

    /// Creates the group on `queue`'s events stream (and the stream, if missing), delivering
    /// the entries after `start_ms`. Returns false when the group exists already: then it goes
    /// on from where it was, and `start_ms` does not matter.
    pub async fn create_group(&self, queue: &str, start_ms: u64) -> Result<bool> {
        let keys = QueueKeys::new(queue)?;
        let reply: redis::RedisResult<Value> = {
            let mut conn = self.conn.clone();
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(keys.events())
                .arg(&self.group)
                .arg(format!("{start_ms}-0"))
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await
        };
        match reply {
            Ok(_) => Ok(true),
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Up to `count` entries of `queue`'s events stream for this consumer.
    pub async fn read(&self, queue: &str, from: ReadFrom<'_>, count: usize) -> Result<GroupRead> {
        let keys = QueueKeys::new(queue)?;
        let value: Value = self
            .query(
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(&self.group)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(count.max(1))
                    .arg("STREAMS")
                    .arg(keys.events())
                    .arg(match from {
                        ReadFrom::New => ">",
                        ReadFrom::Own(after) => after,
                    }),
            )
            .await?;
        let reply = Reply::of("XREADGROUP events");
        let mut out = GroupRead::default();
        if matches!(value, Value::Nil) {
            return Ok(out);
        }
        for stream in reply.array(value)? {
            let [_key, entries] = reply.tuple(stream)?;
            entries_into(&reply, entries, &mut out)?;
        }
        Ok(out)
    }

    /// Takes over entries of `queue` that consumers (hosts that died, or hung) have held
    /// unacknowledged for `min_idle` or longer: up to `count` from `cursor` on (`"0-0"` to
    /// start), one `XAUTOCLAIM` call. Returns them and the cursor to go on from (`"0-0"`: the
    /// whole pending list was scanned).
    pub async fn claim_stale(
        &self,
        queue: &str,
        min_idle: Duration,
        cursor: &str,
        count: usize,
    ) -> Result<(GroupRead, String)> {
        let keys = QueueKeys::new(queue)?;
        let value: Value = self
            .query(
                redis::cmd("XAUTOCLAIM")
                    .arg(keys.events())
                    .arg(&self.group)
                    .arg(&self.consumer)
                    .arg(millis(min_idle))
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(count.max(1)),
            )
            .await?;
        let reply = Reply::of("XAUTOCLAIM events");
        let mut items = reply.array(value)?.into_iter();
        let mut out = GroupRead::default();
        let cursor = match items.next() {
            Some(cursor) => reply.string(cursor)?,
            None => return Err(reply.error("empty reply")),
        };
        if let Some(entries) = items.next() {
            entries_into(&reply, entries, &mut out)?;
        }
        // Redis 7 answers the ids it found trimmed separately (and drops them from the pending
        // list itself); 6.2 returns them above with nil content.
        if let Some(deleted) = items.next() {
            out.trimmed.extend(reply.strings(deleted)?);
        }
        Ok((out, cursor))
    }

    /// Resets the idle time of entries this consumer still works on, so that no other host
    /// claims them as stale (`XCLAIM ... JUSTID` to itself). An entry another consumer has
    /// claimed since is left with it when it was claimed less than `min_idle` ago.
    pub async fn touch(&self, queue: &str, ids: &[String], min_idle: Duration) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let keys = QueueKeys::new(queue)?;
        let _: Value = self
            .query(
                redis::cmd("XCLAIM")
                    .arg(keys.events())
                    .arg(&self.group)
                    .arg(&self.consumer)
                    .arg(millis(min_idle))
                    .arg(ids)
                    .arg("JUSTID"),
            )
            .await?;
        Ok(())
    }

    /// Acknowledges entries: they leave the group's pending list for good.
    pub async fn ack(&self, queue: &str, ids: &[String]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let keys = QueueKeys::new(queue)?;
        self.query(
            redis::cmd("XACK")
                .arg(keys.events())
                .arg(&self.group)
                .arg(ids),
        )
        .await
    }

    /// How many entries of `queue` the group has delivered and not had acknowledged.
    pub async fn pending(&self, queue: &str) -> Result<u64> {
        let keys = QueueKeys::new(queue)?;
        let value: Value = self
            .query(redis::cmd("XPENDING").arg(keys.events()).arg(&self.group))
            .await?;
        let reply = Reply::of("XPENDING events");
        match reply.array(value)?.into_iter().next() {
            Some(count) => reply.uint(count),
            None => Ok(0),
        }
    }

    /// Removes consumers of `queue`'s group other than this one that hold nothing and have not
    /// read for `idle`: hosts come and go under new names, and each leaves a consumer behind.
    /// A consumer removed while still alive is created again by its next read.
    pub async fn forget_idle_consumers(&self, queue: &str, idle: Duration) -> Result<u64> {
        let keys = QueueKeys::new(queue)?;
        let value: Value = self
            .query(
                redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(keys.events())
                    .arg(&self.group),
            )
            .await?;
        let reply = Reply::of("XINFO CONSUMERS");
        let mut forgotten = 0;
        for consumer in reply.array(value)? {
            let (mut name, mut pending, mut idle_ms) = (None, None, None);
            for (field, value) in fields(&reply, consumer)? {
                match field.as_str() {
                    "name" => name = Some(reply.string(value)?),
                    "pending" => pending = Some(reply.uint(value)?),
                    "idle" => idle_ms = Some(reply.uint(value)?),
                    _ => {}
                }
            }
            if let (Some(name), Some(0), Some(idle_ms)) = (name, pending, idle_ms)
                && name != self.consumer
                && idle_ms >= millis(idle)
            {
                let _: Value = self
                    .query(
                        redis::cmd("XGROUP")
                            .arg("DELCONSUMER")
                            .arg(keys.events())
                            .arg(&self.group)
                            .arg(&name),
                    )
                    .await?;
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }

    /// Whether `queue` writes its events stream (`events_maxlen` is not 0).
    pub async fn events_enabled(&self, queue: &str) -> Result<bool> {
        let keys = QueueKeys::new(queue)?;
        let maxlen: Option<String> = self
            .query(redis::cmd("HGET").arg(keys.config()).arg("events_maxlen"))
            .await?;
        Ok(maxlen.is_none_or(|n| n.trim() != "0"))
    }

    /// The fields of job `id` an alert about its death reports (one `HMGET`, not the payload).
    pub async fn dead_job(&self, queue: &str, id: &str) -> Result<DeadJob> {
        let keys = QueueKeys::new(queue)?;
        // Bytes, not text: an error cut at its length limit may end inside a UTF-8 sequence.
        let fields: [Option<Vec<u8>>; 4] = self
            .query(
                redis::cmd("HMGET")
                    .arg(keys.job(id))
                    .arg("handler")
                    .arg("last_error")
                    .arg("last_outcome")
                    .arg("max_attempts"),
            )
            .await?;
        let [handler, last_error, last_outcome, max_attempts] =
            fields.map(|f| f.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()));
        Ok(DeadJob {
            handler,
            last_error,
            last_outcome,
            max_attempts: max_attempts.and_then(|n| n.parse().ok()),
        })
    }

    /// The queue's waiting count and oldest waiting job, read atomically (`backlog.lua`).
    pub async fn backlog(&self, queue: &str) -> Result<Backlog> {
        let keys = QueueKeys::new(queue)?;
        let invocation = Call::on(&SCRIPTS.backlog, &keys);
        let mut conn = self.conn.clone();
        let value: Value = invocation
            .invoke(&mut conn)
            .await
            .map_err(QueueError::from_script)?;
        let reply = Reply::of("backlog");
        let [now, waiting, oldest, paused, alerts] = reply.tuple(value)?;
        let oldest = reply.uint(oldest)?;
        let mut in_force = BTreeMap::new();
        let mut flat = reply.array(alerts)?.into_iter();
        while let (Some(condition), Some(since)) = (flat.next(), flat.next()) {
            // A hand-edited value reads as "since the epoch" rather than failing the check.
            let since = reply.uint(since).unwrap_or(0);
            in_force.insert(reply.string(condition)?, since);
        }
        Ok(Backlog {
            now_ms: reply.uint(now)?,
            waiting: reply.uint(waiting)?,
            oldest_due_ms: (oldest > 0).then_some(oldest),
            paused: reply.int(paused)? == 1,
            alerts: in_force,
        })
    }

    /// Records that `condition` holds on `queue` since `since_ms`. True when this call made
    /// the change (it did not hold before): the caller announces it.
    pub async fn raise_alert(&self, queue: &str, condition: &str, since_ms: u64) -> Result<bool> {
        let keys = QueueKeys::new(queue)?;
        let set: i64 = self
            .query(
                redis::cmd("HSETNX")
                    .arg(keys.alerts())
                    .arg(condition)
                    .arg(since_ms),
            )
            .await?;
        Ok(set == 1)
    }

    /// Records that `condition` no longer holds on `queue`. `Some(since_ms)` when this call
    /// made the change (it held, since then): the caller announces it.
    pub async fn clear_alert(&self, queue: &str, condition: &str) -> Result<Option<u64>> {
        let keys = QueueKeys::new(queue)?;
        let mut conn = self.conn.clone();
        let (since, removed): (Option<String>, i64) = redis::pipe()
            .atomic()
            .hget(keys.alerts(), condition)
            .hdel(keys.alerts(), condition)
            .query_async(&mut conn)
            .await?;
        Ok((removed == 1).then(|| since.and_then(|s| s.parse().ok()).unwrap_or(0)))
    }
}

/// Decodes a list of stream entries (`[id, [field, value, ...]]`, or `[id, nil]` for an entry
/// trimmed after delivery) into `out`.
fn entries_into(reply: &Reply, entries: Value, out: &mut GroupRead) -> Result<()> {
    for entry in reply.array(entries)? {
        let [stream_id, content] = reply.tuple(entry)?;
        let stream_id = reply.string(stream_id)?;
        out.last_id = Some(stream_id.clone());
        if matches!(content, Value::Nil) {
            out.trimmed.push(stream_id);
            continue;
        }
        match decode_event(reply, stream_id.clone(), content) {
            Ok(event) => out.events.push(event),
            Err(_) => out.malformed.push(stream_id),
        }
    }
    Ok(())
}

/// One entry's fields as an [`StreamEvent`].
fn decode_event(reply: &Reply, stream_id: String, content: Value) -> Result<StreamEvent> {
    let mut event = StreamEvent {
        stream_id,
        event: String::new(),
        jobs: Vec::new(),
    };
    for (field, value) in fields(reply, content)? {
        match field.as_str() {
            "event" => event.event = reply.string(value)?,
            "jobs" => {
                let text = reply.string(value)?;
                event.jobs = serde_json::from_str(&text)
                    .map_err(|err| reply.error(format!("jobs field: {err}")))?;
            }
            _ => {}
        }
    }
    Ok(event)
}

/// A flat `[field, value, ...]` array (or a RESP3 map) as pairs.
fn fields(reply: &Reply, value: Value) -> Result<Vec<(String, Value)>> {
    let pairs: Vec<(Value, Value)> = match value {
        Value::Map(pairs) => pairs,
        other => {
            let mut pairs = Vec::new();
            let mut items = reply.array(other)?.into_iter();
            while let (Some(field), Some(value)) = (items.next(), items.next()) {
                pairs.push((field, value));
            }
            pairs
        }
    };
    pairs
        .into_iter()
        .map(|(field, value)| Ok((reply.string(field)?, value)))
        .collect()
}
