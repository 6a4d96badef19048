//! Capabilities: what a handler may reach outside its sandbox, granted per handler version.
//!
//! - [`Grants`] - the data deployed with a handler version (stored in the registry with it,
//!   or given in the TOML file or to `wasmq exec`): `allow_outbound` patterns, plain
//!   `config` values and the *names* of secrets. Validated at deploy; a bad grant writes
//!   nothing.
//! - [`SecretSource`] - where this host finds secret values: `WASMQ_SECRET_<NAME>` in its
//!   environment, then `<secrets dir>/<NAME>` (the Kubernetes layout).
//! - [`Capabilities`] - grants resolved on one host: the parsed [`AllowList`], the
//!   `wasi:config/store` values (config and secrets), the pooled HTTP client. Built once per
//!   handler version a host loads, shared by its attempts (`Handler::with_capabilities`).
//! - [`HostResources`] - what a host brings to every resolution: where its secrets are, its
//!   metrics observers, the key-value store (`kv.rs`) and the database pools (`sql.rs`).
//!
//! The files, one per interface: `allow.rs` (the outbound patterns), `ssrf.rs` (addresses that
//! need an address pattern), `http.rs` (every outgoing request), `enqueue.rs` (where child
//! jobs may go), `kv.rs` (bucket grants, the store), `sql.rs` (database grants, pools). The
//! attempt's side of `wasi:keyvalue` and `sql` is in `runtime/kv.rs` and `runtime/sql.rs`.
//!
//! Where each grant is checked, once: outbound HTTP in `http::OutboundHooks::send_request`
//! (the allow-list) and `http::PolicyResolver` (the addresses, `ssrf`); config and secrets by
//! what [`Capabilities`] puts in the store's `wasi:config` view (a key not granted reads as
//! none); databases in [`Capabilities::resolve`] (`sql::Target::check`: a database whose
//! host the allow-list does not name refuses the version at load; a name not granted is not
//! in [`Capabilities`], so the guest's `open` of it is denied); buckets in
//! `wasi:keyvalue/store.open` (`runtime/kv.rs`: only a granted name opens); child-job
//! targets in [`EnqueueRules::check`] (the runtime's `workflow.enqueue`). The interfaces are
//! linked for every handler (`Runtime::new`), so a component whose toolchain imports them
//! loads; without a grant a call fails in the guest (`HttpRequestDenied`, `access-denied`).
//!
//! **Invariant:** a secret's value lives only in [`Capabilities`] on the host and in the
//! guest that reads it: it is never written to Redis, a log, an error, the API or metrics
//! (`Capabilities`' `Debug` prints names only).

mod allow;
pub mod enqueue;
mod http;
pub mod kv;
pub mod sql;
mod ssrf;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime_wasi_config::WasiConfigVariables;

pub use allow::{AllowList, PatternError, default_port};
pub use enqueue::{ChildIds, EnqueueRules};
pub(crate) use http::OutboundHooks;
pub use http::{HttpLimits, OutboundObserver, OutboundOutcome};
pub use kv::{BucketGrant, BucketLimits, KvStore, MemoryKv};
pub use sql::{SqlObserver, SqlOutcome, SqlPools, parse_database_flag};
pub use ssrf::is_blocked;

/// Most config values and secrets one handler version may carry.
pub const MAX_CONFIG_ENTRIES: usize = 256;
/// Most bytes of one config value.
pub const MAX_CONFIG_VALUE: usize = 64 * 1024;
/// Most `allow_outbound` patterns.
pub const MAX_ALLOW_OUTBOUND: usize = 256;

