//! `sql-probe`: runs the steps of its payload against Postgres and returns, as JSON, one
//! result per step, so one guest drives every test of tests/all/sql.rs.
//!
//! Payload: `{"database": "main", "ops": [OP, ...]}`, the database opened before the first
//! step. Each OP is one of:
//! - `{"query": SQL, "params": [PARAM, ...]}` -> `{"columns": [[name, type], ...], "rows":
//!   [[VALUE, ...], ...]}`
//! - `{"execute": SQL, "params": [...]}` -> `{"count": N}`
//! - `{"begin": true}`, `{"commit": true}`, `{"rollback": true}` -> `{"ok": true}`
//! - `{"close": true}` drops the connection (a transaction open is rolled back), `{"open":
//!   NAME}` opens another, `{"hold": NAME}` opens one more and keeps it open until the end
//!   -> `{"ok": true}`
//! - `{"transaction": [OP, ...]}` runs its `query`/`execute` steps through the SDK's
//!   `Database::transaction`: committed when all succeed, else rolled back at the first
//!   failure -> `{"committed": bool, "results": [...]}`
//!
//! A PARAM or VALUE is one tagged JSON object: `{"bool": true}`, `{"int16": 1}`, `{"int32":
//! 1}`, `{"int64": 1}`, `{"float32": 1.5}`, `{"float64": 1.5}`, `{"text": "a"}`, `{"bytea":
//! [1, 2]}`, `{"date": [y, m, d]}`, `{"time": [h, m, s, ns]}`, `{"datetime": [y, m, d, h, m,
//! s, ns]}`, `{"timestamp": micros}`, `{"uuid": "..."}`, `{"json": <json>}`, `{"null":
//! true}`, and (values only) `{"unsupported": true}`. A step that fails gives `{"error":
//! {"kind": ..., "sqlstate": ..., "message": ...}}` and the next steps still run.
use serde_json::{Value as Json, json};
use wasmq_guest::sql::{Database, Error, Param, Value};
use wasmq_guest::{Handler, Job, JobError};

struct SqlProbe;

fn fail(why: impl std::fmt::Display) -> JobError {
    JobError::Fail(why.to_string())
}

fn param(p: &Json) -> Result<Param, JobError> {
    let (tag, v) = p
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or_else(|| fail(format!("bad param {p}")))?;
    let int = || v.as_i64().ok_or_else(|| fail(format!("bad {tag} {v}")));
    let nums = |n: usize| -> Result<Vec<i64>, JobError> {
        let list: Vec<i64> = v
            .as_array()
            .map(|a| a.iter().filter_map(Json::as_i64).collect())
            .unwrap_or_default();
        if list.len() == n {
            Ok(list)
        } else {
            Err(fail(format!("bad {tag} {v}")))
        }
    };
    Ok(match tag.as_str() {
        "bool" => Param::Boolean(v.as_bool().unwrap_or_default()),
        "int16" => Param::Int16(int()? as i16),
        "int32" => Param::Int32(int()? as i32),
        "int64" => Param::Int64(int()?),
        "float32" => Param::Floating32(v.as_f64().unwrap_or_default() as f32),
        "float64" => Param::Floating64(v.as_f64().unwrap_or_default()),
        "text" => Param::Str(v.as_str().unwrap_or_default().to_string()),
        "bytea" => Param::Binary(nums_u8(v)),
        "date" => {
            let d = nums(3)?;
            Param::Date((d[0] as i32, d[1] as u8, d[2] as u8))
        }
        "time" => {
            let t = nums(4)?;
            Param::Time((t[0] as u8, t[1] as u8, t[2] as u8, t[3] as u32))
        }
        "datetime" => {
            let t = nums(7)?;
            Param::Datetime((
                t[0] as i32,
                t[1] as u8,
                t[2] as u8,
                t[3] as u8,
                t[4] as u8,
                t[5] as u8,
                t[6] as u32,
            ))
        }
        "timestamp" => Param::Timestamp(int()?),
        "uuid" => Param::Uuid(v.as_str().unwrap_or_default().to_string()),
        "json" => Param::Jsonb(v.to_string().into_bytes()),
        "null" => Param::DbNull,
        _ => return Err(fail(format!("unknown param type {tag}"))),
    })
}

fn nums_u8(v: &Json) -> Vec<u8> {
    v.as_array()
        .map(|a| a.iter().filter_map(Json::as_u64).map(|n| n as u8).collect())
        .unwrap_or_default()
}

