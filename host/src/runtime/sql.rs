//! The `sql` interface for one attempt: opens only the databases its handler version was
//! granted (`Capabilities::databases`, a pool each), at most
//! [`MAX_CONNECTIONS_PER_ATTEMPT`] at once, and runs each statement under the job's deadline.
//!
//! A statement's life:
//! 1. The connection is marked busy and a [`CancelOnDrop`] guard holds its cancel token.
//! 2. The statement is prepared, its parameters converted against the types the server
//!    reports for them, and it runs, its rows read until the caps on rows and bytes.
//! 3. Finished before the deadline (rows, a server error, or over a cap: the driver reads and
//!    drops the rest of the rows), the guard is disarmed and the connection is idle again.
//!    Past the deadline, or when the attempt's future is dropped mid-statement (the runtime's
//!    own timeout), the guard asks the server to cancel the statement, and the connection,
//!    still busy, is detached from its pool when dropped: it is never handed out again.
//!
//! A connection dropped with a transaction open is detached the same way (closing it rolls
//! the transaction back on the server); the pool's recycle (`DISCARD ALL`) also refuses one
//! left in a transaction by hand.

use std::time::Instant;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use futures_util::StreamExt;
use tokio_postgres::NoTls;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use wasmtime::component::Resource;

use super::HostState;
use super::bindings::wasmq::job::sql;
use crate::capability::SqlOutcome;
use crate::capability::sql::{
    MAX_CONNECTIONS_PER_ATTEMPT, MAX_RESULT_BYTES, MAX_ROWS, Pooled, error_text,
};

/// How long the cancel request of a statement cut at the deadline may take.
const CANCEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// An open connection, as the guest's `connection` resource holds it.
pub struct SqlConnection {
    database: String,
    client: Option<Pooled>,
    in_transaction: bool,
    /// A statement started and did not finish: the server may still be running it.
    busy: bool,
}

impl Drop for SqlConnection {
    fn drop(&mut self) {
        if (self.busy || self.in_transaction)
            && let Some(client) = self.client.take()
        {
            // Detached from the pool, the client closes its connection when dropped, and the
            // server rolls back whatever it left open.
            drop(deadpool::managed::Object::take(client));
        }
    }
}

/// Asks the server to cancel the statement under way, unless disarmed first.
struct CancelOnDrop(Option<tokio_postgres::CancelToken>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(CANCEL_TIMEOUT, token.cancel_query(NoTls)).await;
            });
        }
    }
}

/// What a statement is asked to do.
enum Op {
    Query(String, Vec<sql::ParameterValue>),
    Execute(String, Vec<sql::ParameterValue>),
    /// `BEGIN`, `COMMIT` or `ROLLBACK`.
    Control(&'static str),
}

impl Op {
    /// The statement's SQL command, as its span names it (`telemetry::sql_operation`).
    fn operation(&self) -> Option<&'static str> {
        match self {
            Op::Query(statement, _) | Op::Execute(statement, _) => {
                crate::telemetry::sql_operation(statement)
            }
            Op::Control(statement) => crate::telemetry::sql_operation(statement),
        }
    }
}

enum Done {
    Rows(sql::RowSet),
    Count(u64),
    Unit,
}

/// Why a statement failed, with what the metrics call it.
struct Failure {
    outcome: SqlOutcome,
    error: sql::Error,
}

impl Failure {
    fn new(outcome: SqlOutcome, error: sql::Error) -> Self {
        Self { outcome, error }
    }

    fn server(e: &tokio_postgres::Error) -> Self {
        let sqlstate = e.code().map(|c| c.code().to_string()).unwrap_or_default();
        let outcome = if e.as_db_error().is_some() {
            SqlOutcome::Failed
        } else {
            SqlOutcome::ConnectionFailed
        };
        Self::new(
            outcome,
            sql::Error::QueryFailed(sql::QueryError {
                sqlstate,
                message: error_text(e),
            }),
        )
    }
}

