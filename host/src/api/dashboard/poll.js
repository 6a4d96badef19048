// @ts-check
// The poll loop: the current view refreshes every POLL_MS while the tab is visible. What
// changes slowly (the queue list, handlers, schedules) is read again only every few polls.

export const POLL_MS = 1500;
const SLOW_EVERY = 8; // polls between reads of what changes slowly

/**
 * What the router shows and the poll loop refreshes.
 * @typedef {object} View
 * @property {HTMLElement} root
 * @property {() => Promise<void>} tick reads the server and updates `root`
 * @property {() => void} destroy
 * @property {string | null} nav the `data-nav` link it highlights
 */

let pollCount = 0;
/** @type {(() => void) | null} */
let wake = null;

/** Whether this poll is one of those that read again what changes slowly. */
export const slowPollDue = () => pollCount % SLOW_EVERY === 0;

const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs the current view's next refresh now instead of at the next tick. */
export function refreshSoon() {
  if (wake) wake();
}

/**
 * Refreshes the current view every POLL_MS (or at once on refreshSoon) while the tab is
 * visible, forever.
 * @param {() => View | null} current
 * @param {(view: View) => Promise<void>} refresh
 */
export async function pollLoop(current, refresh) {
  for (;;) {
    await Promise.race([sleep(POLL_MS), new Promise((resolve) => { wake = () => resolve(undefined); })]);
    wake = null;
    const view = current();
    if (document.hidden || !view) continue;
    pollCount += 1;
    await refresh(view);
  }
}
