// `welcome`: the welcome-email job of examples/welcome-email, in JavaScript (the Rust one is
// guest-examples/rust/welcome-email; both behave the same, see examples/welcome-email/README.md).
//
// The payload is `{"userId": N}`. Read the user by id from database `main` (gone: complete,
// nothing sent); if `email_log` already has this job's id, complete (an earlier attempt sent
// it); else POST the email to the config value `email_api_url` with the secret
// `EMAIL_API_KEY` as a bearer token and the job id as `Idempotency-Key` (so a retry after a
// crash between the POST and the log row is not a second email), then write the log row in a
// transaction. 5xx from the API is `retry`, 4xx `fail`.
//
// The database is named, never addressed: the deploy binds `main` to a URL held in a host
// secret (`--database main=secret:APP_DB_URL`), which never enters the sandbox.
import { get } from "wasi:config/store@0.2.0-rc.1";
import { Connection } from "wasmq:job/sql@0.1.3";

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

const fail = (message) => ({ tag: "err", val: { tag: "fail", val: message } });
const retry = (message) => ({ tag: "err", val: { tag: "retry", val: message } });
const ok = (text) => new TextEncoder().encode(text);

function config(key) {
  try {
    return get(key) ?? undefined;
  } catch {
    return undefined;
  }
}

// What a thrown `sql` error says: jco throws the WIT `error` variant as the exception's payload.
function sqlMessage(e) {
  const p = e?.payload;
  if (p === undefined) return String(e?.message ?? e);
  const detail = typeof p.val === "object" && p.val !== null ? `${p.val.sqlstate} ${p.val.message}` : p.val;
  return `${p.tag}: ${detail ?? ""}`;
}

// A JavaScript value as a statement parameter.
function param(v) {
  if (v === null || v === undefined) return { tag: "db-null" };
  if (typeof v === "bigint") return { tag: "int64", val: v };
  if (typeof v === "number") return Number.isInteger(v) ? { tag: "int64", val: BigInt(v) } : { tag: "floating64", val: v };
  if (typeof v === "boolean") return { tag: "boolean", val: v };
  return { tag: "str", val: String(v) };
}

// Rows as plain objects keyed by column name; integers as Numbers when they fit.
function rows(set) {
  return set.rows.map((row) =>
    Object.fromEntries(
      row.map((value, i) => {
        let v = value.val;
        if (value.tag === "db-null") v = null;
        else if (typeof v === "bigint" && v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER)) v = Number(v);
        return [set.columns[i].name, v];
      }),
    ),
  );
}

export async function handle(job) {
  let userId;
  try {
    userId = JSON.parse(UTF8.decode(job.payload)).userId;
  } catch (e) {
    return fail(`invalid json: ${e.message}`);
  }
  if (!Number.isInteger(userId)) return fail("the payload has no integer userId");
  const url = config("email_api_url");
  if (url === undefined) return fail("no email_api_url configured");
  const key = config("EMAIL_API_KEY");
  if (key === undefined) return fail("no EMAIL_API_KEY secret");

  let db;
  try {
    db = Connection.open("main");
    const query = (sql, ...params) => rows(db.query(sql, params.map(param)));
    const [user] = query("SELECT id, email, name FROM users WHERE id = $1", userId);
    if (user === undefined) return ok(`user ${userId} is gone: nothing sent`);
    if (query("SELECT 1 AS sent FROM email_log WHERE job_id = $1", job.id).length > 0) {
      return ok(`already sent to ${user.email}`);
    }

    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          authorization: `Bearer ${key}`,
          "idempotency-key": job.id,
        },
        body: JSON.stringify({
          to: user.email,
          subject: "Welcome!",
          text: `Hello ${user.name}, welcome aboard.`,
        }),
      });
    } catch (e) {
      return retry(`email API request failed: ${e.message ?? e}`);
    }
    const body = UTF8.decode(new Uint8Array(await response.arrayBuffer()));
    if (response.status >= 500) return retry(`email API: HTTP ${response.status}`);
    if (response.status < 200 || response.status > 299) return fail(`email API: HTTP ${response.status}: ${body.slice(0, 200)}`);
    let providerId = null;
    try {
      providerId = JSON.parse(body).id ?? null;
    } catch {
      // An answer without a JSON body still means sent.
    }

    db.begin();
    db.execute(
      "INSERT INTO email_log (job_id, user_id, provider_id) VALUES ($1, $2, $3) ON CONFLICT (job_id) DO NOTHING",
      [param(job.id), param(userId), param(providerId)],
    );
    db.commit();
    return ok(`sent to ${user.email}`);
  } catch (e) {
    // The database could not be reached or refused a statement: try again later.
    return retry(`database: ${sqlMessage(e)}`);
  }
}
