// Compiled (not run) by types.test.js with `tsc --noEmit`: the declarations in src/*.d.ts must
// accept what the README shows and refuse what is wrong (each @ts-expect-error must be an error).
import { Client, InvalidJob, JobFailed, PROTOCOL, WaitTimeout, type Counts, type Job } from "wasmq";

export async function usage(): Promise<void> {
  const client = Client.fromUrl("redis://127.0.0.1:6379");
  const id: string = await client.enqueue("emails", "send-email", JSON.stringify({ to: "a@b.c" }), {
    priority: 5,
    delayMs: 1000,
    maxAttempts: 5,
    timeoutMs: 30_000,
    backoff: "fixed",
    backoffMs: 500,
    backoffJitter: 0.1,
    group: "tenant-42",
  });
  await client.enqueue("emails", "send-email", Buffer.from("x"), { runAt: new Date() });
  const result: Buffer = await client.waitForResult("emails", id, { timeout: 30_000 });
  const counts: Counts = await client.counts("emails");
  const job: Job | null = await client.getJob("emails", id);
  const bulk = await client.enqueueBulk("emails", [{ handler: "send-email", payload: new Uint8Array([1]) }]);
  const created: boolean = bulk[0].created;
  const [throttled] = await client.enqueueBulk("emails", [
    { handler: "digest", dedupeKey: "user-1", dedupeTtlMs: 60_000, expiresInMs: 5_000 },
    { handler: "digest", debounceKey: "user-1", debounceMs: 2_000, debounceMaxWaitMs: 10_000, expiresAt: new Date() },
  ]);
  const outcome: "created" | "exists" | "deduplicated" | "debounced" = throttled.outcome;
  const cancelled: Record<string, string> = await client.cancel("emails", id, "other");
  const dead: Job[] = await client.deadLetters("emails", { limit: 10 });
  const replayed: string[] = await client.replay("emails", { ids: [id] });
  const purged: string[] = await client.purge("emails", { limit: 5 });
  const paused: boolean = (await client.pause("emails")) && (await client.resume("emails"));
  const protocol: 3 = PROTOCOL;
  try {
    await client.waitForResult("emails", id);
  } catch (err) {
    if (err instanceof JobFailed) console.log(err.outcome, err.error);
    if (err instanceof WaitTimeout) console.log(err.state);
    if (err instanceof InvalidJob) console.log(err.reason);
  }
  // @ts-expect-error backoff is "exponential" or "fixed"
  await client.enqueue("q", "h", "", { backoff: "linear" });
  // @ts-expect-error the payload is a string, Buffer or Uint8Array
  await client.enqueue("q", "h", 42);
  // @ts-expect-error an option the protocol does not have
  await client.enqueue("q", "h", "", { retries: 3 });
  console.log(result, counts, job?.state, created, cancelled, dead, replayed, purged, paused, protocol);
  await client.close();
}
