//! Cron schedules: jobs enqueued on a calendar, in a time zone, by whichever hosts are running
//! (`docs/schedules.md`).
//!
//! - [`ScheduleSpec`] - what a user writes: name, cron expression, time zone, queue, handler,
//!   payload, missed-tick policy (`catch_up`). [`ScheduleSpec::validate`] refuses a bad one
//!   before anything is written.
//! - [`Schedule`] - a stored schedule: the spec, its paused flag, and its last tick. The pure
//!   core lives here: [`Schedule::next_runs`] and [`Schedule::plan`] (which ticks to enqueue
//!   now) take the time as an argument and do no I/O.
//! - [`Schedules`] - the store in Redis, one Lua script per transition (`scripts/`: add,
//!   pause, resume, remove, advance).
//!
//! Lifecycle of a tick (run by every host's `worker::scheduler`):
//! 1. Read every schedule and the Redis clock (`TIME`: hosts agree on one clock).
//! 2. [`Schedule::plan`]: the ticks after the last recorded one, up to now, minus missed ones
//!    the policy skips.
//! 3. Enqueue each through [`crate::queue::Client::enqueue`] with the id
//!    `sched:<name>:<tick unix ms>` ([`job_id`]); an id that exists is a no-op, so hosts that
//!    race on one tick write one job.
//! 4. `advance.lua` moves the last tick forward (never back).
//!
//! All keys share the hash tag `{@schedules}` (`@` cannot appear in a queue name).
//!
//! **Invariant:** one job per tick however many hosts run: the tick is in the job id, and the
//! enqueue script writes nothing for an id that exists. The last tick only moves after the
//! enqueue succeeded, so a host dying in between leaves the tick for another host.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use redis::{AsyncCommands, Script};

use crate::connection::{ConnectOptions, RedisConnection, RedisTarget};
use crate::queue::{validate_handler_name, validate_queue_name};

const BASE: &str = "wasmq:{@schedules}:";

/// Longest schedule name; names become part of keys and job ids.
pub const MAX_SCHEDULE_NAME: usize = 100;
/// Most missed ticks a schedule may catch up.
pub const MAX_CATCH_UP: u32 = 1_000;
/// Largest payload a schedule stores (the queue's own limit applies at enqueue too).
pub const MAX_SCHEDULE_PAYLOAD: usize = 1024 * 1024;
/// How long a tick stays on time: a tick older than this when a host first sees it was
/// missed (no host ran), and the schedule's `catch_up` decides whether it is enqueued.
pub const GRACE: Duration = Duration::from_secs(5);
/// The job id prefix of every job a schedule enqueued.
pub const JOB_ID_PREFIX: &str = "sched:";

static ADD: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("scripts/add.lua")));
static PAUSE: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("scripts/pause.lua")));
static RESUME: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("scripts/resume.lua")));
static REMOVE: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("scripts/remove.lua")));
static ADVANCE: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::new(include_str!("scripts/advance.lua")));

/// Why a schedule operation did nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    #[error("redis request failed")]
    Redis(#[from] redis::RedisError),
    #[error("invalid schedule: {0}")]
    Invalid(String),
    #[error("no schedule named {0:?}")]
    NoSchedule(String),
    #[error("stored schedule {name:?} is damaged: {reason}")]
    Corrupt { name: String, reason: String },
}

pub type Result<T, E = ScheduleError> = std::result::Result<T, E>;

/// Parses a cron expression as wasmq accepts it: 5 fields (minute hour day-of-month month
/// day-of-week, run at second 0), 6 fields (seconds first), 7 fields (seconds first, year
/// last), or a shorthand (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`). The `cron`
/// crate does the parsing.
pub fn parse_cron(expression: &str) -> Result<cron::Schedule, String> {
    let fields = expression.split_whitespace().count();
    let full = match fields {
        _ if expression.trim_start().starts_with('@') => expression.trim().to_string(),
        5 => format!("0 {}", expression.trim()),
        6 | 7 => expression.trim().to_string(),
        _ => {
            return Err(format!(
                "cron expression {expression:?} has {fields} fields; use 5 (minute hour \
                 day-of-month month day-of-week), or 6-7 with seconds first (and a year last)"
            ));
        }
    };
    cron::Schedule::from_str(&full)
        .map_err(|e| format!("cron expression {expression:?} does not parse: {e}"))
}

