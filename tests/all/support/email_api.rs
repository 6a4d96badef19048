//! A fake email provider on loopback, for the welcome-email job: `POST /v1/emails` with a
//! bearer token sends an email, once per `Idempotency-Key` (as real providers do: a request
//! repeated with the same key answers the first email's id and sends nothing), answering
//! `{"id": "em_<n>"}`. A test can script the next answers' statuses (500, 400, ...) and hold
//! the next answer back after the email is sent (to kill a host between the POST and its
//! acknowledgement).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::{Notify, oneshot};

/// One email the provider sent.
#[derive(Debug, Clone)]
pub struct Email {
    pub id: String,
    pub idempotency_key: String,
    pub body: serde_json::Value,
}

#[derive(Default)]
struct Inner {
    sent: Vec<Email>,
    by_key: HashMap<String, String>,
    script: VecDeque<u16>,
    requests: usize,
    hold: Option<oneshot::Receiver<()>>,
}

#[derive(Clone)]
struct Api {
    inner: Arc<Mutex<Inner>>,
    token: String,
    sent_notify: Arc<Notify>,
}

pub struct EmailApi {
    pub addr: SocketAddr,
    api: Api,
}

async fn send(
    State(api): State<Api>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (status, answer, hold) = {
        let mut inner = api.inner.lock().unwrap();
        inner.requests += 1;
        if auth != format!("Bearer {}", api.token) {
            (401, r#"{"error":"bad token"}"#.to_string(), None)
        } else {
            match inner.script.pop_front() {
                Some(code) if code != 200 => (code, format!(r#"{{"error":"{code}"}}"#), None),
                _ => {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let id = match inner.by_key.get(&key) {
                        Some(id) if !key.is_empty() => id.clone(),
                        _ => {
                            let id = format!("em_{}", inner.sent.len() + 1);
                            inner.sent.push(Email {
                                id: id.clone(),
                                idempotency_key: key.clone(),
                                body: serde_json::from_slice(&body)
                                    .unwrap_or(serde_json::Value::Null),
                            });
                            inner.by_key.insert(key, id.clone());
                            api.sent_notify.notify_waiters();
                            id
                        }
                    };
                    (200, format!(r#"{{"id":"{id}"}}"#), inner.hold.take())
                }
            }
        }
    };
    if let Some(release) = hold {
        let _ = release.await;
    }
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        answer,
    )
}

impl EmailApi {
    /// Starts the provider on a free loopback port; requests must carry `Bearer <token>`.
    pub async fn start(token: &str) -> EmailApi {
        let api = Api {
            inner: Arc::default(),
            token: token.to_string(),
            sent_notify: Arc::new(Notify::new()),
        };
        let app = axum::Router::new()
            .route("/v1/emails", post(send))
            .with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        EmailApi { addr, api }
    }

    /// The URL handlers POST to.
    pub fn url(&self) -> String {
        format!("http://{}/v1/emails", self.addr)
    }

    /// `http://127.0.0.1:PORT`: the allow-list entry for this provider.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next answers' statuses, in order (200 sends); after them every request sends.
    pub fn script(&self, statuses: &[u16]) {
        self.api.inner.lock().unwrap().script.extend(statuses);
    }

    /// Holds back the answer to the next request that sends an email until the returned
    /// sender is used or dropped.
    pub fn hold_next(&self) -> oneshot::Sender<()> {
        let (tx, rx) = oneshot::channel();
        self.api.inner.lock().unwrap().hold = Some(rx);
        tx
    }

    /// The emails sent, once each.
    pub fn sent(&self) -> Vec<Email> {
        self.api.inner.lock().unwrap().sent.clone()
    }

    /// Every request received, sent or not.
    pub fn requests(&self) -> usize {
        self.api.inner.lock().unwrap().requests
    }

    /// Waits until at least `n` emails are sent.
    pub async fn wait_sent(&self, n: usize, within: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.api.sent_notify.notified();
            if self.sent().len() >= n {
                return;
            }
            assert!(
                tokio::time::timeout_at(deadline, notified).await.is_ok() || self.sent().len() >= n,
                "timed out waiting for {n} emails"
            );
        }
    }
}
