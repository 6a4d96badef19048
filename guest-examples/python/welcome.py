"""`welcome`: the welcome-email job of examples/welcome-email, in Python (the Rust one is
guest-examples/rust/welcome-email; all behave the same, see examples/welcome-email/README.md).

The payload is `{"userId": N}`. Read the user by id from database `main` (gone: complete,
nothing sent); if `email_log` already has this job's id, complete (an earlier attempt sent
it); else POST the email to the config value `email_api_url` with the secret `EMAIL_API_KEY`
as a bearer token and the job id as `Idempotency-Key` (so a retry after a crash between the
POST and the log row is not a second email), then write the log row in a transaction. 5xx from
the API is `retry`, 4xx `fail`. Uses `wasmq_http.py` and `wasmq_sql.py`, shipped beside it.
"""

import json
from typing import Optional

import wit_world
from componentize_py_types import Err
from wit_world.imports import wasi_config_store as store
from wit_world.imports import wasmq_job_types as types

from wasmq_http import RequestFailed, request
from wasmq_sql import SqlError, execute, open_database, query, transaction


def config(key: str) -> Optional[str]:
    try:
        return store.get(key)
    except Err:
        return None


def fail(message: str) -> Err:
    return Err(types.JobError_Fail(message))


def retry(message: str) -> Err:
    return Err(types.JobError_Retry(message))


class WitWorld(wit_world.WitWorld):
    def handle(self, job: types.Job) -> bytes:
        try:
            user_id = json.loads(job.payload.decode("utf-8")).get("userId")
        except (ValueError, AttributeError, RecursionError) as e:
            raise fail(f"invalid json: {e}")
        if not isinstance(user_id, int) or isinstance(user_id, bool):
            raise fail("the payload has no integer userId")
        url = config("email_api_url")
        if url is None:
            raise fail("no email_api_url configured")
        key = config("EMAIL_API_KEY")
        if key is None:
            raise fail("no EMAIL_API_KEY secret")

        try:
            db = open_database("main")
            users = query(db, "SELECT email, name FROM users WHERE id = $1", user_id)
            if not users:
                return f"user {user_id} is gone: nothing sent".encode()
            user = users[0]
            if query(db, "SELECT 1 AS sent FROM email_log WHERE job_id = $1", job.id):
                return f"already sent to {user['email']}".encode()
        except SqlError as e:
            # Not granted is a deploy mistake; anything else may pass: try again later.
            raise (fail if e.denied else retry)(f"database: {e}")

        email = {"to": user["email"], "subject": "Welcome!", "text": f"Hello {user['name']}, welcome aboard."}
        headers = [
            ("content-type", "application/json"),
            ("authorization", f"Bearer {key}"),
            ("idempotency-key", job.id),
        ]
        try:
            status, _, answer = request("POST", url, headers, json.dumps(email).encode())
        except RequestFailed as e:
            raise (fail if e.denied else retry)(f"email API request failed: {e}")
        if 500 <= status <= 599:
            raise retry(f"email API: HTTP {status}")
        if not 200 <= status <= 299:
            raise fail(f"email API: HTTP {status}: {answer[:200].decode('utf-8', 'replace')}")
        try:
            provider_id = json.loads(answer).get("id")
        except (ValueError, AttributeError):
            provider_id = None  # an answer without a JSON body still means sent

        try:
            with transaction(db):
                execute(
                    db,
                    "INSERT INTO email_log (job_id, user_id, provider_id) VALUES ($1, $2, $3) "
                    "ON CONFLICT (job_id) DO NOTHING",
                    job.id,
                    user_id,
                    provider_id,
                )
        except SqlError as e:
            raise retry(f"database: {e}")
        return f"sent to {user['email']}".encode()
