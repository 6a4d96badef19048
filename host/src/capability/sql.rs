//! Postgres for handlers: the database grants of a handler version, the URL behind each one
//! checked against its allow-list, and this host's connection pools.
//!
//! A handler version is granted `--database main=secret:APP_DB_URL`: the guest opens `main`
//! and never sees the URL, which each host reads from its secret `APP_DB_URL`
//! (`SecretSource`). [`Capabilities::resolve`](super::Capabilities::resolve) parses the URL
//! ([`Target::parse`]) and checks its `host:port` against the handler's `allow_outbound`
//! ([`Target::check`], the one place a database grant is checked; a host it does not allow
//! refuses the version at load). Connections come from [`SqlPools`], one pool per URL and
//! address rules per host process, shared by every handler version that uses them; a pool
//! resolves the host name itself before each connect and connects to an address `ssrf`
//! permits, so no second lookup decides where it goes.
//!
//! **Invariant:** the URL and its password are held by [`Target`] and the pool only: they are
//! never in an error, a log line, `Debug` output or metrics (errors from the driver are
//! scrubbed of both, [`Target::scrub`]).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool::managed::{Metrics, RecycleError, RecycleResult};
use sha2::{Digest, Sha256};
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;

use super::allow::AllowList;
use super::ssrf;

/// Most databases one handler version may be granted.
pub const MAX_DATABASES: usize = 16;
/// Most connections one pool keeps open (per database URL per host process).
pub const DEFAULT_POOL_SIZE: usize = 8;
/// Most rows one query may return.
pub const MAX_ROWS: usize = 10_000;
/// Most bytes of values one query may return (counted as the guest receives them).
pub const MAX_RESULT_BYTES: usize = 16 * 1024 * 1024;
/// Most connections one attempt may hold open at once.
pub const MAX_CONNECTIONS_PER_ATTEMPT: usize = 4;
/// How long a new connection may take to be made, within the job's deadline.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const SECRET_PREFIX: &str = "secret:";

/// A database name as the guest opens it: 1-64 letters, digits, `_`, `-` or `.`.
pub fn validate_database_name(name: &str) -> Result<(), String> {
    if !super::is_plain_name(name, 64) {
        return Err(format!(
            "database name {:?}: 1-64 letters, digits, '_', '-' or '.'",
            name.escape_debug().to_string()
        ));
    }
    Ok(())
}

/// The secret a database grant names: `secret:NAME` gives `NAME`.
pub fn database_secret<'a>(database: &str, source: &'a str) -> Result<&'a str, String> {
    let secret = source.strip_prefix(SECRET_PREFIX).ok_or_else(|| {
        format!(
            "database {database}: the URL must come from a secret, as secret:NAME (the URL \
             itself is never stored with a handler)"
        )
    })?;
    super::validate_secret_name(secret).map_err(|why| format!("database {database}: {why}"))?;
    Ok(secret)
}

/// Parses `NAME=secret:SECRET` (the `--database` flag).
pub fn parse_database_flag(text: &str) -> Result<(String, String), String> {
    let (name, source) = text
        .split_once('=')
        .ok_or_else(|| "expected NAME=secret:SECRET, like main=secret:APP_DB_URL".to_string())?;
    validate_database_name(name)?;
    database_secret(name, source)?;
    Ok((name.to_string(), source.to_string()))
}

/// Checks every database grant of a handler version, naming the first bad one.
pub fn validate_databases(databases: &BTreeMap<String, String>) -> Result<(), String> {
    if databases.len() > MAX_DATABASES {
        return Err(format!(
            "at most {MAX_DATABASES} databases, got {}",
            databases.len()
        ));
    }
    for (name, source) in databases {
        validate_database_name(name)?;
        database_secret(name, source)?;
    }
    Ok(())
}

/// The Postgres server a database URL names. Its `Debug` shows `host:port` only.
pub(crate) struct Target {
    config: tokio_postgres::Config,
    host: String,
    port: u16,
    url: String,
    password: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({}:{})", self.host, self.port)
    }
}

