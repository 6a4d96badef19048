// @ts-check
// The wasmq dashboard: plain JavaScript modules, no framework, no build step (docs/dashboard.md).
// Everything it shows or does goes through the JSON API (api.js) with the token typed into the
// header (token.js). This module routes the hash to a view and refreshes it (poll.js):
//
//   #/                          queues, counts per state, throughput of all queues (views/overview.js)
//   #/queues/<q>?state=<s>      one queue: counts, throughput, jobs in a state (views/queue.js);
//     &text=&handler=&group=&id_prefix=&cursor=   a search of them instead, a page at a time
//   #/queues/<q>/dlq            its dead-letter queue, with replay and purge (views/queue.js)
//   #/queues/<q>/jobs/<id>      one job: facts, payload, result, every attempt (views/job.js)
//   #/handlers, #/handlers/<n>  handlers, their versions, rollback (views/handlers.js)
//   #/schedules                 cron schedules, their next runs, pause and resume (views/schedules.js)
//
// The other modules: dom.js builds elements (data is never written as HTML), format.js writes
// numbers and times, clock.js follows the server's clock, chrome.js is the banner, toast, live
// marker and confirmation, throughput.js counts the events streams and chart.js draws them.

import { isState, isStatus } from './api.js';
import { clearBanner, errorMessage, setLive, showBanner } from './chrome.js';
import { $, updateRelativeTimes } from './dom.js';
import { pollLoop } from './poll.js';
import { setupToken } from './token.js';
import { handlersView, handlerView } from './views/handlers.js';
import { jobView } from './views/job.js';
import { notFoundView } from './views/not-found.js';
import { overviewView } from './views/overview.js';
import { queueView } from './views/queue.js';
import { schedulesView } from './views/schedules.js';

/** @typedef {import('./poll.js').View} View */

/** The view the location's hash names. @returns {View} */
function route() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, search = ''] = hash.split('?');
  const query = new URLSearchParams(search);
  const offset = Math.max(0, Number.parseInt(query.get('offset') || '0', 10) || 0);
  let parts;
  try {
    parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    return notFoundView(hash);
  }
  if (parts.length === 0) return overviewView();
  /** @type {import('./api.js').JobFilter} */
  const filter = {};
  for (const name of /** @type {const} */ (['text', 'handler', 'group', 'id_prefix'])) {
    const value = query.get(name);
    if (value) filter[name] = value;
  }
  const cursor = query.get('cursor');
  if (parts[0] === 'queues' && parts.length === 2) {
    const state = query.get('state') || 'waiting';
    if (!isState(state)) return notFoundView(`no state ${state}`);
    return queueView(parts[1], { state, offset, dlq: state === 'dead', filter, cursor });
  }
  if (parts[0] === 'queues' && parts.length === 3 && parts[2] === 'dlq') {
    return queueView(parts[1], { state: 'dead', offset, dlq: true, filter, cursor });
  }
  if (parts[0] === 'queues' && parts.length === 4 && parts[2] === 'jobs') return jobView(parts[1], parts[3]);
  if (parts[0] === 'handlers' && parts.length === 1) return handlersView();
  if (parts[0] === 'handlers' && parts.length === 2) return handlerView(parts[1]);
  if (parts[0] === 'schedules' && parts.length === 1) return schedulesView();
  return notFoundView(hash);
}

/** @type {View | null} */
let view = null;

/** Refreshes `target`; the live marker and the banner speak for the current view only.
 *  @param {View} target */
async function refresh(target) {
  try {
    await target.tick();
    updateRelativeTimes();
    if (target === view) setLive(true);
  } catch (err) {
    if (target !== view) return;
    setLive(false, err);
    if (!isStatus(err, 401)) showBanner(errorMessage(err));
  }
}

function show() {
  if (view) view.destroy();
  clearBanner();
  const shown = route();
  view = shown;
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link instanceof HTMLElement) link.classList.toggle('current', link.dataset.nav === shown.nav);
  }
  $('#view', HTMLElement).replaceChildren(shown.root);
  window.scrollTo(0, 0);
  refresh(shown);
}

setupToken();
window.addEventListener('hashchange', show);
show();
pollLoop(() => view, refresh);