impl SqlConnection {
    /// Runs `op` on this connection under `deadline` (steps 1-3 of the module doc).
    async fn run(&mut self, deadline: Instant, op: Op) -> Result<Done, Failure> {
        let Some(client) = self.client.as_ref() else {
            return Err(Failure::new(
                SqlOutcome::ConnectionFailed,
                sql::Error::ConnectionFailed(
                    "this connection was closed after an earlier statement was cut".to_string(),
                ),
            ));
        };
        if self.busy {
            return Err(Failure::new(
                SqlOutcome::ConnectionFailed,
                sql::Error::ConnectionFailed(
                    "this connection's last statement did not finish: open another".to_string(),
                ),
            ));
        }
        let client = &client.client;
        let guard = CancelOnDrop(Some(client.cancel_token()));
        self.busy = true;
        let result = tokio::time::timeout_at(deadline.into(), perform(client, op)).await;
        match result {
            Ok(Ok(done)) => {
                guard.disarm();
                self.busy = false;
                Ok(done)
            }
            Ok(Err(failure)) => {
                // Not cancelled: a cancel request could reach the server after this statement
                // ended, and cut the next one. Over a cap, the driver reads the rest of the
                // rows and drops them before the next statement. A server error leaves the
                // connection idle (in a failed transaction, if one is open); a broken one is
                // dropped.
                guard.disarm();
                self.busy = client.is_closed();
                Err(failure)
            }
            Err(_elapsed) => Err(Failure::new(
                SqlOutcome::Timeout,
                sql::Error::Other(
                    "the job's deadline passed during the statement; it was cancelled".into(),
                ),
            )),
        }
    }
}

async fn perform(client: &tokio_postgres::Client, op: Op) -> Result<Done, Failure> {
    match op {
        Op::Control(statement) => {
            client
                .batch_execute(statement)
                .await
                .map_err(|e| Failure::server(&e))?;
            Ok(Done::Unit)
        }
        Op::Execute(statement, params) => {
            let prepared = client
                .prepare(&statement)
                .await
                .map_err(|e| Failure::server(&e))?;
            let params = convert_params(prepared.params(), params)?;
            let count = client
                .execute_raw(
                    &prepared,
                    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)),
                )
                .await
                .map_err(|e| Failure::server(&e))?;
            Ok(Done::Count(count))
        }
        Op::Query(statement, params) => {
            let prepared = client
                .prepare(&statement)
                .await
                .map_err(|e| Failure::server(&e))?;
            let params = convert_params(prepared.params(), params)?;
            let columns: Vec<sql::Column> = prepared
                .columns()
                .iter()
                .map(|c| sql::Column {
                    name: c.name().to_string(),
                    data_type: data_type(c.type_()),
                })
                .collect();
            let mut bytes = columns.iter().map(|c| c.name.len()).sum::<usize>();
            let stream = client
                .query_raw(
                    &prepared,
                    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)),
                )
                .await
                .map_err(|e| Failure::server(&e))?;
            let mut stream = std::pin::pin!(stream);
            let mut rows = Vec::new();
            while let Some(row) = stream.next().await {
                let row = row.map_err(|e| Failure::server(&e))?;
                if rows.len() == MAX_ROWS {
                    return Err(too_large(format!(
                        "the query returns more than {MAX_ROWS} rows"
                    )));
                }
                let values = read_row(&row)?;
                bytes = bytes.saturating_add(values.iter().map(value_size).sum());
                if bytes > MAX_RESULT_BYTES {
                    return Err(too_large(format!(
                        "the query returns more than {MAX_RESULT_BYTES} bytes"
                    )));
                }
                rows.push(values);
            }
            Ok(Done::Rows(sql::RowSet { columns, rows }))
        }
    }
}

fn too_large(message: String) -> Failure {
    Failure::new(SqlOutcome::TooLarge, sql::Error::TooLarge(message))
}

