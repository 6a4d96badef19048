//! Rate limits: how many jobs may start in any window of time, per queue or per group
//! (parsing, checking and the config-hash fields; `fetch.lua` enforces them in Redis), and a
//! handler's throttle, checked as a job starts ([`Client::throttle_start`], `throttle.lua`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::client::Client;
use super::error::Result;
use super::keys::QueueKeys;
use super::lease::LeaseRejection;
use super::reply::Reply;
use super::scripts::{Call, SCRIPTS};

/// Most starts one limit may allow per window. Each start in the window is one member of a
/// sorted set in Redis (about 100 bytes), so this bounds the memory of a queue's log, and of
/// each busy group's.
pub const MAX_RATE: u64 = 1_000_000;

/// At most `max` job starts in any window of length `window`, across every host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub max: u64,
    pub window: Duration,
}

impl RateLimit {
    /// A limit of `max` starts per `window`; `max` in 1..=[`MAX_RATE`], a window of at least
    /// 1 ms (whole milliseconds: Redis time has no finer grain here).
    pub fn new(max: u64, window: Duration) -> Result<RateLimit, String> {
        if !(1..=MAX_RATE).contains(&max) {
            return Err(format!(
                "a rate limit allows 1 to {MAX_RATE} starts per window, got {max}"
            ));
        }
        let ms = window.as_millis();
        if ms == 0 || ms > u128::from(u32::MAX) {
            return Err(format!(
                "a rate limit window must be 1 ms to ~49 days, got {window:?}"
            ));
        }
        Ok(RateLimit {
            max,
            window: Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)),
        })
    }

    pub fn window_ms(&self) -> u64 {
        u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX)
    }

    /// The limit stored as `<prefix>_max` and `<prefix>_window_ms` in the config hash, where
    /// 0 (or an absent field) means unlimited.
    pub fn from_fields(max: u64, window_ms: u64) -> Option<RateLimit> {
        (max > 0 && window_ms > 0).then(|| RateLimit {
            max,
            window: Duration::from_millis(window_ms),
        })
    }
}

/// `N/duration`, e.g. `100/1s`, `10/500ms`, `6000/1m`; `100/s` means `100/1s`.
impl FromStr for RateLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (max, window) = s
            .split_once('/')
            .ok_or_else(|| format!("rate {s:?} is not N/duration (e.g. 100/1s)"))?;
        let max: u64 = max
            .trim()
            .parse()
            .map_err(|_| format!("rate {s:?}: {max:?} is not a whole number"))?;
        let window = window.trim();
        let window = if window.starts_with(|c: char| c.is_ascii_alphabetic()) {
            humantime::parse_duration(&format!("1{window}"))
        } else {
            humantime::parse_duration(window)
        }
        .map_err(|err| format!("rate {s:?}: bad duration {window:?}: {err}"))?;
        RateLimit::new(max, window)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.max,
            humantime::format_duration(self.window)
        )
    }
}

/// Outcome of [`Client::throttle_start`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThrottleStart {
    /// The start is logged: run the job.
    Admitted,
    /// The handler's throttle is full for the job's key; it frees in this long.
    Wait(Duration),
    /// The lease does not hold the job.
    Rejected(LeaseRejection),
}

impl Client {
    /// Admits the start of a leased job under its handler's throttle (`limit` starts per
    /// window per key, the key being the job's group), logging it, or says how long until the
    /// throttle has room; the caller then gives the job back with [`Client::suspend`] and an
    /// empty field.
    pub async fn throttle_start(
        &self,
        queue: &str,
        id: &str,
        token: &str,
        handler: &str,
        limit: RateLimit,
    ) -> Result<ThrottleStart> {
        let keys = QueueKeys::new(queue)?;
        let mut invocation = Call::on(&SCRIPTS.throttle, &keys);
        invocation
            .arg(id)
            .arg(token)
            .arg(handler)
            .arg(limit.max)
            .arg(limit.window_ms());
        let reply = Reply::of("throttle");
        let [verdict, detail] = reply.tuple(self.invoke(&invocation).await?)?;
        Ok(match reply.int(verdict)? {
            1 => ThrottleStart::Admitted,
            0 => ThrottleStart::Wait(Duration::from_millis(reply.uint(detail)?)),
            _ => ThrottleStart::Rejected(LeaseRejection::parse(&reply.string(detail)?)),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_count_per_duration() {
        let ms = Duration::from_millis;
        for (text, max, window) in [
            ("100/1s", 100, ms(1000)),
            ("100/s", 100, ms(1000)),
            ("10/500ms", 10, ms(500)),
            ("6000/1m", 6000, ms(60_000)),
            (" 5 / 2s ", 5, ms(2000)),
        ] {
            assert_eq!(
                text.parse::<RateLimit>().unwrap(),
                RateLimit { max, window },
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_what_cannot_be_a_limit() {
        for text in [
            "100",
            "0/1s",
            "-1/1s",
            "1.5/1s",
            "10/0s",
            "10/abc",
            "10/1us",
            "2000000/1s",
        ] {
            assert!(text.parse::<RateLimit>().is_err(), "{text} should fail");
        }
    }

    #[test]
    fn displays_as_it_parses() {
        let limit: RateLimit = "50/1s".parse().unwrap();
        assert_eq!(limit.to_string(), "50/1s");
        assert_eq!(limit.to_string().parse::<RateLimit>().unwrap(), limit);
    }

    #[test]
    fn zero_fields_mean_unlimited() {
        assert_eq!(RateLimit::from_fields(0, 1000), None);
        assert_eq!(RateLimit::from_fields(10, 0), None);
        assert_eq!(
            RateLimit::from_fields(10, 1000),
            Some(RateLimit {
                max: 10,
                window: Duration::from_secs(1)
            })
        );
    }
}