/// What a handler version is granted, as deployed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Outbound HTTP: `scheme://host[:port]` patterns (see [`AllowList`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_outbound: Vec<String>,
    /// Plain `wasi:config` values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Names of secrets, read by the guest through `wasi:config` under the same name; each
    /// host resolves the values ([`SecretSource`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// This handler's own outbound HTTP limits, where they differ from the defaults
    /// ([`HttpLimits`]).
    #[serde(default, skip_serializing_if = "HttpLimitOverrides::is_empty")]
    pub http_limits: HttpLimitOverrides,
    /// Key-value buckets, each `NAME[:OPTION=VALUE,...]` ([`BucketGrant::parse`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kv: Vec<String>,
    /// Postgres databases: the name the guest opens -> `secret:NAME`, the secret holding its
    /// URL on each host (`sql`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub databases: BTreeMap<String, String>,
    /// Where child jobs may go besides the job's own queue: `QUEUE/HANDLER` or `QUEUE/*`
    /// ([`EnqueueRules`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub may_enqueue: Vec<String>,
    /// Targets whose children keep the ids the handler gives them (not namespaced by the
    /// parent); each also opens its queue, as `may_enqueue` does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub may_enqueue_raw_ids: Vec<String>,
}

/// A handler's outbound HTTP limits that differ from the defaults, as deployed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLimitOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub between_bytes_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
}

/// The names `--http-limit NAME=VALUE` takes, with what each value is.
pub const HTTP_LIMIT_NAMES: &str = "requests=N, response_body=SIZE, request_body=SIZE, \
     connect_timeout=DURATION, first_byte_timeout=DURATION, between_bytes_timeout=DURATION, \
     connections=N";

impl HttpLimitOverrides {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Sets one limit from `NAME=VALUE` (the `--http-limit` flag): a count, a size like
    /// `1MiB` or a duration like `5s`.
    pub fn set(&mut self, text: &str) -> Result<(), String> {
        let (name, value) = text.split_once('=').ok_or_else(|| {
            format!("http limit {text:?}: expected NAME=VALUE ({HTTP_LIMIT_NAMES})")
        })?;
        let bad = |what: &str| format!("http limit {name}: {value:?} is not {what}");
        let size = || {
            value
                .parse::<bytesize::ByteSize>()
                .map(|b| b.as_u64())
                .map_err(|_| bad("a size (like 1MiB)"))
        };
        let millis = || {
            humantime::parse_duration(value)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .map_err(|_| bad("a duration (like 5s)"))
        };
        match name {
            "requests" => self.requests = Some(value.parse().map_err(|_| bad("a count"))?),
            "response_body" => self.response_body = Some(size()?),
            "request_body" => self.request_body = Some(size()?),
            "connect_timeout" => self.connect_timeout_ms = Some(millis()?),
            "first_byte_timeout" => self.first_byte_timeout_ms = Some(millis()?),
            "between_bytes_timeout" => self.between_bytes_timeout_ms = Some(millis()?),
            "connections" => self.connections = Some(value.parse().map_err(|_| bad("a count"))?),
            _ => {
                return Err(format!(
                    "http limit {name:?} is not one of: {HTTP_LIMIT_NAMES}"
                ));
            }
        }
        Ok(())
    }