/// A parameter's value for any type: SQL `NULL`.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

type Param = Box<dyn ToSql + Sync + Send>;

fn convert_params(types: &[Type], values: Vec<sql::ParameterValue>) -> Result<Vec<Param>, Failure> {
    if types.len() != values.len() {
        return Err(bad_parameter(format!(
            "the statement takes {} parameter(s), {} given",
            types.len(),
            values.len()
        )));
    }
    types
        .iter()
        .zip(values)
        .enumerate()
        .map(|(i, (ty, value))| {
            convert_param(ty, value)
                .map_err(|why| bad_parameter(format!("parameter ${} ({}): {why}", i + 1, ty)))
        })
        .collect()
}

fn bad_parameter(message: String) -> Failure {
    Failure::new(SqlOutcome::Conversion, sql::Error::BadParameter(message))
}

/// One parameter as the statement's type `ty` takes it.
fn convert_param(ty: &Type, value: sql::ParameterValue) -> Result<Param, String> {
    use sql::ParameterValue as P;
    let int = |n: i64| -> Result<Param, String> {
        let out_of_range = || format!("{n} is out of range");
        Ok(match *ty {
            Type::INT2 => Box::new(i16::try_from(n).map_err(|_| out_of_range())?),
            Type::INT4 => Box::new(i32::try_from(n).map_err(|_| out_of_range())?),
            Type::INT8 => Box::new(n),
            _ => return Err("an integer is given".to_string()),
        })
    };
    let float = |x: f64| -> Result<Param, String> {
        Ok(match *ty {
            Type::FLOAT4 => Box::new(x as f32),
            Type::FLOAT8 => Box::new(x),
            _ => return Err("a float is given".to_string()),
        })
    };
    match value {
        P::DbNull => Ok(Box::new(Null)),
        P::Boolean(b) if *ty == Type::BOOL => Ok(Box::new(b)),
        P::Int8(n) => int(n.into()),
        P::Int16(n) => int(n.into()),
        P::Int32(n) => int(n.into()),
        P::Int64(n) => int(n),
        P::Floating32(x) => float(x.into()),
        P::Floating64(x) => float(x),
        P::Str(s) if is_text(ty) => Ok(Box::new(s)),
        P::Str(s) | P::Uuid(s) if *ty == Type::UUID => Ok(Box::new(
            uuid::Uuid::parse_str(&s).map_err(|_| format!("{s:?} is not a UUID"))?,
        )),
        P::Binary(b) if *ty == Type::BYTEA => Ok(Box::new(b)),
        P::Date(d) if *ty == Type::DATE => Ok(Box::new(date(d)?)),
        P::Time(t) if *ty == Type::TIME => Ok(Box::new(time(t)?)),
        P::Datetime((y, mo, d, h, mi, s, ns)) if *ty == Type::TIMESTAMP => Ok(Box::new(
            NaiveDateTime::new(date((y, mo, d))?, time((h, mi, s, ns))?),
        )),
        P::Timestamp(micros) if *ty == Type::TIMESTAMPTZ => Ok(Box::new(
            DateTime::<Utc>::from_timestamp_micros(micros)
                .ok_or_else(|| format!("{micros} microseconds is out of range"))?,
        )),
        P::Jsonb(b) | P::Binary(b) if *ty == Type::JSON || *ty == Type::JSONB => Ok(Box::new(
            serde_json::from_slice::<serde_json::Value>(&b)
                .map_err(|e| format!("not JSON: {e}"))?,
        )),
        P::Str(s) if *ty == Type::JSON || *ty == Type::JSONB => Ok(Box::new(
            serde_json::from_str::<serde_json::Value>(&s).map_err(|e| format!("not JSON: {e}"))?,
        )),
        other => Err(format!("a {} is given", parameter_kind(&other))),
    }
}

fn is_text(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN
    )
}

