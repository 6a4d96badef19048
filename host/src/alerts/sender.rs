//! Delivery: POSTs one alert to the webhook, signed, retrying with backoff.
//!
//! Lifecycle of one alert ([`Sender::deliver`]):
//! 1. Take one of the [`MAX_CONCURRENT_REQUESTS`] request slots, sign the body with the current
//!    time, POST it; the attempt (connect, TLS, response headers, up to 4 KiB of response
//!    body) is bounded by `timeout`.
//! 2. A 2xx answer delivers it. Anything else (another status, a refused connection, a
//!    timeout) fails the attempt: the slot is given back, the sender waits the backoff
//!    (doubling, capped, jittered) and tries again, up to `max_attempts` attempts in all.
//! 3. After the last failed attempt the alert is given up: logged as an error and counted in
//!    [`DeliveryStats::failed`]. The caller acknowledges it either way.
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

use super::config::AlertsConfig;
use super::payload::{Alert, retry_delay, signature};

/// Requests in flight at once, across every alert of a host.
pub const MAX_CONCURRENT_REQUESTS: usize = 8;

/// Delivery counters, for logs now and metrics later.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Alerts the webhook accepted (2xx).
    pub sent: AtomicU64,
    /// Failed attempts that were tried again.
    pub retried: AtomicU64,
    /// Alerts given up after their last attempt failed.
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

pub(crate) struct Sender {
    client: HttpClient,
    config: AlertsConfig,
    requests: Semaphore,
    pub stats: Arc<DeliveryStats>,
}

/// How long an idle keep-alive connection to the webhook is kept.
const IDLE_CONNECTION: Duration = Duration::from_secs(30);

/// Most of a response body read (into the log, for a failed attempt).
const MAX_RESPONSE_BODY: usize = 4096;

impl Sender {
    /// A sender for `config.webhook_url`. Fails for an `https://` webhook when the system has
    /// no CA certificates to verify it with.
    pub fn new(config: AlertsConfig) -> Result<Sender, String> {
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(IDLE_CONNECTION);
        let client = if config.webhook_url.scheme_str() == Some("https") {
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
        };
        Ok(Sender {
            client,
            config,
            requests: Semaphore::new(MAX_CONCURRENT_REQUESTS),
            stats: Arc::new(DeliveryStats::default()),
        })
    }

    /// Delivers `alert`, retrying per the policy. True when the webhook accepted it; false when
    /// it was given up (logged and counted).
    pub async fn deliver(&self, alert: &Alert) -> bool {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match self.requests.acquire().await {
                Ok(_slot) => self.attempt(alert).await,
                Err(_) => Err("the sender is closed".to_string()),
            };
            match result {
                Ok(()) => {
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(alert = %alert.id, attempt, "alert delivered");
                    return true;
                }
                Err(why) if attempt >= self.config.max_attempts => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        alert = %alert.id,
                        kind = alert.kind,
                        queue = %alert.queue,
                        attempts = attempt,
                        error = %why,
                        "alert given up: the webhook did not accept it"
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

    /// One POST, bounded by the timeout.
    async fn attempt(&self, alert: &Alert) -> Result<(), String> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = signature(&self.config.secret, timestamp, &alert.body);
        let request = hyper::Request::post(self.config.webhook_url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(
                USER_AGENT,
                HeaderValue::from_static(concat!("wasmq/", env!("CARGO_PKG_VERSION"))),
            )
            .header("X-Wasmq-Timestamp", timestamp)
            .header("X-Wasmq-Signature", signature)
            .header("X-Wasmq-Event", alert.kind)
            .body(Full::new(Bytes::from(alert.body.clone())))
            .map_err(|e| format!("building the request: {e}"))?;
        let exchange = async {
            let response = match &self.client {
                HttpClient::Plain(client) => client.request(request).await,
                HttpClient::Tls(client) => client.request(request).await,
            }
            .map_err(|e| error_chain(&e))?;
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
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(self.config.timeout)
            )),
        }
    }
}

/// An error and its sources, one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
