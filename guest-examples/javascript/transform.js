// `transform`: `{"numbers":[1,2,3]}` -> `{"count":3,"sum":6,"max":3}`.
//
// The output is canonical and byte-identical in every language of guest-examples/ (see
// guest-examples/README.md): no spaces, keys in that order, integers in decimal, `max` null
// for an empty list. Numbers must be integers within +-(2^53 - 1), the range every JSON parser
// holds exactly, and so must every partial sum. A payload that is not JSON fails with
// "invalid json: ..."; JSON of the wrong shape fails with "invalid input: ...". The payload
// `{"spin":true}` busy-loops forever: a handler that only a deadline stops.
import { log, progress } from "wasmq:job/context@0.1.3";

// Like the JSON parsers of the other languages: invalid UTF-8 and a byte order mark are not
// JSON text.
const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

const NOT_INTEGERS = 'invalid input: "numbers" must be an array of integers';

const fail = (message) => ({ tag: "err", val: { tag: "fail", val: message } });

export function handle(job) {
  let doc;
  try {
    doc = JSON.parse(UTF8.decode(job.payload));
  } catch (e) {
    return fail(`invalid json: ${e.message}`);
  }
  const isObject = doc !== null && typeof doc === "object" && !Array.isArray(doc);
  if (isObject && doc.spin === true) {
    log("warn", "spinning until the deadline");
    for (;;) {}
  }
  const numbers = isObject ? doc.numbers : undefined;
  if (!Array.isArray(numbers)) {
    return fail(NOT_INTEGERS);
  }
  progress(50);
  let sum = 0;
  let max = null;
  for (const n of numbers) {
    if (!Number.isSafeInteger(n)) {
      return fail(NOT_INTEGERS);
    }
    sum += n;
    // Past 2^53 a double is no longer exact, but it stays past the bound, so this still fires.
    if (!Number.isSafeInteger(sum)) {
      return fail("invalid input: sum out of range");
    }
    max = max === null ? n : Math.max(max, n);
  }
  log("info", `transform ${numbers.length} numbers`);
  progress(100);
  // Template literals print -0 as "0", like the integer types of the other languages.
  return new TextEncoder().encode(`{"count":${numbers.length},"sum":${sum},"max":${max}}`);
}
