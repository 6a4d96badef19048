"""Thin helpers over componentize-py's bindings of the `sql` interface (`wasmq:job@0.1.3`),
for wasmq handlers. Ship it beside the handler, as `wasmq_http.py`.

    from wasmq_sql import SqlError, open_database, query, execute, transaction
    db = open_database("main")              # the name the deploy granted, never a URL
    users = query(db, "SELECT email FROM users WHERE id = $1", user_id)   # [{"email": ...}]
    with transaction(db):                   # committed at the end, rolled back on an exception
        execute(db, "INSERT INTO seen (id) VALUES ($1)", job_id)

Python values become parameters (`None`, `bool`, `int` as int64, `float`, `str`, `bytes`);
rows come back as dicts keyed by column name (`timestamp` as microseconds since the epoch,
`uuid` as text, `json`/`jsonb` parsed). Every failure raises `SqlError`, whose `error` is the
binding's variant (`Error_AccessDenied`, `Error_QueryFailed` with `.value.sqlstate`, ...).
"""

import json
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List

from componentize_py_types import Err
from wit_world.imports import sql


class SqlError(Exception):
    """A failed `sql` call: `error` is the WIT `error` variant, `sqlstate` the server's code
    when it refused a statement (else an empty string)."""

    def __init__(self, error: Any) -> None:
        self.error = error
        value = getattr(error, "value", "")
        if isinstance(value, sql.QueryError):
            self.sqlstate = value.sqlstate
            detail = f"{value.sqlstate} {value.message}"
        else:
            self.sqlstate = ""
            detail = str(value)
        kind = type(error).__name__.removeprefix("Error_")
        super().__init__(f"{kind}: {detail}")

    @property
    def denied(self) -> bool:
        return isinstance(self.error, sql.Error_AccessDenied)


def param(value: Any) -> Any:
    """A Python value as a statement parameter."""
    if value is None:
        return sql.ParameterValue_DbNull()
    if isinstance(value, bool):
        return sql.ParameterValue_Boolean(value)
    if isinstance(value, int):
        return sql.ParameterValue_Int64(value)
    if isinstance(value, float):
        return sql.ParameterValue_Floating64(value)
    if isinstance(value, (bytes, bytearray)):
        return sql.ParameterValue_Binary(bytes(value))
    return sql.ParameterValue_Str(str(value))


def _value(value: Any) -> Any:
    if isinstance(value, (sql.DbValue_DbNull, sql.DbValue_Unsupported)):
        return None
    if isinstance(value, sql.DbValue_Jsonb):
        return json.loads(bytes(value.value))
    return value.value


def _call(f: Any, *args: Any) -> Any:
    try:
        return f(*args)
    except Err as e:
        raise SqlError(e.value) from None


def open_database(name: str) -> sql.Connection:
    return _call(sql.Connection.open, name)


def query(db: sql.Connection, statement: str, *params: Any) -> List[Dict[str, Any]]:
    """The rows, each a dict keyed by column name."""
    rows = _call(db.query, statement, [param(p) for p in params])
    names = [c.name for c in rows.columns]
    return [dict(zip(names, map(_value, row))) for row in rows.rows]


def execute(db: sql.Connection, statement: str, *params: Any) -> int:
    """The number of rows the statement affected."""
    return _call(db.execute, statement, [param(p) for p in params])


@contextmanager
def transaction(db: sql.Connection) -> Iterator[sql.Connection]:
    """BEGIN; COMMIT when the block ends, ROLLBACK when it raises (the error goes on)."""
    _call(db.begin)
    try:
        yield db
    except BaseException:
        try:
            db.rollback()
        except Err:
            pass  # the block's own error is the one worth reporting
        raise
    _call(db.commit)
