//! An alert as people read it: a Slack incoming-webhook message (`format = "slack"`) and an
//! e-mail's subject and plain-text body. Pure, like `payload.rs`; `docs/alerts.md` shows both.
//!
//! Everything a job, a guest or a user can influence (job ids, handler names, errors) is cut
//! to a bounded length and, in Slack, escaped for mrkdwn (`&`, `<`, `>`), so an error text
//! cannot forge a link or a mention.

use serde_json::{Value, json};

use super::payload::{Alert, BacklogReading, Detail, Digest, rfc3339};
use crate::queue::DeadJob;

/// Most characters of a job's error shown in a Slack message or an e-mail.
pub const ERROR_CHARS: usize = 500;

/// Groups a digest lists one by one; the rest are summed up in a line.
const DIGEST_GROUPS_SHOWN: usize = 10;

/// Slack's limit on a header block's text.
const HEADER_CHARS: usize = 150;

/// `text` cut to at most `max` characters, with `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((end, _)) => {
            let keep = text[..end]
                .char_indices()
                .nth(max.saturating_sub(1))
                .map_or(end, |(i, _)| i);
            format!("{}…", &text[..keep])
        }
    }
}

/// Escapes the three characters Slack's mrkdwn gives a meaning to.
pub fn mrkdwn(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Percent-encodes everything but unreserved URL characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The dashboard page of a job (`docs/dashboard.md`), under `base` (ending in `/`).
pub fn job_link(base: &str, queue: &str, job_id: &str) -> String {
    format!("{base}#/queues/{}/jobs/{}", encode(queue), encode(job_id))
}

/// The dashboard page of a queue's dead-letter queue.
fn dlq_link(base: &str, queue: &str) -> String {
    format!("{base}#/queues/{}/dlq", encode(queue))
}

fn or_unknown(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("unknown")
}

fn attempts(attempt: u32, job: &DeadJob) -> String {
    match job.max_attempts {
        Some(max) => format!("{attempt} of {max}"),
        None => attempt.to_string(),
    }
}

/// A backlog alert's one-line summary.
fn backlog_line(queue: &str, resolved: bool, r: &BacklogReading) -> String {
    let measure = |v: u64| match r.condition {
        "oldest_age" => humantime::format_duration(std::time::Duration::from_millis(v)).to_string(),
        _ => v.to_string(),
    };
    let what = match r.condition {
        "oldest_age" => "oldest waiting job's age",
        _ => "waiting jobs",
    };
    if resolved {
        format!(
            "backlog resolved on queue {queue}: {what} {} (threshold {})",
            measure(r.value),
            measure(r.threshold)
        )
    } else {
        format!(
            "backlog on queue {queue}: {what} {} reached the threshold {}{}",
            measure(r.value),
            measure(r.threshold),
            if r.paused {
                " (the queue is paused)"
            } else {
                ""
            }
        )
    }
}

fn mrkdwn_field(label: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": format!("*{label}*\n{}", mrkdwn(&cut(value, 200)))})
}

/// The Slack incoming-webhook message for `alert`: `text` (the notification's fallback) and
/// `blocks`. `dashboard` is the dashboard's base URL, ending in `/`.
pub fn slack(alert: &Alert, dashboard: Option<&str>) -> Value {
    match &alert.detail {
        Detail::Dead {
            job_id,
            attempt,
            job,
            at_ms,
        } => {
            let queue = &alert.queue;
            let text = format!(
                "Job {} dead in queue {} (handler {}, outcome {})",
                cut(job_id, 100),
                cut(queue, 100),
                cut(or_unknown(&job.handler), 100),
                or_unknown(&job.last_outcome)
            );
            let mut blocks = vec![
                json!({"type": "header", "text": {"type": "plain_text",
                    "text": cut(&format!("wasmq: job dead in {queue}"), HEADER_CHARS)}}),
                json!({"type": "section", "fields": [
                    mrkdwn_field("Queue", queue),
                    mrkdwn_field("Job", job_id),
                    mrkdwn_field("Handler", or_unknown(&job.handler)),
                    mrkdwn_field("Outcome", or_unknown(&job.last_outcome)),
                    mrkdwn_field("Attempts", &attempts(*attempt, job)),
                    mrkdwn_field("At", &rfc3339(*at_ms)),
                ]}),
            ];
            if let Some(error) = &job.last_error {
                blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
                    "text": format!("*Error*\n{}", mrkdwn(&cut(error, ERROR_CHARS)))}}));
            }
            if let Some(base) = dashboard {
                let link = job_link(base, queue, job_id);
                blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
                    "text": format!("<{link}|Open the job in the dashboard>")}]}));
            }
            json!({"text": mrkdwn(&text), "blocks": blocks})
        }
        Detail::Backlog { resolved, reading } => {
            let line = backlog_line(&alert.queue, *resolved, reading);
            let mut blocks = vec![json!({"type": "section", "text": {"type": "mrkdwn",
                "text": format!("*wasmq:* {}", mrkdwn(&line))}})];
            if let Some(base) = dashboard {
                blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
                    "text": format!("<{base}#/queues/{}|Open the queue in the dashboard>", encode(&alert.queue))}]}));
            }
            json!({"text": mrkdwn(&line), "blocks": blocks})
        }
        Detail::Digest(digest) => {
            let head = digest_head(digest);
            let lines = digest_lines(digest, dashboard, true);
            json!({
                "text": mrkdwn(&head),
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": cut(&format!("wasmq: {head}"), HEADER_CHARS)}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": cut(&lines.join("\n"), 2900)}},
                ],
            })
        }
    }
}

