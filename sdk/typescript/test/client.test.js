// Every operation of the TypeScript SDK against a real redis-server and a real `wasmq run`
// host, its errors, and one test per point of issue #22 (docs/protocol.md).

import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  COUNTS_LUA,
  Client,
  ENQUEUE_LUA,
  InvalidJob,
  InvalidQueue,
  JobFailed,
  JobNotFound,
  PayloadTooLarge,
  QueueFull,
  WaitTimeout,
  WrongType,
} from "wasmq";

import { REPO, eventually, rustGuest, startHost, startRedis } from "./support.js";

let server;
let host;
let client;

before(async () => {
  server = await startRedis();
  host = startHost(server.url, ["ts", "ts-pause", "ts-dlq"], ["echo", "fail", "panic", "sleep"].map(rustGuest));
  client = Client.fromUrl(server.url);
});

after(async () => {
  await client?.close();
  await host?.stop();
  await server?.stop();
});

const keyspace = async (queue) => {
  const out = {};
  for (const key of await client.redis.keys(`wasmq:{${queue}}:*`)) {
    out[key] = (await client.redis.dumpBuffer(key)).toString("hex");
  }
  return out;
};

const ENQUEUE_KEYS = ["job:", "config", "waiting", "delayed", "seq", "events", "wake", "g:", "groups"];
const keysOf = (queue, suffixes) => suffixes.map((s) => `wasmq:{${queue}}:${s}`);

const dead = (queue, id) => async () => {
  const job = await client.getJob(queue, id);
  return job?.state === "dead" ? job : null;
};

test("the package ships the host's scripts byte for byte", () => {
  const shipped = fileURLToPath(new URL("../src/scripts/", import.meta.url));
  const names = readdirSync(shipped).filter((n) => n.endsWith(".lua")).sort();
  assert.deepEqual(names, ["cancel", "counts", "enqueue", "lib", "pause", "purge", "replay", "resume"].map((n) => `${n}.lua`));
  for (const name of names) {
    assert.ok(readFileSync(join(shipped, name)).equals(readFileSync(join(REPO, "host/src/queue/scripts", name))), name);
  }
});

test("a job runs on a host and waitForResult resolves with its result", async () => {
  const payload = Buffer.from([0, 98, 105, 110, 255]);
  const id = await client.enqueue("ts", "echo", payload);
  assert.equal(id.length, 26);
  assert.ok((await client.waitForResult("ts", id, { timeout: 60000 })).equals(payload));
  const job = await client.getJob("ts", id);
  assert.equal(job.state, "completed");
  assert.deepEqual(job.history.map((a) => a.outcome), ["ok"]);
});

test("waitForResult rejects with JobFailed carrying the outcome and error", async () => {
  const id = await client.enqueue("ts", "fail", "", { maxAttempts: 3 });
  await assert.rejects(client.waitForResult("ts", id, { timeout: 60000 }), (err) => {
    assert.ok(err instanceof JobFailed);
    assert.equal(err.outcome, "fail");
    assert.equal(err.error, "permanent failure");
    return true;
  });
});

test("waitForResult wakes on the completed event, not a later look", async () => {
  const id = await client.enqueue("ts", "sleep", "1500");
  const started = Date.now();
  await client.waitForResult("ts", id, { timeout: 60000 });
  assert.ok(Date.now() - started < 4500);
});

test("waitForResult times out, rejects JobNotFound for an unknown job and JobFailed for a cancelled one", async () => {
  const id = await client.enqueue("t-wait", "echo", "x", { delayMs: 60000 });
  await assert.rejects(client.waitForResult("t-wait", id, { timeout: 300 }), (err) => err instanceof WaitTimeout && err.state === "delayed");
  await assert.rejects(client.waitForResult("t-wait", "never", { timeout: 300 }), JobNotFound);
  const started = Date.now();
  setTimeout(() => client.cancelBy("t-wait", [id], { by: "ts", reason: "test" }), 300);
  await assert.rejects(client.waitForResult("t-wait", id, { timeout: 10000 }),
    (err) => err instanceof JobFailed && err.outcome === "cancelled" && err.error === "cancelled by ts: test");
  assert.ok(Date.now() - started < 4000, "woken by the cancelled event");
});

