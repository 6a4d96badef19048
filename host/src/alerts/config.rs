//! Alert settings and where they come from: `--alert-webhook` / `WASMQ_ALERT_WEBHOOK`,
//! `--alert-secret` / `WASMQ_ALERT_SECRET`, `--alert-format` / `WASMQ_ALERT_FORMAT` and
//! `--alert-dashboard-url` / `WASMQ_ALERT_DASHBOARD_URL` over the `[alerts]` table of the run
//! TOML (with `[alerts.email]`, `[alerts.digest]`, `[alerts.backlog]`) over defaults.
//! Everything is checked here, before the host connects to anything, so a bad setting stops
//! `wasmq run` at once with a message naming it. The SMTP password is read here from a host
//! secret, never from the file, and is never shown (`Debug` redacts it).

use std::time::Duration;

use lettre::message::Mailbox;
use serde::Deserialize;

use crate::units::parse_duration;

/// Everything the alerts task needs.
#[derive(Clone)]
pub struct AlertsConfig {
    /// Where alerts are POSTed (`http://` or `https://`); `None`: no webhook.
    pub webhook_url: Option<hyper::Uri>,
    /// The HMAC key of `X-Wasmq-Signature`; required with the `json` format, optional with
    /// `slack` (whose receiver does not check it).
    pub secret: Option<Vec<u8>>,
    /// The webhook's body.
    pub format: Format,
    /// Where the dashboard is (`wasmq serve`'s `/`): Slack and e-mail alerts link a dead
    /// job's page under it.
    pub dashboard_url: Option<String>,
    /// E-mail alerts over SMTP; `None`: none.
    pub email: Option<EmailConfig>,
    /// Grouping of dead-job alerts beyond a number per window; `None`: every dead job gets
    /// its own alert.
    pub digest: Option<DigestConfig>,
    /// Delivery attempts per alert before it is given up (logged and counted).
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles after each further one.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub backoff_cap: Duration,
    /// Longest an attempt may take, connect to response headers (or the SMTP exchange).
    pub timeout: Duration,
    /// An alert held this long by a host that does not touch it (the host died or hung) is
    /// taken over by another. Hosts touch what they hold every third of it.
    pub claim_after: Duration,
    pub backlog: BacklogConfig,
}

impl std::fmt::Debug for AlertsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertsConfig")
            .field(
                "webhook_url",
                &self.webhook_url.as_ref().map(redacted_webhook),
            )
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("format", &self.format)
            .field("dashboard_url", &self.dashboard_url)
            .field("email", &self.email)
            .field("digest", &self.digest)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("backoff_cap", &self.backoff_cap)
            .field("timeout", &self.timeout)
            .field("claim_after", &self.claim_after)
            .field("backlog", &self.backlog)
            .finish()
    }
}

/// The webhook's body: wasmq's signed JSON (`docs/alerts.md`), or a Slack incoming-webhook
/// message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Slack,
}

