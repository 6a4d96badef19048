//! Who may call what. The rules (docs/api.md, "Auth"):
//!
//! 1. With a token configured, every request that is not a GET (or HEAD) needs
//!    `Authorization: Bearer <token>`, even on loopback; GETs need it too when the server is
//!    bound to a non-loopback address. `/healthz` never needs it (it says only whether Redis
//!    answers, and load balancers probe it without credentials), and neither do the
//!    dashboard's static files on a non-loopback server (a browser cannot send a token with
//!    a page load; they hold no data, and every API call the page makes needs the token).
//! 2. Without a token the server binds loopback only ([`super::ApiConfig::check`] refuses
//!    anything else at startup).
//! 3. A request answered without the token (no token configured, or a GET on loopback) is
//!    refused when a browser could have been tricked into sending it: a `Host` that is not a
//!    loopback name (DNS rebinding), an `Origin` that is not a loopback origin, or a write
//!    from a page of another origin: an `Origin` with another port (a page of another local
//!    server), or a `Sec-Fetch-Site` other than `same-origin` or `none`. A request with the
//!    token needs no such check: browsers cannot attach it to a cross-site request without
//!    CORS, which this server never grants.
//!
//! Tokens are compared in constant time: both sides are hashed with SHA-256 first, so neither
//! the content nor the length of the token leaks through timing.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;

/// The access policy of one server.
#[derive(Debug)]
pub(crate) struct Access {
    /// Each accepted token's name and digest: `--token`'s is named [`UNNAMED`], those of a
    /// token file ([`read_token_file`]) by their lines.
    tokens: Vec<(String, [u8; 32])>,
    /// GETs need the token too (the server listens on a non-loopback address).
    reads_need_token: bool,
}

/// Who a request came from, for what records it (a cancel's `cancelled_by`): the name of the
/// token it carried, or [`UNNAMED`] (`--token`'s, or none on loopback).
#[derive(Clone, Debug)]
pub(crate) struct Caller(pub(crate) String);

/// The name of `--token` (`WASMQ_API_TOKEN`), and of a request without a token.
pub const UNNAMED: &str = "api";

impl Access {
    #[cfg(test)]
    pub(crate) fn new(token: Option<&str>, loopback: bool) -> Access {
        let tokens: Vec<(String, String)> = token
            .map(|t| (UNNAMED.to_string(), t.to_string()))
            .into_iter()
            .collect();
        Access::with_tokens(&tokens, loopback)
    }

    /// `tokens`: (name, token) pairs, checked by [`super::ApiConfig::check`].
    pub(crate) fn with_tokens(tokens: &[(String, String)], loopback: bool) -> Access {
        Access {
            tokens: tokens
                .iter()
                .map(|(name, token)| (name.clone(), digest(token)))
                .collect(),
            reads_need_token: !loopback,
        }
    }

    /// The name of the token `presented` is, comparing with every token in constant time.
    fn token_named(&self, presented: &str) -> Option<&str> {
        let presented = digest(presented);
        let mut found = None;
        for (name, expected) in &self.tokens {
            if constant_time_eq(&presented, expected) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// Whether the request may go on, and the name of the token it carried (`None`: none).
    fn check(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Option<&str>, ApiError> {
        if path == "/healthz" {
            return Ok(None);
        }
        // The dashboard's files on a non-loopback server: a browser cannot send a token with
        // a page load, and they hold no data (the page's own API calls carry the token).
        if self.reads_need_token
            && super::dashboard::is_asset(path)
            && (method == Method::GET || method == Method::HEAD)
            && !headers.contains_key(header::AUTHORIZATION)
        {
            return Ok(None);
        }
        if !self.tokens.is_empty() {
            let read = method == Method::GET || method == Method::HEAD;
            match headers.get(header::AUTHORIZATION) {
                // A token that is sent is checked, even where none is needed.
                Some(value) => {
                    let presented = value
                        .to_str()
                        .ok()
                        .and_then(|v| v.split_once(' '))
                        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                        .map(|(_, token)| token.trim())
                        .ok_or_else(|| {
                            unauthorized("the Authorization header must be Bearer <token>")
                        })?;
                    return match self.token_named(presented) {
                        Some(name) => Ok(Some(name)),
                        None => Err(unauthorized("the API token is wrong")),
                    };
                }
                None if !read || self.reads_need_token => {
                    return Err(unauthorized(
                        "this request needs the API token: send Authorization: Bearer <token>",
                    ));
                }
                None => {}
            }
        }
        // Unauthenticated (no token configured, or a read on loopback): only what a browser
        // cannot have been tricked into sending.
        loopback_only(headers)?;
        let read = method == Method::GET || method == Method::HEAD;
        if !read {
            same_origin_write(headers)?;
        }
        Ok(None)
    }
}

/// Reads a token file (`serve --token-file`, `run --api-token-file`): one `<name> <token>` per
/// line, blank lines and `#` comments skipped. A token's name is what a request made with it
/// records (a cancel's `cancelled_by`). Errors name the line, never its text (it holds a
/// secret); [`super::ApiConfig::check`] checks the names and tokens.
pub fn read_token_file(path: &std::path::Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read the token file {}: {err}", path.display()))?;
    let mut tokens = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), Some(token), None) => tokens.push((name.to_string(), token.to_string())),
            _ => {
                return Err(format!(
                    "{} line {}: expected `<name> <token>` (two words)",
                    path.display(),
                    n + 1
                ));
            }
        }
    }
    if tokens.is_empty() {
        return Err(format!("the token file {} names no token", path.display()));
    }
    Ok(tokens)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// Without a token: only requests addressed to a loopback name, and no cross-site ones.