fn parameter_kind(value: &sql::ParameterValue) -> &'static str {
    use sql::ParameterValue as P;
    match value {
        P::Boolean(_) => "boolean",
        P::Int8(_) | P::Int16(_) | P::Int32(_) | P::Int64(_) => "integer",
        P::Floating32(_) | P::Floating64(_) => "float",
        P::Str(_) => "string",
        P::Binary(_) => "binary",
        P::Date(_) => "date",
        P::Time(_) => "time",
        P::Datetime(_) => "datetime",
        P::Timestamp(_) => "timestamp",
        P::Uuid(_) => "uuid",
        P::Jsonb(_) => "jsonb",
        P::DbNull => "null",
    }
}

fn date((y, m, d): (i32, u8, u8)) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(y, m.into(), d.into())
        .ok_or_else(|| format!("{y}-{m}-{d} is not a date"))
}

fn time((h, m, s, ns): (u8, u8, u8, u32)) -> Result<NaiveTime, String> {
    NaiveTime::from_hms_nano_opt(h.into(), m.into(), s.into(), ns)
        .ok_or_else(|| format!("{h}:{m}:{s}.{ns:09} is not a time"))
}

fn data_type(ty: &Type) -> sql::DbDataType {
    use sql::DbDataType as D;
    match *ty {
        Type::BOOL => D::Boolean,
        Type::CHAR => D::Int8,
        Type::INT2 => D::Int16,
        Type::INT4 => D::Int32,
        Type::INT8 => D::Int64,
        Type::FLOAT4 => D::Floating32,
        Type::FLOAT8 => D::Floating64,
        Type::BYTEA => D::Binary,
        Type::DATE => D::Date,
        Type::TIME => D::Time,
        Type::TIMESTAMP => D::Datetime,
        Type::TIMESTAMPTZ => D::Timestamp,
        Type::UUID => D::Uuid,
        Type::JSON | Type::JSONB => D::Jsonb,
        ref t if is_text(t) => D::Str,
        _ => D::Other,
    }
}

fn read_row(row: &tokio_postgres::Row) -> Result<Vec<sql::DbValue>, Failure> {
    (0..row.len())
        .map(|i| {
            let column = &row.columns()[i];
            read_value(row, i, column.type_()).map_err(|e| {
                Failure::new(
                    SqlOutcome::Conversion,
                    sql::Error::ValueConversionFailed(format!(
                        "column {:?} ({}): {}",
                        column.name(),
                        column.type_(),
                        error_text(&e)
                    )),
                )
            })
        })
        .collect()
}

fn read_value(
    row: &tokio_postgres::Row,
    i: usize,
    ty: &Type,
) -> Result<sql::DbValue, tokio_postgres::Error> {
    use sql::DbValue as V;
    fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        row: &'a tokio_postgres::Row,
        i: usize,
        f: impl FnOnce(T) -> sql::DbValue,
    ) -> Result<sql::DbValue, tokio_postgres::Error> {
        Ok(row.try_get::<_, Option<T>>(i)?.map_or(V::DbNull, f))
    }
    match *ty {
        Type::BOOL => get(row, i, V::Boolean),
        Type::CHAR => get(row, i, V::Int8),
        Type::INT2 => get(row, i, V::Int16),
        Type::INT4 => get(row, i, V::Int32),
        Type::INT8 => get(row, i, V::Int64),
        Type::FLOAT4 => get(row, i, V::Floating32),
        Type::FLOAT8 => get(row, i, V::Floating64),
        Type::BYTEA => get(row, i, V::Binary),
        Type::DATE => get(row, i, |d: NaiveDate| V::Date(date_tuple(d))),
        Type::TIME => get(row, i, |t: NaiveTime| V::Time(time_tuple(t))),
        Type::TIMESTAMP => get(row, i, |dt: NaiveDateTime| {
            let (y, mo, d) = date_tuple(dt.date());
            let (h, mi, s, ns) = time_tuple(dt.time());
            V::Datetime((y, mo, d, h, mi, s, ns))
        }),
        Type::TIMESTAMPTZ => get(row, i, |t: DateTime<Utc>| {
            V::Timestamp(t.timestamp_micros())
        }),
        Type::UUID => get(row, i, |u: uuid::Uuid| V::Uuid(u.to_string())),
        Type::JSON | Type::JSONB => get(row, i, |j: serde_json::Value| {
            V::Jsonb(serde_json::to_vec(&j).unwrap_or_default())
        }),
        ref t if is_text(t) => get(row, i, V::Str),
        _ => Ok(V::Unsupported),
    }
}

