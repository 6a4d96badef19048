// @ts-check
// Throughput: jobs completed (and failed) per second, counted from each queue's events stream.
//
// One tracker per queue, kept across views so the chart does not start over on navigation.
// The events stream's ids are `<ms>-<n>` on the Redis clock, so each transition lands in the
// second it happened in, however late it is read. A `completed` event names every job one
// script call completed; `retried` and `dead` count as failures.

import { readEvents } from './api.js';
import { serverNow } from './clock.js';

export const CHART_SECONDS = 60;
const EVENT_PAGE = 1000;
const EVENT_PAGES_PER_POLL = 5;

/** @typedef {{ completed: number, failed: number }} Bucket */
/**
 * What has been read of one queue's events.
 * @typedef {object} Tracker
 * @property {string} after the stream id to read on after
 * @property {Map<number, Bucket>} buckets by second since the Unix epoch
 * @property {number} polledAt when it was last read, on the server's clock
 */
/** One value per second, oldest first. @typedef {{ completed: number[], failed: number[] }} Series */

/** @type {Map<string, Tracker>} */
const trackers = new Map();

/** Whether `queue`'s events have been read at least once. @param {string} queue */
export const isTracked = (queue) => trackers.has(queue);

/** Reads `queue`'s events since the last poll into its buckets. @param {string} queue */
export async function pollEvents(queue) {
  const now = serverNow();
  let t = trackers.get(queue);
  if (!t) {
    t = { after: `${Math.max(0, now - (CHART_SECONDS + 2) * 1000)}-0`, buckets: new Map(), polledAt: 0 };
    trackers.set(queue, t);
  }
  let full = false;
  for (let page = 0; page < EVENT_PAGES_PER_POLL; page += 1) {
    const res = await readEvents(queue, t.after, EVENT_PAGE);
    for (const event of res.events) {
      const kind = event.event === 'completed' ? 'completed'
        : (event.event === 'retried' || event.event === 'dead') ? 'failed' : null;
      if (!kind) continue;
      const second = Math.floor(Number(event.id.split('-')[0]) / 1000);
      const bucket = t.buckets.get(second) || { completed: 0, failed: 0 };
      bucket[kind] += event.jobs.length;
      t.buckets.set(second, bucket);
    }
    if (res.last_id) t.after = res.last_id;
    full = res.events.length === EVENT_PAGE;
    if (!full) break;
  }
  // Still behind after the pages a poll may read: skip to the present rather than chart the
  // past ever later.
  if (full && Number(t.after.split('-')[0]) < now - CHART_SECONDS * 1000) {
    t.after = `${now - 2000}-0`;
  }
  t.polledAt = now;
  const oldest = Math.floor(now / 1000) - CHART_SECONDS - 5;
  for (const second of t.buckets.keys()) if (second < oldest) t.buckets.delete(second);
}

/** The last CHART_SECONDS complete seconds, summed over `queues`.
 *  @param {string[]} queues @returns {Series} */
export function series(queues) {
  // Up to the last second every charted queue has been read past (now, before any read).
  const polled = queues.length ? Math.min(...queues.map((q) => trackers.get(q)?.polledAt ?? 0)) : 0;
  const end = Math.floor((polled || serverNow()) / 1000) - 1;
  /** @type {number[]} */
  const completed = [];
  /** @type {number[]} */
  const failed = [];
  for (let s = end - CHART_SECONDS + 1; s <= end; s += 1) {
    let c = 0;
    let f = 0;
    for (const q of queues) {
      const b = trackers.get(q)?.buckets.get(s);
      if (b) { c += b.completed; f += b.failed; }
    }
    completed.push(c);
    failed.push(f);
  }
  return { completed, failed };
}