impl Format {
    fn parse(text: &str) -> Result<Format, String> {
        match text {
            "json" => Ok(Format::Json),
            "slack" => Ok(Format::Slack),
            other => Err(format!("alerts.format: {other:?} is not json or slack")),
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS; refused if the server does not offer it.
    Required,
    /// STARTTLS when the server offers it, plain otherwise.
    Opportunistic,
    /// No TLS: loopback relays only when a password is sent.
    Off,
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
}

/// `[alerts.email]`, checked.
#[derive(Clone)]
pub struct EmailConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// The user name and the password (from the host secret `password_secret`).
    pub credentials: Option<(String, String)>,
    pub from: Mailbox,
    pub to: Vec<Mailbox>,
    /// Put before every subject.
    pub subject_prefix: String,
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("server", &format!("{}:{}", self.host, self.port))
            .field("tls", &self.tls)
            .field("username", &self.credentials.as_ref().map(|(u, _)| u))
            .field("password", &self.credentials.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from.to_string())
            .field(
                "to",
                &self.to.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// `[alerts.digest]`, checked: in each `window`, the first `after` dead jobs get an alert each
/// and the rest one digest at the window's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestConfig {
    pub after: u32,
    pub window: Duration,
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
pub const DEFAULT_DIGEST_AFTER: u32 = 10;
pub const DEFAULT_DIGEST_WINDOW: Duration = Duration::from_secs(60);

/// The `[alerts]` table of the run TOML, every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAlerts {
    pub webhook_url: Option<String>,
    /// The secret itself; prefer `secret_env`, which keeps it out of the file.
    pub secret: Option<String>,
    /// The name of an environment variable holding the secret.
    pub secret_env: Option<String>,
    /// `json` (default) or `slack`.
    pub format: Option<String>,
    pub dashboard_url: Option<String>,
    pub max_attempts: Option<u32>,
    pub backoff: Option<String>,
    pub backoff_cap: Option<String>,
    pub timeout: Option<String>,
    pub claim_after: Option<String>,
    pub backlog: Option<FileBacklog>,
    pub email: Option<FileEmail>,
    pub digest: Option<FileDigest>,
}

/// `[alerts.backlog]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBacklog {
    pub waiting: Option<u64>,
    pub oldest_age: Option<String>,
    pub interval: Option<String>,
}

/// `[alerts.email]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEmail {
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `required` (default), `opportunistic` or `off`.
    pub starttls: Option<String>,
    /// TLS from the first byte (port 465); excludes `starttls`.
    pub implicit_tls: Option<bool>,
    pub username: Option<String>,
    /// The name of the host secret holding the password (`WASMQ_SECRET_<NAME>` or
    /// `--secrets-dir`).
    pub password_secret: Option<String>,
    /// Refused with a message: the password never comes from the file. Kept as a value so
    /// that its text is not echoed in a parse error.
    pub password: Option<toml::Value>,
    pub from: Option<String>,
    pub to: Option<Vec<String>>,
    pub subject_prefix: Option<String>,
}

/// `[alerts.digest]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    pub after: Option<u32>,
    pub window: Option<String>,
}

/// The alert settings given by flags or environment, each over its `[alerts]` key.
#[derive(Debug, Default, Clone, Copy)]
pub struct AlertFlags<'a> {
    pub webhook: Option<&'a str>,
    pub secret: Option<&'a str>,
    pub format: Option<&'a str>,
    pub dashboard_url: Option<&'a str>,
}

