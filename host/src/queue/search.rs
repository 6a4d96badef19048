//! Finding jobs ([`Client::search`]): one page of the jobs of a queue that match a
//! [`JobSearch`] (state, handler, group, id prefix, payload text, a time range), found by
//! `search.lua` walking the state sets from a cursor. A page examines at most
//! [`JobSearch::scan`] set entries, so its cost is bounded whatever the queue holds
//! (docs/protocol.md, "search.lua"); a search that matches rarely takes many pages.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::client::Client;
use super::error::{QueueError, Result};
use super::job::{Job, JobState, MAX_NAME_LEN, validate_handler_name};
use super::keys::QueueKeys;
use super::reply::Reply;
use super::scripts::{Call, SCRIPTS};

/// Set entries a page examines unless told otherwise.
pub const SEARCH_SCAN_DEFAULT: u32 = 1000;
/// Most set entries one page may examine: the bound on a page's Redis work.
pub const SEARCH_SCAN_MAX: u32 = 10_000;
/// Jobs a page returns unless told otherwise.
pub const SEARCH_LIMIT_DEFAULT: u32 = 50;
/// Most jobs one page may return.
pub const SEARCH_LIMIT_MAX: u32 = 1000;
/// Longest payload text a search looks for, in bytes.
pub const MAX_SEARCH_TEXT: usize = 1024;

/// Which time of a job a search's range applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeField {
    /// When the job was enqueued (`created_at`).
    #[default]
    Enqueued,
    /// When it completed or died (`finished_at`); a job not finished has none and does not
    /// match a range.
    Finished,
}

impl TimeField {
    fn field(self) -> &'static str {
        match self {
            TimeField::Enqueued => "created_at",
            TimeField::Finished => "finished_at",
        }
    }
}

impl std::str::FromStr for TimeField {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "enqueued" | "created_at" => Ok(TimeField::Enqueued),
            "finished" | "finished_at" => Ok(TimeField::Finished),
            other => Err(format!("time field {other:?} is not enqueued or finished")),
        }
    }
}

/// One end of a time range: a moment, or a span before Redis's clock at the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimePoint {
    /// Milliseconds since the Unix epoch.
    At(u64),
    /// This long before the call (Redis `TIME`, never the caller's clock).
    Ago(Duration),
}

impl std::str::FromStr for TimePoint {
    type Err = String;
    /// Milliseconds since the Unix epoch (`1767225600000`), an RFC 3339 time
    /// (`2026-12-07T09:00:00Z`), or a span before now (`90s`, `2h`, `1day`).
    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        if let Ok(ms) = text.parse::<u64>() {
            return Ok(TimePoint::At(ms));
        }
        if let Ok(at) = humantime::parse_rfc3339_weak(text) {
            let ms = at
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| format!("time {text:?} is before 1970"))?
                .as_millis();
            return Ok(TimePoint::At(u64::try_from(ms).unwrap_or(u64::MAX)));
        }
        match humantime::parse_duration(text) {
            Ok(span) if !span.is_zero() => Ok(TimePoint::Ago(span)),
            _ => Err(format!(
                "time {text:?} is not milliseconds since the epoch, an RFC 3339 time or a span \
                 before now (e.g. 2h)"
            )),
        }
    }
}

impl TimePoint {
    fn arg(self) -> Result<String> {
        match self {
            TimePoint::At(ms) => Ok(ms.to_string()),
            TimePoint::Ago(span) => {
                let ms = i64::try_from(span.as_millis())
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| {
                        QueueError::InvalidArgument(format!(
                            "a time span of {span:?} is out of range"
                        ))
                    })?;
                Ok((-ms).to_string())
            }
        }
    }
}

