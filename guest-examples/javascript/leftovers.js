// `leftovers`: looks for anything an earlier job left behind in this instance, then leaves
// marks of its own for the next job to find.
//
// It counts its calls in a module-level variable, scans a 256 KiB module-level `Uint8Array`
// (made when the component was built, so it lies in the memory image) for the 8-byte mark
// `LEFTOVER`, which it then writes all over it, and looks for a property it sets on
// `globalThis` and for entries it adds to a module-level `Map` (both on the engine's heap).
// The result is `calls=<n> buffer=<marks found> global=<0|1> map=<entries found>`: every job
// in a fresh instance must see `calls=1 buffer=0 global=0 map=0`, however many jobs ran in
// the same pool slot before it.

const MARK = new TextEncoder().encode("LEFTOVER");
const BUFFER = new Uint8Array(256 * 1024);
const SEEN = new Map();
let calls = 0;

function scanAndMark(bytes) {
  let found = 0;
  for (let at = 0; at + MARK.length <= bytes.length; at += MARK.length) {
    let same = true;
    for (let i = 0; i < MARK.length; i++) {
      if (bytes[at + i] !== MARK[i]) {
        same = false;
      }
      bytes[at + i] = MARK[i];
    }
    if (same) {
      found++;
    }
  }
  return found;
}

export function handle(job) {
  calls++;
  const found = scanAndMark(BUFFER);
  const leftInGlobal = "wasmqLeftover" in globalThis ? 1 : 0;
  globalThis.wasmqLeftover = job.payload;
  const inMap = SEEN.size;
  for (let i = 0; i < 1000; i++) {
    SEEN.set(i, "LEFTOVER".repeat(16));
  }
  return new TextEncoder().encode(
    `calls=${calls} buffer=${found} global=${leftInGlobal} map=${inMap}`,
  );
}
