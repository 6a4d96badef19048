//! What an alert says and how it is signed: the JSON bodies (`job.dead`, `job.dead.digest`,
//! `queue.backlog`, `queue.backlog_resolved`), the signature header, and the delay between
//! delivery attempts. `render.rs` turns the same alert into a Slack message or an e-mail.
//! Pure: no I/O, no clock (times are passed in). `docs/alerts.md` is the written contract.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::queue::{DeadJob, system_time};

/// One alert, ready to send: its body is serialised once, so every delivery attempt signs and
/// sends the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Stable across redeliveries of the same alert: receivers dedupe on it.
    pub id: String,
    /// `job.dead`, `job.dead.digest`, `queue.backlog` or `queue.backlog_resolved`.
    pub kind: &'static str,
    /// The queue, or for a digest the queues it covers, comma-separated.
    pub queue: String,
    /// The JSON body (`format = "json"`).
    pub body: Vec<u8>,
    /// What the body says, for the other renderings.
    pub detail: Detail,
}

/// What an alert is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    Dead {
        job_id: String,
        attempt: u32,
        job: DeadJob,
        at_ms: u64,
    },
    Backlog {
        resolved: bool,
        reading: BacklogReading,
    },
    Digest(Digest),
}

/// Dead jobs grouped into one alert: how many per queue, handler and outcome, with the first
/// few job ids of each group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digest {
    /// The window the jobs were dead-lettered (and read) in, Redis-time ms.
    pub since_ms: u64,
    pub until_ms: u64,
    pub groups: Vec<DigestGroup>,
}

/// One group of a [`Digest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestGroup {
    pub queue: String,
    pub handler: Option<String>,
    pub outcome: Option<String>,
    pub count: u64,
    /// The first [`DIGEST_JOB_IDS`] job ids of the group.
    pub job_ids: Vec<String>,
}

/// Job ids a digest names per group.
pub const DIGEST_JOB_IDS: usize = 5;

impl Digest {
    /// Counts one dead job in.
    pub fn add(&mut self, queue: &str, job_id: &str, job: &DeadJob) {
        let group =
            match self.groups.iter_mut().find(|g| {
                g.queue == queue && g.handler == job.handler && g.outcome == job.last_outcome
            }) {
                Some(group) => group,
                None => {
                    self.groups.push(DigestGroup {
                        queue: queue.to_string(),
                        handler: job.handler.clone(),
                        outcome: job.last_outcome.clone(),
                        ..DigestGroup::default()
                    });
                    let last = self.groups.len() - 1;
                    &mut self.groups[last]
                }
            };
        group.count += 1;
        if group.job_ids.len() < DIGEST_JOB_IDS {
            group.job_ids.push(job_id.to_string());
        }
    }

    /// Dead jobs counted in.
    pub fn total(&self) -> u64 {
        self.groups.iter().map(|g| g.count).sum()
    }
}

/// The RFC 3339 (UTC, milliseconds) form of a Redis timestamp.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(system_time(ms)).to_string()
}