    /// Sets every `NAME=VALUE` of `items` ([`HttpLimitOverrides::set`]).
    pub fn parse_all<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        let mut limits = Self::default();
        for item in items {
            limits.set(item.as_ref())?;
        }
        Ok(limits)
    }

    /// Checks each limit's range.
    pub fn validate(&self) -> Result<(), String> {
        let within = |name: &str, v: Option<u64>, lo: u64, hi: u64| match v {
            Some(v) if !(lo..=hi).contains(&v) => {
                Err(format!("http limit {name} must be in {lo}..={hi}, got {v}"))
            }
            _ => Ok(()),
        };
        within("requests", self.requests.map(u64::from), 1, 10_000)?;
        within("response_body", self.response_body, 1, 1 << 30)?;
        within("request_body", self.request_body, 1, 1 << 30)?;
        for (name, v) in [
            ("connect_timeout", self.connect_timeout_ms),
            ("first_byte_timeout", self.first_byte_timeout_ms),
            ("between_bytes_timeout", self.between_bytes_timeout_ms),
        ] {
            within(&format!("{name} (ms)"), v, 1, 3_600_000)?;
        }
        within("connections", self.connections.map(|n| n as u64), 1, 1024)
    }

    /// The defaults with these overrides applied.
    pub fn apply(&self) -> HttpLimits {
        let d = HttpLimits::default();
        let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
        HttpLimits {
            max_requests: self.requests.unwrap_or(d.max_requests),
            max_response_bytes: self.response_body.unwrap_or(d.max_response_bytes),
            max_request_bytes: self.request_body.unwrap_or(d.max_request_bytes),
            connect_timeout: ms(self.connect_timeout_ms, d.connect_timeout),
            first_byte_timeout: ms(self.first_byte_timeout_ms, d.first_byte_timeout),
            between_bytes_timeout: ms(self.between_bytes_timeout_ms, d.between_bytes_timeout),
            max_connections_per_authority: self
                .connections
                .unwrap_or(d.max_connections_per_authority),
        }
    }
}

impl Grants {
    pub fn is_empty(&self) -> bool {
        self.allow_outbound.is_empty()
            && self.config.is_empty()
            && self.secrets.is_empty()
            && self.http_limits.is_empty()
            && self.kv.is_empty()
            && self.databases.is_empty()
            && self.may_enqueue.is_empty()
            && self.may_enqueue_raw_ids.is_empty()
    }

    /// Checks every grant, naming the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.allow_outbound.len() > MAX_ALLOW_OUTBOUND {
            return Err(format!(
                "at most {MAX_ALLOW_OUTBOUND} allow_outbound patterns, got {}",
                self.allow_outbound.len()
            ));
        }
        AllowList::parse(&self.allow_outbound).map_err(|e| e.to_string())?;
        self.http_limits.validate()?;
        BucketGrant::parse_all(&self.kv)?;
        sql::validate_databases(&self.databases)?;
        EnqueueRules::parse(&self.may_enqueue, &self.may_enqueue_raw_ids)?;
        if self.config.len() + self.secrets.len() > MAX_CONFIG_ENTRIES {
            return Err(format!(
                "at most {MAX_CONFIG_ENTRIES} config values and secrets together"
            ));
        }
        for (key, value) in &self.config {
            validate_config_key(key)?;
            if value.len() > MAX_CONFIG_VALUE {
                return Err(format!(
                    "config {key:?}: the value is {} bytes, over {MAX_CONFIG_VALUE}",
                    value.len()
                ));
            }
        }
        for (i, name) in self.secrets.iter().enumerate() {
            validate_secret_name(name)?;
            if self.config.contains_key(name) {
                return Err(format!(
                    "secret {name:?} has the name of a config value: a guest reads both \
                     through wasi:config, so the names must differ"
                ));
            }
            if self.secrets[..i].contains(name) {
                return Err(format!("secret {name:?} is named twice"));
            }
        }
        Ok(())
    }
}

/// Whether `name` is 1 to `max` bytes of ASCII letters, digits, `_`, `-` and `.`: the names
/// of config keys, buckets and databases.
pub(crate) fn is_plain_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// A config key: 1-128 characters of letters, digits, `_`, `-` and `.`.
pub fn validate_config_key(key: &str) -> Result<(), String> {
    if !is_plain_name(key, 128) {
        return Err(format!(
            "config key {key:?}: 1-128 letters, digits, '_', '-' or '.'"
        ));
    }
    Ok(())
}

/// A secret name: 1-128 characters of letters, digits and `_`, not starting with a digit (it
/// becomes part of an environment variable's name).
pub fn validate_secret_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 128
        || name.starts_with(|c: char| c.is_ascii_digit())
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(format!(
            "secret name {name:?}: 1-128 letters, digits or '_', not starting with a digit"
        ));
    }
    Ok(())
}

