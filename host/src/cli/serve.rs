//! `wasmq serve`: the HTTP API on its own, without running jobs. A thin call into
//! [`crate::api::Server`]; `wasmq run --http` serves the same API beside a worker.

use std::net::SocketAddr;

use anyhow::Context;

use super::queue::RedisArgs;
use crate::api::{ApiConfig, HttpLimits, Server};

/// Serve the HTTP API (JSON endpoints and /openapi.json; see docs/api.md) until SIGTERM or
/// SIGINT.
///
/// Without a token the API answers on loopback addresses only; with one, every POST and DELETE
/// needs `Authorization: Bearer <token>`, and so does every GET off loopback.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the address is printed).
    #[arg(long, env = "WASMQ_HTTP", default_value = crate::api::DEFAULT_BIND)]
    pub http: SocketAddr,
    /// Bearer token the API requires (prefer the environment variable: flags show in `ps`).
    #[arg(long, env = "WASMQ_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File of more tokens, one `<name> <token>` per line: a request made with one records
    /// its name (who cancelled a job); `--token`'s name is `api`. Keep the file private.
    #[arg(long, env = "WASMQ_API_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub limits: HttpLimitArgs,
    /// Queues to list in GET /api/queues besides those found in Redis, comma-separated.
    #[arg(long, env = "WASMQ_QUEUES", value_delimiter = ',')]
    pub queues: Vec<String>,
    #[command(flatten)]
    pub compile: super::compile::CompileArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<u8> {
    let server = Server::bind(ApiConfig {
        bind: args.http,
        redis_url: args.redis.url.clone(),
        token: args.token,
        named_tokens: named_tokens(args.token_file.as_deref())?,
        queues: args.queues,
        metrics: None,
        compile: args.compile.config(None, None)?,
        limits: args.limits.limits(None, None)?,
    })
    .await
    .context("starting the HTTP API")?;
    let addr = server.local_addr();
    tracing::info!(%addr, "HTTP API listening");
    say!("listening on http://{addr}");
    server
        .serve(stop_signal())
        .await
        .with_context(|| format!("serving the HTTP API on {addr}"))?;
    Ok(0)
}

/// The tokens of `--token-file` / `--api-token-file` (none without one).
pub(super) fn named_tokens(
    file: Option<&std::path::Path>,
) -> anyhow::Result<Vec<(String, String)>> {
    match file {
        Some(path) => crate::api::read_token_file(path).map_err(anyhow::Error::msg),
        None => Ok(Vec::new()),
    }
}

/// How much of the HTTP API one client can hold (`serve`, `run --http`).
#[derive(Debug, clap::Args)]
pub struct HttpLimitArgs {
    /// Close a connection whose request line and headers have not all arrived this long
    /// after the server began waiting for them, and a keep-alive connection idle this long
    /// [default: 10s]
    #[arg(long, env = "WASMQ_HTTP_HEADER_TIMEOUT")]
    pub http_header_timeout: Option<String>,
    /// Most HTTP connections open at once; more are closed as soon as they are accepted
    /// [default: 512]
    #[arg(long, env = "WASMQ_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
}

impl HttpLimitArgs {
    /// The flags (or environment) over `run`'s --config file values over the defaults.
    pub fn limits(
        &self,
        file_timeout: Option<&str>,
        file_max: Option<usize>,
    ) -> anyhow::Result<HttpLimits> {
        let mut limits = HttpLimits::default();
        if let Some(text) = self.http_header_timeout.as_deref().or(file_timeout) {
            limits.header_timeout = crate::units::parse_duration("http_header_timeout", text)
                .map_err(anyhow::Error::msg)?;
        }
        if let Some(n) = self.http_max_connections.or(file_max) {
            limits.max_connections = n;
        }
        Ok(limits)
    }
}

/// The first SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop the server with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
