//! Where Redis is: one server or a Redis Cluster, named by the one URL every command takes.
//!
//! - [`RedisTarget`] - a parsed `--redis` URL: `redis://host:port/db` for one server (through
//!   the redis crate's `ConnectionManager`), `redis+cluster://host:port,host:port,...` for a
//!   cluster (seed nodes; the redis crate's cluster client learns the rest of the topology and
//!   follows it through failovers and resharding). `rediss://` and `rediss+cluster://` are the
//!   same over TLS (rustls; the system's trust store, or the CA named by `?tls_ca=FILE`, and a
//!   client certificate by `tls_cert=FILE&tls_key=FILE`: see [`TlsFiles`]).
//! - [`RedisConnection`] - the connection every part of wasmq talks through, whichever it is.
//!   It implements `redis::aio::ConnectionLike`, so commands, pipelines and script calls are
//!   written once. A cluster's is a [`ClusterHandle`], which replaces the redis crate's
//!   cluster connection when a request times out on it. A blocking `BLPOP` (a fetcher idle
//!   on a queue's wake-up list) gets a connection of its own, with no response timeout
//!   ([`RedisTarget::connect_blocking`]).
//! - [`redact`] - how a URL may be shown: without its credentials.
//! - [`Backoff`] - the one delay between retries of Redis (the worker's fetcher, acker and
//!   deployer, the alerts' reader): 50 ms doubling to 5 s, jittered.
//!
//! On a cluster a command goes to the primary that owns its key's slot. Every key of a queue
//! carries the hash tag `{<queue>}` (the registry's `{@registry}`, the schedules'
//! `{@schedules}`), so each script call and pipeline stays within one slot, and different
//! queues spread over the shards. The few commands that are not about one key say so here:
//! [`RedisConnection::scan`] walks every primary, `FUNCTION LOAD` goes to every primary (the
//! redis crate routes it so), and [`RedisTarget::subscribe`] listens on any one node, since a
//! classic `PUBLISH` reaches every node of a cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value,
};

/// The URL scheme that names a cluster by its seed nodes.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";
/// The same over TLS.
pub const TLS_CLUSTER_SCHEME: &str = "rediss+cluster://";

/// The files a TLS connection to Redis uses beside the system's trust store, named by the
/// URL's query: `rediss://host:6380/0?tls_ca=/etc/wasmq/ca.pem&tls_cert=client.pem&tls_key=client.key`.
/// They are read when the URL is opened, so a missing or unreadable file fails at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificates to trust instead of the system's (a private CA).
    pub ca: Option<std::path::PathBuf>,
    /// A PEM client certificate (chain), for servers that require one (`tls-auth-clients`).
    pub cert: Option<std::path::PathBuf>,
    /// The PEM private key of `cert`.
    pub key: Option<std::path::PathBuf>,
}

impl TlsFiles {
    fn is_empty(&self) -> bool {
        *self == TlsFiles::default()
    }

    /// Reads the files into the redis crate's form.
    fn load(&self) -> RedisResult<redis::TlsCertificates> {
        let read = |what: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|err| invalid(what, format!("{}: {err}", path.display())))
        };
        let client_tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read("cannot read the TLS client certificate (tls_cert)", cert)?,
                client_key: read("cannot read the TLS client key (tls_key)", key)?,
            }),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "a TLS client certificate needs both tls_cert and tls_key",
                    String::new(),
                ));
            }
        };
        let root_cert = match &self.ca {
            Some(ca) => Some(read("cannot read the TLS CA certificates (tls_ca)", ca)?),
            None => None,
        };
        Ok(redis::TlsCertificates {
            client_tls,
            root_cert,
        })
    }
}

/// Takes wasmq's own query parameters (`tls_ca`, `tls_cert`, `tls_key`) out of `url`; what is
/// left goes to the redis crate. Fails on any other query parameter, so a typo is not ignored.
fn split_tls_query(url: &str) -> RedisResult<(String, TlsFiles)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), TlsFiles::default()));
    };
    let mut files = TlsFiles::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        if value.is_empty() {
            return Err(invalid("an empty Redis URL parameter", name.to_string()));
        }
        let slot = match name {
            "tls_ca" => &mut files.ca,
            "tls_cert" => &mut files.cert,
            "tls_key" => &mut files.key,
            other => {
                return Err(invalid(
                    "unknown Redis URL parameter (wasmq takes tls_ca, tls_cert, tls_key)",
                    other.to_string(),
                ));
            }
        };
        *slot = Some(std::path::PathBuf::from(value));
    }
    Ok((base.to_string(), files))
}

