//! The Rust SDK for wasmq job handlers.
//!
//! A handler is a type that implements [`Handler`]; [`export_handler!`] turns it into the
//! `handle` export of the `wasmq:job/handler` world. Build the crate as a `cdylib` for
//! `wasm32-wasip2` and the result is a component the wasmq host runs:
//!
//! ```ignore
//! struct Echo;
//! impl wasmq_guest::Handler for Echo {
//!     fn handle(job: wasmq_guest::Job) -> Result<Vec<u8>, wasmq_guest::JobError> {
//!         Ok(job.payload)
//!     }
//! }
//! wasmq_guest::export_handler!(Echo);
//! ```
//!
//! - [`Job`] - one attempt of one job: id, queue, handler, payload, attempt, max attempts.
//! - [`JobError`] - `Retry` (transient, retried per policy) or `Fail` (straight to the
//!   dead-letter queue).
//! - [`log`], [`progress`] - the host functions of the `context` interface.
//! - [`step::run`], [`step::sleep`] - durable steps and sleeps: a step's result is stored
//!   before the handler goes on, and every later attempt of the job gets it back instead of
//!   running the step again; a sleep frees the host and resumes the job later, on any host.
//! - [`enqueue`], [`Child`] - child jobs, written only if this attempt completes.
//! - [`http`] - outbound HTTP requests (`wasi:http`, through the `wstd` crate), to the hosts the
//!   handler version is granted; [`http::Response::check`] maps 5xx to `Retry` and 4xx to
//!   `Fail`.
//! - [`config::get`] - the handler version's config values and secrets (`wasi:config/store`).
//! - [`kv::Bucket`] - the key-value buckets the handler version is granted (`wasi:keyvalue`),
//!   with [`kv::Bucket::claim`] for idempotency marks.
//! - [`sql`] - Postgres: [`sql::Database::open`] a database granted by name, `query`,
//!   `execute`, `transaction`, typed row access.
//!
//! A durable handler replays: every attempt runs `handle` from the top, and the steps that
//! are already stored return at once. Code outside steps runs again on every attempt (and
//! after every sleep), so keep side effects inside steps. Children are written with the
//! completion of the attempt that enqueued them: enqueue them outside steps (or in the last
//! one), since a step replayed from storage does not run its body again. See
//! docs/workflows.md.
//!
//! ```ignore
//! fn handle(job: Job) -> Result<Vec<u8>, JobError> {
//!     let charge: String = step::run("charge", || charge_card(&job.payload))?;
//!     step::sleep("cool-off", Duration::from_secs(3600))?;
//!     let receipt: Vec<u8> = step::run("receipt", || send_receipt(&charge))?;
//!     enqueue(Child::new("audit", receipt.clone()))?;
//!     Ok(receipt)
//! }
//! ```

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "handler",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_handler_world",
        default_bindings_module: "wasmq_guest::bindings",
        // Since 0.1.2 the world imports wasi:http and wasi:config too; `http` talks to wasi:http
        // through wstd, so only what the SDK calls ends up imported by a component.
        generate_all,
    });
}

pub use bindings::wasmq::job::context::Level;
pub use bindings::{Job, JobError};

/// A job handler: the one function the host calls per job attempt.
pub trait Handler {
    fn handle(job: Job) -> Result<Vec<u8>, JobError>;
}

/// Writes one line to the job's log at `level`.
pub fn log(level: Level, message: &str) {
    bindings::wasmq::job::context::log(level, message);
}

/// Reports progress in percent (values above 100 are taken as 100).
pub fn progress(percent: u8) {
    bindings::wasmq::job::context::progress(percent);
}

impl<H: Handler> bindings::Guest for H {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        <H as Handler>::handle(job)
    }
}

/// Exports `$handler` (a type implementing [`Handler`]) as this component's `handle`.
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        // wit-bindgen's export macro takes a bare identifier, hence the alias.
        const _: () = {
            type WasmqHandler = $handler;
            $crate::bindings::__export_handler_world!(WasmqHandler);
        };
    };
}

