// Python enqueues for a JavaScript handler, a real host runs it, this SDK waits for and reads
// the result. Needs WASMQ_PYTHON (a Python with sdk/python installed), WASMQ_BIN and
// WASMQ_JS_GUESTS (guest-examples/javascript/out).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, before, test } from "node:test";

import { Client } from "wasmq";

import { jsGuest, need, startHost, startRedis } from "./support.js";

let server;
let host;

before(async () => {
  server = await startRedis();
  host = startHost(server.url, ["cross"], [jsGuest("echo", "js-echo")]);
});

after(async () => {
  await host?.stop();
  await server?.stop();
});

test("Python enqueues, a JavaScript handler runs, TypeScript reads the result", async () => {
  const python = `
import sys
from wasmq import Client
client = Client.from_url(sys.argv[1])
print(client.enqueue("cross", "js-echo", "héllo from Python".encode(), max_attempts=1))
`;
  const id = execFileSync(need("WASMQ_PYTHON"), ["-c", python, server.url], { encoding: "utf8" }).trim();
  assert.equal(id.length, 26);
  const client = Client.fromUrl(server.url);
  try {
    const result = await client.waitForResult("cross", id, { timeout: 120000 });
    assert.equal(result.toString("utf8"), "héllo from Python");
    const job = await client.getJob("cross", id);
    assert.equal(job.handler, "js-echo");
    assert.deepEqual(job.history.map((a) => a.outcome), ["ok"]);
  } finally {
    await client.close();
  }
});