/// `%XX` escapes decoded (paths with spaces or `&`); anything malformed is kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A client for one server's `url`, with `certs` when it is `rediss://`.
fn client(url: &str, certs: Option<&redis::TlsCertificates>) -> RedisResult<redis::Client> {
    match certs {
        Some(certs) => redis::Client::build_with_tls(url, certs.clone()),
        None => redis::Client::open(url),
    }
}

/// How a connection waits and retries.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions {
    /// How long one command may take; `None` for blocking commands (`BLPOP`).
    pub response_timeout: Option<Duration>,
    /// How long connecting to one node may take.
    pub connection_timeout: Duration,
    /// Attempts per reconnect (one server) or retries per command (cluster: redirections,
    /// a node that went away, a failover in progress).
    pub retries: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            response_timeout: Some(Duration::from_secs(30)),
            connection_timeout: Duration::from_secs(5),
            retries: 2,
        }
    }
}

/// A cluster's seed nodes: their URLs (for cluster clients) and one plain client each (for
/// pub/sub).
struct Cluster {
    urls: Vec<String>,
    /// The TLS files' contents, for `rediss+cluster://`.
    certs: Option<redis::TlsCertificates>,
    seeds: Vec<redis::Client>,
    /// The seed the next subscription tries first, so a dead node is not tried forever.
    next_seed: AtomicUsize,
}

#[derive(Clone)]
enum Target {
    /// Boxed: with TLS, a client holds its certificates.
    Single(Box<redis::Client>),
    Cluster(Arc<Cluster>),
}

/// One Redis server or one Redis Cluster, parsed from a URL. Cheap to clone.
#[derive(Clone)]
pub struct RedisTarget {
    url: String,
    target: Target,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("url", &redact(&self.url))
            .field("cluster", &self.is_cluster())
            .finish()
    }
}

/// `url` with any user name and password replaced by `***`: what errors and logs may show.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

fn invalid(what: &'static str, detail: String) -> RedisError {
    RedisError::from((ErrorKind::InvalidClientConfig, what, detail))
}

