// wasmq's producer SDK for Node: enqueue jobs for wasmq hosts, wait for their results, read and
// manage queues, by the Redis protocol of docs/protocol.md (protocol 3). Types: index.d.ts.
//
//   import { Client } from "wasmq";
//   const client = Client.fromUrl("redis://127.0.0.1:6379");
//   const id = await client.enqueue("emails", "send-email", JSON.stringify({ to: "ada@example.com" }));
//   const result = await client.waitForResult("emails", id, { timeout: 30_000 });

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { Cluster, Redis } from "ioredis";

import { InvalidQueue, JobFailed, JobNotFound, WaitTimeout, scriptError } from "./errors.js";

export * from "./errors.js";

/** The protocol version this package speaks (docs/protocol.md, "Stable contract"). */
export const PROTOCOL = 3;
/** The most jobs one enqueue call takes (enqueue.lua's bound on N). */
export const MAX_BULK = 10000;

const script = (name) => readFileSync(new URL(`./scripts/${name}.lua`, import.meta.url), "utf8");
// A transition of the hosts' function library as a script a producer can EVAL: lib.lua, then
// the body in a function of its own (docs/protocol.md, "Stable contract").
const library = (body) => `${script("lib")}\nreturn (function()\n${script(body)}\nend)()\n`;

export const ENQUEUE_LUA = script("enqueue");
export const COUNTS_LUA = script("counts");

// Each script the client sends: its Lua text and its keys, by their suffix after wasmq:{<q>}:.
const SCRIPTS = {
  enqueue: [
    ENQUEUE_LUA,
    ["job:", "config", "waiting", "delayed", "seq", "events", "wake", "g:", "groups", "dedupe:", "debounce:"],
  ],
  counts: [COUNTS_LUA, ["config", "waiting", "delayed", "active", "retry", "completed", "dead", "g:", "groups"]],
  cancel: [library("cancel"), ["job:", "config", "waiting", "delayed", "retry", "events", "g:", "groups", "steps:", "active", "dead", "cancel"]],
  replay: [library("replay"), ["job:", "config", "dead", "waiting", "seq", "events", "wake", "g:", "groups"]],
  purge: [library("purge"), ["job:", "config", "dead", "events", "steps:"]],
  pause: [library("pause"), ["config", "events"]],
  resume: [library("resume"), ["config", "events", "waiting", "wake", "groups"]],
};

const QUEUE_NAME = /^[A-Za-z0-9\-_.:]{1,128}$/;

function key(queue, suffix) {
  if (typeof queue !== "string" || !QUEUE_NAME.test(queue)) {
    throw new InvalidQueue(`invalid queue name ${JSON.stringify(queue)}: 1-128 of A-Z a-z 0-9 - _ . :`);
  }
  return `wasmq:{${queue}}:${suffix}`;
}

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** A ULID (48 bits of ms, 80 random bits; 26 Crockford base-32 characters), as the Rust client makes. */
export function newId() {
  let n = (BigInt(Date.now()) << 80n) | BigInt(`0x${randomBytes(10).toString("hex")}`);
  let out = "";
  for (let i = 0; i < 26; i++) {
    out = CROCKFORD[Number(n & 31n)] + out;
    n >>= 5n;
  }
  return out;
}

function integer(value, what) {
  if (value === undefined || value === null) return undefined;
  if (!Number.isSafeInteger(value)) throw new TypeError(`${what} must be an integer, got ${value}`);
  return String(value);
}

function runAtMs(value) {
  if (value instanceof Date) return value.getTime();
  return value;
}

function payloadBytes(payload) {
  if (payload === undefined || payload === null) return Buffer.alloc(0);
  if (typeof payload === "string" || Buffer.isBuffer(payload)) return payload;
  if (payload instanceof Uint8Array) return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  throw new TypeError("payload must be a string, a Buffer or a Uint8Array");
}

/** The ARGV of one job: id, number of pairs, pairs. */
function jobArgs(job) {
  const id = job.id ?? newId();
  const pairs = [
    ["handler", job.handler],
    ["payload", payloadBytes(job.payload)],
    ["priority", integer(job.priority, "priority")],
    ["delay_ms", integer(job.delayMs, "delayMs")],
    ["run_at_ms", integer(runAtMs(job.runAt), "runAt")],
    ["max_attempts", integer(job.maxAttempts, "maxAttempts")],
    ["timeout_ms", integer(job.timeoutMs, "timeoutMs")],
    ["backoff", job.backoff],
    ["backoff_ms", integer(job.backoffMs, "backoffMs")],
    ["backoff_cap_ms", integer(job.backoffCapMs, "backoffCapMs")],
    ["backoff_jitter", job.backoffJitter === undefined ? undefined : String(job.backoffJitter)],
    ["group", job.group],
    ["traceparent", job.traceparent],
    ["tracestate", job.tracestate],
    ["expires_in_ms", integer(job.expiresInMs, "expiresInMs")],
    ["expires_at_ms", integer(runAtMs(job.expiresAt), "expiresAt")],
    ["dedupe_key", job.dedupeKey],
    ["dedupe_ttl_ms", integer(job.dedupeTtlMs, "dedupeTtlMs")],
    ["debounce_key", job.debounceKey],
    ["debounce_ms", integer(job.debounceMs, "debounceMs")],
    ["debounce_max_wait_ms", integer(job.debounceMaxWaitMs, "debounceMaxWaitMs")],
  ].filter(([, value]) => value !== undefined && value !== null);
  return [id, String(pairs.length), ...pairs.flat()];
}