/// What to look for. Every filter given must match; none given lists every job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSearch {
    /// Only the jobs in this state (its set, and for waiting every group's set).
    pub state: Option<JobState>,
    pub handler: Option<String>,
    /// Only this group's jobs: of the waiting sets, only `g:<group>:waiting` is read.
    pub group: Option<String>,
    pub id_prefix: Option<String>,
    /// Bytes the payload contains (a plain substring, case-sensitive).
    pub text: Option<String>,
    /// The time `since` and `until` apply to.
    pub time: TimeField,
    /// At or after this time (inclusive).
    pub since: Option<TimePoint>,
    /// At or before this time (inclusive).
    pub until: Option<TimePoint>,
    /// Where the previous page ended ([`SearchPage::cursor`]); `None` starts the walk. A
    /// cursor goes with the filter it was made with.
    pub cursor: Option<String>,
    /// Most jobs to return, 1..=[`SEARCH_LIMIT_MAX`].
    pub limit: u32,
    /// Most set entries to examine, 1..=[`SEARCH_SCAN_MAX`].
    pub scan: u32,
}

impl Default for JobSearch {
    fn default() -> Self {
        JobSearch {
            state: None,
            handler: None,
            group: None,
            id_prefix: None,
            text: None,
            time: TimeField::Enqueued,
            since: None,
            until: None,
            cursor: None,
            limit: SEARCH_LIMIT_DEFAULT,
            scan: SEARCH_SCAN_DEFAULT,
        }
    }
}

/// A job whose key a search found but could not decode: missing, not a hash, or fields that
/// do not read (`wasmq queue check --repair` buries it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedMatch {
    pub id: String,
    pub reason: String,
}

/// One page of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    /// The matching jobs, in the walk's order.
    pub jobs: Vec<Job>,
    /// Matches that do not decode, in the walk's order among themselves.
    pub malformed: Vec<MalformedMatch>,
    /// Set entries this page examined (at most the search's `scan`).
    pub examined: u64,
    /// Where the next page starts; `None` when the walk is over.
    pub cursor: Option<String>,
}

/// `text` when it is 1 to 128 printable ASCII characters without spaces (what ids and groups
/// are made of), else why not.
fn check_word(what: &str, text: &str) -> Result<()> {
    let ok = !text.is_empty()
        && text.len() <= MAX_NAME_LEN
        && text.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(QueueError::InvalidArgument(format!(
            "{what} {text:?} must be 1 to {MAX_NAME_LEN} printable ASCII characters without spaces"
        )))
    }
}

impl JobSearch {
    fn validate(&self) -> Result<()> {
        if !(1..=SEARCH_LIMIT_MAX).contains(&self.limit) {
            return Err(QueueError::InvalidArgument(format!(
                "limit must be 1..={SEARCH_LIMIT_MAX}, not {}",
                self.limit
            )));
        }
        if !(1..=SEARCH_SCAN_MAX).contains(&self.scan) {
            return Err(QueueError::InvalidArgument(format!(
                "scan must be 1..={SEARCH_SCAN_MAX}, not {}",
                self.scan
            )));
        }
        if let Some(handler) = &self.handler {
            validate_handler_name(handler).map_err(QueueError::InvalidArgument)?;
        }
        if let Some(group) = &self.group {
            check_word("group", group)?;
        }
        if let Some(prefix) = &self.id_prefix {
            check_word("id prefix", prefix)?;
        }
        if let Some(text) = &self.text
            && (text.is_empty() || text.len() > MAX_SEARCH_TEXT)
        {
            return Err(QueueError::InvalidArgument(format!(
                "search text must be 1 to {MAX_SEARCH_TEXT} bytes"
            )));
        }
        Ok(())
    }
}

/// The cursor as callers see it: the script's (`<state> <score> <id>`, with spaces) in
/// URL-safe base64, one word for a URL or a shell.
fn encode_cursor(raw: &str) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(cursor: &str) -> Result<String> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|raw| !raw.is_empty())
        .ok_or_else(|| {
            QueueError::InvalidArgument(format!("cursor {cursor:?} is not one a search returned"))
        })
}