/// The seed node URLs of a `redis+cluster://[user:password@]host:port,host:port[/0]` URL,
/// each as a `redis://` URL with the same credentials (`rediss://` for `rediss+cluster://`).
fn cluster_seeds(url: &str) -> RedisResult<Vec<String>> {
    let (rest, node_scheme) = if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
        (rest, "redis://")
    } else if let Some(rest) = url.strip_prefix(TLS_CLUSTER_SCHEME) {
        (rest, "rediss://")
    } else {
        return Err(invalid("not a cluster URL", redact(url)));
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    // A cluster has database 0 only.
    if !matches!(path, "" | "/" | "/0") {
        return Err(invalid(
            "a Redis Cluster URL takes no path but /0 (a cluster has one database)",
            redact(url),
        ));
    }
    let (credentials, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let seeds: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(|host| format!("{node_scheme}{credentials}{host}"))
        .collect();
    if seeds.is_empty() {
        return Err(invalid(
            "a Redis Cluster URL names at least one node: redis+cluster://host:port,host:port \
             (rediss+cluster:// over TLS)",
            redact(url),
        ));
    }
    Ok(seeds)
}

impl RedisTarget {
    /// Parses `url`: `redis://...` (one server) or `redis+cluster://h1:p1,h2:p2` (a cluster).
    /// Nothing is connected yet.
    pub fn open(url: &str) -> RedisResult<RedisTarget> {
        let (base, files) = split_tls_query(url)?;
        let tls = base.starts_with("rediss://") || base.starts_with(TLS_CLUSTER_SCHEME);
        if !tls && !files.is_empty() {
            return Err(invalid(
                "tls_ca, tls_cert and tls_key apply to TLS connections: use rediss:// (or \
                 rediss+cluster://)",
                redact(url),
            ));
        }
        // With no file given, `None`: the redis crate trusts the system's store.
        let certs = if files.is_empty() {
            None
        } else {
            Some(files.load()?)
        };
        let target = if base.starts_with(CLUSTER_SCHEME) || base.starts_with(TLS_CLUSTER_SCHEME) {
            let seeds = cluster_seeds(&base)?;
            let clients = seeds
                .iter()
                .map(|seed| client(seed, certs.as_ref()))
                .collect::<RedisResult<Vec<_>>>()?;
            let cluster = Cluster {
                urls: seeds,
                certs,
                seeds: clients,
                next_seed: AtomicUsize::new(0),
            };
            // Checks the seeds (same credentials everywhere); connects nothing.
            cluster_builder(&cluster).build()?;
            Target::Cluster(Arc::new(cluster))
        } else {
            Target::Single(Box::new(client(&base, certs.as_ref())?))
        };
        Ok(RedisTarget {
            url: url.to_string(),
            target,
        })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// The URL, with any password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// A shared connection that reconnects by itself: one server's `ConnectionManager`, or a
    /// cluster connection (one multiplexed connection per primary, following the topology).
    pub async fn connect(&self, options: ConnectOptions) -> RedisResult<RedisConnection> {
        match &self.target {
            Target::Single(client) => {
                let mut config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(options.connection_timeout))
                    .set_number_of_retries(options.retries);
                config = config.set_response_timeout(options.response_timeout);
                let conn = client.get_connection_manager_with_config(config).await?;
                Ok(RedisConnection::Single(conn))
            }
            Target::Cluster(cluster) => {
                let client = cluster_client(cluster, options)?;
                Ok(RedisConnection::Cluster(
                    ClusterHandle::connect(client).await?,
                ))
            }
        }
    }

    /// A connection of its own for a blocking command (`BLPOP`), which would stall every
    /// other call sharing a multiplexed connection: no response timeout.
    pub async fn connect_blocking(&self) -> RedisResult<RedisConnection> {
        match &self.target {
            Target::Single(client) => {
                let config = AsyncConnectionConfig::new().set_response_timeout(None);
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(RedisConnection::Plain(conn))
            }
            Target::Cluster(cluster) => {
                let options = ConnectOptions {
                    response_timeout: None,
                    ..ConnectOptions::default()
                };
                let client = cluster_client(cluster, options)?;
                Ok(RedisConnection::Cluster(
                    ClusterHandle::connect(client).await?,
                ))
            }
        }
    }

    /// Subscribes to `channel` and returns the stream of its messages' payloads; the stream
    /// ends when the connection drops (subscribe again). On a cluster the subscription is on
    /// one node (a classic `PUBLISH` reaches every node), the seeds tried in turn from the one
    /// after the last that was used, so a node that died is not the only one tried.
    pub async fn subscribe(
        &self,
        channel: &str,
    ) -> RedisResult<futures_util::stream::BoxStream<'static, Vec<u8>>> {
        let messages = self.subscribe_all(&[channel.to_string()]).await?;
        Ok(messages.map(|(_, payload)| payload).boxed())
    }

    /// [`RedisTarget::subscribe`] to every channel of `channels` on one connection: the stream
    /// of each message's channel and payload.
    pub async fn subscribe_all(
        &self,
        channels: &[String],
    ) -> RedisResult<futures_util::stream::BoxStream<'static, (String, Vec<u8>)>> {
        let channel = channels;
        let client = match &self.target {
            Target::Single(client) => client.clone(),
            Target::Cluster(cluster) => {
                let mut last_error = None;
                let mut subscribed = None;
                for _ in 0..cluster.seeds.len() {
                    let index = cluster.next_seed.fetch_add(1, Ordering::Relaxed);
                    let seed = &cluster.seeds[index % cluster.seeds.len()];
                    match seed.get_async_pubsub().await {
                        Ok(mut pubsub) => match pubsub.subscribe(channel).await {
                            Ok(()) => {
                                subscribed = Some(pubsub);
                                break;
                            }
                            Err(err) => last_error = Some(err),
                        },
                        Err(err) => last_error = Some(err),
                    }
                }
                return match (subscribed, last_error) {
                    (Some(pubsub), _) => Ok(messages(pubsub)),
                    (None, Some(err)) => Err(err),
                    (None, None) => Err(invalid("no seed node", self.redacted_url())),
                };
            }
        };
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(messages(pubsub))
    }
}

fn messages(
    pubsub: redis::aio::PubSub,
) -> futures_util::stream::BoxStream<'static, (String, Vec<u8>)> {
    pubsub
        .into_on_message()
        .map(|message| {
            (
                message.get_channel_name().to_string(),
                message.get_payload_bytes().to_vec(),
            )
        })
        .boxed()
}

/// Exponential backoff with jitter for retrying Redis: 50 ms doubling to 5 s, each delay drawn
/// from [d/2, d].
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        let base_ms = 50u64.saturating_mul(1 << self.failures.min(7)).min(5_000);
        self.failures = self.failures.saturating_add(1);
        Duration::from_millis(rand::random_range(base_ms / 2..=base_ms))
    }
}