const text = (value) => (value === undefined ? undefined : value.toString("utf8"));
const int = (value) => (value === undefined || value.length === 0 ? undefined : Number(value.toString()));

function decodeJob(queue, id, raw) {
  if (!raw || Object.keys(raw).length === 0) return null;
  let history = [];
  try {
    history = raw.history ? JSON.parse(raw.history.toString("utf8")) : [];
  } catch {
    history = [];
  }
  return {
    queue,
    id,
    handler: text(raw.handler) ?? "",
    state: text(raw.state) ?? "",
    payload: raw.payload ?? Buffer.alloc(0),
    priority: int(raw.priority) ?? 0,
    attempt: int(raw.attempt) ?? 0,
    maxAttempts: int(raw.max_attempts) ?? 0,
    createdAtMs: int(raw.created_at) ?? null,
    runAtMs: int(raw.run_at) ?? null,
    finishedAtMs: int(raw.finished_at) ?? null,
    result: raw.result ?? null,
    lastOutcome: text(raw.last_outcome) ?? null,
    lastError: text(raw.last_error) ?? null,
    group: text(raw.group) ?? null,
    traceparent: text(raw.traceparent) ?? null,
    tracestate: text(raw.tracestate) ?? null,
    history,
    fields: raw,
  };
}

// Events after which a waiter reads the job again: it may have finished or gone.
const WAKING = new Set(["completed", "dead", "cancelled", "purged"]);

function mentions(fields, id) {
  const at = (name) => {
    const i = fields.indexOf(name);
    return i >= 0 ? fields[i + 1] : undefined;
  };
  if (!WAKING.has(at("event"))) return false;
  try {
    return JSON.parse(at("jobs") ?? "[]").some((pair) => pair[0] === id);
  } catch {
    return true; // unreadable: look at the job rather than miss it
  }
}

// One XREAD blocks at most this long before the waiter reads the job again: so a wait still
// ends when the events stream is off (`events_maxlen` 0) or was trimmed past the job's event.
const BLOCK_MS = 5000;

/** `{ kind: "single", url }` or `{ kind: "cluster", nodes, username, password, tls }`. */
export function parseUrl(url) {
  const match = /^(rediss?)\+cluster:\/\/(.*)$/.exec(url);
  if (!match) return { kind: "single", url };
  let rest = match[2];
  const at = rest.lastIndexOf("@");
  let username;
  let password;
  if (at >= 0) {
    const creds = new URL(`redis://${rest.slice(0, at)}@x`);
    username = creds.username ? decodeURIComponent(creds.username) : undefined;
    password = creds.password ? decodeURIComponent(creds.password) : undefined;
    rest = rest.slice(at + 1);
  }
  const seeds = rest.split(/[/?]/, 1)[0];
  const nodes = seeds.split(",").map((seed) => {
    const colon = seed.lastIndexOf(":");
    return { host: seed.slice(0, colon).replace(/^\[|\]$/g, ""), port: Number(seed.slice(colon + 1)) };
  });
  return { kind: "cluster", nodes, username, password, tls: match[1] === "rediss" };
}

export class Client {
  /** Wraps an ioredis `Redis` or `Cluster` connection. */
  constructor(redis) {
    this.redis = redis;
    for (const [name, [lua, keys]] of Object.entries(SCRIPTS)) {
      redis.defineCommand(`wasmq_${name}`, { numberOfKeys: keys.length, lua });
    }
  }

  /**
   * `redis://[user:password@]host:port[/db]`, `rediss://...`, or a cluster's
   * `redis+cluster://[user:password@]h1:p1,h2:p2`; `options` go to ioredis.
   */
  static fromUrl(url, options = {}) {
    const parsed = parseUrl(url);
    if (parsed.kind === "single") return new Client(new Redis(parsed.url, options));
    const redisOptions = { username: parsed.username, password: parsed.password, ...(options.redisOptions ?? {}) };
    if (parsed.tls) redisOptions.tls = redisOptions.tls ?? {};
    return new Client(new Cluster(parsed.nodes, { ...options, redisOptions }));
  }

  async close() {
    await this.redis.quit();
  }

