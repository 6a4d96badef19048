// BullMQ's addBulk, for bench/sdk-bulk.sh: `node bulk.js PORT QUEUE N CHUNK PAYLOAD_BYTES`.
// Prints one JSON line: {"sdk": "bullmq", "jobs": N, "seconds": ...}.
const { Queue } = require("bullmq");

async function main() {
  const [port, name, ...numbers] = process.argv.slice(2);
  const [n, chunk, size] = numbers.map(Number);
  const queue = new Queue(name, { connection: { host: "127.0.0.1", port: Number(port) } });
  await queue.waitUntilReady();
  await queue.getWaitingCount(); // connect outside the clock
  const data = { p: "x".repeat(Math.max(0, size - 8)) }; // {"p":""} is 8 bytes of JSON
  const opts = { removeOnComplete: true, removeOnFail: false };
  const t0 = performance.now();
  for (let done = 0; done < n; done += chunk) {
    const k = Math.min(chunk, n - done);
    const jobs = new Array(k);
    for (let i = 0; i < k; i++) jobs[i] = { name: "noop", data, opts };
    await queue.addBulk(jobs);
  }
  const seconds = (performance.now() - t0) / 1000;
  const waiting = await queue.getWaitingCount();
  await queue.close();
  if (waiting !== n) throw new Error(`${waiting} jobs waiting, expected ${n}`);
  console.log(JSON.stringify({ sdk: "bullmq", jobs: n, seconds }));
}

main().catch((err) => {
  process.stderr.write(`bulk.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