/// Durable steps and sleeps (the `workflow` interface of `wasmq:job@0.1.1` and later).
pub mod step {
    use std::time::Duration;

    use crate::JobError;
    use crate::bindings::wasmq::job::workflow;

    /// Largest result a step may store, in bytes (the host's limit).
    pub const MAX_STEP_BYTES: usize = 512 * 1024;
    /// Longest step or sleep name, in bytes.
    pub const MAX_NAME_LEN: usize = 256;
    /// Longest durable sleep.
    pub const MAX_SLEEP: Duration = Duration::from_secs(366 * 24 * 3600);

    /// A value a step can store: its bytes, and back.
    pub trait StepValue: Sized {
        fn to_bytes(&self) -> Vec<u8>;
        fn from_bytes(bytes: Vec<u8>) -> Result<Self, String>;
    }

    impl StepValue for Vec<u8> {
        fn to_bytes(&self) -> Vec<u8> {
            self.clone()
        }
        fn from_bytes(bytes: Vec<u8>) -> Result<Self, String> {
            Ok(bytes)
        }
    }

    impl StepValue for String {
        fn to_bytes(&self) -> Vec<u8> {
            self.as_bytes().to_vec()
        }
        fn from_bytes(bytes: Vec<u8>) -> Result<Self, String> {
            String::from_utf8(bytes).map_err(|err| err.to_string())
        }
    }

    impl StepValue for () {
        fn to_bytes(&self) -> Vec<u8> {
            Vec::new()
        }
        fn from_bytes(_: Vec<u8>) -> Result<Self, String> {
            Ok(())
        }
    }

    fn check_name(what: &str, name: &str) -> Result<(), JobError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(JobError::Fail(format!(
                "{what} name {name:?} must be 1 to {MAX_NAME_LEN} bytes"
            )));
        }
        Ok(())
    }

    /// Runs step `name` once per job: if an earlier attempt (or an earlier call in this one)
    /// completed it, returns its stored result without calling `f`; else calls `f` and, if
    /// it succeeds, stores its result durably before returning it. An error from `f` is
    /// returned as is and nothing is stored, so the step runs again on the next attempt.
    ///
    /// A result over [`MAX_STEP_BYTES`] fails the job (`Fail`: it would be too large again);
    /// a store that cannot be read or written asks for a retry.
    pub fn run<T: StepValue>(
        name: &str,
        f: impl FnOnce() -> Result<T, JobError>,
    ) -> Result<T, JobError> {
        check_name("step", name)?;
        let stored = workflow::step_get(name)
            .map_err(|err| JobError::Retry(format!("step {name:?}: {err}")))?;
        if let Some(bytes) = stored {
            return T::from_bytes(bytes).map_err(|err| {
                JobError::Fail(format!(
                    "step {name:?}: stored result does not decode: {err}"
                ))
            });
        }
        let value = f()?;
        let bytes = value.to_bytes();
        if bytes.len() > MAX_STEP_BYTES {
            return Err(JobError::Fail(format!(
                "step {name:?}: result of {} bytes is over the limit of {MAX_STEP_BYTES} bytes",
                bytes.len()
            )));
        }
        workflow::step_save(name, &bytes).map_err(JobError::Retry)?;
        Ok(value)
    }

    /// Sleeps `duration` durably. The first time the job gets here the attempt ends (this call
    /// does not return): the job waits without holding a host, its attempt not counted, and
    /// then runs again from the top on any host, where this call returns at once.
    pub fn sleep(name: &str, duration: Duration) -> Result<(), JobError> {
        check_name("sleep", name)?;
        if duration > MAX_SLEEP {
            return Err(JobError::Fail(format!(
                "sleep {name:?}: {duration:?} is longer than {MAX_SLEEP:?}"
            )));
        }
        let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        workflow::sleep(name, ms).map_err(|err| JobError::Retry(format!("sleep {name:?}: {err}")))
    }
}