fn digest_head(digest: &Digest) -> String {
    let total = digest.total();
    let window = humantime::format_duration(std::time::Duration::from_millis(
        digest.until_ms.saturating_sub(digest.since_ms) / 1000 * 1000,
    ));
    format!(
        "{total} job{} dead-lettered in {window} (digest)",
        if total == 1 { "" } else { "s" }
    )
}

/// One line per group (Slack mrkdwn when `slack`, else plain text), the most frequent first.
fn digest_lines(digest: &Digest, dashboard: Option<&str>, slack: bool) -> Vec<String> {
    let esc = |t: &str| {
        if slack {
            mrkdwn(&cut(t, 100))
        } else {
            cut(t, 100)
        }
    };
    let mut lines: Vec<String> = digest
        .groups
        .iter()
        .take(DIGEST_GROUPS_SHOWN)
        .map(|g| {
            let ids: Vec<String> = g.job_ids.iter().map(|id| esc(id)).collect();
            let more = if g.count > g.job_ids.len() as u64 {
                ", …"
            } else {
                ""
            };
            let mut line = format!(
                "{} × queue {}, handler {}, outcome {}: {}{more}",
                g.count,
                esc(&g.queue),
                esc(or_unknown(&g.handler)),
                esc(or_unknown(&g.outcome)),
                ids.join(", ")
            );
            if let Some(base) = dashboard {
                let link = dlq_link(base, &g.queue);
                line.push_str(&if slack {
                    format!(" (<{link}|dead-letter queue>)")
                } else {
                    format!(" ({link})")
                });
            }
            line
        })
        .collect();
    let rest: u64 = digest
        .groups
        .iter()
        .skip(DIGEST_GROUPS_SHOWN)
        .map(|g| g.count)
        .sum();
    if rest > 0 {
        lines.push(format!(
            "and {rest} more in {} other groups",
            digest.groups.len() - DIGEST_GROUPS_SHOWN
        ));
    }
    lines
}