/// The milliseconds part of a stream entry id (`<ms>-<seq>`): when Redis added the entry.
pub fn stream_id_ms(stream_id: &str) -> u64 {
    stream_id
        .split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

impl Alert {
    /// A job was dead-lettered: the `dead` entry `stream_id` of `queue`'s events stream
    /// names it with the attempt that failed last. `job` holds what its hash still says.
    pub fn dead(queue: &str, stream_id: &str, job_id: &str, attempt: u32, job: &DeadJob) -> Alert {
        let id = format!("{queue}/{stream_id}/{job_id}");
        let body = json!({
            "id": id,
            "type": "job.dead",
            "queue": queue,
            "job_id": job_id,
            "attempt": attempt,
            "max_attempts": job.max_attempts,
            "handler": job.handler,
            "error": job.last_error,
            "outcome": job.last_outcome,
            "at": rfc3339(stream_id_ms(stream_id)),
        });
        Alert {
            id,
            kind: "job.dead",
            queue: queue.to_string(),
            body: body.to_string().into_bytes(),
            detail: Detail::Dead {
                job_id: job_id.to_string(),
                attempt,
                job: job.clone(),
                at_ms: stream_id_ms(stream_id),
            },
        }
    }

    /// Dead jobs grouped: `id` names the host and the window, so a redelivery of the same
    /// digest keeps it (a digest claimed by another host after a crash gets a new one).
    pub fn digest(id: String, mut digest: Digest) -> Alert {
        digest.groups.sort_by(|a, b| {
            b.count.cmp(&a.count).then_with(|| {
                (&a.queue, &a.handler, &a.outcome).cmp(&(&b.queue, &b.handler, &b.outcome))
            })
        });
        let mut queues: Vec<&str> = digest.groups.iter().map(|g| g.queue.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        let body = json!({
            "id": id,
            "type": "job.dead.digest",
            "count": digest.total(),
            "since": rfc3339(digest.since_ms),
            "until": rfc3339(digest.until_ms),
            "groups": digest.groups.iter().map(|g| json!({
                "queue": g.queue,
                "handler": g.handler,
                "outcome": g.outcome,
                "count": g.count,
                "job_ids": g.job_ids,
            })).collect::<Vec<_>>(),
        });
        Alert {
            id,
            kind: "job.dead.digest",
            queue: queues.join(","),
            body: body.to_string().into_bytes(),
            detail: Detail::Digest(digest),
        }
    }

    /// A backlog `condition` started (`resolved: false`, at `since_ms`) or ended
    /// (`resolved: true`, at `now_ms`, having held since `since_ms`) on `queue`.
    pub fn backlog(queue: &str, resolved: bool, reading: &BacklogReading) -> Alert {
        let kind = if resolved {
            "queue.backlog_resolved"
        } else {
            "queue.backlog"
        };
        let id = format!(
            "{queue}/{}/{}/{}",
            kind.trim_start_matches("queue."),
            reading.condition,
            reading.since_ms
        );
        let body = json!({
            "id": id,
            "type": kind,
            "queue": queue,
            "condition": reading.condition,
            "value": reading.value,
            "threshold": reading.threshold,
            "waiting": reading.waiting,
            "oldest_age_ms": reading.oldest_age_ms,
            "paused": reading.paused,
            "since": rfc3339(reading.since_ms),
            "at": rfc3339(reading.now_ms),
        });
        Alert {
            id,
            kind,
            queue: queue.to_string(),
            body: body.to_string().into_bytes(),
            detail: Detail::Backlog {
                resolved,
                reading: reading.clone(),
            },
        }
    }
}

/// What a backlog alert reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacklogReading {
    /// `waiting` or `oldest_age`.
    pub condition: &'static str,
    /// The measure of the condition (jobs, or ms) and its threshold, in the same unit.
    pub value: u64,
    pub threshold: u64,
    pub waiting: u64,
    pub oldest_age_ms: u64,
    pub paused: bool,
    /// When the condition started to hold.
    pub since_ms: u64,
    /// Redis time of the reading.
    pub now_ms: u64,
}

/// `X-Wasmq-Signature`: `sha256=` and the lowercase hex HMAC-SHA256, keyed with the secret, of
/// the timestamp (decimal Unix seconds, as sent in `X-Wasmq-Timestamp`), a `.`, and the body.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    use std::fmt::Write as _;
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .fold(String::from("sha256="), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The wait after failed delivery attempt `n` (1-based): `base * 2^(n-1)`, at most `cap`, then
/// spread by up to ±20% (`u` uniform in [0, 1)) so that hosts retrying together drift apart.
pub fn retry_delay(n: u32, base: Duration, cap: Duration, u: f64) -> Duration {
    let doubled = base.saturating_mul(1u32 << n.saturating_sub(1).min(20));
    let d = doubled.min(cap).as_secs_f64() * (1.0 + 0.2 * (2.0 * u.clamp(0.0, 1.0) - 1.0));
    Duration::from_secs_f64(d.max(0.0)).min(cap)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_dead_alert_carries_the_job_and_a_stable_id() {
        let job = DeadJob {
            handler: Some("fail".into()),
            last_error: Some("permanent failure".into()),
            last_outcome: Some("guest_fail".into()),
            max_attempts: Some(3),
        };
        let alert = Alert::dead("emails", "1700000000123-0", "j1", 3, &job);
        assert_eq!(alert.id, "emails/1700000000123-0/j1");
        let body: serde_json::Value = serde_json::from_slice(&alert.body).unwrap();
        assert_eq!(body["type"], "job.dead");
        assert_eq!(body["id"], alert.id.as_str());
        assert_eq!(body["queue"], "emails");
        assert_eq!(body["job_id"], "j1");
        assert_eq!(body["attempt"], 3);
        assert_eq!(body["handler"], "fail");
        assert_eq!(body["error"], "permanent failure");
        assert_eq!(body["at"], "2023-11-14T22:13:20.123Z");
        // Fields the hash no longer has are null, not missing.
        let purged = Alert::dead("emails", "1-0", "j2", 1, &DeadJob::default());
        let body: serde_json::Value = serde_json::from_slice(&purged.body).unwrap();
        assert!(body["handler"].is_null() && body.get("handler").is_some());
    }

    #[test]
    fn backlog_alerts_name_their_condition_and_transition() {
        let reading = BacklogReading {
            condition: "waiting",
            value: 120,
            threshold: 100,
            waiting: 120,
            oldest_age_ms: 5000,
            paused: false,
            since_ms: 1_700_000_000_000,
            now_ms: 1_700_000_000_000,
        };
        let raised = Alert::backlog("q", false, &reading);
        let resolved = Alert::backlog("q", true, &reading);
        assert_eq!(raised.kind, "queue.backlog");
        assert_eq!(resolved.kind, "queue.backlog_resolved");
        assert_ne!(raised.id, resolved.id);
        let body: serde_json::Value = serde_json::from_slice(&raised.body).unwrap();
        assert_eq!(body["condition"], "waiting");
        assert_eq!(body["value"], 120);
        assert_eq!(body["threshold"], 100);
    }

    #[test]
    fn the_signature_is_an_hmac_of_timestamp_dot_body() {
        // Computed independently: Python's hmac.new(b"whsec_test",
        // b'1700000000.{"type":"job.dead"}', hashlib.sha256).hexdigest().
        assert_eq!(
            signature(b"whsec_test", 1_700_000_000, br#"{"type":"job.dead"}"#),
            "sha256=dda21b12497f3049ea0fd2e9a31ce3da89ff5955e3c89b7cfa9bf18a83bb4c04"
        );
        assert_ne!(
            signature(b"other", 0, b"x"),
            signature(b"whsec_test", 0, b"x")
        );
        assert_ne!(
            signature(b"whsec_test", 1, b"x"),
            signature(b"whsec_test", 0, b"x")
        );
    }

    #[test]
    fn retry_delays_double_up_to_the_cap_within_the_jitter() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(10);
        assert_eq!(retry_delay(1, base, cap, 0.5), Duration::from_secs(1));
        assert_eq!(retry_delay(3, base, cap, 0.5), Duration::from_secs(4));
        assert_eq!(retry_delay(30, base, cap, 0.5), cap);
        assert_eq!(retry_delay(2, base, cap, 0.0), Duration::from_millis(1600));
        assert_eq!(retry_delay(2, base, cap, 1.0), Duration::from_millis(2400));
        assert!(retry_delay(30, base, cap, 1.0) <= cap);
    }
}
