//! A real `wasmq serve` process for API tests ([`ApiServer`]), a client of it that sends the
//! token ([`Http`]), and its JSON answers ([`Answer`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::redis::RedisServer;

/// A `wasmq serve` process on a free loopback port (the server picks it: `--http
/// 127.0.0.1:0`, and prints the address it got). Killed when dropped; its log is printed
/// when a test fails.
pub struct ApiServer {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ApiServer {
    /// Starts `wasmq serve --http 127.0.0.1:0 --redis <url> <extra>` (without the token and
    /// address the environment may set) and waits up to 30 s for the address it prints.
    pub fn start(redis: &RedisServer, extra: &[&str]) -> ApiServer {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmq"))
            .args(["serve", "--http", "127.0.0.1:0", "--redis"])
            .arg(redis.url())
            .args(extra)
            .env_remove("WASMQ_API_TOKEN")
            .env_remove("WASMQ_HTTP")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn wasmq serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "wasmq serve did not start (stdout {line:?}); log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        ApiServer {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- wasmq serve log ---\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// A JSON answer: status and body (every answer of the API is JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The body, after checking the status.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "answer: {}", self.body);
        self.body
    }

    /// The error message, after checking the status and the error shape.
    #[track_caller]
    pub fn error(self, status: u16) -> String {
        let body = self.expect(status);
        let message = body["error"].as_str().unwrap_or_default().to_string();
        assert!(
            !message.is_empty(),
            "error answer without a message: {body}"
        );
        assert_eq!(body.as_object().unwrap().len(), 1, "error shape: {body}");
        message
    }
}

/// A client of one [`ApiServer`], sending its bearer token (if any) with every request.
pub struct Http {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Http {
    pub fn new(server: &ApiServer, token: Option<&str>) -> Http {
        Http {
            client: reqwest::Client::new(),
            base: server.url(""),
            token: token.map(str::to_string),
        }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("send a request to wasmq serve");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{status}: not JSON ({err}): {text:?}"));
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(self.request(Method::DELETE, path)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.request(Method::POST, path).json(&body))
            .await
    }

    pub async fn post_empty(&self, path: &str) -> Answer {
        self.send(self.request(Method::POST, path)).await
    }

    pub async fn deploy(&self, name: &str, query: &str, bytes: Vec<u8>) -> Answer {
        let request = self
            .request(Method::POST, &format!("/api/handlers/{name}{query}"))
            .header("content-type", "application/wasm")
            .body(bytes);
        self.send(request).await
    }
}