impl Target {
    /// Parses the URL in secret `secret` for database `database`. Errors name the database
    /// and the secret, never the URL.
    pub(crate) fn parse(database: &str, secret: &str, url: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("database {database}: the URL in secret {secret} {why}");
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad("must start with postgres:// or postgresql://"));
        }
        // The parser's own message may quote the text it could not read: not shown.
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|_| bad("is not a valid PostgreSQL URL"))?;
        let host = match config.get_hosts() {
            [Host::Tcp(host)] => host.clone(),
            [_] => return Err(bad("must name a TCP host, not a Unix socket")),
            _ => return Err(bad("must name exactly one host")),
        };
        if !config.get_hostaddrs().is_empty() {
            return Err(bad(
                "must not give hostaddr: the host resolves and checks the address itself",
            ));
        }
        // Connections are plain TCP (`NoTls`): a URL that asks for TLS is refused here rather
        // than failing at every connect. The default (`prefer`) connects without it.
        if matches!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        ) {
            return Err(bad(
                "asks for sslmode=require, and this host connects to Postgres without TLS",
            ));
        }
        let port = match config.get_ports() {
            [] => 5432,
            [port] => *port,
            _ => return Err(bad("must give at most one port")),
        };
        config.connect_timeout(CONNECT_TIMEOUT);
        let password = config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .filter(|p| !p.is_empty());
        Ok(Self {
            config,
            host,
            port,
            url: url.to_string(),
            password,
        })
    }

    /// The database name the URL gives (`/dbname`), if any: traces show it.
    pub(crate) fn dbname(&self) -> Option<String> {
        self.config.get_dbname().map(str::to_string)
    }

    /// `host:port`, as errors and logs may show it.
    pub(crate) fn endpoint(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// Whether `allow` lets a handler reach this server: a `postgres://` (or `postgresql://`,
    /// or `*://`) pattern must match its host and port, and an address literal must also be one
    /// the SSRF rules permit (a loopback or private address only when a pattern names it).
    pub(crate) fn check(&self, database: &str, allow: &AllowList) -> Result<(), String> {
        let allowed = ["postgres", "postgresql"]
            .iter()
            .any(|scheme| allow.allows(scheme, &self.host, self.port));
        let endpoint = self.endpoint();
        if !allowed {
            return Err(format!(
                "database {database}: {endpoint} is not in allow_outbound (add \
                 postgres://{endpoint})"
            ));
        }
        if let Ok(addr) = self.host.parse::<IpAddr>()
            && !ssrf::permitted(addr, allow)
        {
            return Err(format!(
                "database {database}: {endpoint} is a loopback, private or reserved address, \
                 which only an address pattern may allow (postgres://{endpoint})"
            ));
        }
        Ok(())
    }

    /// `message` without this URL or its password in it.
    pub(crate) fn scrub(&self, message: &str) -> String {
        let mut out = message.replace(&self.url, "<database url>");
        if let Some(password) = &self.password {
            out = out.replace(password.as_str(), "<password>");
        }
        out
    }
}

/// A connection of a pool (its `Connection` half runs in a task of its own, which ends when
/// this client is dropped).
pub(crate) struct PgClient {
    pub(crate) client: tokio_postgres::Client,
}

/// Makes and recycles the connections of one pool.
pub(crate) struct PgManager {
    target: Target,
    /// The allow-list whose address patterns decide which resolved addresses may be used.
    allow: Arc<AllowList>,
}

impl PgManager {
    /// The first address of the target's host that the SSRF rules permit under `allow`.
    async fn address(&self) -> Result<IpAddr, String> {
        let endpoint = self.target.endpoint();
        let addrs: Vec<IpAddr> = match self.target.host.parse::<IpAddr>() {
            Ok(addr) => vec![addr],
            Err(_) => tokio::net::lookup_host((self.target.host.as_str(), self.target.port))
                .await
                .map_err(|e| format!("cannot resolve {endpoint}: {e}"))?
                .map(|a| a.ip())
                .collect(),
        };
        addrs
            .into_iter()
            .find(|a| ssrf::permitted(*a, &self.allow))
            .ok_or_else(|| {
                format!(
                    "{endpoint} resolves only to addresses this handler may not reach (a \
                     loopback or private address needs an address pattern in allow_outbound)"
                )
            })
    }
}