impl AlertsConfig {
    /// Merges `flags` over the file's `[alerts]`. `Ok(None)`: no webhook and no e-mail, no
    /// alerts. `env` looks up `secret_env`; `host_secret` looks up the host secret named by
    /// `[alerts.email] password_secret`.
    pub fn resolve(
        flags: AlertFlags<'_>,
        file: Option<&FileAlerts>,
        env: impl Fn(&str) -> Option<String>,
        host_secret: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<AlertsConfig>, String> {
        let empty = FileAlerts::default();
        let file_given = file.is_some();
        let file = file.unwrap_or(&empty);
        let url = flags.webhook.or(file.webhook_url.as_deref());
        if url.is_none() && file.email.is_none() {
            if file_given {
                return Err(
                    "alerts: [alerts] is set but has no webhook URL and no [alerts.email]: give \
                     webhook_url, --alert-webhook or WASMQ_ALERT_WEBHOOK, or [alerts.email]"
                        .to_string(),
                );
            }
            return Ok(None);
        }
        let format = flags
            .format
            .or(file.format.as_deref())
            .map_or(Ok(Format::Json), Format::parse)?;
        let webhook_url = url.map(parse_url).transpose()?;
        let secret = webhook_secret(&flags, file, env)?;
        if let Some(url) = &webhook_url
            && secret.is_none()
            && format == Format::Json
        {
            return Err(format!(
                "alerts: webhook {} has no secret to sign alerts with: set \
                 WASMQ_ALERT_SECRET (or --alert-secret, or secret_env / secret in \
                 [alerts]); wasmq sends no unsigned alerts",
                redacted_webhook(url)
            ));
        }
        let dashboard_url = flags
            .dashboard_url
            .or(file.dashboard_url.as_deref())
            .map(parse_dashboard_url)
            .transpose()?;
        let delivery = Delivery::resolve(file)?;
        let email = file
            .email
            .as_ref()
            .map(|e| email_config(e, &host_secret))
            .transpose()?;
        let digest = file.digest.as_ref().map(digest_config).transpose()?;
        Ok(Some(AlertsConfig {
            webhook_url,
            secret: secret.map(String::into_bytes),
            format,
            dashboard_url,
            email,
            digest,
            max_attempts: delivery.max_attempts,
            backoff: delivery.backoff,
            backoff_cap: delivery.backoff_cap,
            timeout: delivery.timeout,
            claim_after: delivery.claim_after,
            backlog: backlog_config(file.backlog.as_ref())?,
        }))
    }
}

/// `alerts.<what>` as a duration, `default` when not given.
fn duration(text: Option<&str>, what: &str, default: Duration) -> Result<Duration, String> {
    text.map_or(Ok(default), |t| {
        parse_duration(&format!("alerts.{what}"), t)
    })
}

/// The webhook's signing secret: the flag (or its variable), else the file's `secret`, else
/// the variable `secret_env` names.
fn webhook_secret(
    flags: &AlertFlags<'_>,
    file: &FileAlerts,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    if file.secret.is_some() && file.secret_env.is_some() {
        return Err("alerts: give secret or secret_env in [alerts], not both".to_string());
    }
    let secret = match (flags.secret, &file.secret, &file.secret_env) {
        (Some(s), _, _) => Some(s.to_string()),
        (None, Some(s), _) => Some(s.clone()),
        (None, None, Some(var)) => Some(env(var).ok_or_else(|| {
            format!("alerts: secret_env names {var}, which is not set in the environment")
        })?),
        (None, None, None) => None,
    };
    if secret.as_deref() == Some("") {
        return Err("alerts: the webhook secret is empty".to_string());
    }
    Ok(secret)
}

/// How an alert is delivered and retried, from `[alerts]`.
struct Delivery {
    max_attempts: u32,
    backoff: Duration,
    backoff_cap: Duration,
    timeout: Duration,
    claim_after: Duration,
}

impl Delivery {
    fn resolve(file: &FileAlerts) -> Result<Delivery, String> {
        let max_attempts = file.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if !(1..=100).contains(&max_attempts) {
            return Err(format!(
                "alerts.max_attempts must be in 1..=100, not {max_attempts}"
            ));
        }
        let backoff = duration(file.backoff.as_deref(), "backoff", DEFAULT_BACKOFF)?;
        let backoff_cap = duration(
            file.backoff_cap.as_deref(),
            "backoff_cap",
            DEFAULT_BACKOFF_CAP,
        )?;
        if backoff_cap < backoff {
            return Err(format!(
                "alerts.backoff_cap ({}) must not be below alerts.backoff ({})",
                humantime::format_duration(backoff_cap),
                humantime::format_duration(backoff)
            ));
        }
        let timeout = duration(file.timeout.as_deref(), "timeout", DEFAULT_TIMEOUT)?;
        if timeout.is_zero() {
            return Err("alerts.timeout must be above zero".to_string());
        }
        let claim_after = duration(
            file.claim_after.as_deref(),
            "claim_after",
            DEFAULT_CLAIM_AFTER,
        )?;
        if claim_after < Duration::from_secs(1) {
            return Err("alerts.claim_after must be at least 1s".to_string());
        }
        Ok(Delivery {
            max_attempts,
            backoff,
            backoff_cap,
            timeout,
            claim_after,
        })
    }
}

/// Checks `[alerts.backlog]`.
fn backlog_config(b: Option<&FileBacklog>) -> Result<BacklogConfig, String> {
    let oldest_age = b
        .and_then(|b| b.oldest_age.as_deref())
        .map(|t| parse_duration("alerts.backlog.oldest_age", t))
        .transpose()?;
    let interval = duration(
        b.and_then(|b| b.interval.as_deref()),
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
    Ok(BacklogConfig {
        waiting,
        oldest_age,
        interval,
    })
}

/// Checks `[alerts.digest]`.
fn digest_config(d: &FileDigest) -> Result<DigestConfig, String> {
    let window = duration(d.window.as_deref(), "digest.window", DEFAULT_DIGEST_WINDOW)?;
    if window < Duration::from_secs(1) {
        return Err("alerts.digest.window must be at least 1s".to_string());
    }
    Ok(DigestConfig {
        after: d.after.unwrap_or(DEFAULT_DIGEST_AFTER),
        window,
    })
}

/// Checks `[alerts.email]` and reads its password from the host secret it names.
fn email_config(
    file: &FileEmail,
    host_secret: &impl Fn(&str) -> Option<String>,
) -> Result<EmailConfig, String> {
    if file.password.is_some() {
        return Err(
            "alerts.email.password: the SMTP password is never read from the file; put it in \
             a host secret (WASMQ_SECRET_<NAME> or --secrets-dir) and name it with \
             password_secret"
                .to_string(),
        );
    }
    let host = match file.host.as_deref().map(str::trim) {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => return Err("alerts.email.host: the SMTP server's host is required".to_string()),
    };
    let tls = smtp_tls(file)?;
    let port = file.port.unwrap_or(match tls {
        SmtpTls::Implicit => 465,
        SmtpTls::Off => 25,
        SmtpTls::Required | SmtpTls::Opportunistic => 587,
    });
    let credentials = smtp_credentials(file, host_secret)?;
    if credentials.is_some() && tls == SmtpTls::Off && !is_loopback_host(&host) {
        return Err(format!(
            "alerts.email: starttls = \"off\" would send the password in the clear to {host}; \
             use required (or implicit_tls), or a relay on loopback"
        ));
    }
    let mailbox = |what: &str, text: &str| {
        text.parse::<Mailbox>()
            .map_err(|e| format!("alerts.email.{what}: {text:?} is not an e-mail address: {e}"))
    };
    let from = mailbox(
        "from",
        file.from
            .as_deref()
            .ok_or("alerts.email.from: the sender's address is required")?,
    )?;
    let to = file
        .to
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|t| mailbox("to", t))
        .collect::<Result<Vec<_>, _>>()?;
    if to.is_empty() {
        return Err("alerts.email.to: give at least one recipient".to_string());
    }
    Ok(EmailConfig {
        host,
        port,
        tls,
        credentials,
        from,
        to,
        subject_prefix: file
            .subject_prefix
            .clone()
            .unwrap_or_else(|| "[wasmq]".to_string()),
    })
}

/// `implicit_tls` / `starttls` of `[alerts.email]`.
fn smtp_tls(file: &FileEmail) -> Result<SmtpTls, String> {
    Ok(match (file.implicit_tls, file.starttls.as_deref()) {
        (Some(true), Some(_)) => {
            return Err("alerts.email: give implicit_tls = true or starttls, not both".to_string());
        }
        (Some(true), None) => SmtpTls::Implicit,
        (_, None | Some("required")) => SmtpTls::Required,
        (_, Some("opportunistic")) => SmtpTls::Opportunistic,
        (_, Some("off")) => SmtpTls::Off,
        (_, Some(other)) => {
            return Err(format!(
                "alerts.email.starttls: {other:?} is not required, opportunistic or off"
            ));
        }
    })
}

/// The SMTP user and the password read from the host secret `password_secret` names.
fn smtp_credentials(
    file: &FileEmail,
    host_secret: &impl Fn(&str) -> Option<String>,
) -> Result<Option<(String, String)>, String> {
    match (&file.username, &file.password_secret) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(
            "alerts.email: username is set but password_secret is not: name the host secret \
             that holds the SMTP password"
                .to_string(),
        ),
        (None, Some(_)) => {
            Err("alerts.email: password_secret is set but username is not".to_string())
        }
        (Some(user), Some(name)) => {
            crate::capability::validate_secret_name(name)
                .map_err(|e| format!("alerts.email.password_secret: {e}"))?;
            let password = host_secret(name).ok_or_else(|| {
                format!(
                    "alerts.email.password_secret names {name}, which this host does not \
                     have: set {} or put a file {name} in --secrets-dir",
                    crate::capability::secret_env_var(name)
                )
            })?;
            if password.is_empty() {
                return Err(format!("alerts.email: the host secret {name} is empty"));
            }
            Ok(Some((user.clone(), password)))
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The dashboard's base URL, with a trailing `/` so that `#/queues/...` can follow it.
fn parse_dashboard_url(text: &str) -> Result<String, String> {
    let uri: hyper::Uri = text
        .parse()
        .map_err(|e| format!("alerts.dashboard_url does not parse: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https"))
        || uri.host().is_none_or(str::is_empty)
        || uri.query().is_some()
        || text.contains('#')
    {
        return Err(
            "alerts.dashboard_url must be an http:// or https:// URL, without query or \
             fragment, like https://wasmq.example.com/"
                .to_string(),
        );
    }
    let mut base = text.to_string();
    if !base.ends_with('/') {
        base.push('/');
    }
    Ok(base)
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

    fn resolve(
        url: Option<&str>,
        secret: Option<&str>,
        file: Option<&FileAlerts>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<AlertsConfig>, String> {
        let flags = AlertFlags {
            webhook: url,
            secret,
            ..AlertFlags::default()
        };
        AlertsConfig::resolve(flags, file, env, |name| {
            (name == "SMTP_PASSWORD").then(|| "hunter2-secret".to_string())
        })
    }

    #[test]
    fn no_webhook_means_no_alerts() {
        assert!(resolve(None, Some("s"), None, no_env).unwrap().is_none());
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
        let c = resolve(Some("https://flag.example/h"), None, Some(&f), no_env)
            .unwrap()
            .unwrap();
        assert_eq!(c.webhook_url.unwrap().to_string(), "https://flag.example/h");
        assert_eq!(c.secret.as_deref(), Some(&b"from-file"[..]));
        assert_eq!(c.backoff, Duration::from_millis(250));
        assert_eq!(c.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.backlog.waiting, Some(100));
        assert_eq!(c.backlog.oldest_age, Some(Duration::from_secs(300)));
        assert_eq!(c.backlog.interval, DEFAULT_BACKLOG_INTERVAL);
        let env = |name: &str| (name == "HOOK_KEY").then(|| "from-env".to_string());
        let f = file("webhook_url = \"http://127.0.0.1:9/h\"\nsecret_env = \"HOOK_KEY\"");
        let c = resolve(None, None, Some(&f), env).unwrap().unwrap();
        assert_eq!(c.secret.as_deref(), Some(&b"from-env"[..]));
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
            (url, Some("s"), "format = \"teams\"", "not json or slack"),
            (
                url,
                Some("s"),
                "dashboard_url = \"ftp://d\"",
                "dashboard_url",
            ),
            (
                url,
                Some("s"),
                "[digest]\nwindow = \"10ms\"",
                "digest.window",
            ),
            (
                None,
                None,
                "[email]\nfrom = \"a@b.c\"\nto = [\"o@b.c\"]",
                "host",
            ),
            (
                None,
                None,
                "[email]\nhost = \"smtp.example\"\nfrom = \"a@b.c\"\nto = []",
                "at least one recipient",
            ),
            (
                None,
                None,
                "[email]\nhost = \"smtp.example\"\nfrom = \"not an address\"\nto = [\"o@b.c\"]",
                "alerts.email.from",
            ),
            (
                None,
                None,
                "[email]\nhost = \"h\"\nfrom = \"a@b.c\"\nto = [\"o@b.c\"]\nstarttls = \"maybe\"",
                "alerts.email.starttls",
            ),
            (
                None,
                None,
                "[email]\nhost = \"h\"\nfrom = \"a@b.c\"\nto = [\"o@b.c\"]\nusername = \"u\"",
                "password_secret is not",
            ),
            (
                None,
                None,
                "[email]\nhost = \"h\"\nfrom = \"a@b.c\"\nto = [\"o@b.c\"]\nusername = \"u\"\npassword_secret = \"OTHER\"",
                "WASMQ_SECRET_OTHER",
            ),
            (
                None,
                None,
                "[email]\nhost = \"smtp.example\"\nfrom = \"a@b.c\"\nto = [\"o@b.c\"]\nstarttls = \"off\"\nusername = \"u\"\npassword_secret = \"SMTP_PASSWORD\"",
                "in the clear",
            ),
            (
                None,
                None,
                "[email]\nhost = \"h\"\nfrom = \"a@b.c\"\nto = [\"o@b.c\"]\npassword = \"pw-in-file\"",
                "never read from the file",
            ),
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
            let err = resolve(*url, *secret, Some(&f), no_env).unwrap_err();
            assert!(err.contains(expected), "{toml_text:?}: {err}");
        }
        assert!(toml::from_str::<FileAlerts>("webhook = \"x\"").is_err());
    }

    #[test]
    fn email_alone_is_enough_and_its_password_comes_from_a_host_secret() {
        let f = file(
            r#"
            dashboard_url = "https://wasmq.example.com"
            [email]
            host = "127.0.0.1"
            port = 2525
            starttls = "off"
            username = "alerts"
            password_secret = "SMTP_PASSWORD"
            from = "wasmq <alerts@example.com>"
            to = ["ops@example.com", "oncall@example.com"]
            [digest]
            after = 3
            window = "30s"
            "#,
        );
        let c = resolve(None, None, Some(&f), no_env).unwrap().unwrap();
        assert!(c.webhook_url.is_none() && c.secret.is_none());
        assert_eq!(
            c.dashboard_url.as_deref(),
            Some("https://wasmq.example.com/")
        );
        let email = c.email.as_ref().unwrap();
        assert_eq!(
            (email.host.as_str(), email.port, email.tls),
            ("127.0.0.1", 2525, SmtpTls::Off)
        );
        assert_eq!(
            email.credentials,
            Some(("alerts".to_string(), "hunter2-secret".to_string()))
        );
        assert_eq!(email.to.len(), 2);
        assert_eq!(
            c.digest,
            Some(DigestConfig {
                after: 3,
                window: Duration::from_secs(30)
            })
        );
        // Never in Debug output.
        assert!(!format!("{c:?}").contains("hunter2"));
        // Defaults: STARTTLS required on 587; implicit TLS on 465.
        let f = file("[email]\nhost = \"smtp.example\"\nfrom = \"a@b.c\"\nto = [\"o@b.c\"]");
        let e = resolve(None, None, Some(&f), no_env)
            .unwrap()
            .unwrap()
            .email
            .unwrap();
        assert_eq!((e.port, e.tls), (587, SmtpTls::Required));
        let f = file(
            "[email]\nhost = \"smtp.example\"\nimplicit_tls = true\nfrom = \"a@b.c\"\nto = [\"o@b.c\"]",
        );
        let e = resolve(None, None, Some(&f), no_env)
            .unwrap()
            .unwrap()
            .email
            .unwrap();
        assert_eq!((e.port, e.tls), (465, SmtpTls::Implicit));
        // A Slack webhook needs no signing secret.
        let f = file("format = \"slack\"");
        let c = resolve(
            Some("https://hooks.slack.com/services/T/B/X"),
            None,
            Some(&f),
            no_env,
        )
        .unwrap()
        .unwrap();
        assert_eq!((c.format, c.secret), (Format::Slack, None));
    }
}