/// A child job: enqueued when, and only if, the attempt that asked for it completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    handler: String,
    payload: Vec<u8>,
    queue: Option<String>,
    id: Option<String>,
    priority: Option<i32>,
    delay: Option<std::time::Duration>,
}

impl Child {
    /// A child job for `handler`, in the parent's queue, with a deterministic id.
    pub fn new(handler: impl Into<String>, payload: impl Into<Vec<u8>>) -> Child {
        Child {
            handler: handler.into(),
            payload: payload.into(),
            queue: None,
            id: None,
            priority: None,
            delay: None,
        }
    }

    /// Enqueues it in `queue` instead of the parent's.
    pub fn queue(mut self, queue: impl Into<String>) -> Child {
        self.queue = Some(queue.into());
        self
    }

    /// Gives it this id instead of `<parent queue>/<parent id>:c<n>`.
    pub fn id(mut self, id: impl Into<String>) -> Child {
        self.id = Some(id.into());
        self
    }

    /// -1000..1000, higher runs first.
    pub fn priority(mut self, priority: i32) -> Child {
        self.priority = Some(priority);
        self
    }

    /// Runs it this long after the parent completes.
    pub fn delay(mut self, delay: std::time::Duration) -> Child {
        self.delay = Some(delay);
        self
    }
}

/// Asks for a child job, written with this attempt's completion (none if it fails), and
/// returns its id. A child the host refuses (bad queue, handler or id, too many children)
/// fails the job: it would be refused again.
pub fn enqueue(child: Child) -> Result<String, JobError> {
    let job = bindings::wasmq::job::workflow::ChildJob {
        queue: child.queue,
        handler: child.handler,
        payload: child.payload,
        id: child.id,
        priority: child.priority,
        delay_ms: child
            .delay
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    };
    bindings::wasmq::job::workflow::enqueue(&job).map_err(JobError::Fail)
}

/// The handler version's config values and secrets (`wasi:config/store`, since
/// `wasmq:job@0.1.2`), granted at deploy: `--config KEY=VALUE` and `--secret NAME`.
pub mod config {
    use crate::bindings::wasi::config::store;

    /// The value of config key or secret `key`; none when the handler version was not given it
    /// (or the host cannot read its config).
    pub fn get(key: &str) -> Option<String> {
        store::get(key).ok().flatten()
    }

    /// Every config value and secret the handler version was given, as `(key, value)` pairs.
    pub fn all() -> Vec<(String, String)> {
        store::get_all().unwrap_or_default()
    }
}

/// Key-value buckets (`wasi:keyvalue`, since `wasmq:job@0.1.3`), granted at deploy:
/// `--kv cache` (or `--kv marks:ttl=7d`, entries expiring 7 days after their last write).
///
/// Each handler has its own buckets: bucket `cache` of handler `a` is not that of handler
/// `b`. A bucket that was not granted does not open ([`Error::AccessDenied`]). Values are
/// bytes; [`Bucket::get_json`] and [`Bucket::set_json`] carry JSON. Quotas (keys, bytes, value
/// size) refuse a write with [`Error::Other`] and a message naming the quota. An [`Error`]
/// converts into a [`JobError`] with `?`: `Fail` for a bucket not granted, `Retry` otherwise.
///
/// ```ignore
/// use wasmq_guest::kv::Bucket;
/// let marks = Bucket::open("marks")?;
/// if !marks.claim(&format!("welcome-{}", job.id))? {
///     return Ok(b"already done".to_vec()); // an earlier attempt did it
/// }
/// ```
pub mod kv {
    use crate::JobError;
    use crate::bindings::wasi::keyvalue::{atomics, batch, store};

    pub use store::Error;

    /// An open bucket.
    pub struct Bucket(store::Bucket);

