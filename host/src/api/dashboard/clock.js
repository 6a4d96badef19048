// @ts-check
// The server's clock. Times in the API are on the Redis clock. The browser's clock may differ
// from it (another machine); the Date header of each answer bounds the difference to a second,
// which is all the chart's one-second buckets need. Under two seconds, we assume one clock.

/** @type {number[]} */
const skewSamples = [];
let skewMs = 0;

/** Takes in the `Date` header of an answer. @param {string | null} header */
export function noteServerDate(header) {
  const server = Date.parse(header || '');
  if (!Number.isFinite(server)) return;
  skewSamples.push(server - Date.now());
  if (skewSamples.length > 20) skewSamples.shift();
  const estimate = Math.max(...skewSamples) + 500;
  skewMs = Math.abs(estimate) < 2000 ? 0 : estimate;
}

/** Now on the server's clock, ms since the Unix epoch. */
export const serverNow = () => Date.now() + skewMs;