/// Parses `KEY=VALUE` (the `--config` flag).
pub fn parse_config_flag(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected KEY=VALUE"))?;
    validate_config_key(key)?;
    Ok((key.to_string(), value.to_string()))
}

/// Where a host finds secret values.
#[derive(Debug, Clone, Default)]
pub struct SecretSource {
    /// A directory of files, one per secret, named after it (`--secrets-dir`).
    pub dir: Option<PathBuf>,
}

/// The environment variable that holds secret `name` on a host.
pub fn secret_env_var(name: &str) -> String {
    format!("WASMQ_SECRET_{name}")
}

impl SecretSource {
    /// The value of secret `name`: `WASMQ_SECRET_<name>`, else the file `<dir>/<name>` (one
    /// trailing newline removed). None when neither has it.
    pub fn get(&self, name: &str) -> Option<String> {
        if validate_secret_name(name).is_err() {
            return None;
        }
        if let Some(value) = std::env::var_os(secret_env_var(name)) {
            return value.into_string().ok();
        }
        let path = self.dir.as_ref()?.join(name);
        let mut text = std::fs::read_to_string(path).ok()?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        Some(text)
    }
}

/// What this host gives the capabilities it resolves.
#[derive(Clone, Default)]
pub struct HostResources {
    /// Where secret values come from.
    pub secrets: SecretSource,
    /// Counts outbound requests (a worker's metrics).
    pub observer: Option<Arc<dyn OutboundObserver>>,
    /// Where key-value buckets live: the worker's Redis, or memory for `wasmq exec`. None: a
    /// granted bucket opens, and each call on it fails.
    pub kv: Option<Arc<dyn KvStore>>,
    /// This host's Postgres pools, shared by every handler version it resolves.
    pub sql: Arc<SqlPools>,
    /// Counts handlers' SQL statements (a worker's metrics).
    pub sql_observer: Option<Arc<dyn SqlObserver>>,
}

impl HostResources {
    /// Secrets from `secrets`; no metrics, no key-value store.
    pub fn with_secrets(secrets: SecretSource) -> Self {
        Self {
            secrets,
            ..Self::default()
        }
    }
}

/// A handler version's grants, resolved on this host.
pub struct Capabilities {
    pub(crate) handler: String,
    pub(crate) allow: Arc<AllowList>,
    pub(crate) config: WasiConfigVariables,
    pub(crate) http: Option<http::HttpClient>,
    pub(crate) http_limits: HttpLimits,
    pub(crate) kv: Vec<BucketGrant>,
    pub(crate) kv_store: Option<Arc<dyn KvStore>>,
    pub(crate) databases: BTreeMap<String, sql::Database>,
    pub(crate) enqueue: EnqueueRules,
    sql_observer: Option<Arc<dyn SqlObserver>>,
    observer: Option<Arc<dyn OutboundObserver>>,
    missing: Vec<String>,
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the config values: they hold the secrets.
        f.debug_struct("Capabilities")
            .field("handler", &self.handler)
            .field("allow_outbound", &self.allow.to_string())
            .field("kv", &self.kv.iter().map(|b| &b.name).collect::<Vec<_>>())
            // Names and host:port only: the URL and its password stay in the pool.
            .field(
                "databases",
                &self
                    .databases
                    .iter()
                    .map(|(name, db)| format!("{name} ({})", db.endpoint))
                    .collect::<Vec<_>>(),
            )
            .field("missing_secrets", &self.missing)
            .finish_non_exhaustive()
    }
}

impl Capabilities {
    /// No grants: every request denied, no config.
    pub fn none() -> Self {
        Self {
            handler: String::new(),
            allow: Arc::default(),
            config: WasiConfigVariables::new(),
            http: None,
            http_limits: HttpLimits::default(),
            kv: Vec::new(),
            kv_store: None,
            databases: BTreeMap::new(),
            enqueue: EnqueueRules::default(),
            sql_observer: None,
            observer: None,
            missing: Vec::new(),
        }
    }