    impl Bucket {
        /// Opens bucket `name`, which the handler version must be granted.
        pub fn open(name: &str) -> Result<Bucket, Error> {
            store::open(name).map(Bucket)
        }

        /// The value of `key`; none when it is absent (or expired).
        pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
            self.0.get(key)
        }

        /// Sets `key` to `value`, replacing what it held.
        pub fn set(&self, key: &str, value: impl AsRef<[u8]>) -> Result<(), Error> {
            self.0.set(key, value.as_ref())
        }

        /// Deletes `key`; nothing happens when it is absent.
        pub fn delete(&self, key: &str) -> Result<(), Error> {
            self.0.delete(key)
        }

        pub fn exists(&self, key: &str) -> Result<bool, Error> {
            self.0.exists(key)
        }

        /// Adds `delta` to the decimal counter in `key` (absent: 0) and returns the new value,
        /// atomically across every job on every host.
        pub fn increment(&self, key: &str, delta: u64) -> Result<u64, Error> {
            atomics::increment(&self.0, key, delta)
        }

        /// Marks `key` done and says whether this call was the first to do so (the mark is a
        /// counter; with a bucket TTL it expires). The idempotency check of a job that must
        /// not repeat a side effect: `if !bucket.claim(&job.id)? { return ... }`.
        pub fn claim(&self, key: &str) -> Result<bool, Error> {
            Ok(self.increment(key, 1)? == 1)
        }

        /// Every key of the bucket, page by page.
        pub fn keys(&self) -> Result<Vec<String>, Error> {
            let mut keys = Vec::new();
            let mut cursor = None;
            loop {
                let page = self.0.list_keys(cursor)?;
                keys.extend(page.keys);
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => return Ok(keys),
                }
            }
        }

        /// The values of `keys`, in order (none where a key is absent).
        pub fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
            Ok(batch::get_many(&self.0, keys)?
                .into_iter()
                .map(|pair| pair.map(|(_, value)| value))
                .collect())
        }

        /// Sets every pair at once: all of them, or none when one would pass a quota.
        pub fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), Error> {
            batch::set_many(&self.0, pairs)
        }

        pub fn delete_many(&self, keys: &[String]) -> Result<(), Error> {
            batch::delete_many(&self.0, keys)
        }

        /// The JSON value of `key`; an error when it does not parse as `T`.
        pub fn get_json<T: serde::de::DeserializeOwned>(
            &self,
            key: &str,
        ) -> Result<Option<T>, Error> {
            match self.get(key)? {
                None => Ok(None),
                Some(bytes) => serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| Error::Other(format!("key {key}: {e}"))),
            }
        }

        pub fn set_json<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), Error> {
            let bytes =
                serde_json::to_vec(value).map_err(|e| Error::Other(format!("key {key}: {e}")))?;
            self.set(key, bytes)
        }
    }

    /// What `e` says, for a person.
    pub fn message(e: &Error) -> String {
        match e {
            Error::NoSuchStore => "no such key-value bucket".to_string(),
            Error::AccessDenied => "key-value bucket not granted".to_string(),
            Error::Other(message) => message.clone(),
        }
    }

    impl From<Error> for JobError {
        fn from(e: Error) -> JobError {
            match e {
                Error::Other(message) => JobError::Retry(message),
                denied => JobError::Fail(message(&denied)),
            }
        }
    }
}

/// Postgres (the `sql` interface of `wasmq:job@0.1.3`).
///
/// A handler opens a database by the name its deploy gave it (`--database
/// main=secret:APP_DB_URL`); the URL and its credentials stay on the host. A database not
/// granted answers [`Error::AccessDenied`]. Each statement runs under the job's deadline (a
/// statement still running then is cancelled on the server and the attempt ends as
/// `timeout`), and a query returns at most the host's cap on rows and bytes
/// ([`Error::TooLarge`]). See docs/capabilities.md.
///
/// ```ignore
/// use wasmq_guest::sql::{Database, Param};
/// let db = Database::open("main")?;
/// db.transaction(|db| {
///     db.execute("INSERT INTO seen (id) VALUES ($1)", &[Param::from(job.id.as_str())])?;
///     db.execute("UPDATE counters SET n = n + 1 WHERE name = $1", &["seen".into()])
/// })?;
/// for row in db.query("SELECT id, n FROM counters WHERE n > $1", &[10i64.into()])?.iter() {
///     let n: i64 = row.get("n")?;
///     let name: Option<String> = row.get(0)?;
/// }
/// ```
pub mod sql {
    use crate::bindings::wasmq::job::sql as wit;