test("every enqueue option is stored as given", async () => {
  const q = "t-options";
  const runAt = new Date(Date.now() + 3600_000);
  const id = await client.enqueue(q, "echo", "text", {
    id: "job-1", priority: 7, runAt, maxAttempts: 5, timeoutMs: 2500, backoff: "fixed", backoffMs: 300,
    backoffJitter: 0.5, group: "tenant-9",
  });
  assert.equal(id, "job-1");
  const job = await client.getJob(q, id);
  assert.deepEqual([job.state, job.payload.toString(), job.priority, job.maxAttempts, job.group, job.runAtMs],
    ["delayed", "text", 7, 5, "tenant-9", runAt.getTime()]);
  const f = (name) => job.fields[name].toString();
  assert.deepEqual([f("timeout_ms"), f("backoff"), f("backoff_ms"), f("backoff_jitter"), f("own_policy")],
    ["2500", "fixed", "300", "0.5", "attempts,backoff"]);
  const delayed = await client.getJob(q, await client.enqueue(q, "echo", "", { delayMs: 10000 }));
  assert.equal(delayed.runAtMs, delayed.createdAtMs + 10000);
  const capped = await client.getJob(q, await client.enqueue(q, "echo", "", { backoffMs: 50, backoffCapMs: 400 }));
  assert.equal(capped.fields.backoff_cap_ms.toString(), "400");
});

test("a dedupe key creates one job per TTL and names the first", async () => {
  const q = "t-dedupe";
  const opts = { dedupeKey: "order-7", dedupeTtlMs: 300 };
  const first = await client.enqueue(q, "echo", "one", opts);
  const [again] = await client.enqueueBulk(q, [{ handler: "echo", payload: "two", ...opts }]);
  assert.deepEqual([again.id, again.outcome, again.created, again.state], [first, "deduplicated", false, "waiting"]);
  assert.equal((await client.getJob(q, first)).payload.toString(), "one");
  await new Promise((resolve) => setTimeout(resolve, 400));
  const [later] = await client.enqueueBulk(q, [{ handler: "echo", payload: "three", ...opts }]);
  assert.equal(later.outcome, "created");
  assert.notEqual(later.id, first);
  assert.equal((await client.counts(q)).waiting, 2);
});

test("a debounce key keeps one pending job with the last payload", async () => {
  const q = "t-debounce";
  const first = await client.enqueue(q, "echo", "1", { debounceKey: "u3", debounceMs: 5000, debounceMaxWaitMs: 8000 });
  const created = await client.getJob(q, first);
  const [again] = await client.enqueueBulk(q, [{ handler: "echo", payload: "2", debounceKey: "u3", debounceMs: 5000 }]);
  assert.deepEqual([again.id, again.outcome, again.state], [first, "debounced", "delayed"]);
  const job = await client.getJob(q, first);
  assert.deepEqual([job.state, job.payload.toString()], ["delayed", "2"]);
  assert.ok(job.runAtMs >= created.runAtMs && job.runAtMs <= created.createdAtMs + 8000);
  assert.equal(job.fields.debounce_until.toString(), String(created.createdAtMs + 8000));
  assert.equal((await client.counts(q)).delayed, 1);
  await assert.rejects(client.enqueue(q, "echo", "", { debounceKey: "k", debounceMs: 5, delayMs: 1 }),
    (e) => e instanceof InvalidJob && /takes no delay_ms/.test(e.message));
});

