// Bulk enqueue through the TypeScript SDK: `node bulk.mjs URL QUEUE N CHUNK PAYLOAD_BYTES`.
// Prints one JSON line: {"sdk": "typescript", "jobs": N, "seconds": ...} (bench/sdk-bulk.sh).
import { Client } from "../../sdk/typescript/src/index.js";

const [url, queue, ...numbers] = process.argv.slice(2);
const [n, chunk, size] = numbers.map(Number);
const payload = "x".repeat(size);
const client = Client.fromUrl(url);
await client.counts(queue); // connect and load the scripts outside the clock
const t0 = performance.now();
for (let done = 0; done < n; done += chunk) {
  const k = Math.min(chunk, n - done);
  const jobs = new Array(k);
  for (let i = 0; i < k; i++) jobs[i] = { handler: "noop", payload };
  await client.enqueueBulk(queue, jobs);
}
const seconds = (performance.now() - t0) / 1000;
const { waiting } = await client.counts(queue);
await client.close();
if (waiting !== n) {
  process.stderr.write(`bulk.mjs: ${waiting} jobs waiting, expected ${n}\n`);
  process.exit(1);
}
console.log(JSON.stringify({ sdk: "typescript", jobs: n, seconds }));