    pub use wit::{
        Column, DbDataType as DataType, DbValue as Value, Error, ParameterValue as Param,
        QueryError,
    };

    impl Error {
        /// What happened, in one line (the bindings' `Display` is their `Debug`).
        pub fn describe(&self) -> String {
            match self {
                Error::AccessDenied(m) => format!("access denied: {m}"),
                Error::ConnectionFailed(m) => format!("connection failed: {m}"),
                Error::BadParameter(m) => format!("bad parameter: {m}"),
                Error::QueryFailed(e) => format!("query failed [{}]: {}", e.sqlstate, e.message),
                Error::ValueConversionFailed(m) => format!("value conversion failed: {m}"),
                Error::TooLarge(m) => format!("too large: {m}"),
                Error::Other(m) => m.clone(),
            }
        }

        /// The SQLSTATE of a statement the server refused (`23505` for a unique violation).
        pub fn sqlstate(&self) -> Option<&str> {
            match self {
                Error::QueryFailed(e) if !e.sqlstate.is_empty() => Some(&e.sqlstate),
                _ => None,
            }
        }
    }

    /// A connection failure asks for a retry (the next attempt may find the database up);
    /// everything else fails the job.
    impl From<Error> for crate::JobError {
        fn from(e: Error) -> Self {
            match e {
                Error::ConnectionFailed(_) => crate::JobError::Retry(e.describe()),
                _ => crate::JobError::Fail(e.describe()),
            }
        }
    }

    macro_rules! param_from {
        ($($t:ty => $variant:ident),* $(,)?) => {$(
            impl From<$t> for Param {
                fn from(v: $t) -> Self {
                    Param::$variant(v.into())
                }
            }
        )*};
    }
    param_from!(bool => Boolean, i16 => Int16, i32 => Int32, i64 => Int64, f32 => Floating32,
        f64 => Floating64, String => Str, &str => Str, Vec<u8> => Binary, &[u8] => Binary);

    /// `None` is SQL `NULL`.
    impl<T: Into<Param>> From<Option<T>> for Param {
        fn from(v: Option<T>) -> Self {
            v.map_or(Param::DbNull, Into::into)
        }
    }

    /// A connection to a granted database, from the host's pool. Dropping it gives the
    /// connection back (a transaction still open is rolled back).
    pub struct Database(wit::Connection);

    impl Database {
        /// Opens the database this handler version names `name`.
        pub fn open(name: &str) -> Result<Self, Error> {
            wit::Connection::open(name).map(Database)
        }

        /// Runs a statement that returns rows (`$1`, `$2`, ... are `params`).
        pub fn query(&self, statement: &str, params: &[Param]) -> Result<Rows, Error> {
            self.0.query(statement, params).map(|set| Rows {
                columns: set.columns,
                rows: set.rows,
            })
        }

        /// Runs a statement and returns how many rows it affected.
        pub fn execute(&self, statement: &str, params: &[Param]) -> Result<u64, Error> {
            self.0.execute(statement, params)
        }

        pub fn begin(&self) -> Result<(), Error> {
            self.0.begin()
        }

        pub fn commit(&self) -> Result<(), Error> {
            self.0.commit()
        }

        pub fn rollback(&self) -> Result<(), Error> {
            self.0.rollback()
        }

