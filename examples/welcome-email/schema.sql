-- The welcome-email job's tables (examples/welcome-email/README.md).
CREATE TABLE IF NOT EXISTS users (
    id    bigint PRIMARY KEY,
    email text   NOT NULL,
    name  text   NOT NULL
);

-- One row per email sent, keyed by the job that sent it: the job's idempotency record. A job
-- that finds its id here has already sent its email and completes without sending again.
CREATE TABLE IF NOT EXISTS email_log (
    job_id      text        PRIMARY KEY,
    user_id     bigint      NOT NULL,
    provider_id text,
    sent_at     timestamptz NOT NULL DEFAULT now()
);
