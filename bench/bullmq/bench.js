// The BullMQ side of wasmq's side-by-side benchmark. Run by host/benches/vs_bullmq.rs, not by
// hand: `node bench.js <mode> '<json params>'`. It talks to the driver in lines: it prints one
// JSON object per line on stdout ({"phase": ...}) and, where the driver must act between two
// phases (reset Redis stats, read RSS), waits for a line on stdin ("go", "exit").
//
// Modes:
//   throughput  enqueue `depth` jobs with addBulk (chunks of 1000), wait for "go", start one
//               Worker (no-op processor, concurrency `c`) and time worker.run() to the `n`-th
//               `completed` event (BENCHMARKS.md's method); print "done", wait for "exit".
//   worker      one idle Worker (concurrency `c`) whose processor records when it starts;
//               prints "ready", then, after `n` measured jobs, "latencies"; waits for "exit".
//   producer    adds `warmup` jobs, then `n` jobs one at a time, open loop at `rate`/s (a call
//               is not awaited before the next is due); each job carries the clock reading taken
//               just before its add call.
//               `work` picks the jobs (default `noop`): `http` (data `{url}` from `http_url`; the processor
//               GETs it with Node's fetch and returns `{status, body}`), `json` (data: the JSON
//               document in the file `json_file`, `{"numbers":[...]}`; the processor returns
//               the `transform` handlers' `{"count","sum","max"}` text). "done" counts failures.
//   memory      enqueue `n` jobs, start a Worker with concurrency `c` whose processor sleeps
//               `sleep_ms`; print "inflight" when `n` processors have started; wait for "exit".
//   race        one Worker (concurrency 1, no-op); `warmup` jobs run first; "ready", wait for
//               "go", then addBulk `n` jobs and time from just before that call to the `n`-th
//               `completed` event; print "done", wait for "exit".
//
// Clock: performance.timeOrigin + performance.now(), milliseconds since the Unix epoch with
// microsecond resolution (the host's realtime clock), the same clock the wasmq side reads.
"use strict";

const fs = require("fs");
const readline = require("readline");
const { Queue, Worker } = require("bullmq");

const mode = process.argv[2];
const params = JSON.parse(process.argv[3] || "{}");
const url = new URL(params.url);
const connection = {
  host: url.hostname,
  port: Number(url.port),
  maxRetriesPerRequest: null,
};
const nowMs = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// One reader of stdin for the whole process; `line()` resolves with the next line.
const lines = [];
const waiters = [];
readline.createInterface({ input: process.stdin }).on("line", (l) => {
  const w = waiters.shift();
  if (w) w(l.trim());
  else lines.push(l.trim());
});
const line = () =>
  lines.length ? Promise.resolve(lines.shift()) : new Promise((r) => waiters.push(r));

// A 100-byte job: JSON.stringify(data) is exactly `payload_bytes` long.
function data(extra = {}) {
  const base = JSON.stringify({ ...extra, p: "" });
  return { ...extra, p: "x".repeat(Math.max(0, params.payload_bytes - base.length)) };
}

const jobOpts = { removeOnComplete: true, removeOnFail: false };

// Each job's data for the `work` param.
function workData() {
  switch (params.work || "noop") {
    case "noop":
      return data;
    case "http":
      return () => ({ url: params.http_url });
    case "json": {
      const doc = JSON.parse(fs.readFileSync(params.json_file, "utf8"));
      return () => doc;
    }
    default:
      throw new Error(`unknown work ${params.work}`);
  }
}

// The processor for the `work` param: the same work as wasmq's handler for it.
function processor() {
  switch (params.work || "noop") {
    case "noop":
      return async () => {};
    case "http":
      return async (job) => {
        const response = await fetch(job.data.url);
        const body = await response.text();
        if (!response.ok) throw new Error(`status ${response.status}`);
        return { status: response.status, body };
      };
    case "json":
      // As guest-examples' `transform`: count, sum and max of safe integers.
      return async (job) => {
        const numbers = job.data.numbers;
        if (!Array.isArray(numbers)) throw new Error("invalid input");
        let sum = 0;
        let max = null;
        for (const n of numbers) {
          if (!Number.isSafeInteger(n)) throw new Error("invalid input");
          sum += n;
          if (!Number.isSafeInteger(sum)) throw new Error("sum out of range");
          max = max === null ? n : Math.max(max, n);
        }
        return `{"count":${numbers.length},"sum":${sum},"max":${max}}`;
      };
    default:
      throw new Error(`unknown work ${params.work}`);
  }
}

async function addBulk(queue, total, makeData = data) {
  const t0 = nowMs();
  for (let done = 0; done < total; done += 1000) {
    const k = Math.min(1000, total - done);
    const jobs = new Array(k);
    for (let i = 0; i < k; i++) jobs[i] = { name: "noop", data: makeData(), opts: jobOpts };
    await queue.addBulk(jobs);
  }
  return (nowMs() - t0) / 1000;
}

function cpuSeconds(since) {
  const u = process.cpuUsage(since);
  return { user: u.user / 1e6, system: u.system / 1e6 };
}

