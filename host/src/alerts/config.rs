//! Alert settings and where they come from: `--alert-webhook` / `WASMQ_ALERT_WEBHOOK` and
//! `--alert-secret` / `WASMQ_ALERT_SECRET` over the `[alerts]` table of the run TOML over
//! defaults. Everything is checked here, before the host connects to anything, so a bad
//! setting stops `wasmq run` at once with a message naming it.

use std::time::Duration;

use serde::Deserialize;

use crate::worker::parse_duration;

/// Everything the alerts task needs.
#[derive(Clone)]
pub struct AlertsConfig {
    /// Where alerts are POSTed (`http://` or `https://`).
    pub webhook_url: hyper::Uri,
    /// The HMAC key of `X-Wasmq-Signature`.
    pub secret: Vec<u8>,
    /// Delivery attempts per alert before it is given up (logged and counted).
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles after each further one.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub backoff_cap: Duration,
    /// Longest an attempt may take, connect to response headers.
    pub timeout: Duration,
    /// An alert held this long by a host that does not touch it (the host died or hung) is
    /// taken over by another. Hosts touch what they hold every third of it.
    pub claim_after: Duration,
    pub backlog: BacklogConfig,
}

impl std::fmt::Debug for AlertsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertsConfig")
            .field("webhook_url", &redacted_webhook(&self.webhook_url))
            .field("secret", &"<redacted>")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("backoff_cap", &self.backoff_cap)
            .field("timeout", &self.timeout)
            .field("claim_after", &self.claim_after)
            .field("backlog", &self.backlog)
            .finish()
    }
}

/// The webhook URL as logs may show it: scheme, host and port. A webhook's user, password,
/// path and query often hold its credentials (`https://hooks.example/services/T0/B0/XXXX`),
/// so they are left out.
pub fn redacted_webhook(url: &hyper::Uri) -> String {
    let scheme = url.scheme_str().unwrap_or("http");
    let host = url.host().unwrap_or_default();
    let port = url.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
    let rest = match url.path_and_query().map(|pq| pq.as_str()) {
        None | Some("" | "/") => "",
        Some(_) => "/...",
    };
    format!("{scheme}://{host}{port}{rest}")
}

/// Backlog thresholds, for every queue the host serves; `None` turns a condition off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacklogConfig {
    /// Alert when this many jobs (or more) wait.
    pub waiting: Option<u64>,
    /// Alert when the longest-waiting job has waited this long (or longer).
    pub oldest_age: Option<Duration>,
    /// How often each queue is looked at.
    pub interval: Duration,
}

pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(60);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_CLAIM_AFTER: Duration = Duration::from_secs(60);
pub const DEFAULT_BACKLOG_INTERVAL: Duration = Duration::from_secs(5);

/// The `[alerts]` table of the run TOML, every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAlerts {
    pub webhook_url: Option<String>,
    /// The secret itself; prefer `secret_env`, which keeps it out of the file.
    pub secret: Option<String>,
    /// The name of an environment variable holding the secret.
    pub secret_env: Option<String>,
    pub max_attempts: Option<u32>,
    pub backoff: Option<String>,
    pub backoff_cap: Option<String>,
    pub timeout: Option<String>,
    pub claim_after: Option<String>,
    pub backlog: Option<FileBacklog>,
}

/// `[alerts.backlog]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBacklog {
    pub waiting: Option<u64>,
    pub oldest_age: Option<String>,
    pub interval: Option<String>,
}