/// Parses an IANA time zone name (`Asia/Seoul`, `America/New_York`, `UTC`).
pub fn parse_tz(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("unknown time zone {name:?}; use an IANA name such as Asia/Seoul"))
}

/// Schedule names: 1 to [`MAX_SCHEDULE_NAME`] ASCII letters, digits, `-`, `_`, `.`.
pub fn validate_schedule_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_SCHEDULE_NAME {
        return Err(format!(
            "schedule name must be 1 to {MAX_SCHEDULE_NAME} bytes long, got {}",
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "schedule name {name:?} contains {bad:?}; use ASCII letters, digits, '-', '_', '.'"
        ));
    }
    Ok(())
}

/// The id of the job a schedule enqueues for one tick: the same on every host.
pub fn job_id(schedule: &str, tick_ms: u64) -> String {
    format!("{JOB_ID_PREFIX}{schedule}:{tick_ms}")
}

/// A schedule as a user defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    pub name: String,
    /// As given (see [`parse_cron`] for the accepted syntax).
    pub cron: String,
    /// IANA zone name the cron expression is read in.
    pub tz: String,
    pub queue: String,
    pub handler: String,
    pub payload: Vec<u8>,
    /// Missed ticks to enqueue when hosts come back (the most recent ones); 0 skips them all.
    pub catch_up: u32,
}

impl ScheduleSpec {
    /// Checks everything a schedule needs to run; nothing is written for a spec that fails.
    pub fn validate(&self) -> Result<(), String> {
        validate_schedule_name(&self.name)?;
        parse_cron(&self.cron)?;
        parse_tz(&self.tz)?;
        validate_queue_name(&self.queue)?;
        validate_handler_name(&self.handler)?;
        if self.catch_up > MAX_CATCH_UP {
            return Err(format!(
                "catch-up must be at most {MAX_CATCH_UP}, got {}",
                self.catch_up
            ));
        }
        if self.payload.len() > MAX_SCHEDULE_PAYLOAD {
            return Err(format!(
                "payload is {} bytes, over the schedule limit of {MAX_SCHEDULE_PAYLOAD}",
                self.payload.len()
            ));
        }
        Ok(())
    }
}

/// A stored schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub spec: ScheduleSpec,
    pub paused: bool,
    /// Unix ms, Redis clock.
    pub created_at_ms: u64,
    /// The newest tick dealt with (enqueued or skipped), Unix ms; starts at the time the
    /// definition was written.
    pub last_tick_ms: u64,
    /// When it was last resumed: ticks before this fell while it was paused, and count as
    /// missed.
    pub resumed_at_ms: Option<u64>,
    cron: cron::Schedule,
    tz: Tz,
}

/// What a scheduler does for one schedule at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Ticks to enqueue, oldest first, Unix ms.
    pub enqueue: Vec<u64>,
    /// The newest due tick (enqueued or skipped): the last tick once `enqueue` is done.
    pub advance_to: Option<u64>,
}

fn at(tz: Tz, ms: u64) -> DateTime<Tz> {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    match Utc.timestamp_millis_opt(ms).single() {
        Some(utc) => utc.with_timezone(&tz),
        None => DateTime::<Utc>::MAX_UTC.with_timezone(&tz),
    }
}

