//! `http-fetch`: a handler written as a team would write one without wasmq's SDK: plain
//! `wit-bindgen` bindings of the `wasmq:job/handler` world (which imports `wasi:config/store`
//! since 0.1.2), and the `wstd` crate's HTTP client (`wasi:http`).
//!
//! Payload: `{"url": "...", "method": "GET" | "POST", "body": "..."}`; a missing `url` is
//! read from the config key `url`. The config key `token`, when granted (a secret), is sent as
//! `Authorization: Bearer <token>`. The result is `{"status": N, "body": "<text>"}`; a
//! response of 5xx is `retry`, 4xx is `fail`, and a request that fails is `fail` with the
//! `wasi:http` error code (`HttpRequestDenied`, `HttpResponseBodySize`, ...).

wit_bindgen::generate!({
    world: "handler",
    path: "../../../wit",
    generate_all,
});

use wasi::config::store;
use wstd::http::{Body, Client, Method, Request};

struct Fetch;

fn config(key: &str) -> Option<String> {
    store::get(key).ok().flatten()
}

impl Guest for Fetch {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let spec: serde_json::Value = serde_json::from_slice(&job.payload)
            .map_err(|e| JobError::Fail(format!("payload is not JSON: {e}")))?;
        let url = match spec["url"].as_str() {
            Some(url) => url.to_string(),
            None => config("url").ok_or_else(|| JobError::Fail("no url".to_string()))?,
        };
        let method = match spec["method"].as_str().unwrap_or("GET") {
            "POST" => Method::POST,
            _ => Method::GET,
        };
        let body = spec["body"].as_str().unwrap_or("").to_string();
        wstd::runtime::block_on(async move {
            let mut request = Request::builder().uri(&url).method(method);
            if let Some(token) = config("token") {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let request = request
                .body(Body::from(body))
                .map_err(|e| JobError::Fail(format!("bad request: {e}")))?;
            let response = Client::new()
                .send(request)
                .await
                .map_err(|e| JobError::Fail(format!("request failed: {e:?}")))?;
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let text = body
                .str_contents()
                .await
                .map_err(|e| JobError::Fail(format!("reading the body failed: {e:?}")))?
                .to_string();
            let result = serde_json::json!({ "status": status, "body": text });
            match status {
                500..=599 => Err(JobError::Retry(format!("server error {status}"))),
                400..=499 => Err(JobError::Fail(format!("client error {status}"))),
                _ => Ok(result.to_string().into_bytes()),
            }
        })
    }
}

export!(Fetch);
