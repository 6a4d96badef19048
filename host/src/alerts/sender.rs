//! Delivery: sends one alert to every channel configured (the webhook, e-mail), each retrying
//! with backoff on its own.
//!
//! Lifecycle of one alert on one channel ([`Sender::deliver`]):
//! 1. Take one of the [`MAX_CONCURRENT_REQUESTS`] request slots and make one attempt, bounded
//!    by `timeout`: for the webhook, sign the body (JSON, or the Slack message) with the
//!    current time and POST it (connect, TLS, response headers, up to 4 KiB of response
//!    body); for e-mail, one SMTP session (`lettre`: connect, STARTTLS or TLS, AUTH with the
//!    host secret, one message to every recipient).
//! 2. A 2xx answer (or the SMTP server's acceptance of the message) delivers it. Anything
//!    else (another status, a refused connection, a timeout) fails the attempt: the slot is given back, the sender waits the backoff
//!    (doubling, capped, jittered) and tries again, up to `max_attempts` attempts in all.
//! 3. After the last failed attempt the alert is given up on that channel: logged as an error
//!    and counted in [`DeliveryStats::failed`]. The caller acknowledges it once every channel
//!    delivered it or gave it up.
//!
//! The SMTP password lives in the transport only: errors name the server and its answer,
//! never the credentials.
//!
//! Redirects are not followed (a 3xx fails the attempt): the signature covers the body, not the
//! place it is sent to.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::config::{AlertsConfig, EmailConfig, Format, SmtpTls};
use super::payload::{Alert, retry_delay, signature};
use super::render;

/// Requests in flight at once, across every alert of a host.
pub const MAX_CONCURRENT_REQUESTS: usize = 8;

/// Delivery counters, for logs now and metrics later.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Alerts a channel accepted (the webhook's 2xx, the SMTP server's acceptance), counted
    /// per channel.
    pub sent: AtomicU64,
    /// Failed attempts that were tried again.
    pub retried: AtomicU64,
    /// Alerts given up on a channel after their last attempt failed.
    pub failed: AtomicU64,
    /// Events-stream entries trimmed (`events_maxlen`) before any host read them for alerts:
    /// whatever they said, no alert went out for them.
    pub lost: AtomicU64,
}

/// A copy of [`DeliveryStats`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub sent: u64,
    pub retried: u64,
    pub failed: u64,
    pub lost: u64,
}

impl DeliveryStats {
    pub fn snapshot(&self) -> DeliveryCounts {
        DeliveryCounts {
            sent: self.sent.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }
}

/// The HTTP client: plain for `http://` webhooks (no trust store needed), rustls for
/// `https://` ones.
enum HttpClient {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

struct Webhook {
    client: HttpClient,
    url: hyper::Uri,
}

struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    config: EmailConfig,
}

pub(crate) struct Sender {
    webhook: Option<Webhook>,
    mailer: Option<Mailer>,
    config: AlertsConfig,
    requests: Semaphore,
    pub stats: Arc<DeliveryStats>,
}

/// How long an idle keep-alive connection to the webhook is kept.
const IDLE_CONNECTION: Duration = Duration::from_secs(30);

/// Most of a response body read (into the log, for a failed attempt).
const MAX_RESPONSE_BODY: usize = 4096;

impl Sender {
    /// A sender for the channels of `config`. Fails for an `https://` webhook or a TLS SMTP
    /// server when the system has no CA certificates to verify it with.
    pub fn new(config: AlertsConfig) -> Result<Sender, String> {
        let webhook = config
            .webhook_url
            .clone()
            .map(|url| {
                Ok::<_, String>(Webhook {
                    client: http_client(&url)?,
                    url,
                })
            })
            .transpose()?;
        let mailer = config
            .email
            .clone()
            .map(|email| {
                Ok::<_, String>(Mailer {
                    transport: smtp_transport(&email, config.timeout)?,
                    config: email,
                })
            })
            .transpose()?;
        Ok(Sender {
            webhook,
            mailer,
            config,
            requests: Semaphore::new(MAX_CONCURRENT_REQUESTS),
            stats: Arc::new(DeliveryStats::default()),
        })
    }

    /// The channels, as logs may show them (no credentials).
    pub fn channels(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(w) = &self.webhook {
            let format = match self.config.format {
                Format::Json => "json",
                Format::Slack => "slack",
            };
            out.push(format!(
                "webhook {} ({format})",
                super::config::redacted_webhook(&w.url)
            ));
        }
        if let Some(m) = &self.mailer {
            out.push(format!(
                "email via {}:{} to {} recipient(s)",
                m.config.host,
                m.config.port,
                m.config.to.len()
            ));
        }
        out
    }

    /// Delivers `alert` on every channel, each retrying per the policy. True when every
    /// channel accepted it; false when one gave it up (logged and counted).
    pub async fn deliver(&self, alert: &Alert) -> bool {
        let webhook = async {
            match &self.webhook {
                Some(webhook) => {
                    let body = match self.config.format {
                        Format::Json => Bytes::from(alert.body.clone()),
                        Format::Slack => Bytes::from(
                            render::slack(alert, self.config.dashboard_url.as_deref()).to_string(),
                        ),
                    };
                    self.retrying("webhook", alert, || self.post(webhook, alert, body.clone()))
                        .await
                }
                None => true,
            }
        };
        let email = async {
            match &self.mailer {
                Some(mailer) => {
                    self.retrying("email", alert, || self.mail(mailer, alert))
                        .await
                }
                None => true,
            }
        };
        let (webhook, email) = tokio::join!(webhook, email);
        webhook && email
    }

