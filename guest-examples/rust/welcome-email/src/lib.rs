//! `welcome-email`: the job of examples/welcome-email (the JavaScript one,
//! guest-examples/javascript/welcome.js, behaves the same).
//!
//! The payload is `{"userId": N}`:
//! 1. read the user by id from database `main` (gone: complete, nothing sent);
//! 2. if `email_log` has a row for this job id, complete: an earlier attempt sent the email;
//! 3. POST the email to the config value `email_api_url`, the secret `EMAIL_API_KEY` as a
//!    bearer token and the job id as `Idempotency-Key`, so that an attempt cut off between
//!    the POST and step 4 (a host killed) repeats the request without a second email;
//!    5xx is `retry`, 4xx `fail`;
//! 4. write the `email_log` row in a transaction.
//!
//! The database is named, never addressed: the deploy binds `main` to a URL held in a host
//! secret (`--database main=secret:APP_DB_URL`), which never enters the sandbox.
use serde_json::{Value, json};
use wasmq_guest::http::Request;
use wasmq_guest::sql::{Database, Param};
use wasmq_guest::{Handler, Job, JobError, Level, config, log};

struct Welcome;

fn setting(key: &str) -> Result<String, JobError> {
    config::get(key).ok_or_else(|| JobError::Fail(format!("no {key} configured")))
}

impl Handler for Welcome {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let input: Value = serde_json::from_slice(&job.payload)
            .map_err(|e| JobError::Fail(format!("invalid json: {e}")))?;
        let user_id = input["userId"]
            .as_i64()
            .ok_or_else(|| JobError::Fail("the payload has no integer userId".into()))?;
        let url = setting("email_api_url")?;
        let key = setting("EMAIL_API_KEY")?;

        // A database that cannot be reached now may be reachable on the next attempt.
        let retry =
            |e: wasmq_guest::sql::Error| JobError::Retry(format!("database: {}", e.describe()));
        let db = Database::open("main").map_err(retry)?;
        let users = db
            .query(
                "SELECT email, name FROM users WHERE id = $1",
                &[Param::from(user_id)],
            )
            .map_err(retry)?;
        let Some(user) = users.iter().next() else {
            return Ok(format!("user {user_id} is gone: nothing sent").into_bytes());
        };
        let email: String = user.get("email").map_err(retry)?;
        let name: String = user.get("name").map_err(retry)?;
        let logged = db
            .query(
                "SELECT 1 FROM email_log WHERE job_id = $1",
                &[Param::from(job.id.as_str())],
            )
            .map_err(retry)?;
        if !logged.is_empty() {
            return Ok(format!("already sent to {email}").into_bytes());
        }

        let response = Request::post(&url)
            .bearer(&key)
            .header("idempotency-key", &job.id)
            .json(&json!({
                "to": email,
                "subject": "Welcome!",
                "text": format!("Hello {name}, welcome aboard."),
            }))?
            .send()
            .map_err(|e| JobError::Retry(format!("email API request failed: {}", e.message())))?
            .check()?; // 5xx: Retry, 4xx: Fail
        let provider_id = response
            .json::<Value>()
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string));
        log(Level::Info, &format!("email to {email} accepted"));

        db.transaction(|db| {
            db.execute(
                "INSERT INTO email_log (job_id, user_id, provider_id) VALUES ($1, $2, $3) \
                 ON CONFLICT (job_id) DO NOTHING",
                &[
                    Param::from(job.id.as_str()),
                    Param::from(user_id),
                    Param::from(provider_id),
                ],
            )
        })
        .map_err(retry)?;
        Ok(format!("sent to {email}").into_bytes())
    }
}

wasmq_guest::export_handler!(Welcome);