/// A builder for the cluster's seeds, with its TLS files.
fn cluster_builder(cluster: &Cluster) -> ClusterClientBuilder {
    let builder = ClusterClientBuilder::new(cluster.urls.clone());
    match &cluster.certs {
        Some(certs) => builder.certs(certs.clone()),
        None => builder,
    }
}

fn cluster_client(cluster: &Cluster, options: ConnectOptions) -> RedisResult<ClusterClient> {
    // The cluster client's defaults wait over a second before the first retry and retry 16
    // times; a failover takes about the node timeout, and the callers (fetchers, the acker)
    // retry on their own, so a few quick retries are enough.
    let mut builder = cluster_builder(cluster)
        .connection_timeout(options.connection_timeout)
        .retries(u32::try_from(options.retries.max(1) * 2).unwrap_or(u32::MAX))
        .min_retry_wait(50)
        .max_retry_wait(1_000);
    if let Some(timeout) = options.response_timeout {
        builder = builder
            .response_timeout(timeout)
            .overall_response_timeout(Some(timeout));
    }
    builder.build()
}

/// A connection to one Redis server or a Redis Cluster. Cheap to clone: clones share the
/// underlying connections.
#[derive(Clone)]
pub enum RedisConnection {
    /// One server, reconnecting by itself.
    Single(ConnectionManager),
    /// One server, a connection of its own (blocking commands).
    Plain(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterHandle),
}

/// Longest wait for a new cluster connection that replaces one that stopped answering.
const REPLACE_WITHIN: Duration = Duration::from_secs(30);

/// A Redis Cluster connection that is replaced when it stops answering.
///
/// The redis crate's cluster connection repairs itself after most failures, but not all:
/// when every node restarts at once it can be left timing out every request for good (seen
/// in the test `worker::redis_restart_while_jobs_flow_loses_nothing`: the host's calls timed
/// out for minutes while a new client was served at once; redis-rs #2277 is a similar case).
/// A request that times out on the current connection therefore has it replaced by a new one
/// from the same client, once per connection however many requests fail together. The
/// request itself still fails; its caller retries as after any Redis error. Clones share the
/// current connection.
#[derive(Clone)]
pub struct ClusterHandle {
    shared: Arc<ClusterShared>,
}

struct ClusterShared {
    client: ClusterClient,
    /// The current connection and its generation (counting replacements).
    current: std::sync::Mutex<(u64, ClusterConnection)>,
    /// Set while a replacement is being connected.
    replacing: std::sync::atomic::AtomicBool,
}