async function throughput() {
  const queue = new Queue(params.queue, { connection });
  await queue.waitUntilReady();
  const depth = params.depth || params.n;
  const enqueueSeconds = await addBulk(queue, depth, workData());
  say({ phase: "enqueued", jobs: depth, seconds: enqueueSeconds });
  if ((await line()) !== "go") throw new Error("expected go");

  let completed = 0;
  let failed = 0;
  let finish;
  const finished = new Promise((r) => (finish = r));
  const worker = new Worker(params.queue, processor(), {
    connection,
    concurrency: params.c,
    autorun: false,
  });
  // A failed job counts as finished too (so a broken run ends), and is reported.
  const finishOne = () => {
    if (completed + failed === params.n) finish(nowMs());
  };
  worker.on("completed", () => {
    completed += 1;
    finishOne();
  });
  worker.on("failed", (_job, err) => {
    failed += 1;
    process.stderr.write(`job failed: ${err}\n`);
    finishOne();
  });
  worker.on("error", (err) => process.stderr.write(`worker error: ${err}\n`));
  const cpu0 = process.cpuUsage();
  const t0 = nowMs();
  worker.run().catch((err) => process.stderr.write(`run: ${err}\n`));
  const t1 = await finished;
  say({ phase: "done", seconds: (t1 - t0) / 1000, completed, failed, cpu: cpuSeconds(cpu0) });
  await line(); // "exit"
  await worker.close(true);
  await queue.close();
}

async function latencyWorker() {
  const lat = [];
  let finish;
  const finished = new Promise((r) => (finish = r));
  const worker = new Worker(
    params.queue,
    async (job) => {
      const start = nowMs();
      if (job.data.w) return;
      lat.push(start - job.data.t);
      if (lat.length === params.n) finish();
    },
    { connection, concurrency: params.c, autorun: false },
  );
  worker.on("error", (err) => process.stderr.write(`worker error: ${err}\n`));
  worker.run().catch((err) => process.stderr.write(`run: ${err}\n`));
  await worker.waitUntilReady();
  say({ phase: "ready" });
  await finished;
  say({ phase: "latencies", ms: lat });
  await line(); // "exit"
  await worker.close(true);
}

async function producer() {
  const queue = new Queue(params.queue, { connection });
  await queue.waitUntilReady();
  for (let i = 0; i < params.warmup; i++) await queue.add("w", data({ w: 1 }), jobOpts);
  await sleep(params.settle_ms);
  const interval = 1000 / params.rate;
  const pending = [];
  const t0 = nowMs();
  for (let i = 0; i < params.n; i++) {
    const due = t0 + i * interval;
    const wait = due - nowMs();
    if (wait > 0) await sleep(wait);
    const t = nowMs();
    pending.push(queue.add("j", data({ t }), jobOpts));
  }
  await Promise.all(pending);
  say({ phase: "produced", seconds: (nowMs() - t0) / 1000 });
  await queue.close();
}

async function memory() {
  const queue = new Queue(params.queue, { connection });
  await queue.waitUntilReady();
  await addBulk(queue, params.n);
  let started = 0;
  let finished = 0;
  const worker = new Worker(
    params.queue,
    async () => {
      started += 1;
      if (started === params.n) {
        setTimeout(() => say({ phase: "inflight", started, in_flight: started - finished }), 0);
      }
      await sleep(params.sleep_ms);
      finished += 1;
    },
    { connection, concurrency: params.c, autorun: false },
  );
  worker.on("error", (err) => process.stderr.write(`worker error: ${err}\n`));
  worker.run().catch((err) => process.stderr.write(`run: ${err}\n`));
  await line(); // "exit"
  await worker.close(true);
  await queue.close();
}

async function race() {
  const queue = new Queue(params.queue, { connection });
  await queue.waitUntilReady();
  let completed = 0;
  let target = params.warmup;
  let finish;
  let finished = new Promise((r) => (finish = r));
  const worker = new Worker(params.queue, async () => {}, {
    connection,
    concurrency: 1,
    autorun: false,
  });
  worker.on("completed", () => {
    completed += 1;
    if (completed === target) finish(nowMs());
  });
  worker.on("failed", (_job, err) => process.stderr.write(`job failed: ${err}\n`));
  worker.on("error", (err) => process.stderr.write(`worker error: ${err}\n`));
  worker.run().catch((err) => process.stderr.write(`run: ${err}\n`));
  await worker.waitUntilReady();
  await addBulk(queue, params.warmup);
  await finished;
  await sleep(200);
  say({ phase: "ready" });
  if ((await line()) !== "go") throw new Error("expected go");
  target = params.warmup + params.n;
  finished = new Promise((r) => (finish = r));
  const t0 = nowMs();
  const enqueueSeconds = await addBulk(queue, params.n);
  const t1 = await finished;
  say({ phase: "done", seconds: (t1 - t0) / 1000, enqueue_s: enqueueSeconds, completed });
  await line(); // "exit"
  await worker.close(true);
  await queue.close();
}

const modes = { throughput, worker: latencyWorker, producer, memory, race };
modes[mode]()
  .then(() => process.exit(0))
  .catch((err) => {
    process.stderr.write(`bench.js ${mode}: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  });