    /// Resolves `grants` for `handler` on this host. Secrets `secrets` does not have are
    /// listed by [`Capabilities::missing_secrets`] (the caller decides; a worker does not run
    /// the handler's jobs without them). Fails for grants that do not validate, and for a
    /// database whose URL is not a Postgres URL or whose host the allow-list does not allow
    /// (the error names the database, the secret and `host:port`, never the URL).
    pub fn resolve(handler: &str, grants: &Grants, host: &HostResources) -> Result<Self, String> {
        grants.validate()?;
        let secrets = &host.secrets;
        let kv = BucketGrant::parse_all(&grants.kv)?;
        let allow = Arc::new(AllowList::parse(&grants.allow_outbound).map_err(|e| e.to_string())?);
        let http_limits = grants.http_limits.apply();
        let http = if allow.is_empty() {
            None
        } else {
            Some(http::HttpClient::new(allow.clone(), &http_limits)?)
        };
        let mut config = WasiConfigVariables::new();
        for (key, value) in &grants.config {
            config.insert(key.clone(), value.clone());
        }
        let mut missing = Vec::new();
        for name in &grants.secrets {
            match secrets.get(name) {
                Some(value) => {
                    config.insert(name.clone(), value);
                }
                None => missing.push(name.clone()),
            }
        }
        let mut databases = BTreeMap::new();
        for (database, source) in &grants.databases {
            let secret = sql::database_secret(database, source)?;
            let Some(url) = secrets.get(secret) else {
                if !missing.iter().any(|m| m == secret) {
                    missing.push(secret.to_string());
                }
                continue;
            };
            let target = sql::Target::parse(database, secret, &url)?;
            target.check(database, &allow)?;
            let endpoint = target.endpoint();
            let namespace = target.dbname();
            let pool = host.sql.pool(target, &allow)?;
            let granted = sql::Database {
                pool,
                endpoint,
                namespace,
            };
            databases.insert(database.clone(), granted);
        }
        Ok(Self {
            handler: handler.to_string(),
            allow,
            config,
            http,
            http_limits,
            kv_store: (!kv.is_empty()).then(|| host.kv.clone()).flatten(),
            kv,
            databases,
            enqueue: EnqueueRules::parse(&grants.may_enqueue, &grants.may_enqueue_raw_ids)?,
            sql_observer: host.sql_observer.clone(),
            observer: host.observer.clone(),
            missing,
        })
    }

    /// Secrets the handler needs that this host does not have.
    pub fn missing_secrets(&self) -> &[String] {
        &self.missing
    }

    /// What to say when a handler cannot run for want of its secrets (no values in it).
    pub fn missing_secrets_message(&self, host: &str) -> Option<String> {
        if self.missing.is_empty() {
            return None;
        }
        let vars: Vec<String> = self.missing.iter().map(|n| secret_env_var(n)).collect();
        Some(format!(
            "handler {} needs secret(s) {} that host {host} does not have: set {} or put a \
             file of that name in --secrets-dir",
            self.handler,
            self.missing.join(", "),
            vars.join(", ")
        ))
    }

    pub(crate) fn observe_sql(&self, database: &str, outcome: SqlOutcome, elapsed: Duration) {
        if let Some(observer) = &self.sql_observer {
            observer.statement(&self.handler, database, outcome, elapsed);
        }
    }