impl deadpool::managed::Manager for PgManager {
    type Type = PgClient;
    type Error = String;

    async fn create(&self) -> Result<PgClient, String> {
        let addr = self.address().await?;
        let mut config = self.target.config.clone();
        // The name stays the host (for TLS and the server's logs); the socket goes to `addr`.
        config.hostaddr(addr);
        let (client, connection) = config.connect(NoTls).await.map_err(|e| {
            self.target.scrub(&format!(
                "cannot connect to {}: {}",
                self.target.endpoint(),
                error_text(&e)
            ))
        })?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(PgClient { client })
    }

    async fn recycle(&self, obj: &mut PgClient, _: &Metrics) -> RecycleResult<String> {
        if obj.client.is_closed() {
            return Err(RecycleError::Message("the connection is closed".into()));
        }
        // Resets what a handler may have changed in the session (settings, role, temporary
        // tables, prepared statements, advisory locks). It fails inside a transaction, so a
        // connection left in one is dropped here, never handed out.
        obj.client
            .batch_execute("DISCARD ALL")
            .await
            .map_err(|_| RecycleError::Message("the connection is not idle".into()))
    }
}

/// A pool of connections to one database URL.
pub(crate) type Pool = deadpool::managed::Pool<PgManager>;
/// A connection taken from a [`Pool`]; back to the pool when dropped.
pub(crate) type Pooled = deadpool::managed::Object<PgManager>;

/// The text of a driver error: the server's message for a database error (never the
/// connection settings), else the error's own chain.
pub(crate) fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

/// This host's pools, one per database URL and allow-list address patterns (those decide
/// which resolved addresses a connection may go to), shared by every handler version that
/// uses the same pair. Pools are kept for the life of the process.
pub struct SqlPools {
    size: usize,
    pools: Mutex<HashMap<[u8; 32], Pool>>,
}

impl Default for SqlPools {
    fn default() -> Self {
        Self::new(DEFAULT_POOL_SIZE)
    }
}

impl std::fmt::Debug for SqlPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlPools")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl SqlPools {
    /// Pools of at most `size` connections each.
    pub fn new(size: usize) -> Self {
        Self {
            size: size.max(1),
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// The pool for `target` under `allow`, made on first use.
    pub(crate) fn pool(&self, target: Target, allow: &Arc<AllowList>) -> Result<Pool, String> {
        let mut hash = Sha256::new();
        hash.update(target.url.as_bytes());
        for pattern in allow.address_patterns() {
            hash.update(b"\0");
            hash.update(pattern.as_bytes());
        }
        let key: [u8; 32] = hash.finalize().into();
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = pools.get(&key) {
            return Ok(pool.clone());
        }
        let endpoint = target.endpoint();
        let manager = PgManager {
            target,
            allow: allow.clone(),
        };
        let pool = Pool::builder(manager)
            .max_size(self.size)
            .build()
            .map_err(|e| format!("pool for {endpoint}: {e}"))?;
        pools.insert(key, pool.clone());
        Ok(pool)
    }
}

/// What became of one statement, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlOutcome {
    Ok,
    /// The server refused or failed the statement (`query-failed`).
    Failed,
    /// A parameter or a value could not be converted.
    Conversion,
    /// Over the rows or bytes cap.
    TooLarge,
    /// No connection (or none before the deadline).
    ConnectionFailed,
    /// The job's deadline passed during the statement; it was cancelled on the server.
    Timeout,
}

impl SqlOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SqlOutcome::Ok => "ok",
            SqlOutcome::Failed => "failed",
            SqlOutcome::Conversion => "conversion",
            SqlOutcome::TooLarge => "too_large",
            SqlOutcome::ConnectionFailed => "connection_failed",
            SqlOutcome::Timeout => "timeout",
        }
    }
}

