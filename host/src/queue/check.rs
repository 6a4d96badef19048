//! `queue check`: what is out of step in a queue's keys, and the repair (`check.lua`).
//!
//! 1. The queue keys' types (`keys` part): reported only.
//! 2. Every id in every state set and group waiting set (`ZSCAN`), then every job key
//!    (`SCAN wasmq:{q}:job:*`), in batches of [`CHECK_BATCH`]: each job against every set
//!    (`jobs` part): dangling ids, malformed jobs, jobs in no set, in the wrong one or in two.
//! 3. The groups (`groups` part): `groups` against the groups' waiting sets.
//!
//! Each batch is one atomic call, so a job seen while hosts move it is judged on one consistent
//! view; a repair is idempotent, so a check that stops half-way (or runs twice, or beside
//! another) leaves nothing worse. [`Client::check_active`] is the cheap part a host runs on
//! its own: the ids in `active` only, which is where a host that lost a script call mid-way
//! would have left a job.

use std::collections::{BTreeSet, HashSet};

use redis::Value;
use serde::Serialize;

use super::client::Client;
use super::error::Result;
use super::job::JobState;
use super::keys::QueueKeys;
use super::reply::Reply;
use super::scripts::{Call, SCRIPTS};

/// Most ids (or groups) one `check.lua` call looks at: bounded, so a check never blocks Redis
/// for long, whatever the size of the queue.
pub const CHECK_BATCH: usize = 500;

/// One inconsistency found by [`Client::check`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Finding {
    /// `dangling`, `malformed`, `in_no_set`, `contradicts_set`, `in_two_sets`,
    /// `group_not_listed`, `group_listed_empty` or `wrong_type` (docs/protocol.md, check.lua).
    pub kind: String,
    /// The job id, group or key it is about.
    pub subject: String,
    pub detail: String,
    /// Whether it was repaired (only with `repair`; `wrong_type` never is).
    pub repaired: bool,
}

/// What [`Client::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub queue: String,
    /// Ids and job keys looked at (an id in a set and its key count once each).
    pub checked: u64,
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// Findings that are still there: all of them without repair, `wrong_type` with it.
    pub fn unrepaired(&self) -> usize {
        self.findings.iter().filter(|f| !f.repaired).count()
    }
}

impl Client {
    /// Checks every key of `queue` and, with `repair`, puts each inconsistency right: a
    /// dangling id leaves its set, a malformed job goes to the dead-letter queue (outcome
    /// `malformed`), a job goes back into the set its state names. In bounded batches, while
    /// hosts run; safe to repeat.
    pub async fn check(&self, queue: &str, repair: bool) -> Result<CheckReport> {
        let keys = QueueKeys::new(queue)?;
        let mut report = CheckReport {
            queue: queue.to_string(),
            ..CheckReport::default()
        };
        let mut seen = HashSet::new();
        let findings = self.check_part(&keys, repair, "keys", &[]).await?;
        record(&mut report, &mut seen, findings);

        for state in JobState::ALL {
            self.check_set(
                &keys,
                repair,
                &keys.state(state),
                b"",
                &mut report,
                &mut seen,
            )
            .await?;
        }

        let mut groups: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut conn = self.conn.clone();
        let listed: Vec<Vec<u8>> = redis::cmd("ZRANGE")
            .arg(keys.groups())
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        groups.extend(listed.into_iter().filter(|g| !g.is_empty()));
        let prefix = keys.group_prefix();
        let (found, _) = conn
            .scan(&format!("{prefix}*:waiting"), 1000, usize::MAX)
            .await?;
        for key in found {
            if let Some(group) = key
                .strip_prefix(prefix.as_bytes())
                .and_then(|rest| rest.strip_suffix(b":waiting"))
                .filter(|group| !group.is_empty())
            {
                groups.insert(group.to_vec());
            }
        }
        for group in &groups {
            let mut set = prefix.clone().into_bytes();
            set.extend_from_slice(group);
            set.extend_from_slice(b":waiting");
            self.check_set(&keys, repair, &set, group, &mut report, &mut seen)
                .await?;
        }
        let groups: Vec<Vec<u8>> = groups.into_iter().collect();
        for chunk in groups.chunks(CHECK_BATCH) {
            let findings = self.check_part(&keys, repair, "groups", chunk).await?;
            record(&mut report, &mut seen, findings);
        }

        let job_prefix = keys.job_prefix();
        let (found, _) = conn
            .scan(&format!("{job_prefix}*"), 1000, usize::MAX)
            .await?;
        let ids: Vec<Vec<u8>> = found
            .into_iter()
            .filter_map(|key| Some(key.strip_prefix(job_prefix.as_bytes())?.to_vec()))
            .collect();
        for chunk in ids.chunks(CHECK_BATCH) {
            let findings = self.check_jobs(&keys, repair, b"", chunk).await?;
            report.checked += chunk.len() as u64;
            record(&mut report, &mut seen, findings);
        }
        Ok(report)
    }

