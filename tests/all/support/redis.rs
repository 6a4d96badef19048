//! The Redis a test runs against: a private `redis-server` (`wasmq::local_redis::LocalRedis`:
//! free loopback port, never 6379; own directory; no persistence unless asked; killed when
//! dropped), or, when the environment says `WASMQ_TEST_REDIS=cluster`, a private 3-primary
//! Redis Cluster (`support::cluster`) standing in for it, with the panicking conveniences a
//! test wants. `scripts/test.sh` runs the queue and worker suites a second time that way, so
//! the same tests check both.
//!
//! ```ignore
//! let redis = RedisServer::start();
//! let client = redis.client().await;
//! ```

use wasmq::connection::{ConnectOptions, RedisConnection, RedisTarget};
use wasmq::local_redis::{LocalRedis, LocalRedisOptions};

use super::cluster::RedisCluster;

/// Options for [`RedisServer::start_with`].
pub type RedisOptions = LocalRedisOptions;

/// The environment variable that makes [`RedisServer`] a cluster.
pub const TEST_REDIS_ENV: &str = "WASMQ_TEST_REDIS";

/// Whether this run's tests get a Redis Cluster for a [`RedisServer`].
pub fn cluster_mode() -> bool {
    match std::env::var(TEST_REDIS_ENV) {
        Ok(value) if value == "cluster" => true,
        Ok(value) if value.is_empty() || value == "single" => false,
        Ok(other) => panic!("{TEST_REDIS_ENV}={other}: expected `single` or `cluster`"),
        Err(_) => false,
    }
}

enum Backend {
    Single(LocalRedis),
    Cluster(RedisCluster),
}

/// A running (or stopped) private redis-server, or Redis Cluster standing in for one.
pub struct RedisServer(Backend);