fn date_tuple(d: NaiveDate) -> (i32, u8, u8) {
    // Month and day always fit a byte.
    (d.year(), d.month() as u8, d.day() as u8)
}

fn time_tuple(t: NaiveTime) -> (u8, u8, u8, u32) {
    (
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.nanosecond(),
    )
}

/// The bytes a value takes as the guest receives it, for the result cap.
fn value_size(value: &sql::DbValue) -> usize {
    use sql::DbValue as V;
    match value {
        V::Str(s) | V::Uuid(s) => s.len() + 8,
        V::Binary(b) | V::Jsonb(b) => b.len() + 8,
        _ => 16,
    }
}

fn other(e: impl std::fmt::Display) -> sql::Error {
    sql::Error::Other(e.to_string())
}

impl HostState {
    /// Runs `op` on the connection behind `handle`, counted in the metrics.
    async fn sql_run(
        &mut self,
        handle: &Resource<SqlConnection>,
        op: Op,
    ) -> Result<Done, sql::Error> {
        let started = Instant::now();
        let deadline = self.deadline;
        let caps = self.caps.clone();
        let conn = self
            .table
            .get_mut(handle)
            .map_err(|e| other(format!("connection: {e}")))?;
        let database = conn.database.clone();
        let span = crate::telemetry::tracer().and_then(|_| {
            let namespace = caps.databases.get(&database)?.namespace.as_deref();
            crate::telemetry::sql_span(op.operation(), &database, namespace)
        });
        let operation = op.operation();
        let result = conn.run(deadline, op).await;
        let outcome = result.as_ref().err().map_or(SqlOutcome::Ok, |f| f.outcome);
        caps.observe_sql(&database, outcome, started.elapsed());
        // The call record keeps the command keyword and the grant's name, never the text.
        super::calls::lock(&self.calls).sql(
            started,
            started.elapsed(),
            operation,
            &database,
            result.is_err(),
        );
        if let Some(span) = span {
            let failure = result.as_ref().err().map(|f| {
                let sqlstate = match &f.error {
                    sql::Error::QueryFailed(e) => e.sqlstate.as_str(),
                    _ => "",
                };
                (sqlstate, f.outcome.as_str())
            });
            crate::telemetry::end_sql(span, failure);
        }
        result.map_err(|f| f.error)
    }
}

impl sql::Host for HostState {}