    /// The cheap part of [`Client::check`], which hosts run on their own: the jobs whose ids
    /// are in `active` (at most `limit`, soonest lease expiry first), repaired, in one call
    /// that decodes no history. `checked` is the limit, not the number of ids found.
    pub async fn check_active(&self, queue: &str, limit: usize) -> Result<CheckReport> {
        let keys = QueueKeys::new(queue)?;
        let limit = limit.clamp(1, CHECK_BATCH);
        let findings = self
            .check_part(&keys, true, "active", &[limit.to_string().into_bytes()])
            .await?;
        Ok(CheckReport {
            queue: queue.to_string(),
            checked: limit as u64,
            findings,
        })
    }

    /// Checks the ids of one sorted set (`group`: the group whose waiting set it is, or empty).
    async fn check_set(
        &self,
        keys: &QueueKeys,
        repair: bool,
        set: impl redis::ToRedisArgs + Copy,
        group: &[u8],
        report: &mut CheckReport,
        seen: &mut HashSet<Finding>,
    ) -> Result<()> {
        let mut conn = self.conn.clone();
        let mut cursor = 0u64;
        loop {
            // A set of another type is the `keys` part's finding; its ids cannot be read.
            let Ok((next, page)): redis::RedisResult<(u64, Vec<Vec<u8>>)> = redis::cmd("ZSCAN")
                .arg(set)
                .arg(cursor)
                .arg("COUNT")
                .arg(CHECK_BATCH)
                .query_async(&mut conn)
                .await
            else {
                return Ok(());
            };
            // ZSCAN answers member, score, member, score...
            let ids: Vec<Vec<u8>> = page.into_iter().step_by(2).collect();
            for chunk in ids.chunks(CHECK_BATCH) {
                let findings = self.check_jobs(keys, repair, group, chunk).await?;
                report.checked += chunk.len() as u64;
                record(report, seen, findings);
            }
            cursor = next;
            if cursor == 0 {
                return Ok(());
            }
        }
    }

    async fn check_jobs(
        &self,
        keys: &QueueKeys,
        repair: bool,
        group: &[u8],
        ids: &[Vec<u8>],
    ) -> Result<Vec<Finding>> {
        let mut args = Vec::with_capacity(ids.len() + 1);
        args.push(group.to_vec());
        args.extend(ids.iter().cloned());
        self.check_part(keys, repair, "jobs", &args).await
    }

    async fn check_part(
        &self,
        keys: &QueueKeys,
        repair: bool,
        part: &str,
        args: &[Vec<u8>],
    ) -> Result<Vec<Finding>> {
        let mut invocation = Call::on(&SCRIPTS.check, keys);
        invocation.arg(if repair { "1" } else { "0" }).arg(part);
        for arg in args {
            invocation.arg(arg.as_slice());
        }
        let reply = Reply::of("check");
        reply
            .array(self.invoke(&invocation).await?)?
            .into_iter()
            .map(|item| finding(&reply, item))
            .collect()
    }
}

fn finding(reply: &Reply, item: Value) -> Result<Finding> {
    let [kind, subject, detail, repaired] = reply.tuple(item)?;
    let text = |value| -> Result<String> {
        Ok(String::from_utf8_lossy(&reply.bytes(value)?).into_owned())
    };
    Ok(Finding {
        kind: reply.string(kind)?,
        subject: text(subject)?,
        detail: text(detail)?,
        repaired: reply.int(repaired)? == 1,
    })
}

/// Adds the findings not reported yet: a job is looked at from each set that holds it and
/// from its key.
fn record(report: &mut CheckReport, seen: &mut HashSet<Finding>, findings: Vec<Finding>) {
    for finding in findings {
        if seen.insert(finding.clone()) {
            report.findings.push(finding);
        }
    }
}