fn loopback_only(headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(host) = headers.get(header::HOST) {
        let host = host.to_str().unwrap_or_default();
        if !is_loopback_authority(host) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Host {host:?} is not a loopback name; without an API token this server \
                     answers only requests addressed to localhost, 127.0.0.1 or [::1]"
                ),
            ));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let authority = origin
            .split_once("://")
            .map_or("", |(_, rest)| rest.split('/').next().unwrap_or_default());
        if !is_loopback_authority(authority) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "requests from the web origin {origin:?} are refused; without an API \
                     token this server answers only loopback origins"
                ),
            ));
        }
    }
    Ok(())
}

/// Without a token, a write from a page of another origin is refused: one whose `Origin` is
/// not this server's (another port of localhost is another origin), or, where a browser sent
/// no `Origin`, whose `Sec-Fetch-Site` says so. (Reads are left to CORS, which keeps their
/// answers from other origins' pages.)
fn same_origin_write(headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let (scheme, rest) = origin.split_once("://").unwrap_or(("", origin));
        let authority = rest.split('/').next().unwrap_or_default();
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let scheme_port = if scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        };
        if port_of(authority, scheme_port) != port_of(host, 80) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "a write from the web origin {origin:?} is refused; without an API token \
                     this server accepts writes only from its own origin (this port)"
                ),
            ));
        }
    }
    match headers.get("sec-fetch-site").map(|v| v.as_bytes()) {
        None | Some(b"same-origin" | b"none") => Ok(()),
        Some(other) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "a write sent by a page of another origin (Sec-Fetch-Site: {}) is refused; \
                 without an API token this server accepts writes only from its own pages",
                String::from_utf8_lossy(other)
            ),
        )),
    }
}

/// The port of `host[:port]` (or `[v6][:port]`), `default` without one.
fn port_of(authority: &str, default: u16) -> Option<u16> {
    let after_host = match authority.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or("", |(_, after)| after),
        None => authority.split_once(':').map_or("", |(_, port)| port),
    };
    let port = after_host.strip_prefix(':').unwrap_or(after_host);
    if port.is_empty() {
        Some(default)
    } else {
        port.parse().ok()
    }
}

