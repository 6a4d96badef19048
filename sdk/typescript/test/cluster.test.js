// The SDK on a Redis Cluster URL: queues in different slots, and a host on the same cluster.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client, InvalidJob } from "wasmq";

import { rustGuest, startCluster, startHost } from "./support.js";

let cluster;
let host;
let client;

before(async () => {
  cluster = await startCluster();
  host = startHost(cluster.url, ["c1", "c2", "c3"], [rustGuest("echo")]);
  client = Client.fromUrl(cluster.url);
});

after(async () => {
  await client?.close();
  await host?.stop();
  await cluster?.stop();
});

test("a cluster URL serves every operation", async () => {
  for (const queue of ["c1", "c2", "c3"]) {
    const id = await client.enqueue(queue, "echo", `on ${queue}`);
    assert.equal((await client.waitForResult(queue, id, { timeout: 60000 })).toString(), `on ${queue}`);
    assert.equal((await client.getJob(queue, id)).state, "completed");
  }
  const done = await client.enqueueBulk("other", Array.from({ length: 50 }, (_, n) => ({ handler: "echo", id: `j${n}` })));
  assert.equal(done.length, 50);
  const later = await client.enqueue("other", "echo", "", { delayMs: 60000, group: "g" });
  assert.deepEqual(await client.counts("other"), { waiting: 50, delayed: 1, active: 0, retry: 0, completed: 0, dead: 0, paused: false });
  assert.ok((await client.pause("other")) && (await client.resume("other")));
  assert.deepEqual(await client.cancel("other", later), { [later]: "cancelled" });
  // A cancelled job is dead-lettered (outcome `cancelled`), so purge finds it.
  assert.deepEqual((await client.deadLetters("other")).map((j) => j.lastOutcome), ["cancelled"]);
  assert.deepEqual([await client.purge("other"), await client.replay("other"), await client.deadLetters("other")], [[later], [], []]);
  await assert.rejects(client.enqueue("other", "echo", "", { priority: 5000 }), InvalidJob);
});