impl Client {
    /// One page of the jobs of `queue` that match `search`, from `search.cursor`.
    ///
    /// One call of `search.lua`, which examines at most `search.scan` set entries: reading
    /// each one's filtered fields (one `HMGET`) and each match whole (one `HGETALL`). A job
    /// that moves between sets while a walk goes on may be missed or seen twice
    /// (docs/protocol.md, "search.lua"); a walk over a queue at rest sees every job once.
    pub async fn search(&self, queue: &str, search: &JobSearch) -> Result<SearchPage> {
        let keys = QueueKeys::new(queue)?;
        search.validate()?;
        let cursor = match &search.cursor {
            Some(cursor) => decode_cursor(cursor)?,
            None => String::new(),
        };
        let time_arg = |point: Option<TimePoint>| point.map(TimePoint::arg).transpose();
        let mut call = Call::on(&SCRIPTS.search, &keys);
        call.arg(cursor)
            .arg(search.scan)
            .arg(search.limit)
            .arg(search.state.map_or("", |s| s.as_str()))
            .arg(search.handler.as_deref().unwrap_or(""))
            .arg(search.group.as_deref().unwrap_or(""))
            .arg(search.id_prefix.as_deref().unwrap_or(""))
            .arg(search.text.as_deref().unwrap_or(""))
            .arg(search.time.field())
            .arg(time_arg(search.since)?.unwrap_or_default())
            .arg(time_arg(search.until)?.unwrap_or_default());
        let reply = Reply::of("search");
        let [next, examined, found] = reply.tuple(self.invoke(&call).await?)?;
        let next = reply.string(next)?;
        let mut page = SearchPage {
            jobs: Vec::new(),
            malformed: Vec::new(),
            examined: reply.uint(examined)?,
            cursor: (!next.is_empty()).then(|| encode_cursor(&next)),
        };
        for item in reply.array(found)? {
            let [id, flat, expiry] = reply.tuple(item)?;
            let id = reply.string(id)?;
            let mut hash = HashMap::new();
            let mut fields = reply.array(flat)?.into_iter();
            while let (Some(field), Some(value)) = (fields.next(), fields.next()) {
                hash.insert(reply.string(field)?, reply.bytes(value)?);
            }
            if hash.is_empty() {
                page.malformed.push(MalformedMatch {
                    id,
                    reason: "its key is missing or not a hash".to_string(),
                });
                continue;
            }
            match Job::from_hash(queue, &id, hash) {
                Ok(mut job) => {
                    let expiry = reply.uint(expiry)?;
                    job.lease_expires_at_ms = (expiry > 0).then_some(expiry);
                    page.jobs.push(job);
                }
                Err(reason) => page.malformed.push(MalformedMatch { id, reason }),
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_cursor_is_one_url_safe_word_and_reads_back() {
        let raw = "group t/1 4398046511104 01J+X";
        let cursor = encode_cursor(raw);
        assert!(
            cursor
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(decode_cursor(&cursor).unwrap(), raw);
        assert!(decode_cursor("not base64!").is_err());
        assert!(decode_cursor("").is_err());
    }

    #[test]
    fn bad_filters_are_refused_before_redis() {
        let bad = [
            JobSearch {
                limit: 0,
                ..JobSearch::default()
            },
            JobSearch {
                scan: SEARCH_SCAN_MAX + 1,
                ..JobSearch::default()
            },
            JobSearch {
                group: Some("a b".into()),
                ..JobSearch::default()
            },
            JobSearch {
                text: Some(String::new()),
                ..JobSearch::default()
            },
            JobSearch {
                handler: Some(String::new()),
                ..JobSearch::default()
            },
        ];
        for search in bad {
            assert!(search.validate().is_err(), "{search:?}");
        }
        assert!(JobSearch::default().validate().is_ok());
    }

    #[test]
    fn a_time_point_reads_as_ms_rfc3339_or_a_span_before_now() {
        let at = |text: &str| text.parse::<TimePoint>();
        assert_eq!(at("1767225600000"), Ok(TimePoint::At(1_767_225_600_000)));
        assert_eq!(
            at("2026-01-01T00:00:00Z"),
            Ok(TimePoint::At(1_767_225_600_000))
        );
        assert_eq!(at("2h"), Ok(TimePoint::Ago(Duration::from_secs(7200))));
        assert!(at("0s").is_err());
        assert!(at("yesterday").is_err());
    }
}