  async #call(name, queue, args) {
    const keys = SCRIPTS[name][1].map((suffix) => key(queue, suffix));
    try {
      return await this.redis[`wasmq_${name}`](...keys, ...args);
    } catch (err) {
      throw scriptError(err);
    }
  }

  /** Enqueues one job and returns its id; an id that exists writes nothing (safe to retry). */
  async enqueue(queue, handler, payload = "", options = {}) {
    const [enqueued] = await this.enqueueBulk(queue, [{ ...options, handler, payload }]);
    return enqueued.id;
  }

  /** Enqueues up to 10,000 jobs in one atomic call: all or, on any error, none. */
  async enqueueBulk(queue, jobs) {
    if (jobs.length < 1 || jobs.length > MAX_BULK) {
      throw new RangeError(`enqueueBulk takes 1 to ${MAX_BULK} jobs per call, got ${jobs.length}`);
    }
    const args = [String(jobs.length)];
    for (const job of jobs) {
      for (const arg of jobArgs(job)) args.push(arg);
    }
    const reply = await this.#call("enqueue", queue, args);
    return reply.map(([id, outcome, state]) => ({ id, created: outcome === "created", state, outcome }));
  }

  /** The job's state, payload, result and history, or null when it does not exist. */
  async getJob(queue, id) {
    return decodeJob(queue, id, await this.redis.hgetallBuffer(key(queue, `job:${id}`)));
  }

  /** Jobs per state and the pause flag, read atomically (counts.lua). */
  async counts(queue) {
    const n = (await this.#call("counts", queue, [])).map(Number);
    return { waiting: n[0], delayed: n[1], active: n[2], retry: n[3], completed: n[4], dead: n[5], paused: n[6] === 1 };
  }

  /**
   * Resolves with the result bytes once the job completes; rejects with JobFailed when it is
   * dead-lettered, JobNotFound when it does not exist (or is deleted), WaitTimeout after
   * `timeout` ms. Waits on the queue's events stream (XREAD), not by polling.
   */
  async waitForResult(queue, id, { timeout = 30000 } = {}) {
    const deadline = Date.now() + timeout;
    const events = key(queue, "events");
    // A blocking XREAD holds its connection: a connection of its own, so the client's other
    // calls are not queued behind it.
    const blocking = this.redis.duplicate();
    try {
      // The stream's last id before the job is read: an event after the read is not missed.
      const last = await this.redis.xrevrange(events, "+", "-", "COUNT", 1);
      let cursor = last.length > 0 ? last[0][0] : "0-0";
      for (;;) {
        const job = await this.getJob(queue, id);
        if (job === null) throw new JobNotFound(queue, id);
        if (job.state === "completed") return job.result ?? Buffer.alloc(0);
        if (job.state === "dead") throw new JobFailed(id, job.lastOutcome ?? "", job.lastError ?? "");
        for (;;) {
          const remaining = deadline - Date.now();
          if (remaining <= 0) throw new WaitTimeout(id, job.state);
          const block = Math.max(1, Math.min(remaining, BLOCK_MS));
          const reply = await blocking.xread("COUNT", 1000, "BLOCK", block, "STREAMS", events, cursor);
          const entries = reply ? reply[0][1] : [];
          if (entries.length > 0) cursor = entries[entries.length - 1][0];
          if (entries.length === 0 || entries.some(([, fields]) => mentions(fields, id))) break;
        }
      }
    } finally {
      blocking.disconnect();
    }
  }

  /**
   * Cancels jobs whatever their state but finished: each is dead-lettered with `last_outcome`
   * `cancelled` (history kept, never retried; a replay runs it again), and a running one is
   * stopped on its host. Per id `cancelled`, `not_found`, or the state that prevents it.
   */
  async cancel(queue, ...ids) {
    return this.cancelBy(queue, ids);
  }

  /** `cancel`, recording who cancels (`by`) and why (`reason`) on each job. */
  async cancelBy(queue, ids, { by = "", reason = "" } = {}) {
    if (ids.length === 0) return {};
    return Object.fromEntries(await this.#call("cancel", queue, [by, reason, ...ids]));
  }

  /** A page of the dead-letter queue, oldest death first. */
  async deadLetters(queue, { offset = 0, limit = 100 } = {}) {
    const ids = await this.redis.zrange(key(queue, "dead"), offset, offset + limit - 1);
    if (ids.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const id of ids) pipeline.hgetallBuffer(key(queue, `job:${id}`));
    const replies = await pipeline.exec();
    return ids.map((id, i) => decodeJob(queue, id, replies[i][1])).filter((job) => job !== null);
  }

  /** Dead jobs back to waiting with fresh attempts: `ids`, or the `limit` oldest. */
  async replay(queue, { ids = [], limit = 100 } = {}) {
    return (await this.#call("replay", queue, [String(limit), ...ids]))[0];
  }

  /** Deletes dead jobs for good: `ids`, or the `limit` oldest. */
  async purge(queue, { ids = [], limit = 100 } = {}) {
    return (await this.#call("purge", queue, [String(limit), ...ids]))[0];
  }

  /** Stops hosts leasing the queue's jobs; true if it was running. */
  async pause(queue) {
    return (await this.#call("pause", queue, [])) === 1;
  }

  /** Lets hosts lease again; true if it was paused. */
  async resume(queue) {
    return (await this.#call("resume", queue, [])) === 1;
  }
}
