// The errors of the wasmq SDK: one class per thing a caller may want to handle.

/** Base class of every error the SDK throws on purpose. */
export class WasmqError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** enqueue.lua refused a job (`WASMQ_INVALID`); nothing was written. */
export class InvalidJob extends WasmqError {
  constructor(jobId, reason) {
    super(`invalid job ${jobId ?? "-"}: ${reason}`);
    this.jobId = jobId;
    this.reason = reason;
  }
}

/** The queue's backlog (jobs not finished) is at its `max_waiting` (`WASMQ_QUEUE_FULL`); nothing written. */
export class QueueFull extends WasmqError {
  constructor(queue, backlog, added, limit) {
    super(`queue ${queue} is full: ${backlog} jobs not finished, ${added} more would pass its max_waiting of ${limit}`);
    this.queue = queue;
    this.backlog = backlog;
    this.new = added;
    this.limit = limit;
  }
}

/** A payload over the queue's `max_payload_bytes` (`WASMQ_PAYLOAD_TOO_LARGE`); nothing written. */
export class PayloadTooLarge extends WasmqError {
  constructor(jobId, size, limit) {
    super(`job ${jobId}: payload of ${size} bytes is over the limit of ${limit}`);
    this.jobId = jobId;
    this.size = size;
    this.limit = limit;
  }
}

/** A key of the queue holds another Redis type than the protocol's (`WASMQ_WRONGTYPE`). */
export class WrongType extends WasmqError {
  constructor(key, found) {
    super(`${key} holds a ${found}, not what the wasmq protocol keeps there`);
    this.key = key;
    this.found = found;
  }
}

/** A queue name outside the protocol's rule (1-128 of `A-Z a-z 0-9 - _ . :`). */
export class InvalidQueue extends WasmqError {}

/** The job does not exist: never enqueued, cancelled, purged, or deleted by retention. */
export class JobNotFound extends WasmqError {
  constructor(queue, jobId) {
    super(`job ${jobId} not found in queue ${queue}`);
    this.queue = queue;
    this.jobId = jobId;
  }
}

/** The job is in the dead-letter queue: its last outcome class and error message. */
export class JobFailed extends WasmqError {
  constructor(jobId, outcome, error) {
    super(`job ${jobId} failed (${outcome}): ${error}`);
    this.jobId = jobId;
    this.outcome = outcome;
    this.error = error;
  }
}

/** `waitForResult` gave up before the job finished; the job goes on. */
export class WaitTimeout extends WasmqError {
  constructor(jobId, state) {
    super(`job ${jobId} has not finished (state ${state})`);
    this.jobId = jobId;
    this.state = state;
  }
}

/** The typed error for a `WASMQ_*` error reply, or `err` itself for any other. */
export function scriptError(err) {
  const message = String(err?.message ?? err);
  const space = message.indexOf(" ");
  const code = space < 0 ? message : message.slice(0, space);
  const detail = space < 0 ? "" : message.slice(space + 1);
  if (code === "WASMQ_INVALID") {
    const rest = detail.startsWith("job ") ? detail.slice(4) : detail;
    const sep = rest.indexOf(": ");
    if (sep < 0) return new InvalidJob(null, detail);
    const id = rest.slice(0, sep);
    return new InvalidJob(id === "-" ? null : id, rest.slice(sep + 2));
  }
  if (code === "WASMQ_PAYLOAD_TOO_LARGE") {
    const [id, size, limit] = detail.split(" ");
    return new PayloadTooLarge(id, Number(size), Number(limit));
  }
  if (code === "WASMQ_QUEUE_FULL") {
    const [queue, backlog, added, limit] = detail.split(" ");
    return new QueueFull(queue, Number(backlog), Number(added), Number(limit));
  }
  if (code === "WASMQ_WRONGTYPE") {
    const sep = detail.indexOf(" ");
    return new WrongType(detail.slice(0, sep), detail.slice(sep + 1));
  }
  return err;
}