        /// Runs `f` in a transaction: committed when `f` returns `Ok`, rolled back when it
        /// returns `Err` (whose error is returned).
        pub fn transaction<T, E: From<Error>>(
            &self,
            f: impl FnOnce(&Self) -> Result<T, E>,
        ) -> Result<T, E> {
            self.begin()?;
            match f(self) {
                Ok(value) => {
                    self.commit()?;
                    Ok(value)
                }
                Err(e) => {
                    // The error of `f` is the one worth returning.
                    let _ = self.rollback();
                    Err(e)
                }
            }
        }
    }

    /// The rows of a query, with their columns.
    #[derive(Debug, Clone)]
    pub struct Rows {
        pub columns: Vec<Column>,
        pub rows: Vec<Vec<Value>>,
    }

    impl Rows {
        pub fn len(&self) -> usize {
            self.rows.len()
        }

        pub fn is_empty(&self) -> bool {
            self.rows.is_empty()
        }

        /// Each row, readable by column name or index.
        pub fn iter(&self) -> impl Iterator<Item = Row<'_>> {
            self.rows.iter().map(|values| Row {
                columns: &self.columns,
                values,
            })
        }
    }

    /// One row of [`Rows`].
    #[derive(Debug, Clone, Copy)]
    pub struct Row<'a> {
        columns: &'a [Column],
        values: &'a [Value],
    }

    /// A column by its index or its name.
    pub trait ColumnIndex {
        fn index(&self, columns: &[Column]) -> Option<usize>;
    }

    impl ColumnIndex for usize {
        fn index(&self, columns: &[Column]) -> Option<usize> {
            (*self < columns.len()).then_some(*self)
        }
    }

    impl ColumnIndex for &str {
        fn index(&self, columns: &[Column]) -> Option<usize> {
            columns.iter().position(|c| c.name == *self)
        }
    }

    impl Row<'_> {
        /// The raw value of column `column`.
        pub fn value(&self, column: impl ColumnIndex) -> Option<&Value> {
            column.index(self.columns).map(|i| &self.values[i])
        }

        /// Column `column` as a `T` (`Option<T>` for a column that may be `NULL`).
        pub fn get<T: FromValue>(&self, column: impl ColumnIndex) -> Result<T, Error> {
            let value = self
                .value(column)
                .ok_or_else(|| Error::Other("no such column".to_string()))?;
            T::from_value(value).ok_or_else(|| {
                Error::ValueConversionFailed(format!("cannot read {value:?} as the type asked"))
            })
        }
    }

    /// A Rust type a [`Value`] converts to.
    pub trait FromValue: Sized {
        fn from_value(value: &Value) -> Option<Self>;
    }

    impl<T: FromValue> FromValue for Option<T> {
        fn from_value(value: &Value) -> Option<Self> {
            match value {
                Value::DbNull => Some(None),
                v => T::from_value(v).map(Some),
            }
        }
    }

    macro_rules! from_value {
        ($($t:ty: $($variant:ident)|+),* $(,)?) => {$(
            impl FromValue for $t {
                fn from_value(value: &Value) -> Option<Self> {
                    match value {
                        $(Value::$variant(v) => <$t>::try_from(v.clone()).ok(),)+
                        _ => None,
                    }
                }
            }
        )*};
    }
    from_value!(
        bool: Boolean,
        i16: Int8 | Int16,
        i32: Int8 | Int16 | Int32,
        i64: Int8 | Int16 | Int32 | Int64,
        f32: Floating32,
        f64: Floating32 | Floating64,
        String: Str | Uuid,
        Vec<u8>: Binary | Jsonb,
    );
}

