//! [`Client`]: the Rust face of the protocol, one file per role as the protocol's messages
//! are: `produce.rs` (enqueue, cancel), `inspect.rs` (get, counts, list, events),
//! `config.rs` (settings, pause), `dead.rs` (the dead-letter queue), `lease.rs` (fetch,
//! extend, release, recovery) and `ack.rs` (complete, fail), with `steps.rs` (steps,
//! sleeps), `children.rs` (child jobs), `limit.rs` (throttles), `check.rs`, `kv.rs` and
//! `timeline.rs` (the dashboard's reads). Each method is one script call (one round trip)
//! or, for plain reads, one pipeline; batches go in one call, so a worker pays a round trip
//! per batch, not per job. Every script call takes its keys from the script's table
//! (`scripts.rs`), never from a list written at the call.

use std::time::Duration;

use redis::Value;

use super::error::{QueueError, Result};
use super::keys::QueueKeys;
use super::scripts::Call;
use crate::connection::{ConnectOptions, RedisConnection, RedisTarget};

/// Most jobs one call handles (enqueue_bulk, fetch, recover_expired, promote; the scripts
/// refuse more): one script call blocks Redis while it runs, so batches stay bounded.
pub const MAX_BULK: usize = 10_000;

/// How long a single call may take before the client gives up on the reply. Scripts are short;
/// a bulk enqueue of [`MAX_BULK`] jobs takes tens of milliseconds.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long past its own timeout a wake-up wait ([`Waiter::wait`]) may take to answer before
/// its connection is taken for dead.
const WAIT_MARGIN: Duration = Duration::from_secs(5);

/// A connection to the queues in one Redis or one Redis Cluster. Cheap to clone: clones share
/// one multiplexed connection (per cluster node), which reconnects by itself when Redis goes
/// away and comes back.
#[derive(Clone)]
pub struct Client {
    redis: RedisTarget,
    pub(super) conn: RedisConnection,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("redis", &self.redis.redacted_url())
            .finish_non_exhaustive()
    }
}

/// Blocks until a queue has work, on its own connection (a blocking BLPOP would stall every
/// other call sharing a multiplexed connection). Get one from [`Client::waiter`].
pub struct Waiter {
    redis: RedisTarget,
    conn: Option<RedisConnection>,
}

impl Waiter {
    /// Waits until an enqueue (or another wake-up, see docs/protocol.md) signals `queue`, or
    /// `timeout` passes. Returns whether a wake-up arrived. Wake-ups are hints: fetch anyway
    /// on timeout, since a delayed job may have come due.
    pub async fn wait(&mut self, queue: &str, timeout: Duration) -> Result<bool> {
        let keys = QueueKeys::new(queue)?;
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let conn = self.redis.connect_blocking().await?;
                self.conn.insert(conn)
            }
        };
        let seconds = timeout.as_secs_f64().max(0.001);
        // The connection has no response timeout (the server holds BLPOP for `timeout`), so
        // a server that never answers (hung, or a cluster node that restarted under a
        // request the client still waits on) is cut here instead of stalling the fetcher.
        let reply = tokio::time::timeout(
            timeout.saturating_add(WAIT_MARGIN),
            redis::cmd("BLPOP")
                .arg(keys.wake())
                .arg(format!("{seconds:.3}"))
                .query_async::<Option<(String, String)>>(conn),
        )
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer to BLPOP within {WAIT_MARGIN:?} past its timeout"),
            )))
        });
        match reply {
            Ok(popped) => Ok(popped.is_some()),
            Err(err) => {
                // Start over on a fresh connection next time.
                self.conn = None;
                Err(err.into())
            }
        }
    }
}

pub(super) fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A seed for the scripts' jitter; Redis's `math.randomseed` takes a 32-bit signed integer.
pub(super) fn random_seed() -> u32 {
    rand::random::<u32>() >> 1
}

pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Client {
    /// Connects to Redis at `url`: `redis://host:port/db` for one server,
    /// `redis+cluster://host:port,host:port` for a Redis Cluster (`crate::connection`).
    pub async fn connect(url: &str) -> Result<Client> {
        let redis = RedisTarget::open(url)?;
        // Few retries per (re)connect: a refused connection fails fast (the CLI answers at
        // once), and the manager tries again on the next call anyway.
        let conn = redis
            .connect(ConnectOptions {
                response_timeout: Some(RESPONSE_TIMEOUT),
                connection_timeout: Duration::from_secs(5),
                retries: 2,
            })
            .await?;
        Ok(Client { redis, conn })
    }

    /// A [`Waiter`] with its own connection, for idle workers.
    pub fn waiter(&self) -> Waiter {
        Waiter {
            redis: self.redis.clone(),
            conn: None,
        }
    }

    pub(super) async fn invoke(&self, invocation: &Call<'_>) -> Result<Value> {
        let mut conn = self.conn.clone();
        invocation
            .invoke(&mut conn)
            .await
            .map_err(QueueError::from_script)
    }
}