impl RedisServer {
    /// Starts a server without persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(RedisOptions::default())
    }

    /// Starts a server with AOF (`appendfsync always`).
    pub fn start_with_aof() -> RedisServer {
        RedisServer::start_with(RedisOptions {
            aof: true,
            ..RedisOptions::default()
        })
    }

    /// Starts a server with `options` (on every node of a cluster). Panics when redis-server
    /// is missing (the message says how to install it: the tests never skip) or does not
    /// come up.
    pub fn start_with(options: RedisOptions) -> RedisServer {
        if cluster_mode() {
            return RedisServer(Backend::Cluster(RedisCluster::start(3, 0, options)));
        }
        match LocalRedis::start(options) {
            Ok(server) => RedisServer(Backend::Single(server)),
            Err(err) => panic!("{err}"),
        }
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Backend::Cluster(_))
    }

    /// The URL hosts and clients take: `redis://...` or `redis+cluster://...`.
    pub fn url(&self) -> String {
        match &self.0 {
            Backend::Single(server) => server.url(),
            Backend::Cluster(cluster) => cluster.url(),
        }
    }

    /// A queue client connected to this server.
    pub async fn client(&self) -> wasmq::queue::Client {
        wasmq::queue::Client::connect(&self.url())
            .await
            .expect("connect a queue client to the test redis-server")
    }

    /// Redis server time in ms (see [`now_ms`]).
    pub async fn now_ms(&self) -> u64 {
        now_ms(&mut self.connection().await).await
    }

    /// Every key and its `DUMP`: what "Redis content unchanged" compares; equal snapshots
    /// mean nothing was written.
    pub async fn snapshot(&self) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut conn = self.connection().await;
        // On a cluster, `KEYS` goes to every primary and the replies are joined.
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut all = std::collections::BTreeMap::new();
        for key in keys {
            let dump: Vec<u8> = redis::cmd("DUMP")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            all.insert(key, dump);
        }
        all
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &str) -> bool {
        let mut conn = self.connection().await;
        redis::cmd("EXISTS")
            .arg(key)
            .query_async::<u32>(&mut conn)
            .await
            .unwrap()
            == 1
    }

    /// Every command Redis has served since it started or its last `CONFIG RESETSTAT`, by
    /// name (`INFO commandstats`, commands inside scripts and functions counted too; every
    /// node's, summed, on a cluster).
    pub async fn command_calls(&self) -> std::collections::BTreeMap<String, u64> {
        let infos: Vec<String> = match &self.0 {
            Backend::Single(_) => {
                let mut conn = self.connection().await;
                vec![
                    redis::cmd("INFO")
                        .arg("commandstats")
                        .query_async(&mut conn)
                        .await
                        .unwrap(),
                ]
            }
            Backend::Cluster(cluster) => cluster
                .ports()
                .into_iter()
                .map(|port| cluster.query_node(port, redis::cmd("INFO").arg("commandstats")))
                .collect(),
        };
        let mut calls = std::collections::BTreeMap::new();
        for line in infos.iter().flat_map(|info| info.lines()) {
            let Some((name, stats)) = line
                .strip_prefix("cmdstat_")
                .and_then(|line| line.split_once(':'))
            else {
                continue;
            };
            let n = stats
                .strip_prefix("calls=")
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            *calls.entry(name.to_string()).or_insert(0) += n;
        }
        calls
    }

    /// Lua calls (scripts and functions: `EVAL`, `EVALSHA`, `FCALL`) Redis has served since it
    /// started or its last `CONFIG RESETSTAT` (every node's, summed, on a cluster): every
    /// fetch, ack, heartbeat...
    pub async fn script_calls(&self) -> u64 {
        self.counted_calls(|name| matches!(name, "eval" | "evalsha" | "fcall"))
            .await
    }

    /// The data commands Redis has served (every node's, summed, on a cluster): those the
    /// scripts run, and any a client sends, but not the calls themselves nor what clients
    /// and the test send to manage connections and read stats (`INFO`, `CLUSTER`, `PING`...).
    pub async fn data_commands(&self) -> u64 {
        self.counted_calls(|name| {
            !matches!(
                name,
                "eval"
                    | "evalsha"
                    | "fcall"
                    | "function"
                    | "script"
                    | "info"
                    | "cluster"
                    | "ping"
                    | "client"
                    | "hello"
                    | "config"
                    | "command"
                    | "select"
                    | "readonly"
                    | "asking"
            ) && !name.starts_with("function|")
                && !name.starts_with("client|")
                && !name.starts_with("cluster|")
                && !name.starts_with("config|")
                && !name.starts_with("command|")
                && !name.starts_with("script|")
        })
        .await
    }

    async fn counted_calls(&self, counted: impl Fn(&str) -> bool) -> u64 {
        let calls = self.command_calls().await;
        calls
            .iter()
            .filter(|(name, _)| counted(name))
            .map(|(_, n)| n)
            .sum()
    }

    /// An async connection for assertions on raw Redis state; on a cluster it routes each
    /// command as wasmq's own connections do (by key; `KEYS`, `FLUSHALL`, `CONFIG RESETSTAT`,
    /// `FUNCTION FLUSH` to every primary or node).
    pub async fn connection(&self) -> RedisConnection {
        RedisTarget::open(&self.url())
            .expect("open a redis client")
            .connect(ConnectOptions::default())
            .await
            .expect("connect to the test redis-server")
    }

    /// Graceful stop (every node of a cluster).
    pub fn stop(&mut self) {
        match &mut self.0 {
            Backend::Single(server) => server.stop(),
            Backend::Cluster(cluster) => cluster.stop(),
        }
    }

    /// SIGKILL (every node of a cluster).
    pub fn kill(&mut self) {
        match &mut self.0 {
            Backend::Single(server) => server.kill(),
            Backend::Cluster(cluster) => cluster.kill(),
        }
    }

    /// Starts the server again on the same port and directory (after `stop` or `kill`); a
    /// cluster comes back as it was, from its nodes' `nodes.conf`.
    pub fn restart(&mut self) {
        match &mut self.0 {
            Backend::Single(server) => {
                if let Err(err) = server.restart() {
                    panic!("{err}");
                }
            }
            Backend::Cluster(cluster) => cluster.restart(),
        }
    }
}

/// Redis server time in ms, read on `conn`: the clock every deadline in the protocol (lease
/// expiry, delays, rate windows, completion times) is measured on.
pub async fn now_ms(conn: &mut RedisConnection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    secs * 1000 + micros / 1000
}