    /// Attempts until one succeeds or `max_attempts` failed.
    async fn retrying<F, Fut>(&self, channel: &'static str, alert: &Alert, attempt_once: F) -> bool
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match self.requests.acquire().await {
                Ok(_slot) => {
                    match tokio::time::timeout(self.config.timeout, attempt_once()).await {
                        Ok(result) => result,
                        Err(_) => Err(format!(
                            "no answer within {}",
                            humantime::format_duration(self.config.timeout)
                        )),
                    }
                }
                Err(_) => Err("the sender is closed".to_string()),
            };
            match result {
                Ok(()) => {
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(alert = %alert.id, channel, attempt, "alert delivered");
                    return true;
                }
                Err(why) if attempt >= self.config.max_attempts => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        alert = %alert.id,
                        kind = alert.kind,
                        queue = %alert.queue,
                        channel,
                        attempts = attempt,
                        error = %why,
                        "alert given up: the {channel} did not accept it"
                    );
                    return false;
                }
                Err(why) => {
                    self.stats.retried.fetch_add(1, Ordering::Relaxed);
                    let delay = retry_delay(
                        attempt,
                        self.config.backoff,
                        self.config.backoff_cap,
                        rand::random::<f64>(),
                    );
                    tracing::warn!(
                        alert = %alert.id,
                        channel,
                        attempt,
                        error = %why,
                        retry_in = ?delay,
                        "alert delivery failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One POST.
    async fn post(&self, webhook: &Webhook, alert: &Alert, body: Bytes) -> Result<(), String> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut request = hyper::Request::post(webhook.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                USER_AGENT,
                HeaderValue::from_static(concat!("wasmq/", env!("CARGO_PKG_VERSION"))),
            )
            .header("X-Wasmq-Event", alert.kind);
        if let Some(secret) = &self.config.secret {
            request = request
                .header("X-Wasmq-Timestamp", timestamp)
                .header("X-Wasmq-Signature", signature(secret, timestamp, &body));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| format!("building the request: {e}"))?;
        let response = match &webhook.client {
            HttpClient::Plain(client) => client.request(request).await,
            HttpClient::Tls(client) => client.request(request).await,
        }
        .map_err(|e| crate::chain::ErrorChain(&e).to_string())?;
        let status = response.status();
        // Read (a bounded part of) the body, so the connection can be used again and a
        // refusal can say why.
        let body = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&body);
            match text.trim() {
                "" => Err(format!("HTTP {status}")),
                text => Err(format!("HTTP {status}: {text}")),
            }
        }
    }

    /// One SMTP session sending one message to every recipient.
    async fn mail(&self, mailer: &Mailer, alert: &Alert) -> Result<(), String> {
        let (subject, text) = render::email(
            alert,
            &mailer.config.subject_prefix,
            self.config.dashboard_url.as_deref(),
        );
        let mut message = Message::builder()
            .from(mailer.config.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for to in &mailer.config.to {
            message = message.to(to.clone());
        }
        let message = message
            .body(text)
            .map_err(|e| format!("building the message: {e}"))?;
        mailer.transport.send(message).await.map(drop).map_err(|e| {
            let mut why = crate::chain::ErrorChain(&e).to_string();
            // The error quotes the server's answer, which could quote the password back.
            if let Some((_, password)) = &mailer.config.credentials {
                why = why.replace(password.as_str(), "<redacted>");
            }
            format!("SMTP {}:{}: {why}", mailer.config.host, mailer.config.port)
        })
    }
}

/// The HTTP client: plain for `http://` webhooks (no trust store needed), rustls for
/// `https://` ones.
fn http_client(url: &hyper::Uri) -> Result<HttpClient, String> {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(IDLE_CONNECTION);
    Ok(if url.scheme_str() == Some("https") {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| {
                format!(
                    "an https:// webhook needs the system's CA certificates \
                     (the ca-certificates package): {e}"
                )
            })?
            .https_only()
            .enable_http1()
            .build();
        HttpClient::Tls(builder.build(connector))
    } else {
        HttpClient::Plain(builder.build_http())
    })
}

/// The SMTP transport of `[alerts.email]`: TLS by rustls with the system's CA certificates.
fn smtp_transport(
    email: &EmailConfig,
    timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let params = || {
        TlsParameters::new(email.host.clone()).map_err(|e| {
            format!(
                "alerts.email: TLS to {} needs the system's CA certificates (the \
                 ca-certificates package): {}",
                email.host,
                crate::chain::ErrorChain(&e)
            )
        })
    };
    let tls = match email.tls {
        SmtpTls::Required => Tls::Required(params()?),
        SmtpTls::Opportunistic => Tls::Opportunistic(params()?),
        SmtpTls::Implicit => Tls::Wrapper(params()?),
        SmtpTls::Off => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&email.host)
        .port(email.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let Some((user, password)) = &email.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(builder.build())
}