test("an expired job is dead-lettered and never runs", async () => {
  const id = await client.enqueue("ts", "echo", "late", { expiresAt: new Date(Date.now() - 1000) });
  await assert.rejects(client.waitForResult("ts", id, { timeout: 30000 }), (err) => {
    assert.ok(err instanceof JobFailed);
    assert.equal(err.outcome, "expired");
    return true;
  });
  const job = await client.getJob("ts", id);
  assert.deepEqual([job.state, job.attempt, job.result, job.history.map((h) => h.outcome)], ["dead", 0, null, ["expired"]]);
  const onTime = await client.enqueue("ts", "echo", "on time", { expiresInMs: 60000 });
  assert.equal((await client.waitForResult("ts", onTime, { timeout: 30000 })).toString(), "on time");
});

test("a trace context is stored, and a malformed one refused", async () => {
  const q = "t-trace";
  const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  const job = await client.getJob(q, await client.enqueue(q, "echo", "", { traceparent, tracestate: "vendor=abc" }));
  assert.deepEqual([job.traceparent, job.tracestate], [traceparent, "vendor=abc"]);
  for (const bad of ["00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", "00-abc"]) {
    await assert.rejects(client.enqueue(q, "echo", "", { id: "bad-trace", traceparent: bad }),
      (e) => e instanceof InvalidJob && /traceparent/.test(e.message));
  }
  await assert.rejects(client.enqueue(q, "echo", "", { id: "bad-trace", tracestate: "a=1" }),
    (e) => e instanceof InvalidJob && /tracestate needs a traceparent/.test(e.message));
  assert.equal(await client.getJob(q, "bad-trace"), null);
});

test("enqueueBulk is all or nothing, and an existing id writes nothing", async () => {
  const q = "t-bulk";
  const jobs = Array.from({ length: 100 }, (_, n) => ({ handler: "echo", payload: `${n}` }));
  await assert.rejects(client.enqueueBulk(q, [...jobs, { handler: "echo", priority: 5000 }]), InvalidJob);
  assert.equal((await client.counts(q)).waiting, 0);
  assert.equal((await client.enqueueBulk(q, jobs)).filter((e) => e.created).length, 100);
  const [first] = await client.enqueueBulk(q, [{ handler: "echo", id: "same", payload: "one" }]);
  const [again] = await client.enqueueBulk(q, [{ handler: "echo", id: "same", payload: "two" }]);
  assert.deepEqual([first.created, again.created, again.state], [true, false, "waiting"]);
  assert.equal((await client.getJob(q, "same")).payload.toString(), "one");
  assert.equal((await client.counts(q)).waiting, 101);
});

test("errors are typed", async () => {
  const q = "t-errors";
  await assert.rejects(client.enqueue(q, "echo", "", { id: "bad id" }), (e) => e instanceof InvalidJob && e.jobId === "bad id");
  await assert.rejects(client.enqueue(q, ""), InvalidJob);
  await assert.rejects(client.enqueue("no{braces}", "echo"), InvalidQueue);
  await client.redis.hset(`wasmq:{${q}}:config`, "max_payload_bytes", 10);
  await assert.rejects(client.enqueue(q, "echo", "x".repeat(11), { id: "big" }),
    (e) => e instanceof PayloadTooLarge && e.jobId === "big" && e.size === 11 && e.limit === 10);
  assert.equal((await client.counts(q)).waiting, 0);
  await client.redis.hset(`wasmq:{${q}}:config`, "max_waiting", 1);
  await client.enqueue(q, "echo", "", { id: "first" });
  await assert.rejects(client.enqueue(q, "echo", "", { id: "second" }),
    (e) => e instanceof QueueFull && e.queue === q && e.backlog === 1 && e.new === 1 && e.limit === 1);
  assert.equal((await client.counts(q)).waiting, 1);
});

