// @ts-check
// #/ : every queue with its counts, and the throughput of them all.

import { getQueue, listQueues, STATES } from '../api.js';
import { errorMessage } from '../chrome.js';
import { throughputPanel } from '../chart.js';
import { badge, enc, h, title } from '../dom.js';
import { fmtCount } from '../format.js';
import { slowPollDue } from '../poll.js';
import { isTracked, pollEvents, series } from '../throughput.js';

/** @typedef {import('../api.js').QueueView} QueueView */
/** @typedef {import('../poll.js').View} View */

const CHARTED_QUEUES_MAX = 20;

// The queue list, kept across views and read again every few polls.
/** @type {string[] | null} */
let knownQueues = null;
let knownQueuesComplete = true;

/** @returns {Promise<string[]>} */
async function queueList() {
  if (knownQueues === null || slowPollDue()) {
    const res = await listQueues();
    knownQueues = res.queues;
    knownQueuesComplete = res.complete;
  }
  return knownQueues;
}

/** @returns {View} */
export function overviewView() {
  const chart = throughputPanel('Throughput, all queues');
  const tbody = h('tbody');
  /** @type {Map<string, { tr: HTMLTableRowElement, cells: Record<string, HTMLTableCellElement>, status: HTMLTableCellElement, rate: HTMLTableCellElement }>} */
  const rows = new Map();
  const footnote = h('p', { class: 'muted' });
  const root = h('div', {},
    title('Queues'),
    chart.el,
    h('section', { class: 'panel' },
      h('div', { class: 'table-wrap' },
        h('table', { class: 'queues' },
          h('thead', {}, h('tr', {},
            h('th', {}, 'Queue'), h('th', {}, 'Status'),
            STATES.map((s) => h('th', { class: 'num' }, s)),
            h('th', { class: 'num' }, 'completed/s'))),
          tbody)),
      footnote));

  /** @param {string} name */
  function row(name) {
    let entry = rows.get(name);
    if (!entry) {
      const cells = Object.fromEntries(STATES.map((s) => [s, h('td', { class: 'num', 'data-state': s }, '…')]));
      const status = h('td');
      const rate = h('td', { class: 'num', 'data-rate': '' }, '—');
      const tr = h('tr', { 'data-queue': name },
        h('td', {}, h('a', { href: `#/queues/${enc(name)}` }, name)), status,
        STATES.map((s) => cells[s]), rate);
      entry = { tr, cells, status, rate };
      rows.set(name, entry);
    }
    return entry;
  }

  async function tick() {
    const names = await queueList();
    /** @type {(QueueView | { name: string, error: unknown })[]} */
    const details = await Promise.all(names.map((q) => getQueue(q)
      .catch((err) => ({ name: q, error: err }))));
    const charted = names.slice(0, CHARTED_QUEUES_MAX);
    await Promise.all(charted.map((q) => pollEvents(q).catch(() => {})));
    const trs = details.map((d) => {
      const entry = row(d.name);
      if ('error' in d) {
        entry.status.replaceChildren(badge('error', 'state-dead'));
        entry.status.title = errorMessage(d.error);
        return entry.tr;
      }
      entry.status.title = '';
      entry.status.replaceChildren(d.paused ? badge('paused', 'paused') : '');
      for (const s of STATES) {
        const n = d.counts[s];
        const cell = entry.cells[s];
        const content = s === 'dead' && n > 0
          ? h('a', { href: `#/queues/${enc(d.name)}/dlq` }, fmtCount(n))
          : (s !== 'dead' && n > 0 ? h('a', { href: `#/queues/${enc(d.name)}?state=${s}` }, fmtCount(n)) : fmtCount(n));
        if (cell.textContent !== fmtCount(n) || cell.childNodes.length === 0) cell.replaceChildren(content);
        cell.classList.toggle('zero', n === 0);
      }
      if (isTracked(d.name)) {
        const recent = series([d.name]).completed.slice(-10);
        entry.rate.textContent = (recent.reduce((a, b) => a + b, 0) / 10).toFixed(1);
      }
      return entry.tr;
    });
    // Rows are kept and updated in place; the body is rebuilt only when the queues change.
    if (trs.length !== tbody.children.length || trs.some((tr, i) => tbody.children[i] !== tr)) {
      tbody.replaceChildren(...trs);
    }
    if (names.length === 0) {
      tbody.replaceChildren(h('tr', {}, h('td', { colspan: STATES.length + 3, class: 'empty' },
        'No queues yet: enqueue a job, or start the server with --queues.')));
    }
    const notes = [];
    if (!knownQueuesComplete) notes.push('The search of Redis for queues stopped at its bound: more queues may exist.');
    if (names.length > CHARTED_QUEUES_MAX) notes.push(`The chart counts the first ${CHARTED_QUEUES_MAX} queues.`);
    footnote.textContent = notes.join(' ');
    footnote.hidden = notes.length === 0;
    chart.update(charted, names.length ? null : 'No queues yet.');
  }

  return { root, tick, destroy: chart.destroy, nav: 'queues' };
}