    fn observe(&self, outcome: OutboundOutcome, elapsed: Duration) {
        if let Some(observer) = &self.observer {
            observer.request(&self.handler, outcome, elapsed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_validate_names_the_bad_entry() {
        let mut g = Grants::default();
        assert!(g.validate().is_ok());
        g.allow_outbound = vec!["https://ok.example.com".into(), "https://x/y".into()];
        assert!(g.validate().unwrap_err().contains("https://x/y"));
        g.allow_outbound.clear();
        g.config.insert("bad key".into(), "v".into());
        assert!(g.validate().unwrap_err().contains("bad key"));
        g.config.clear();
        g.config.insert("API_KEY".into(), "v".into());
        g.secrets = vec!["API_KEY".into()];
        assert!(g.validate().unwrap_err().contains("API_KEY"));
        g.config.clear();
        g.secrets = vec!["1X".into()];
        assert!(g.validate().is_err());
        g.secrets = vec!["A".into(), "A".into()];
        assert!(g.validate().unwrap_err().contains("twice"));
        g.secrets.clear();
        g.databases
            .insert("main".into(), "postgres://u:pw@db/x".into());
        let err = g.validate().unwrap_err();
        assert!(err.contains("secret:NAME") && !err.contains("pw@"), "{err}");
        g.databases.clear();
        g.databases.insert("bad name".into(), "secret:X".into());
        assert!(g.validate().unwrap_err().contains("bad name"));
        g.databases.clear();
        g.databases
            .insert("main".into(), "secret:APP_DB_URL".into());
        assert!(g.validate().is_ok());
    }

    #[test]
    fn a_database_whose_secret_this_host_lacks_is_a_missing_secret() {
        let grants = Grants {
            databases: [("main".into(), "secret:WASMQ_TEST_ABSENT_DB_URL".into())].into(),
            ..Grants::default()
        };
        // Without the URL the allow-list cannot be checked: the handler is not refused, it
        // waits for the secret like any other.
        let caps = Capabilities::resolve("h", &grants, &HostResources::default()).unwrap();
        assert_eq!(caps.missing_secrets(), ["WASMQ_TEST_ABSENT_DB_URL"]);
        assert!(caps.databases.is_empty());
    }

    #[test]
    fn http_limits_parse_validate_and_apply() {
        let mut o = HttpLimitOverrides::default();
        o.set("requests=3").unwrap();
        o.set("response_body=1KiB").unwrap();
        o.set("first_byte_timeout=250ms").unwrap();
        o.set("connections=2").unwrap();
        assert!(o.validate().is_ok());
        let l = o.apply();
        assert_eq!(l.max_requests, 3);
        assert_eq!(l.max_response_bytes, 1024);
        assert_eq!(l.first_byte_timeout, Duration::from_millis(250));
        assert_eq!(l.max_connections_per_authority, 2);
        assert_eq!(l.max_request_bytes, HttpLimits::default().max_request_bytes);
        assert!(o.set("bogus=1").unwrap_err().contains("bogus"));
        assert!(o.set("requests=many").is_err());
        o.set("requests=0").unwrap();
        assert!(o.validate().unwrap_err().contains("requests"));
    }

    #[test]
    fn secrets_come_from_a_directory_and_debug_never_shows_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("WASMQ_TEST_DIR_SECRET"), "s3cr3t-value\n").unwrap();
        let source = SecretSource {
            dir: Some(dir.path().to_path_buf()),
        };
        assert_eq!(
            source.get("WASMQ_TEST_DIR_SECRET").as_deref(),
            Some("s3cr3t-value")
        );
        assert_eq!(source.get("WASMQ_TEST_ABSENT_SECRET"), None);
        assert_eq!(source.get("../etc/passwd"), None);
        let grants = Grants {
            secrets: vec![
                "WASMQ_TEST_DIR_SECRET".into(),
                "WASMQ_TEST_ABSENT_SECRET".into(),
            ],
            ..Grants::default()
        };
        let host = HostResources {
            secrets: source,
            ..HostResources::default()
        };
        let caps = Capabilities::resolve("h", &grants, &host).unwrap();
        assert_eq!(caps.missing_secrets(), ["WASMQ_TEST_ABSENT_SECRET"]);
        let shown = format!(
            "{caps:?} {}",
            caps.missing_secrets_message("host-1").unwrap()
        );
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(
            shown.contains("WASMQ_SECRET_WASMQ_TEST_ABSENT_SECRET"),
            "{shown}"
        );
    }
}