fn unix_ms<Z: TimeZone>(t: &DateTime<Z>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

impl Schedule {
    /// A schedule from its parts; fails when the spec does not validate.
    pub fn new(
        spec: ScheduleSpec,
        paused: bool,
        created_at_ms: u64,
        last_tick_ms: u64,
        resumed_at_ms: Option<u64>,
    ) -> Result<Schedule, String> {
        spec.validate()?;
        let cron = parse_cron(&spec.cron)?;
        let tz = parse_tz(&spec.tz)?;
        Ok(Schedule {
            spec,
            paused,
            created_at_ms,
            last_tick_ms,
            resumed_at_ms,
            cron,
            tz,
        })
    }

    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The next `n` ticks strictly after `after_ms`, in the schedule's zone.
    pub fn next_runs(&self, after_ms: u64, n: usize) -> Vec<DateTime<Tz>> {
        self.cron.after(&at(self.tz, after_ms)).take(n).collect()
    }

    /// Which ticks to enqueue at `now_ms`: every tick after the last one, up to now, that is
    /// on time (at most [`GRACE`] old, and not fallen while paused), plus the `catch_up` most
    /// recent missed ones. A paused schedule plans nothing.
    pub fn plan(&self, now_ms: u64) -> Plan {
        if self.paused {
            return Plan::default();
        }
        let grace = u64::try_from(GRACE.as_millis()).unwrap_or(u64::MAX);
        // Ticks are whole seconds, so at most GRACE-in-seconds + 1 are on time; more than that
        // plus catch_up need not be looked at, however long the schedule was idle.
        let limit = (grace / 1000) as usize + 1 + self.spec.catch_up as usize;
        // Backwards from now; `now + 1 ms` so that a tick at exactly now is included.
        let due: Vec<u64> = self
            .cron
            .after(&at(self.tz, now_ms.saturating_add(1)))
            .rev()
            .map(|t| unix_ms(&t))
            .take_while(|&t| t > self.last_tick_ms)
            .take(limit)
            .collect();
        let resumed = self.resumed_at_ms.unwrap_or(0);
        let (on_time, missed): (Vec<u64>, Vec<u64>) = due
            .iter()
            .partition(|&&t| now_ms.saturating_sub(t) <= grace && t > resumed);
        let mut enqueue: Vec<u64> = on_time
            .into_iter()
            .chain(missed.into_iter().take(self.spec.catch_up as usize))
            .collect();
        enqueue.sort_unstable();
        Plan {
            enqueue,
            advance_to: due.first().copied(),
        }
    }

    fn decode(name: &str, mut fields: BTreeMap<String, Vec<u8>>) -> Result<Schedule> {
        let corrupt = |reason: String| ScheduleError::Corrupt {
            name: name.to_string(),
            reason,
        };
        let mut text = |field: &str| -> Result<Option<String>> {
            fields
                .remove(field)
                .map(|bytes| {
                    String::from_utf8(bytes).map_err(|_| corrupt(format!("{field} is not UTF-8")))
                })
                .transpose()
        };
        let mut required = |field: &str| -> Result<String> {
            text(field)?.ok_or_else(|| corrupt(format!("no {field}")))
        };
        let number = |text: String, field: &str| -> Result<u64> {
            text.parse()
                .map_err(|_| corrupt(format!("{field} {text:?} is not a number")))
        };
        let cron = required("cron")?;
        let tz = required("tz")?;
        let queue = required("queue")?;
        let handler = required("handler")?;
        let catch_up = number(required("catch_up")?, "catch_up")?;
        let paused = required("paused")? == "1";
        let created_at_ms = number(required("created_at_ms")?, "created_at_ms")?;
        let last_tick_ms = number(required("last_tick_ms")?, "last_tick_ms")?;
        let resumed_at_ms = match required("resumed_at_ms") {
            Ok(text) => Some(number(text, "resumed_at_ms")?),
            Err(_) => None,
        };
        let payload = fields.remove("payload").unwrap_or_default();
        let spec = ScheduleSpec {
            name: name.to_string(),
            cron,
            tz,
            queue,
            handler,
            payload,
            catch_up: u32::try_from(catch_up)
                .map_err(|_| corrupt("catch_up is out of range".to_string()))?,
        };
        Schedule::new(spec, paused, created_at_ms, last_tick_ms, resumed_at_ms).map_err(corrupt)
    }
}

fn key(suffix: &str) -> String {
    format!("{BASE}{suffix}")
}

fn schedule_key(name: &str) -> String {
    key(&format!("schedule:{name}"))
}

/// The schedule store: what `wasmq schedule ...`, the HTTP API and hosts use.
#[derive(Clone)]
pub struct Schedules {
    conn: RedisConnection,
}

impl Schedules {
    pub async fn connect(url: &str) -> Result<Schedules> {
        let conn = RedisTarget::open(url)?
            .connect(ConnectOptions {
                response_timeout: Some(Duration::from_secs(10)),
                ..ConnectOptions::default()
            })
            .await?;
        Ok(Schedules { conn })
    }

    /// Creates `spec`, or replaces the schedule of that name. Returns whether it was new and
    /// the stored schedule. Nothing is written for a spec that does not validate.
    pub async fn add(&self, spec: &ScheduleSpec) -> Result<(bool, Schedule)> {
        spec.validate().map_err(ScheduleError::Invalid)?;
        self.check_payload_fits(spec).await?;
        let mut conn = self.conn.clone();
        let (created, _now): (u8, u64) = ADD
            .key(schedule_key(&spec.name))
            .key(key("names"))
            .key(key("version"))
            .arg(&spec.name)
            .arg(&spec.cron)
            .arg(&spec.tz)
            .arg(&spec.queue)
            .arg(&spec.handler)
            .arg(&spec.payload)
            .arg(spec.catch_up)
            .invoke_async(&mut conn)
            .await?;
        let stored = self
            .get(&spec.name)
            .await?
            .ok_or_else(|| ScheduleError::NoSchedule(spec.name.clone()))?;
        Ok((created == 1, stored))
    }

    /// Refuses a payload over the queue's `max_payload_bytes`: every tick's enqueue would be
    /// refused, and the schedule would retry it for ever. (The queue's limit read now: a limit
    /// lowered later is met at the tick, which the host reports.)
    async fn check_payload_fits(&self, spec: &ScheduleSpec) -> Result<()> {
        let config_key = crate::queue::QueueKeys::new(&spec.queue)
            .map_err(|err| ScheduleError::Invalid(err.to_string()))?
            .config();
        let mut conn = self.conn.clone();
        let limit: Option<String> = conn.hget(config_key, "max_payload_bytes").await?;
        let limit = limit
            .and_then(|text| text.parse::<i64>().ok())
            .map_or(crate::queue::DEFAULT_MAX_PAYLOAD_BYTES, |n| {
                n.max(0).unsigned_abs()
            });
        let size = spec.payload.len() as u64;
        if size > limit {
            return Err(ScheduleError::Invalid(format!(
                "payload is {size} bytes, over the limit of queue {} ({limit} bytes, its \
                 max_payload_bytes): every tick's job would be refused",
                spec.queue
            )));
        }
        Ok(())
    }

    /// One schedule, if it exists.
    pub async fn get(&self, name: &str) -> Result<Option<Schedule>> {
        let mut conn = self.conn.clone();
        let fields: BTreeMap<String, Vec<u8>> = conn.hgetall(schedule_key(name)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Schedule::decode(name, fields).map(Some)
    }

    /// Every schedule, by name. A damaged one is an error naming it.
    pub async fn list(&self) -> Result<Vec<Schedule>> {
        let mut conn = self.conn.clone();
        let mut names: Vec<String> = conn.smembers(key("names")).await?;
        names.sort();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.hgetall(schedule_key(name));
        }
        let all: Vec<BTreeMap<String, Vec<u8>>> = pipe.query_async(&mut conn).await?;
        names
            .iter()
            .zip(all)
            // Removed between the two reads.
            .filter(|(_, fields)| !fields.is_empty())
            .map(|(name, fields)| Schedule::decode(name, fields))
            .collect()
    }

    /// Stops a schedule from enqueueing. Returns false when it was already paused.
    pub async fn pause(&self, name: &str) -> Result<bool> {
        self.toggle(&PAUSE, name).await
    }

    /// Lets a paused schedule enqueue again; ticks that fell while it was paused are missed
    /// ticks (its `catch_up` decides). Returns false when it was not paused.
    pub async fn resume(&self, name: &str) -> Result<bool> {
        self.toggle(&RESUME, name).await
    }

    async fn toggle(&self, script: &Script, name: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let changed: i64 = script
            .key(schedule_key(name))
            .key(key("version"))
            .invoke_async(&mut conn)
            .await?;
        match changed {
            -1 => Err(ScheduleError::NoSchedule(name.to_string())),
            n => Ok(n == 1),
        }
    }

    /// Forgets a schedule; jobs it enqueued stay. Returns false when there was none.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let removed: u8 = REMOVE
            .key(schedule_key(name))
            .key(key("names"))
            .key(key("version"))
            .arg(name)
            .invoke_async(&mut conn)
            .await?;
        Ok(removed == 1)
    }

    /// Records that every tick of `name` up to `tick_ms` was dealt with (never moves back).
    pub async fn advance(&self, name: &str, tick_ms: u64) -> Result<bool> {
        let mut conn = self.conn.clone();
        let moved: u8 = ADVANCE
            .key(schedule_key(name))
            .arg(tick_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(moved == 1)
    }

    /// The Redis server's clock, Unix ms: the one clock every host's scheduler agrees on.
    pub async fn now_ms(&self) -> Result<u64> {
        let mut conn = self.conn.clone();
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
        Ok(secs * 1000 + micros / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, tz: &str, catch_up: u32, last_tick_ms: u64) -> Schedule {
        let spec = ScheduleSpec {
            name: "s".to_string(),
            cron: cron.to_string(),
            tz: tz.to_string(),
            queue: "q".to_string(),
            handler: "h".to_string(),
            payload: Vec::new(),
            catch_up,
        };
        Schedule::new(spec, false, 0, last_tick_ms, None).unwrap()
    }

    fn utc_ms(text: &str) -> u64 {
        unix_ms(&DateTime::parse_from_rfc3339(text).unwrap())
    }

    fn utc(times: &[DateTime<Tz>]) -> Vec<String> {
        times
            .iter()
            .map(|t| t.with_timezone(&Utc).to_rfc3339())
            .collect()
    }

    #[test]
    fn five_fields_run_at_second_zero_and_six_take_seconds() {
        let five = schedule("0 9 * * *", "UTC", 0, 0);
        let six = schedule("30 0 9 * * *", "UTC", 0, 0);
        let from = utc_ms("2026-01-01T00:00:00Z");
        assert_eq!(utc(&five.next_runs(from, 1)), ["2026-01-01T09:00:00+00:00"]);
        assert_eq!(utc(&six.next_runs(from, 1)), ["2026-01-01T09:00:30+00:00"]);
        assert!(parse_cron("@daily").is_ok());
    }

    #[test]
    fn bad_expressions_and_zones_are_refused_with_the_reason() {
        for bad in ["", "* * *", "61 * * * *", "* * * * * * * *", "every day"] {
            let err = parse_cron(bad).unwrap_err();
            assert!(err.contains("cron expression"), "{bad:?}: {err}");
        }
        assert!(
            parse_tz("Mars/Olympus")
                .unwrap_err()
                .contains("unknown time zone")
        );
        assert!(validate_schedule_name("a b").is_err());
        assert!(validate_schedule_name("a:b").is_err());
    }

    #[test]
    fn seoul_has_no_daylight_saving() {
        let s = schedule("0 9 * * *", "Asia/Seoul", 0, 0);
        // 09:00 KST is 00:00 UTC, all year.
        let runs = s.next_runs(utc_ms("2026-03-07T12:00:00Z"), 3);
        assert_eq!(
            utc(&runs),
            [
                "2026-03-08T00:00:00+00:00",
                "2026-03-09T00:00:00+00:00",
                "2026-03-10T00:00:00+00:00",
            ]
        );
        let summer = s.next_runs(utc_ms("2026-07-01T12:00:00Z"), 1);
        assert_eq!(utc(&summer), ["2026-07-02T00:00:00+00:00"]);
    }

    #[test]
    fn new_york_spring_forward_skips_the_missing_local_time() {
        // 2026-03-08: clocks go from 02:00 EST to 03:00 EDT, so 02:30 does not exist that day
        // and the schedule does not run; the days around it run at 02:30 local.
        let s = schedule("30 2 * * *", "America/New_York", 0, 0);
        let runs = s.next_runs(utc_ms("2026-03-07T00:00:00Z"), 3);
        assert_eq!(
            utc(&runs),
            [
                "2026-03-07T07:30:00+00:00", // 02:30 EST
                "2026-03-09T06:30:00+00:00", // 02:30 EDT
                "2026-03-10T06:30:00+00:00",
            ]
        );
    }

    #[test]
    fn new_york_fall_back_runs_the_repeated_local_time_twice() {
        // 2026-11-01: clocks go from 02:00 EDT back to 01:00 EST, so 01:30 happens twice; the
        // cron crate yields both instants.
        let s = schedule("30 1 * * *", "America/New_York", 0, 0);
        let runs = s.next_runs(utc_ms("2026-10-31T12:00:00Z"), 3);
        assert_eq!(
            utc(&runs),
            [
                "2026-11-01T05:30:00+00:00", // 01:30 EDT
                "2026-11-01T06:30:00+00:00", // 01:30 EST
                "2026-11-02T06:30:00+00:00",
            ]
        );
    }

    #[test]
    fn on_time_ticks_are_planned_once_and_the_last_tick_moves_past_them() {
        let s = schedule("* * * * * *", "UTC", 0, 10_000);
        let plan = s.plan(12_500);
        assert_eq!(plan.enqueue, [11_000, 12_000]);
        assert_eq!(plan.advance_to, Some(12_000));
        let s = schedule("* * * * * *", "UTC", 0, 12_000);
        assert_eq!(s.plan(12_900), Plan::default());
        // A tick at exactly now is due.
        assert_eq!(s.plan(13_000).enqueue, [13_000]);
    }

    #[test]
    fn missed_ticks_are_skipped_or_the_most_recent_n_caught_up() {
        let hour = 3_600_000;
        let now = utc_ms("2026-05-01T12:30:00Z");
        let long_ago = now - 24 * hour;
        let skip = schedule("0 0 * * * *", "UTC", 0, long_ago);
        let plan = skip.plan(now);
        assert!(plan.enqueue.is_empty());
        assert_eq!(plan.advance_to, Some(utc_ms("2026-05-01T12:00:00Z")));
        let catch_up = schedule("0 0 * * * *", "UTC", 2, long_ago);
        assert_eq!(
            catch_up.plan(now).enqueue,
            [
                utc_ms("2026-05-01T11:00:00Z"),
                utc_ms("2026-05-01T12:00:00Z")
            ]
        );
    }

    #[test]
    fn paused_schedules_plan_nothing_and_resuming_does_not_flood() {
        let mut s = schedule("* * * * * *", "UTC", 0, 1_000);
        s.paused = true;
        assert_eq!(s.plan(100_000), Plan::default());
        s.paused = false;
        // Resumed at 99.5 s: the ticks before it fell while paused.
        s.resumed_at_ms = Some(99_500);
        let plan = s.plan(100_200);
        assert_eq!(plan.enqueue, [100_000]);
        assert_eq!(plan.advance_to, Some(100_000));
    }
}