impl sql::HostConnection for HostState {
    async fn open(&mut self, database: String) -> Result<Resource<SqlConnection>, sql::Error> {
        let Some(db) = self.caps.databases.get(&database) else {
            // The name is the guest's: cut, so a guest cannot write megabytes per call here.
            let shown: String = database.chars().take(64).collect();
            tracing::warn!(handler = %self.caps.handler, database = %shown.escape_debug(),
                "database not granted");
            return Err(sql::Error::AccessDenied(format!(
                "database {:?} is not granted to handler {}",
                database.escape_debug().to_string(),
                self.caps.handler
            )));
        };
        if self.sql_open >= MAX_CONNECTIONS_PER_ATTEMPT {
            return Err(sql::Error::Other(format!(
                "at most {MAX_CONNECTIONS_PER_ATTEMPT} connections open at once per attempt"
            )));
        }
        let started = Instant::now();
        let span = crate::telemetry::tracer()
            .and_then(|_| crate::telemetry::sql_connect_span(&database, db.namespace.as_deref()));
        let taken = tokio::time::timeout_at(self.deadline.into(), db.pool.get()).await;
        let failed = |span: Option<crate::telemetry::SdkSpan>, class: &str| {
            if let Some(span) = span {
                crate::telemetry::end_sql(span, Some(("", class)));
            }
        };
        let client = match taken {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                failed(span, SqlOutcome::ConnectionFailed.as_str());
                let why = match e {
                    deadpool::managed::PoolError::Backend(why) => why,
                    other => other.to_string(),
                };
                self.caps
                    .observe_sql(&database, SqlOutcome::ConnectionFailed, started.elapsed());
                return Err(sql::Error::ConnectionFailed(format!(
                    "database {database}: {why}"
                )));
            }
            Err(_elapsed) => {
                failed(span, SqlOutcome::ConnectionFailed.as_str());
                self.caps
                    .observe_sql(&database, SqlOutcome::ConnectionFailed, started.elapsed());
                return Err(sql::Error::ConnectionFailed(format!(
                    "database {database}: no connection to {} before the job's deadline",
                    db.endpoint
                )));
            }
        };
        if let Some(span) = span {
            crate::telemetry::end_sql(span, None);
        }
        let handle = self
            .table
            .push(SqlConnection {
                database,
                client: Some(client),
                in_transaction: false,
                busy: false,
            })
            .map_err(|e| other(format!("connection: {e}")))?;
        self.sql_open += 1;
        Ok(handle)
    }

    async fn query(
        &mut self,
        handle: Resource<SqlConnection>,
        statement: String,
        params: Vec<sql::ParameterValue>,
    ) -> Result<sql::RowSet, sql::Error> {
        match self.sql_run(&handle, Op::Query(statement, params)).await? {
            Done::Rows(rows) => Ok(rows),
            _ => Err(other("unexpected result")),
        }
    }

    async fn execute(
        &mut self,
        handle: Resource<SqlConnection>,
        statement: String,
        params: Vec<sql::ParameterValue>,
    ) -> Result<u64, sql::Error> {
        match self
            .sql_run(&handle, Op::Execute(statement, params))
            .await?
        {
            Done::Count(n) => Ok(n),
            _ => Err(other("unexpected result")),
        }
    }

    async fn begin(&mut self, handle: Resource<SqlConnection>) -> Result<(), sql::Error> {
        self.transaction(handle, "BEGIN", true).await
    }

    async fn commit(&mut self, handle: Resource<SqlConnection>) -> Result<(), sql::Error> {
        self.transaction(handle, "COMMIT", false).await
    }

    async fn rollback(&mut self, handle: Resource<SqlConnection>) -> Result<(), sql::Error> {
        self.transaction(handle, "ROLLBACK", false).await
    }

    async fn drop(&mut self, handle: Resource<SqlConnection>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        self.sql_open = self.sql_open.saturating_sub(1);
        Ok(())
    }
}

impl HostState {
    async fn transaction(
        &mut self,
        handle: Resource<SqlConnection>,
        statement: &'static str,
        begin: bool,
    ) -> Result<(), sql::Error> {
        let open = self
            .table
            .get(&handle)
            .map_err(|e| other(format!("connection: {e}")))?
            .in_transaction;
        if open == begin {
            return Err(other(if begin {
                "a transaction is already open on this connection"
            } else {
                "no transaction is open on this connection"
            }));
        }
        let result = self.sql_run(&handle, Op::Control(statement)).await;
        if let Ok(conn) = self.table.get_mut(&handle) {
            // COMMIT or ROLLBACK ends the transaction even when it fails (a failed COMMIT
            // rolls back); BEGIN opens one only when it succeeds.
            conn.in_transaction = begin && result.is_ok();
        }
        result.map(|_| ())
    }
}
