// `flaky`: fails transiently on attempt 1 and succeeds from attempt 2 on.
//
// Returns `retry` on attempt 1 and `{"attempt":N}` on attempt N >= 2; the payload
// `{"fail":true}` fails permanently on any attempt.
import { log, progress } from "wasmq:job/context@0.1.3";

// Like the JSON parsers of the other languages: invalid UTF-8 and a byte order mark are not
// JSON text.
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function asksToFail(payload) {
  try {
    const doc = JSON.parse(UTF8.decode(payload));
    return doc !== null && typeof doc === "object" && doc.fail === true;
  } catch {
    return false;
  }
}

export function handle(job) {
  log("info", `flaky attempt ${job.attempt} of ${job.maxAttempts}`);
  if (asksToFail(job.payload)) {
    log("error", "the payload asks to fail");
    return { tag: "err", val: { tag: "fail", val: "failed on purpose: the payload asks to fail" } };
  }
  if (job.attempt <= 1) {
    progress(0);
    return { tag: "err", val: { tag: "retry", val: "attempt 1 fails on purpose; retry me" } };
  }
  progress(100);
  return new TextEncoder().encode(`{"attempt":${job.attempt}}`);
}