/// Clears [`ClusterShared::replacing`] when dropped.
struct Replacing<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Replacing<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl ClusterHandle {
    async fn connect(client: ClusterClient) -> RedisResult<ClusterHandle> {
        let conn = client.get_async_connection().await?;
        Ok(ClusterHandle {
            shared: Arc::new(ClusterShared {
                client,
                current: std::sync::Mutex::new((0, conn)),
                replacing: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The current connection and its generation.
    fn current(&self) -> (u64, ClusterConnection) {
        self.shared
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Passes `result` on, first replacing connection `generation` if the request timed out
    /// on it and it is still the current one.
    async fn observe<T>(&self, generation: u64, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(err) = &result
            && err.is_timeout()
            && self.current().0 == generation
            && !self.shared.replacing.swap(true, Ordering::AcqRel)
        {
            // Cleared however this ends, also when the caller drops the request meanwhile.
            let _replacing = Replacing(&self.shared.replacing);
            self.replace(generation).await;
        }
        result
    }

    async fn replace(&self, generation: u64) {
        match tokio::time::timeout(REPLACE_WITHIN, self.shared.client.get_async_connection()).await
        {
            Ok(Ok(conn)) => {
                let mut current = self
                    .shared
                    .current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if current.0 == generation {
                    *current = (generation + 1, conn);
                    tracing::warn!(
                        "a request to the Redis Cluster timed out; replaced the cluster \
                         connection with a new one"
                    );
                }
            }
            Ok(Err(err)) => tracing::debug!(%err, "could not replace the cluster connection yet"),
            Err(_) => tracing::debug!("replacing the cluster connection timed out"),
        }
    }
}

impl RedisConnection {
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConnection::Cluster(_))
    }

    /// The keys matching `pattern`, by `SCAN` with `COUNT count`, over every primary of a
    /// cluster; at most `max_calls` `SCAN` calls in all. Returns the keys and whether the
    /// whole keyspace was walked.
    pub async fn scan(
        &mut self,
        pattern: &str,
        count: usize,
        max_calls: usize,
    ) -> RedisResult<(Vec<Vec<u8>>, bool)> {
        let scan = |cursor: u64| {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(count);
            cmd
        };
        let mut keys = Vec::new();
        let mut calls = 0;
        match self {
            RedisConnection::Cluster(handle) => {
                let (_, mut conn) = handle.current();
                let conn = &mut conn;
                for (host, port) in primaries(conn).await? {
                    let mut cursor = 0u64;
                    loop {
                        if calls == max_calls {
                            return Ok((keys, false));
                        }
                        calls += 1;
                        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port,
                        });
                        let reply = conn.route_command(scan(cursor), routing).await?;
                        let (next, found): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)?;
                        keys.extend(found);
                        cursor = next;
                        if cursor == 0 {
                            break;
                        }
                    }
                }
                Ok((keys, true))
            }
            _ => {
                let mut cursor = 0u64;
                loop {
                    if calls == max_calls {
                        return Ok((keys, false));
                    }
                    calls += 1;
                    let (next, found): (u64, Vec<Vec<u8>>) = scan(cursor).query_async(self).await?;
                    keys.extend(found);
                    cursor = next;
                    if cursor == 0 {
                        return Ok((keys, true));
                    }
                }
            }
        }
    }
}

/// The primaries of a cluster, as `(host, port)`, from `CLUSTER NODES` (failed ones left out).
async fn primaries(conn: &mut ClusterConnection) -> RedisResult<Vec<(String, u16)>> {
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(conn).await?;
    Ok(parse_primaries(&nodes))
}

/// The `(host, port)` of each live primary in a `CLUSTER NODES` reply: lines of
/// `<id> <ip:port@cport[,hostname]> <flags> ...`.
fn parse_primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _id = fields.next()?;
            let address = fields.next()?;
            let flags = fields.next()?;
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
                return None;
            }
            let address = address.split(['@', ',']).next()?;
            let (host, port) = address.rsplit_once(':')?;
            let port: u16 = port.parse().ok()?;
            (port != 0).then(|| (host.to_string(), port))
        })
        .collect()
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(conn) => conn.req_packed_command(cmd),
            RedisConnection::Plain(conn) => conn.req_packed_command(cmd),
            RedisConnection::Cluster(handle) => {
                let (generation, mut conn) = handle.current();
                Box::pin(async move {
                    let result = conn.req_packed_command(cmd).await;
                    handle.observe(generation, result).await
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConnection::Plain(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(handle) => {
                let (generation, mut conn) = handle.current();
                Box::pin(async move {
                    let result = conn.req_packed_commands(pipeline, offset, count).await;
                    handle.observe(generation, result).await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(conn) => conn.get_db(),
            RedisConnection::Plain(conn) => conn.get_db(),
            RedisConnection::Cluster(handle) => handle.current().1.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_its_seed_nodes_with_the_same_credentials() {
        assert_eq!(
            cluster_seeds("redis+cluster://10.0.0.1:7000,10.0.0.2:7001").unwrap(),
            ["redis://10.0.0.1:7000", "redis://10.0.0.2:7001"]
        );
        assert_eq!(
            cluster_seeds("redis+cluster://app:s3cret@h1:7000,h2:7000/0").unwrap(),
            ["redis://app:s3cret@h1:7000", "redis://app:s3cret@h2:7000"]
        );
        assert!(cluster_seeds("redis+cluster:///").is_err());
        assert!(cluster_seeds("redis+cluster://h1:7000/3").is_err());
        let target = RedisTarget::open("redis+cluster://u:pw@h1:7000,h2:7001").unwrap();
        assert!(target.is_cluster());
        assert_eq!(target.redacted_url(), "redis+cluster://***@h1:7000,h2:7001");
        assert!(
            !RedisTarget::open("redis://127.0.0.1:6379")
                .unwrap()
                .is_cluster()
        );
    }

    #[test]
    fn primaries_are_the_live_masters_of_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:30002@40002,host-b master - 0 0 2 connected 5461-10922
c3 127.0.0.1:30003@40003 master,fail - 0 0 3 connected
d4 127.0.0.1:30004@40004 slave a1 0 0 1 connected
e5 127.0.0.1:30005@40005 master - 0 0 4 connected 10923-16383
";
        assert_eq!(
            parse_primaries(nodes),
            [
                ("127.0.0.1".to_string(), 30001),
                ("127.0.0.1".to_string(), 30002),
                ("127.0.0.1".to_string(), 30005),
            ]
        );
    }
}