test("counts, cancel, pause and resume", async () => {
  const q = "t-manage";
  const a = await client.enqueue(q, "echo");
  const b = await client.enqueue(q, "echo", "", { group: "g" });
  const c = await client.enqueue(q, "echo", "", { delayMs: 60000 });
  assert.deepEqual(await client.counts(q), { waiting: 2, delayed: 1, active: 0, retry: 0, completed: 0, dead: 0, paused: false });
  assert.equal(await client.pause(q), true);
  assert.equal(await client.pause(q), false);
  assert.equal((await client.counts(q)).paused, true);
  assert.equal(await client.resume(q), true);
  assert.deepEqual(await client.cancel(q, a, b, c, "nope"), { [a]: "cancelled", [b]: "cancelled", [c]: "cancelled", nope: "not_found" });
  assert.deepEqual(await client.counts(q), { waiting: 0, delayed: 0, active: 0, retry: 0, completed: 0, dead: 3, paused: false });
  const job = await client.getJob(q, a);
  assert.deepEqual([job.state, job.lastOutcome, job.history.map((h) => h.outcome)], ["dead", "cancelled", ["cancelled"]]);
  assert.deepEqual(await client.cancel(q, a), { [a]: "dead" });
});

test("cancelBy stops a running job on its host and records who and why", async () => {
  const id = await client.enqueue("ts", "sleep", "60000");
  await eventually("the job to start", async () => ((await client.getJob("ts", id)).state === "active" ? true : null), 60000);
  assert.deepEqual(await client.cancelBy("ts", [id], { by: "ts", reason: "stop" }), { [id]: "cancelled" });
  await assert.rejects(client.waitForResult("ts", id, { timeout: 5000 }), (err) => err instanceof JobFailed && err.outcome === "cancelled");
  const job = await client.getJob("ts", id);
  assert.equal(job.history.length, 1);
  assert.notEqual(job.history[0].host, "");
});

test("a paused queue runs nothing until resumed", async () => {
  assert.equal(await client.pause("ts-pause"), true);
  const id = await client.enqueue("ts-pause", "echo", "later");
  await assert.rejects(client.waitForResult("ts-pause", id, { timeout: 1500 }), WaitTimeout);
  assert.equal(await client.resume("ts-pause"), true);
  assert.equal((await client.waitForResult("ts-pause", id, { timeout: 60000 })).toString(), "later");
});

test("dead letters are listed, replayed and purged", async () => {
  const ids = [];
  for (let n = 0; n < 3; n++) ids.push(await client.enqueue("ts-dlq", "fail", `${n}`));
  await eventually("three dead jobs", async () => (await client.counts("ts-dlq")).dead === 3, 60000);
  const dead_ = await client.deadLetters("ts-dlq");
  assert.deepEqual(dead_.map((j) => j.id).sort(), [...ids].sort());
  assert.deepEqual([...new Set(dead_.map((j) => j.lastOutcome))], ["fail"]);
  assert.deepEqual(await client.replay("ts-dlq", { ids: [ids[0]] }), [ids[0]]);
  const again = await eventually("the replay to die again", async () => {
    const job = await client.getJob("ts-dlq", ids[0]);
    return job.state === "dead" && job.fields.replays?.toString() === "1" ? job : null;
  }, 60000);
  assert.equal(again.history.length, 2);
  assert.deepEqual((await client.purge("ts-dlq", { limit: 10 })).sort(), [...ids].sort());
  assert.deepEqual(await client.deadLetters("ts-dlq"), []);
});

// ----- one test per point of issue #22 -----------------------------------------------------------

test("counts is one atomic script with a documented name (counts.lua)", async () => {
  const q = "t-counts";
  await client.enqueue(q, "echo");
  await client.enqueue(q, "echo", "", { group: "g" });
  const keys = keysOf(q, ["config", "waiting", "delayed", "active", "retry", "completed", "dead", "g:", "groups"]);
  const reply = await client.redis.eval(COUNTS_LUA, keys.length, ...keys);
  assert.deepEqual(reply.slice(0, 7), [2, 0, 0, 0, 0, 0, 0]);
});

test("a run-at in the past is stored as now", async () => {
  for (const runAt of [0, new Date(86400_000)]) {
    const job = await client.getJob("t-past", await client.enqueue("t-past", "echo", "", { runAt }));
    assert.equal(job.state, "waiting");
    assert.equal(job.runAtMs, job.createdAtMs);
  }
});