impl AlertsConfig {
    /// Merges the webhook URL and secret from flags or environment (`url`, `secret`) over the
    /// file's `[alerts]`. `Ok(None)`: no webhook, no alerts. `env` looks up `secret_env`.
    pub fn resolve(
        url: Option<&str>,
        secret: Option<&str>,
        file: Option<&FileAlerts>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<AlertsConfig>, String> {
        let empty = FileAlerts::default();
        let file_given = file.is_some();
        let file = file.unwrap_or(&empty);
        let Some(url) = url.or(file.webhook_url.as_deref()) else {
            if file_given {
                return Err(
                    "alerts: [alerts] is set but has no webhook URL: give webhook_url, \
                     --alert-webhook or WASMQ_ALERT_WEBHOOK"
                        .to_string(),
                );
            }
            return Ok(None);
        };
        let webhook_url = parse_url(url)?;
        if file.secret.is_some() && file.secret_env.is_some() {
            return Err("alerts: give secret or secret_env in [alerts], not both".to_string());
        }
        let secret = match (secret, &file.secret, &file.secret_env) {
            (Some(s), _, _) => s.to_string(),
            (None, Some(s), _) => s.clone(),
            (None, None, Some(var)) => env(var).ok_or_else(|| {
                format!("alerts: secret_env names {var}, which is not set in the environment")
            })?,
            (None, None, None) => {
                return Err(format!(
                    "alerts: webhook {} has no secret to sign alerts with: set \
                     WASMQ_ALERT_SECRET (or --alert-secret, or secret_env / secret in \
                     [alerts]); wasmq sends no unsigned alerts",
                    redacted_webhook(&webhook_url)
                ));
            }
        };
        if secret.is_empty() {
            return Err("alerts: the webhook secret is empty".to_string());
        }
        let duration = |text: &Option<String>, what: &str, default: Duration| {
            text.as_deref().map_or(Ok(default), |t| {
                parse_duration(&format!("alerts.{what}"), t)
            })
        };
        let max_attempts = file.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if !(1..=100).contains(&max_attempts) {
            return Err(format!(
                "alerts.max_attempts must be in 1..=100, not {max_attempts}"
            ));
        }
        let backoff = duration(&file.backoff, "backoff", DEFAULT_BACKOFF)?;
        let backoff_cap = duration(&file.backoff_cap, "backoff_cap", DEFAULT_BACKOFF_CAP)?;
        if backoff_cap < backoff {
            return Err(format!(
                "alerts.backoff_cap ({}) must not be below alerts.backoff ({})",
                humantime::format_duration(backoff_cap),
                humantime::format_duration(backoff)
            ));
        }
        let timeout = duration(&file.timeout, "timeout", DEFAULT_TIMEOUT)?;
        if timeout.is_zero() {
            return Err("alerts.timeout must be above zero".to_string());
        }
        let claim_after = duration(&file.claim_after, "claim_after", DEFAULT_CLAIM_AFTER)?;
        if claim_after < Duration::from_secs(1) {
            return Err("alerts.claim_after must be at least 1s".to_string());
        }
        let b = file.backlog.as_ref();
        let oldest_age = b
            .and_then(|b| b.oldest_age.as_deref())
            .map(|t| parse_duration("alerts.backlog.oldest_age", t))
            .transpose()?;
        let interval = duration(
            &b.and_then(|b| b.interval.clone()),
            "backlog.interval",
            DEFAULT_BACKLOG_INTERVAL,
        )?;
        let waiting = b.and_then(|b| b.waiting);
        if waiting == Some(0) {
            return Err("alerts.backlog.waiting must be at least 1".to_string());
        }
        if oldest_age.is_some_and(|d| d.is_zero()) {
            return Err("alerts.backlog.oldest_age must be above zero".to_string());
        }
        if interval < Duration::from_millis(100) {
            return Err("alerts.backlog.interval must be at least 100ms".to_string());
        }
        Ok(Some(AlertsConfig {
            webhook_url,
            secret: secret.into_bytes(),
            max_attempts,
            backoff,
            backoff_cap,
            timeout,
            claim_after,
            backlog: BacklogConfig {
                waiting,
                oldest_age,
                interval,
            },
        }))
    }
}

/// An absolute `http://` or `https://` URL with a host. Any host: operators choose where their
/// alerts go. The errors do not repeat the URL, which may hold credentials.
fn parse_url(text: &str) -> Result<hyper::Uri, String> {
    let bad = |why: &str| format!("alerts: the webhook URL {why}");
    let uri: hyper::Uri = text
        .parse()
        .map_err(|e| bad(&format!("does not parse: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn file(toml_text: &str) -> FileAlerts {
        toml::from_str(toml_text).unwrap()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn no_webhook_means_no_alerts() {
        assert!(
            AlertsConfig::resolve(None, Some("s"), None, no_env)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let f = file(
            r#"
            webhook_url = "http://file.example/hook"
            secret = "from-file"
            backoff = "250ms"
            [backlog]
            waiting = 100
            oldest_age = "5m"
            "#,
        );
        let c = AlertsConfig::resolve(Some("https://flag.example/h"), None, Some(&f), no_env)
            .unwrap()
            .unwrap();
        assert_eq!(c.webhook_url.to_string(), "https://flag.example/h");
        assert_eq!(c.secret, b"from-file");
        assert_eq!(c.backoff, Duration::from_millis(250));
        assert_eq!(c.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.backlog.waiting, Some(100));
        assert_eq!(c.backlog.oldest_age, Some(Duration::from_secs(300)));
        assert_eq!(c.backlog.interval, DEFAULT_BACKLOG_INTERVAL);
        let env = |name: &str| (name == "HOOK_KEY").then(|| "from-env".to_string());
        let f = file("webhook_url = \"http://127.0.0.1:9/h\"\nsecret_env = \"HOOK_KEY\"");
        let c = AlertsConfig::resolve(None, None, Some(&f), env)
            .unwrap()
            .unwrap();
        assert_eq!(c.secret, b"from-env");
        // Debug output never shows the secret.
        assert!(!format!("{c:?}").contains("from-env"));
    }

    #[test]
    fn bad_settings_are_refused_with_a_message_naming_them() {
        let url = Some("http://127.0.0.1:9/h");
        let cases: &[(Option<&str>, Option<&str>, &str, &str)] = &[
            (url, None, "", "no secret"),
            (url, Some(""), "", "secret is empty"),
            (Some("ftp://x/h"), Some("s"), "", "http:// or https://"),
            (Some("not a url"), Some("s"), "", "does not parse"),
            (Some("/relative"), Some("s"), "", "http:// or https://"),
            (url, Some("s"), "backoff = \"soon\"", "alerts.backoff"),
            (url, Some("s"), "timeout = \"0s\"", "alerts.timeout"),
            (url, Some("s"), "max_attempts = 0", "alerts.max_attempts"),
            (
                url,
                Some("s"),
                "claim_after = \"10ms\"",
                "alerts.claim_after",
            ),
            (url, Some("s"), "backoff = \"2m\"", "backoff_cap"),
            (None, None, "secret = \"s\"", "no webhook URL"),
            (url, None, "secret_env = \"UNSET_VAR\"", "UNSET_VAR"),
            (url, None, "secret = \"a\"\nsecret_env = \"B\"", "not both"),
            (url, Some("s"), "[backlog]\nwaiting = 0", "backlog.waiting"),
            (
                url,
                Some("s"),
                "[backlog]\ninterval = \"1ms\"",
                "backlog.interval",
            ),
        ];
        for (url, secret, toml_text, expected) in cases {
            let f = file(toml_text);
            let err = AlertsConfig::resolve(*url, *secret, Some(&f), no_env).unwrap_err();
            assert!(err.contains(expected), "{toml_text:?}: {err}");
        }
        assert!(toml::from_str::<FileAlerts>("webhook = \"x\"").is_err());
    }
}