/// An e-mail's subject (after `prefix`) and plain-text body for `alert`.
pub fn email(alert: &Alert, prefix: &str, dashboard: Option<&str>) -> (String, String) {
    let one_line = |t: &str| cut(&t.replace(['\r', '\n'], " "), 200);
    let (subject, mut body) = match &alert.detail {
        Detail::Dead {
            job_id,
            attempt,
            job,
            at_ms,
        } => {
            let subject = format!(
                "job dead in {}: {} ({}, {})",
                alert.queue,
                job_id,
                or_unknown(&job.handler),
                or_unknown(&job.last_outcome)
            );
            let mut body = format!(
                "A job was dead-lettered.\n\nQueue:    {}\nJob:      {}\nHandler:  {}\nOutcome:  {}\nAttempts: {}\nAt:       {}\n",
                alert.queue,
                job_id,
                or_unknown(&job.handler),
                or_unknown(&job.last_outcome),
                attempts(*attempt, job),
                rfc3339(*at_ms),
            );
            if let Some(error) = &job.last_error {
                body.push_str(&format!("\nError:\n{}\n", cut(error, ERROR_CHARS)));
            }
            if let Some(base) = dashboard {
                body.push_str(&format!(
                    "\nDashboard: {}\n",
                    job_link(base, &alert.queue, job_id)
                ));
            }
            (subject, body)
        }
        Detail::Backlog { resolved, reading } => {
            let line = backlog_line(&alert.queue, *resolved, reading);
            let body = format!(
                "{line}.\n\nWaiting:    {}\nOldest age: {}\nSince:      {}\nAt:         {}\n",
                reading.waiting,
                humantime::format_duration(std::time::Duration::from_millis(reading.oldest_age_ms)),
                rfc3339(reading.since_ms),
                rfc3339(reading.now_ms),
            );
            (line, body)
        }
        Detail::Digest(digest) => {
            let head = digest_head(digest);
            let body = format!(
                "{head}, from {} to {}.\n\n{}\n",
                rfc3339(digest.since_ms),
                rfc3339(digest.until_ms),
                digest_lines(digest, dashboard, false).join("\n")
            );
            (head, body)
        }
    };
    body.push_str(&format!("\nAlert id: {}\n", alert.id));
    let subject = match prefix {
        "" => one_line(&subject),
        prefix => format!("{prefix} {}", one_line(&subject)),
    };
    (subject, body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::alerts::payload::DigestGroup;

    fn dead(error: &str) -> Alert {
        let job = DeadJob {
            handler: Some("send-email".into()),
            last_error: Some(error.into()),
            last_outcome: Some("fail".into()),
            max_attempts: Some(3),
        };
        Alert::dead("emails", "1700000000123-0", "j/1", 3, &job)
    }

    #[test]
    fn a_slack_message_has_the_job_an_escaped_error_and_a_dashboard_link() {
        let alert = dead("<!channel> a & b > c");
        let body = slack(&alert, Some("https://wasmq.example/"));
        assert!(body["text"].as_str().unwrap().contains("j/1"));
        let blocks = body["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "header");
        let fields: Vec<&str> = blocks[1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&"*Queue*\nemails"));
        assert!(fields.contains(&"*Handler*\nsend-email"));
        assert!(fields.contains(&"*Attempts*\n3 of 3"));
        assert_eq!(
            blocks[2]["text"]["text"],
            "*Error*\n&lt;!channel&gt; a &amp; b &gt; c"
        );
        assert_eq!(
            blocks[3]["elements"][0]["text"],
            "<https://wasmq.example/#/queues/emails/jobs/j%2F1|Open the job in the dashboard>"
        );
        // No dashboard configured: no link.
        let body = slack(&alert, None);
        assert_eq!(body["blocks"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let long = "é".repeat(ERROR_CHARS + 10);
        let cut_text = cut(&long, ERROR_CHARS);
        assert_eq!(cut_text.chars().count(), ERROR_CHARS);
        assert!(cut_text.ends_with('…'));
        assert_eq!(cut("short", 10), "short");
        let (_, body) = email(&dead(&long), "[wasmq]", None);
        assert!(body.contains(&cut_text));
    }

    #[test]
    fn backlog_and_digest_alerts_render_for_slack_and_email() {
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
        let backlog = Alert::backlog("q", false, &reading);
        let body = slack(&backlog, None);
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .contains("waiting jobs 120 reached the threshold 100")
        );
        let (subject, _) = email(&backlog, "[wasmq]", None);
        assert_eq!(
            subject,
            "[wasmq] backlog on queue q: waiting jobs 120 reached the threshold 100"
        );
        let digest = Digest {
            since_ms: 1_700_000_000_000,
            until_ms: 1_700_000_060_000,
            groups: vec![DigestGroup {
                queue: "q".into(),
                handler: Some("h".into()),
                outcome: Some("fail".into()),
                count: 998,
                job_ids: vec!["a".into(), "b".into()],
            }],
        };
        let alert = Alert::digest("digest/host/1".into(), digest);
        let body = slack(&alert, Some("https://d/"));
        assert_eq!(body["text"], "998 jobs dead-lettered in 1m (digest)");
        let text = body["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(
            text.starts_with("998 × queue q, handler h, outcome fail: a, b, …"),
            "{text}"
        );
        assert!(text.contains("<https://d/#/queues/q/dlq|dead-letter queue>"));
        let (subject, body) = email(&alert, "", None);
        assert_eq!(subject, "998 jobs dead-lettered in 1m (digest)");
        assert!(body.contains("Alert id: digest/host/1"));
    }
}