/// `host[:port]` (or `[v6][:port]`) naming this machine's loopback interface.
fn is_loopback_authority(authority: &str) -> bool {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The middleware: refuses a request the policy does not allow, before its body is read.
pub(crate) async fn authorize(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    let mut request = request;
    match access.check(request.method(), request.uri().path(), request.headers()) {
        Ok(name) => {
            let caller = Caller(name.unwrap_or(UNNAMED).to_string());
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(err) => {
            super::error::drain(request.into_body()).await;
            err.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::{HeaderName, HeaderValue};

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn with_a_token_writes_need_it_everywhere_and_reads_off_loopback() {
        let loopback = Access::new(Some("s3cret"), true);
        let public = Access::new(Some("s3cret"), false);
        let none = headers(&[]);
        let good = headers(&[(header::AUTHORIZATION, "Bearer s3cret")]);
        let bad = headers(&[(header::AUTHORIZATION, "Bearer s3cre")]);
        let basic = headers(&[(header::AUTHORIZATION, "Basic czNjcmV0")]);
        assert!(loopback.check(&Method::GET, "/api/queues", &none).is_ok());
        assert!(loopback.check(&Method::GET, "/api/queues", &bad).is_err());
        let rebound = headers(&[(header::HOST, "evil.example")]);
        assert!(
            loopback
                .check(&Method::GET, "/api/queues", &rebound)
                .is_err()
        );
        let mut rebound_with_token = good.clone();
        rebound_with_token.insert(header::HOST, HeaderValue::from_static("evil.example"));
        assert!(
            loopback
                .check(&Method::GET, "/api/queues", &rebound_with_token)
                .is_ok()
        );
        assert!(public.check(&Method::GET, "/api/queues", &none).is_err());
        assert!(public.check(&Method::GET, "/api/queues", &good).is_ok());
        for access in [&loopback, &public] {
            assert!(access.check(&Method::POST, "/api/x", &none).is_err());
            assert!(access.check(&Method::DELETE, "/api/x", &bad).is_err());
            assert!(access.check(&Method::POST, "/api/x", &basic).is_err());
            assert!(access.check(&Method::POST, "/api/x", &good).is_ok());
            assert!(access.check(&Method::GET, "/healthz", &none).is_ok());
        }
    }

    #[test]
    fn dashboard_files_need_no_token_only_where_a_page_load_could_not_send_it() {
        let loopback = Access::new(Some("s3cret"), true);
        let public = Access::new(Some("s3cret"), false);
        let open = Access::new(None, true);
        let public_host = headers(&[(header::HOST, "wasmq.example:7070")]);
        let bad = headers(&[(header::AUTHORIZATION, "Bearer nope")]);
        for path in ["/", "/dashboard/app.js", "/dashboard/views/job.js"] {
            assert!(
                public.check(&Method::GET, path, &public_host).is_ok(),
                "{path}"
            );
            assert!(public.check(&Method::GET, path, &bad).is_err(), "{path}");
            assert!(public.check(&Method::POST, path, &public_host).is_err());
            // On loopback they are guarded like any request without the token.
            for access in [&loopback, &open] {
                assert!(access.check(&Method::GET, path, &public_host).is_err());
                let local = headers(&[(header::HOST, "127.0.0.1:7070")]);
                assert!(access.check(&Method::GET, path, &local).is_ok());
            }
        }
        assert!(
            public
                .check(&Method::GET, "/api/queues", &public_host)
                .is_err()
        );
    }

    #[test]
    fn without_a_token_only_loopback_names_and_origins_are_answered() {
        let open = Access::new(None, true);
        for host in ["127.0.0.1:7070", "localhost", "[::1]:80", "127.1.2.3"] {
            let h = headers(&[(header::HOST, host)]);
            assert!(open.check(&Method::POST, "/api/x", &h).is_ok(), "{host}");
        }
        for host in ["evil.example:7070", "10.0.0.1", "[2001:db8::1]:7070"] {
            let h = headers(&[(header::HOST, host)]);
            assert!(open.check(&Method::GET, "/api/x", &h).is_err(), "{host}");
        }
        let cross = headers(&[
            (header::HOST, "127.0.0.1:7070"),
            (header::ORIGIN, "https://evil.example"),
        ]);
        assert!(open.check(&Method::POST, "/api/x", &cross).is_err());
        let same = headers(&[
            (header::HOST, "127.0.0.1:7070"),
            (header::ORIGIN, "http://localhost:7070"),
        ]);
        assert!(open.check(&Method::POST, "/api/x", &same).is_ok());
    }

    #[test]
    fn without_a_token_pages_of_other_local_servers_cannot_write() {
        let open = Access::new(None, true);
        let host = (header::HOST, "127.0.0.1:7070");
        // A page of another server on this machine (another port) is another origin.
        for origin in [
            "http://localhost:3000",
            "http://127.0.0.1",
            "https://localhost",
        ] {
            let h = headers(&[host.clone(), (header::ORIGIN, origin)]);
            assert!(open.check(&Method::POST, "/api/x", &h).is_err(), "{origin}");
            assert!(open.check(&Method::GET, "/api/x", &h).is_ok(), "{origin}");
        }
        for site in ["same-site", "cross-site"] {
            let h = headers(&[
                host.clone(),
                (HeaderName::from_static("sec-fetch-site"), site),
            ]);
            assert!(open.check(&Method::POST, "/api/x", &h).is_err(), "{site}");
            assert!(open.check(&Method::GET, "/api/x", &h).is_ok(), "{site}");
        }
        for site in ["same-origin", "none"] {
            let h = headers(&[
                host.clone(),
                (HeaderName::from_static("sec-fetch-site"), site),
            ]);
            assert!(open.check(&Method::POST, "/api/x", &h).is_ok(), "{site}");
        }
        let v6 = headers(&[
            (header::HOST, "[::1]:7070"),
            (header::ORIGIN, "http://[::1]:7070"),
        ]);
        assert!(open.check(&Method::POST, "/api/x", &v6).is_ok());
        let default_port = headers(&[
            (header::HOST, "localhost"),
            (header::ORIGIN, "http://localhost"),
        ]);
        assert!(open.check(&Method::POST, "/api/x", &default_port).is_ok());
    }
}
