// Types of wasmq's producer SDK (index.js). docs/protocol.md is the contract behind them.
import type { Cluster, ClusterOptions, Redis, RedisOptions } from "ioredis";

export * from "./errors.js";

/** The protocol version this package speaks. */
export declare const PROTOCOL: 3;
/** The most jobs one enqueue call takes. */
export declare const MAX_BULK: 10000;
/** enqueue.lua as this package sends it (byte-identical to the host's). */
export declare const ENQUEUE_LUA: string;
/** counts.lua as this package sends it (byte-identical to the host's). */
export declare const COUNTS_LUA: string;

export type Payload = string | Buffer | Uint8Array;
export type JobState = "waiting" | "delayed" | "active" | "retry" | "completed" | "dead";

/** Options of one job; every one is optional (docs/protocol.md, "enqueue.lua"). */
export interface EnqueueOptions {
  /** The job id (1-128 printable ASCII characters); a ULID when absent. An existing id writes nothing. */
  id?: string;
  /** -1000..1000, higher runs first; default 0. */
  priority?: number;
  /** Run this many ms after enqueue (Redis clock). Not with `runAt`. */
  delayMs?: number;
  /** Run at this time (a Date, or ms since the epoch); in the past means now. */
  runAt?: Date | number;
  /** Attempts in total, 1..1000; default 3 (or the handler's retry policy). */
  maxAttempts?: number;
  /** Per-attempt deadline in ms; default the handler's. */
  timeoutMs?: number;
  /** `exponential` (default) or `fixed`. */
  backoff?: "exponential" | "fixed";
  /** Base delay (exponential) or the delay (fixed), ms; default 1000. */
  backoffMs?: number;
  /** Longest exponential delay, ms; default 1 h, or `backoffMs` when that is longer. */
  backoffCapMs?: number;
  /** Jitter fraction 0..1; default 0.2. */
  backoffJitter?: number;
  /** The job's group (e.g. a tenant id): groups take turns and have their own rate limit. */
  group?: string;
  /**
   * The W3C trace context the job continues (`00-<trace id>-<parent id>-<flags>`), e.g. the
   * producer's current span: the job's attempts join that trace. A malformed one is refused.
   */
  traceparent?: string;
  /** The W3C `tracestate` that goes with `traceparent`. */
  tracestate?: string;
  /** Dead-letter the job (outcome `expired`) if it has not started this many ms after enqueue. Not with `expiresAt`. */
  expiresInMs?: number;
  /** Dead-letter the job (outcome `expired`) if it has not started by then (a Date, or ms since the epoch). */
  expiresAt?: Date | number;
  /** Throttle key: while it lives (`dedupeTtlMs`), another job with it is not created (outcome `deduplicated`). */
  dedupeKey?: string;
  /** How long a dedupe key lives, ms (1..10^12). With `dedupeKey`. */
  dedupeTtlMs?: number;
  /**
   * Debounce key: the key's pending job (not started) takes the last payload and starts
   * `debounceMs` after the last enqueue (outcome `debounced`). Not with `delayMs`, `runAt` or `dedupeKey`.
   */
  debounceKey?: string;
  /** The debounce window, ms (1..10^12). With `debounceKey`. */
  debounceMs?: number;
  /** The job starts at most this long after its first enqueue, however often it is debounced (ms). */
  debounceMaxWaitMs?: number;
}

/** One job for `enqueueBulk`. */
export interface JobSpec extends EnqueueOptions {
  handler: string;
  payload?: Payload;
}

/**
 * What enqueue did with one job. `outcome`: `created`; `exists` (the id existed: nothing
 * written); `deduplicated` (its dedupe key was taken: `id` is the first job); `debounced`
 * (`id` is the debounce key's pending job, which took this payload). `created` is
 * `outcome === "created"`; `state` is the state of the job `id` names ("" for a deduplicated
 * job whose first job is no longer kept).
 */
export interface Enqueued {
  id: string;
  created: boolean;
  state: JobState | "";
  outcome: "created" | "exists" | "deduplicated" | "debounced";
}

/** Jobs per state, read in one atomic call. */
export interface Counts {
  waiting: number;
  delayed: number;
  active: number;
  retry: number;
  completed: number;
  dead: number;
  paused: boolean;
}

/** One finished attempt (docs/protocol.md, "Job fields", `history`). */
export interface Attempt {
  attempt: number;
  outcome: string;
  error?: string;
  host?: string;
  started_at?: number;
  finished_at?: number;
  version?: string;
  logs?: string;
  progress?: number;
}

/** A job as its hash holds it. */
export interface Job {
  queue: string;
  id: string;
  handler: string;
  state: JobState;
  payload: Buffer;
  priority: number;
  attempt: number;
  maxAttempts: number;
  createdAtMs: number | null;
  runAtMs: number | null;
  finishedAtMs: number | null;
  result: Buffer | null;
  lastOutcome: string | null;
  lastError: string | null;
  group: string | null;
  traceparent: string | null;
  tracestate: string | null;
  history: Attempt[];
  /** Every field as Redis holds it. */
  fields: Record<string, Buffer>;
}

/** A new ULID. */
export declare function newId(): string;

export declare class Client {
  /** Wraps an ioredis connection. */
  constructor(redis: Redis | Cluster);
  readonly redis: Redis | Cluster;
  /** `redis://`, `rediss://`, `redis+cluster://h1:p1,h2:p2` or `rediss+cluster://...`. */
  static fromUrl(url: string, options?: RedisOptions | ClusterOptions): Client;
  close(): Promise<void>;
  /** Enqueues one job; resolves with its id. */
  enqueue(queue: string, handler: string, payload?: Payload, options?: EnqueueOptions): Promise<string>;
  /** Up to 10,000 jobs in one atomic call. */
  enqueueBulk(queue: string, jobs: JobSpec[]): Promise<Enqueued[]>;
  getJob(queue: string, id: string): Promise<Job | null>;
  counts(queue: string): Promise<Counts>;
  /** The result bytes of the job once it completes; `timeout` in ms (default 30,000). */
  waitForResult(queue: string, id: string, options?: { timeout?: number }): Promise<Buffer>;
  /** Cancels jobs in any state but finished (dead-lettered, outcome `cancelled`; a running one is stopped on its host). Per id: `cancelled`, `not_found`, or the state that prevents it. */
  cancel(queue: string, ...ids: string[]): Promise<Record<string, string>>;
  /** `cancel`, recording who cancels and why on each job. */
  cancelBy(queue: string, ids: string[], options?: { by?: string; reason?: string }): Promise<Record<string, string>>;
  deadLetters(queue: string, options?: { offset?: number; limit?: number }): Promise<Job[]>;
  replay(queue: string, options?: { ids?: string[]; limit?: number }): Promise<string[]>;
  purge(queue: string, options?: { ids?: string[]; limit?: number }): Promise<string[]>;
  pause(queue: string): Promise<boolean>;
  resume(queue: string): Promise<boolean>;
}