/// Told of every statement a handler runs (the worker counts them in `/metrics`). Called on
/// the job's path: it must not block.
pub trait SqlObserver: Send + Sync {
    fn statement(&self, handler: &str, database: &str, outcome: SqlOutcome, elapsed: Duration);
}

/// A granted database, resolved on this host.
pub(crate) struct Database {
    pub(crate) pool: Pool,
    pub(crate) endpoint: String,
    /// The database the URL names (`dbname`), as traces show it (`db.namespace`).
    pub(crate) namespace: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_flags_name_a_secret_never_a_url() {
        assert_eq!(
            parse_database_flag("main=secret:APP_DB_URL").unwrap(),
            ("main".to_string(), "secret:APP_DB_URL".to_string())
        );
        for bad in [
            "main",
            "=secret:X",
            "bad name=secret:X",
            "main=postgres://u:p@db/x",
            "main=secret:",
            "main=secret:1X",
            "main=secret:A-B",
        ] {
            let err = parse_database_flag(bad).unwrap_err();
            assert!(!err.contains("u:p@"), "{err}");
        }
        let mut many = BTreeMap::new();
        for i in 0..=MAX_DATABASES {
            many.insert(format!("db{i}"), "secret:X".to_string());
        }
        assert!(validate_databases(&many).unwrap_err().contains("at most"));
    }

    #[test]
    fn a_url_is_checked_against_postgres_patterns_and_errors_never_show_it() {
        let url = "postgres://app:hunter2-secret@db.example.com:6543/app";
        let target = Target::parse("main", "APP_DB_URL", url).unwrap();
        assert_eq!(target.endpoint(), "db.example.com:6543");
        assert!(!format!("{target:?}").contains("hunter2"));
        let ok = |p: &[&str]| target.check("main", &AllowList::parse(p).unwrap());
        assert!(ok(&["postgres://db.example.com:6543"]).is_ok());
        assert!(ok(&["postgresql://db.example.com:6543"]).is_ok());
        assert!(ok(&["*://*.example.com:*"]).is_ok());
        // 5432 is the default port; this URL gives another.
        let err = ok(&["postgres://db.example.com"]).unwrap_err();
        assert!(err.contains("db.example.com:6543"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(ok(&["https://db.example.com:6543"]).is_err());
        let default_port = Target::parse("main", "S", "postgresql://u@db.example.com/x").unwrap();
        assert!(
            default_port
                .check(
                    "main",
                    &AllowList::parse(&["postgres://db.example.com"]).unwrap()
                )
                .is_ok()
        );
        assert_eq!(
            target.scrub(&format!("failed: {url} with hunter2-secret")),
            "failed: <database url> with <password>"
        );
    }

    #[test]
    fn loopback_needs_an_address_pattern_and_bad_urls_are_refused_without_showing_them() {
        let t = Target::parse("main", "S", "postgres://u:pw@127.0.0.1:5433/x").unwrap();
        assert!(
            t.check(
                "main",
                &AllowList::parse(&["postgres://127.0.0.1:5433"]).unwrap()
            )
            .is_ok()
        );
        assert!(
            t.check(
                "main",
                &AllowList::parse(&["postgres://localhost:5433"]).unwrap()
            )
            .is_err()
        );
        for bad in [
            "mysql://u:topsecret@h/x",
            "postgres://u:topsecret@h1,h2/x",
            "postgres://u:topsecret@%2Ftmp/x",
            "postgres://u:topsecret@h/x?hostaddr=10.0.0.1",
            "postgres://u:topsecret@h:notaport/x",
            "postgres://u:topsecret@h/x?sslmode=require",
        ] {
            let err = Target::parse("main", "S", bad).unwrap_err();
            assert!(!err.contains("topsecret"), "{err}");
            assert!(err.contains("secret S"), "{err}");
        }
    }
}