test("fail skips retries; timeout, trap and unknown_handler use every attempt", async () => {
  const noWait = { backoff: "fixed", backoffMs: 0, maxAttempts: 2 };
  const jobs = {
    fail: await client.enqueue("ts", "fail", "", noWait),
    trap: await client.enqueue("ts", "panic", "", noWait),
    timeout: await client.enqueue("ts", "sleep", "5000", { ...noWait, timeoutMs: 200 }),
    unknown_handler: await client.enqueue("ts", "no-such-handler", "", noWait),
  };
  for (const [outcome, id] of Object.entries(jobs)) {
    const job = await eventually(`${outcome} to be dead`, dead("ts", id), 60000);
    assert.equal(job.lastOutcome, outcome);
    assert.deepEqual(job.history.map((a) => a.outcome), Array(outcome === "fail" ? 1 : 2).fill(outcome));
  }
});

test("an exponential base over the default cap needs no cap; a fixed backoff has none", async () => {
  const job = await client.getJob("t-cap", await client.enqueue("t-cap", "echo", "", { backoffMs: 7_200_000 }));
  assert.equal(job.fields.backoff_cap_ms.toString(), "7200000");
  await assert.rejects(client.enqueue("t-cap", "echo", "", { backoffMs: 7_200_000, backoffCapMs: 3_600_000 }),
    /backoff_cap_ms must not be below backoff_ms/);
  const id = await client.enqueue("ts", "panic", "", { backoff: "fixed", backoffMs: 7_200_000, backoffJitter: 0, maxAttempts: 2 });
  const retrying = await eventually("the first attempt to fail", async () => {
    const j = await client.getJob("ts", id);
    return j.state === "retry" ? j : null;
  }, 60000);
  assert.equal(retrying.runAtMs, retrying.history[0].finished_at + 7_200_000);
  assert.deepEqual(await client.cancel("ts", id), { [id]: "cancelled" });
});

test("the bounds on N, pairs and repeated fields, and the keys, are checked", async () => {
  const q = "t-bounds";
  const keys = keysOf(q, ENQUEUE_KEYS);
  const cases = [
    [keys, ["0"], /number of jobs, 1 to 10000/],
    [keys, ["1", "j", "65", "handler", "h"], /number of field\/value pairs must be 0 to 64/],
    [keys, ["1", "j", "2", "handler", "h", "handler", "h"], /field handler given twice/],
    [[keys[0], ...keys.slice(2)], ["1", "j", "1", "handler", "h"], /give the 11 keys/],
    [keys.map((k, i) => (i === 4 ? k.replace(q, "elsewhere") : k)), ["1", "j", "1", "handler", "h"], /KEYS\[5\] must be/],
  ];
  for (const [k, args, reason] of cases) {
    await assert.rejects(client.redis.eval(ENQUEUE_LUA, k.length, ...k, ...args), reason);
  }
  assert.deepEqual(await keyspace(q), {});
});

test("a damaged key writes nothing, and a retry with the same ids enqueues once", async () => {
  const q = "t-damaged";
  await client.redis.set(`wasmq:{${q}}:delayed`, "damaged");
  const jobs = [{ handler: "echo", id: "a" }, { handler: "echo", id: "b", delayMs: 1000 }];
  const before_ = await keyspace(q);
  await assert.rejects(client.enqueueBulk(q, jobs), (e) => e instanceof WrongType && e.key === `wasmq:{${q}}:delayed` && e.found === "string");
  assert.deepEqual(await keyspace(q), before_);
  await client.redis.del(`wasmq:{${q}}:delayed`);
  await client.enqueueBulk(q, jobs);
  await client.enqueueBulk(q, jobs);
  const counts = await client.counts(q);
  assert.deepEqual([counts.waiting, counts.delayed], [1, 1]);
});