/// Outbound HTTP (`wasi:http`, since `wasmq:job@0.1.2`), through the `wstd` crate's client.
///
/// A handler version reaches only the hosts it was granted (`--allow-outbound
/// https://api.example.com`); any other request fails with an [`Error`] whose
/// [`Error::denied`] is true (the host's `HttpRequestDenied`). Calls block the handler until
/// the answer is read; the host's limits (body size, timeouts clamped to the job's deadline)
/// apply. See docs/capabilities.md.
///
/// ```ignore
/// use wasmq_guest::{config, http};
/// let url = config::get("url").ok_or_else(|| JobError::Fail("no url".into()))?;
/// let response = http::Request::post(&url)
///     .bearer(config::get("NOTIFY_TOKEN").as_deref().unwrap_or(""))
///     .json(&serde_json::json!({ "job": job.id }))?
///     .send()?
///     .check()?; // 5xx: Retry, 4xx: Fail
/// ```
pub mod http {
    use std::fmt;

    use crate::JobError;

    /// What an HTTP status says, by its first digit.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum StatusClass {
        /// 1xx.
        Informational,
        /// 2xx.
        Success,
        /// 3xx (redirects are not followed: the handler sees them).
        Redirection,
        /// 4xx: the request is wrong; sending it again will not help.
        ClientError,
        /// 5xx: the server failed; a later attempt may succeed.
        ServerError,
        /// Anything else.
        Other,
    }

    impl StatusClass {
        /// The class of `status`.
        pub fn of(status: u16) -> StatusClass {
            match status {
                100..=199 => StatusClass::Informational,
                200..=299 => StatusClass::Success,
                300..=399 => StatusClass::Redirection,
                400..=499 => StatusClass::ClientError,
                500..=599 => StatusClass::ServerError,
                _ => StatusClass::Other,
            }
        }
    }

    /// A request that did not get an answer: denied by the host (not granted), refused by the
    /// address rules, timed out, the connection failed, or a body over the host's limit.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Error {
        message: String,
        denied: bool,
        /// The request itself is wrong (a bad method, url or header): sending it again fails
        /// the same way.
        invalid: bool,
    }

    impl Error {
        fn new(message: String) -> Error {
            // The host refuses an ungranted request with `HttpRequestDenied` and an address it
            // may not reach with `DestinationIpProhibited`.
            let denied = message.contains("HttpRequestDenied")
                || message.contains("DestinationIpProhibited");
            Error {
                message,
                denied,
                invalid: false,
            }
        }

        fn invalid(message: String) -> Error {
            Error {
                message,
                denied: false,
                invalid: true,
            }
        }

        /// True when the host refused the request (not granted, or an address it may not
        /// reach): nothing was sent.
        pub fn denied(&self) -> bool {
            self.denied
        }

        /// What went wrong, with the `wasi:http` error code when there is one.
        pub fn message(&self) -> &str {
            &self.message
        }
    }

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "request failed: {}", self.message)
        }
    }

    impl std::error::Error for Error {}

    /// A denied request fails the job (retrying will be denied again until the handler is
    /// granted more), as does a request that is itself wrong (a bad method, url or header);
    /// any other failure to get an answer asks for a retry.
    impl From<Error> for JobError {
        fn from(err: Error) -> JobError {
            if err.denied || err.invalid {
                JobError::Fail(err.to_string())
            } else {
                JobError::Retry(err.to_string())
            }
        }
    }

    /// An answer, read in full.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Response {
        /// The status code.
        pub status: u16,
        /// The headers, names in lower case, in the order received.
        pub headers: Vec<(String, String)>,
        /// The body.
        pub body: Vec<u8>,
    }

    impl Response {
        /// The class of the status.
        pub fn class(&self) -> StatusClass {
            StatusClass::of(self.status)
        }

        /// The first value of header `name` (any case), if it is text.
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        /// The body as text (lossy for bytes that are not UTF-8).
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        /// The body parsed as JSON; a body that does not parse fails the job.
        pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, JobError> {
            serde_json::from_slice(&self.body).map_err(|e| {
                JobError::Fail(format!(
                    "the response ({}) is not the JSON expected: {e}",
                    self.status
                ))
            })
        }

        /// The job's answer to this status: a 5xx asks for a retry, a 4xx fails the job (both
        /// with `HTTP <status>` and, when there is one, the start of the body in the message);
        /// anything else is returned as is.
        pub fn check(self) -> Result<Response, JobError> {
            let message = || {
                let body: String = self.text().chars().take(200).collect();
                if body.is_empty() {
                    format!("HTTP {}", self.status)
                } else {
                    format!("HTTP {}: {body}", self.status)
                }
            };
            match self.class() {
                StatusClass::ServerError => Err(JobError::Retry(message())),
                StatusClass::ClientError => Err(JobError::Fail(message())),
                _ => Ok(self),
            }
        }
    }

    /// A request being built; [`Request::send`] sends it.
    #[derive(Debug, Clone)]
    pub struct Request {
        /// `Err` holds a method name that is not an HTTP token; `send` refuses it.
        method: Result<wstd::http::Method, String>,
        url: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Request {
        /// A request of `method` (`"GET"`, `"POST"`, `"PUT"`, ...) to `url`. A name that is
        /// not a valid method makes [`Request::send`] fail without sending anything.
        pub fn new(method: &str, url: &str) -> Request {
            Request {
                method: wstd::http::Method::from_bytes(method.as_bytes())
                    .map_err(|_| method.to_string()),
                url: url.to_string(),
                headers: Vec::new(),
                body: Vec::new(),
            }
        }

        /// A GET of `url`.
        pub fn get(url: &str) -> Request {
            Request::new("GET", url)
        }

        /// A POST to `url`.
        pub fn post(url: &str) -> Request {
            Request::new("POST", url)
        }

        /// Adds a header.
        pub fn header(mut self, name: &str, value: &str) -> Request {
            self.headers.push((name.to_string(), value.to_string()));
            self
        }

        /// Adds `Authorization: Bearer <token>`.
        pub fn bearer(self, token: &str) -> Request {
            self.header("authorization", &format!("Bearer {token}"))
        }

        /// Sets the body.
        pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
            self.body = body.into();
            self
        }

        /// Sets the body to `value` as JSON, with `Content-Type: application/json`.
        pub fn json<T: serde::Serialize + ?Sized>(self, value: &T) -> Result<Request, JobError> {
            let body = serde_json::to_vec(value)
                .map_err(|e| JobError::Fail(format!("the request body is not JSON: {e}")))?;
            Ok(self.header("content-type", "application/json").body(body))
        }

        /// Sends the request and reads the whole answer. An answer of any status is `Ok`
        /// (see [`Response::check`]); `Err` means there was none.
        pub fn send(self) -> Result<Response, Error> {
            wstd::runtime::block_on(self.send_async())
        }

        async fn send_async(self) -> Result<Response, Error> {
            let method = self
                .method
                .map_err(|name| Error::invalid(format!("{name:?} is not an HTTP method")))?;
            let mut builder = wstd::http::Request::builder().method(method).uri(&self.url);
            for (name, value) in &self.headers {
                builder = builder.header(name.as_str(), value.as_str());
            }
            let request = builder
                .body(wstd::http::Body::from(self.body))
                .map_err(|e| Error::invalid(format!("bad request to {}: {e}", self.url)))?;
            let response = wstd::http::Client::new()
                .send(request)
                .await
                .map_err(|e| Error::new(format!("{e:?}")))?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect();
            let mut body = response.into_body();
            let body = body
                .contents()
                .await
                .map_err(|e| Error::new(format!("reading the answer failed: {e:?}")))?
                .to_vec();
            Ok(Response {
                status,
                headers,
                body,
            })
        }
    }

    /// GETs `url`.
    pub fn get(url: &str) -> Result<Response, Error> {
        Request::get(url).send()
    }

    /// POSTs `value` as JSON to `url`.
    pub fn post_json<T: serde::Serialize + ?Sized>(
        url: &str,
        value: &T,
    ) -> Result<Response, JobError> {
        Ok(Request::post(url).json(value)?.send()?)
    }
}