fn value(v: &Value) -> Json {
    match v {
        Value::Boolean(b) => json!({ "bool": b }),
        Value::Int8(n) => json!({ "int8": n }),
        Value::Int16(n) => json!({ "int16": n }),
        Value::Int32(n) => json!({ "int32": n }),
        Value::Int64(n) => json!({ "int64": n }),
        Value::Floating32(x) => json!({ "float32": x }),
        Value::Floating64(x) => json!({ "float64": x }),
        Value::Str(s) => json!({ "text": s }),
        Value::Binary(b) => json!({ "bytea": b }),
        Value::Date((y, m, d)) => json!({ "date": [y, m, d] }),
        Value::Time((h, m, s, ns)) => json!({ "time": [h, m, s, ns] }),
        Value::Datetime((y, mo, d, h, mi, s, ns)) => {
            json!({ "datetime": [y, mo, d, h, mi, s, ns] })
        }
        Value::Timestamp(us) => json!({ "timestamp": us }),
        Value::Uuid(u) => json!({ "uuid": u }),
        Value::Jsonb(b) => {
            json!({ "json": serde_json::from_slice::<Json>(b).unwrap_or(Json::Null) })
        }
        Value::DbNull => json!({ "null": true }),
        Value::Unsupported => json!({ "unsupported": true }),
    }
}

fn error(e: &Error) -> Json {
    let kind = match e {
        Error::AccessDenied(_) => "access-denied",
        Error::ConnectionFailed(_) => "connection-failed",
        Error::BadParameter(_) => "bad-parameter",
        Error::QueryFailed(_) => "query-failed",
        Error::ValueConversionFailed(_) => "value-conversion-failed",
        Error::TooLarge(_) => "too-large",
        Error::Other(_) => "other",
    };
    json!({ "error": { "kind": kind, "sqlstate": e.sqlstate(), "message": e.describe() } })
}

fn params(op: &Json) -> Result<Vec<Param>, JobError> {
    op.get("params")
        .and_then(Json::as_array)
        .map(|ps| ps.iter().map(param).collect())
        .unwrap_or(Ok(Vec::new()))
}

fn step(db: &mut Option<Database>, held: &mut Vec<Database>, op: &Json) -> Result<Json, JobError> {
    if let Some(name) = op.get("hold").and_then(Json::as_str) {
        return Ok(match Database::open(name) {
            Ok(opened) => {
                held.push(opened);
                json!({ "ok": true })
            }
            Err(e) => error(&e),
        });
    }
    if let Some(name) = op.get("open").and_then(Json::as_str) {
        return Ok(match Database::open(name) {
            Ok(opened) => {
                *db = Some(opened);
                json!({ "ok": true })
            }
            Err(e) => error(&e),
        });
    }
    if op.get("close").is_some() {
        *db = None;
        return Ok(json!({ "ok": true }));
    }
    let Some(conn) = db.as_ref() else {
        return Ok(json!({ "error": { "kind": "no-connection" } }));
    };
    if let Some(steps) = op.get("transaction").and_then(Json::as_array) {
        let mut results = Vec::new();
        let outcome = conn.transaction(|db| -> Result<(), Error> {
            for step in steps {
                let result = statement(db, step).map_err(|e| Error::Other(format!("{e:?}")))?;
                let failed = result.is_err();
                results.push(result.unwrap_or_else(|e| error(&e)));
                if failed {
                    return Err(Error::Other("a step failed".to_string()));
                }
            }
            Ok(())
        });
        return Ok(json!({ "committed": outcome.is_ok(), "results": results }));
    }
    let done = if op.get("query").is_some() || op.get("execute").is_some() {
        statement(conn, op)?
    } else if op.get("begin").is_some() {
        conn.begin().map(|()| json!({ "ok": true }))
    } else if op.get("commit").is_some() {
        conn.commit().map(|()| json!({ "ok": true }))
    } else if op.get("rollback").is_some() {
        conn.rollback().map(|()| json!({ "ok": true }))
    } else {
        return Err(fail(format!("unknown op {op}")));
    };
    Ok(done.unwrap_or_else(|e| error(&e)))
}

/// Runs a `query` or `execute` step: the statement's result, or a bad step's `JobError`.
fn statement(conn: &Database, op: &Json) -> Result<Result<Json, Error>, JobError> {
    if let Some(sql) = op.get("query").and_then(Json::as_str) {
        return Ok(conn.query(sql, &params(op)?).map(|rows| {
            let columns: Vec<Json> = rows
                .columns
                .iter()
                .map(|c| json!([c.name, format!("{:?}", c.data_type)]))
                .collect();
            let rows: Vec<Json> = rows
                .rows
                .iter()
                .map(|r| Json::Array(r.iter().map(value).collect()))
                .collect();
            json!({ "columns": columns, "rows": rows })
        }));
    }
    if let Some(sql) = op.get("execute").and_then(Json::as_str) {
        return Ok(conn
            .execute(sql, &params(op)?)
            .map(|n| json!({ "count": n })));
    }
    Err(fail(format!("not a statement: {op}")))
}

impl Handler for SqlProbe {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let payload: Json = serde_json::from_slice(&job.payload).map_err(fail)?;
        let name = payload["database"].as_str().unwrap_or("main");
        let mut results = Vec::new();
        let mut db = match Database::open(name) {
            Ok(db) => Some(db),
            Err(e) => {
                results.push(error(&e));
                None
            }
        };
        let mut held = Vec::new();
        for op in payload["ops"].as_array().into_iter().flatten() {
            results.push(step(&mut db, &mut held, op)?);
        }
        Ok(Json::Array(results).to_string().into_bytes())
    }
}

wasmq_guest::export_handler!(SqlProbe);
