//! A private `redis-server` for a test: `wasmq::local_redis::LocalRedis` (free loopback port,
//! never 6379; own directory; no persistence unless asked; killed when dropped), with the
//! panicking conveniences a test wants.
//!
//! ```ignore
//! let redis = RedisServer::start();
//! let client = redis.client().await;
//! ```

use std::ops::{Deref, DerefMut};

use wasmq::local_redis::{LocalRedis, LocalRedisOptions};

/// Options for [`RedisServer::start_with`].
pub type RedisOptions = LocalRedisOptions;

/// A running (or stopped) private redis-server.
pub struct RedisServer(LocalRedis);

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

    /// Starts a server with `options`. Panics when redis-server is missing (the message says
    /// how to install it: the tests never skip) or does not come up.
    pub fn start_with(options: RedisOptions) -> RedisServer {
        match LocalRedis::start(options) {
            Ok(server) => RedisServer(server),
            Err(err) => panic!("{err}"),
        }
    }

    /// A queue client connected to this server.
    pub async fn client(&self) -> wasmq::queue::Client {
        wasmq::queue::Client::connect(&self.url())
            .await
            .expect("connect a queue client to the test redis-server")
    }

    /// Every key and its `DUMP`: what "Redis content unchanged" compares.
    pub async fn snapshot(&self) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut conn = self.connection().await;
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

    /// Lua calls (scripts and functions: `EVAL`, `EVALSHA`, `FCALL`) Redis has served since it
    /// started or its last `CONFIG RESETSTAT`: every fetch, ack, heartbeat...
    pub async fn script_calls(&self) -> u64 {
        let mut conn = self.connection().await;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        info.lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                if !matches!(name, "eval" | "evalsha" | "fcall") {
                    return None;
                }
                stats
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// A plain async connection, for assertions on raw Redis state.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("open a redis client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis-server")
    }

    /// Starts the server again on the same port and directory (after `stop` or `kill`).
    pub fn restart(&mut self) {
        if let Err(err) = self.0.restart() {
            panic!("{err}");
        }
    }
}

impl Deref for RedisServer {
    type Target = LocalRedis;

    fn deref(&self) -> &LocalRedis {
        &self.0
    }
}

impl DerefMut for RedisServer {
    fn deref_mut(&mut self) -> &mut LocalRedis {
        &mut self.0
    }
}
