// @ts-check
// #/queues/<q>?state=<s> and #/queues/<q>/dlq : counts, throughput, attempt durations per
// handler (durations.js), and one state's jobs; the dead-letter queue with replay and purge.
// A search (payload text, handler, group, id prefix) lists the state's matching jobs instead,
// a page at a time from the search's cursor (`GET /api/queues/<q>/search`).

import { actOnDead, getDurations, getQueue, listDead, listJobs, pauseQueue, searchJobs, STATES } from '../api.js';
import { act, confirmAction, toast } from '../chrome.js';
import { throughputPanel } from '../chart.js';
import { badge, crumbs, enc, h, outcomeBadge, timeCell, title } from '../dom.js';
import { BUCKET_S, durationsPanel, WINDOW_S } from '../durations.js';
import { fmtCount } from '../format.js';
import { pollEvents } from '../throughput.js';

/** @typedef {import('../api.js').JobState} JobState */
/** @typedef {import('../api.js').JobView} JobView */
/** @typedef {import('../api.js').JobFilter} JobFilter */
/** @typedef {import('../poll.js').View} View */

const PAGE = 50;
/** The durations read job histories: at most every this often, not on every poll. */
const DURATIONS_EVERY_MS = 30_000;

/**
 * @param {string} queue
 * @param {{ state: JobState, offset: number, dlq: boolean, filter: JobFilter, cursor: string | null }} where
 * @returns {View}
 */
export function queueView(queue, { state, offset, dlq, filter, cursor }) {
  const chart = throughputPanel('Throughput');
  const durations = durationsPanel();
  let durationsAt = 0;
  const tiles = h('div', { class: 'tiles' });
  const pauseButton = h('button', { class: 'quiet' }, '…');
  const statusBadge = h('span');
  const list = h('section', { class: 'panel' });
  const shown = dlq ? 'dead' : state;
  const searching = Object.values(filter).some(Boolean);
  const root = h('div', {},
    crumbs(h('a', { href: '#/' }, 'Queues'), queue),
    title(queue, statusBadge, h('span', { class: 'spacer' }), pauseButton),
    tiles, chart.el, durations.el, searchForm(), list);
  let paused = false;
  /** @type {number | null} */
  let lastCount = null;
  let listedAt = 0;
  /** @type {Set<string>} */
  let selected = new Set();
  let eventsOff = false;

  pauseButton.addEventListener('click', () => act(pauseButton, async () => {
    if (!paused) {
      const ok = await confirmAction({
        title: `Pause ${queue}?`,
        text: 'Hosts stop starting its jobs; jobs running now finish. Enqueueing still works.',
        ok: 'Pause',
      });
      if (!ok) return;
    }
    const res = await pauseQueue(queue, !paused);
    toast(`${queue} ${res.paused ? 'paused' : 'resumed'}${res.changed ? '' : ' (it already was)'}`);
    await tick();
  }));

  // Built once and updated in place, so that a click is never lost to a refresh.
  const tileList = STATES.map((s) => {
    const value = h('div', { class: 'value' }, '…');
    const tile = h('a', {
      class: `tile state-${s}${s === shown ? ' selected' : ''}`,
      href: s === 'dead' ? `#/queues/${enc(queue)}/dlq` : `#/queues/${enc(queue)}?state=${s}`,
      'data-state': s,
    }, h('div', { class: 'label' }, s), value);
    return { state: s, tile, value };
  });
  tiles.append(...tileList.map((t) => t.tile));

  /** The search box: what it asks for goes into the hash, so a search is a link. */
  function searchForm() {
    /** @param {keyof JobFilter} name @param {string} label @param {string} placeholder */
    const field = (name, label, placeholder) => h('input', {
      type: 'search', name, placeholder, 'aria-label': label, value: filter[name] ?? '',
    });
    const inputs = [
      field('text', 'Payload contains', 'Payload contains…'),
      field('handler', 'Handler', 'Handler'),
      field('group', 'Group', 'Group'),
      field('id_prefix', 'Id starts with', 'Id starts with'),
    ];
    const form = h('form', { class: 'search', role: 'search', 'data-search': '' },
      ...inputs, h('button', { type: 'submit' }, 'Search'),
      searching ? h('a', { href: `#/queues/${enc(queue)}?state=${shown}`, class: 'clear' }, 'Clear') : null);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const query = new URLSearchParams({ state: shown });
      for (const input of inputs) {
        if (input instanceof HTMLInputElement && input.value.trim()) query.set(input.name, input.value.trim());
      }
      location.hash = `#/queues/${enc(queue)}?${query}`;
    });
    return form;
  }

  /** One page of the search, with the link to the next one. */
  async function loadSearch() {
    listedAt = Date.now();
    const page = await searchJobs(queue, shown, filter, cursor, PAGE);
    const query = new URLSearchParams({ state: shown });
    for (const [name, value] of Object.entries(filter)) if (value) query.set(name, value);
    const first = `#/queues/${enc(queue)}?${query}`;
    if (page.cursor) query.set('cursor', page.cursor);
    const refresh = h('button', { class: 'quiet small' }, 'Refresh');
    refresh.addEventListener('click', () => act(refresh, loadSearch));
    const found = page.jobs.length + page.malformed.length;
    list.replaceChildren(
      h('div', { 'data-results': String(page.jobs.length) },
        h('h2', {}, `Search in ${shown} jobs`),
        page.jobs.length ? jobsTable(page.jobs, shown)
          : h('p', { class: 'empty' }, page.cursor ? 'No matches on this page.' : 'No matching jobs.'),
        page.malformed.length ? h('ul', { class: 'malformed' }, page.malformed.map((m) =>
          h('li', { 'data-job': m.id }, h('span', { class: 'mono' }, m.id), ` malformed: ${m.reason}`))) : null),
      h('div', { class: 'pager' },
        h('span', { class: 'muted', 'data-examined': String(page.examined) },
          `${fmtCount(found)} found in ${fmtCount(page.examined)} jobs examined`),
        cursor ? h('a', { href: first }, '← first page') : null,
        page.cursor ? h('a', { href: `#/queues/${enc(queue)}?${query}`, 'data-next': '' }, 'next page →') : null,
        refresh));
  }

  async function loadList() {
    if (searching) return loadSearch();
    listedAt = Date.now();
    const page = dlq ? await listDead(queue, offset, PAGE) : await listJobs(queue, state, offset, PAGE);
    selected = new Set([...selected].filter((id) => page.jobs.some((j) => j.id === id)));
    list.replaceChildren(
      dlq ? dlqTable(page.jobs) : h('div', {}, h('h2', {}, `${state[0].toUpperCase()}${state.slice(1)} jobs`), jobsTable(page.jobs, state)),
      pager(page.jobs.length));
  }

  /** @param {number} count jobs on this page */
  function pager(count) {
    const base = dlq ? `#/queues/${enc(queue)}/dlq?` : `#/queues/${enc(queue)}?state=${state}&`;
    const prev = offset > 0 ? h('a', { href: `${base}offset=${Math.max(0, offset - PAGE)}` }, '← newer page') : null;
    const next = count === PAGE ? h('a', { href: `${base}offset=${offset + PAGE}` }, 'next page →') : null;
    const refresh = h('button', { class: 'quiet small' }, 'Refresh');
    refresh.addEventListener('click', () => act(refresh, loadList));
    return h('div', { class: 'pager' },
      count ? h('span', { class: 'muted' }, `${offset + 1}–${offset + count}`) : null, prev, next, refresh);
  }

  /** @param {JobView[]} jobs @param {JobState} state */
  function jobsTable(jobs, state) {
    /** @type {Partial<Record<JobState, string>>} */
    const whenTitle = { waiting: 'Created', delayed: 'Due', active: 'Lease expires', retry: 'Retry due', completed: 'Finished', dead: 'Died' };
    const when = whenTitle[state];
    /** @param {JobView} j */
    const time = (j) => ({ waiting: j.created_at_ms, delayed: j.run_at_ms, retry: j.run_at_ms, active: j.lease_expires_at_ms, completed: j.finished_at_ms, dead: j.finished_at_ms }[state]);
    if (!jobs.length) return h('p', { class: 'empty' }, offset ? 'No more jobs.' : `No ${state} jobs.`);
    return h('div', { class: 'table-wrap' }, h('table', { class: 'jobs' },
      h('thead', {}, h('tr', {},
        h('th', {}, 'Job'), h('th', {}, 'Handler'), h('th', { class: 'num' }, 'Attempt'),
        h('th', { class: 'num' }, 'Priority'), h('th', {}, when), h('th', {}, 'Group'),
        h('th', {}, state === 'completed' ? 'Host' : 'Last error'))),
      h('tbody', {}, jobs.map((j) => h('tr', { 'data-job': j.id },
        h('td', { class: 'id' }, h('a', { href: `#/queues/${enc(queue)}/jobs/${enc(j.id)}` }, j.id)),
        h('td', {}, j.handler),
        h('td', { class: 'num' }, `${j.attempt} / ${j.max_attempts}`),
        h('td', { class: 'num' }, j.priority),
        timeCell(time(j)),
        h('td', {}, j.group ?? ''),
        state === 'completed' ? h('td', { class: 'mono' }, j.host ?? '')
          : h('td', { class: 'error' }, j.last_error ?? ''))))));
  }

  /** Replays (`replay`) or purges dead jobs, once confirmed.
   *  @param {string[]} ids @param {boolean} replay */
  async function dlqAction(ids, replay) {
    const verb = replay ? 'Replay' : 'Purge';
    const what = ids.length === 1 ? `job ${ids[0]}` : `${ids.length} jobs`;
    const ok = await confirmAction({
      title: `${verb} ${what}?`,
      text: replay
        ? 'They go back to waiting with their attempts reset (history kept), and run again.'
        : 'They are deleted for good, with their payload and history. This cannot be undone.',
      ok: verb,
      danger: !replay,
    });
    if (!ok) return;
    const res = await actOnDead(queue, replay, ids);
    const skipped = res.skipped.length ? `; ${res.skipped.length} skipped (no longer dead)` : '';
    toast(`${replay ? 'Replayed' : 'Purged'} ${res.done.length} job${res.done.length === 1 ? '' : 's'}${skipped}`);
    selected = new Set();
    await tick(true);
  }

  /** @param {JobView[]} jobs */
  function dlqTable(jobs) {
    if (!jobs.length) return h('p', { class: 'empty' }, offset ? 'No more dead jobs.' : 'The dead-letter queue is empty.');
    const replaySelected = h('button', { class: 'small' }, 'Replay selected');
    const purgeSelected = h('button', { class: 'small danger' }, 'Purge selected');
    const all = h('input', { type: 'checkbox', 'aria-label': 'Select every job on this page' });
    /** @type {HTMLInputElement[]} */
    const boxes = [];
    const sync = () => {
      replaySelected.disabled = purgeSelected.disabled = selected.size === 0;
      replaySelected.textContent = `Replay selected (${selected.size})`;
      purgeSelected.textContent = `Purge selected (${selected.size})`;
      all.checked = selected.size > 0 && selected.size === jobs.length;
    };
    replaySelected.addEventListener('click', () => act(replaySelected, () => dlqAction([...selected], true)));
    purgeSelected.addEventListener('click', () => act(purgeSelected, () => dlqAction([...selected], false)));
    all.addEventListener('change', () => {
      selected = all.checked ? new Set(jobs.map((j) => j.id)) : new Set();
      for (const box of boxes) box.checked = selected.has(box.value);
      sync();
    });
    const rows = jobs.map((j) => {
      const box = h('input', { type: 'checkbox', value: j.id, 'aria-label': `Select ${j.id}` });
      box.checked = selected.has(j.id);
      box.addEventListener('change', () => { if (box.checked) selected.add(j.id); else selected.delete(j.id); sync(); });
      boxes.push(box);
      const replay = h('button', { class: 'small' }, 'Replay');
      const purge = h('button', { class: 'small danger' }, 'Purge');
      replay.addEventListener('click', () => act(replay, () => dlqAction([j.id], true)));
      purge.addEventListener('click', () => act(purge, () => dlqAction([j.id], false)));
      return h('tr', { 'data-job': j.id },
        h('td', { class: 'check' }, box),
        h('td', { class: 'id' }, h('a', { href: `#/queues/${enc(queue)}/jobs/${enc(j.id)}` }, j.id)),
        h('td', {}, j.handler),
        h('td', { class: 'num' }, `${j.attempt} / ${j.max_attempts}`),
        timeCell(j.finished_at_ms),
        h('td', {}, j.last_outcome ? outcomeBadge(j.last_outcome) : ''),
        h('td', { class: 'error' }, j.last_error ?? ''),
        h('td', { class: 'num' }, j.replays),
        h('td', { class: 'actions' }, replay, purge));
    });
    sync();
    return h('div', {},
      h('div', { class: 'toolbar' }, h('h2', {}, 'Dead-letter queue'), h('span', { class: 'spacer' }), replaySelected, purgeSelected),
      h('div', { class: 'table-wrap' }, h('table', { class: 'dlq' },
        h('thead', {}, h('tr', {},
          h('th', { class: 'check' }, all), h('th', {}, 'Job'), h('th', {}, 'Handler'),
          h('th', { class: 'num' }, 'Attempts'), h('th', {}, 'Dead since'), h('th', {}, 'Outcome'),
          h('th', {}, 'Last error'), h('th', { class: 'num' }, 'Replays'), h('th', {}))),
        h('tbody', {}, rows))));
  }

  async function tick(forceList = false) {
    const [q] = await Promise.all([
      getQueue(queue),
      pollEvents(queue).catch(() => {}),
    ]);
    paused = q.paused;
    statusBadge.replaceChildren(paused ? badge('paused', 'paused') : '');
    pauseButton.textContent = paused ? 'Resume' : 'Pause';
    for (const { state: s, tile, value } of tileList) {
      value.textContent = fmtCount(q.counts[s]);
      tile.classList.toggle('nonzero', q.counts[s] > 0);
    }
    eventsOff = q.config.events_maxlen === 0;
    chart.update([queue], eventsOff ? 'Events are off for this queue (events_maxlen 0): no throughput to chart.' : null);
    if (Date.now() - durationsAt > DURATIONS_EVERY_MS) {
      durationsAt = Date.now();
      durations.update(await getDurations(queue, WINDOW_S, BUCKET_S));
    }
    // The list is re-read when its state's count moved (at most every 3 s), not on every
    // poll: a page of jobs carries their payloads.
    const count = q.counts[shown];
    if (forceList || lastCount === null || (count !== lastCount && Date.now() - listedAt > 3000)) {
      lastCount = count;
      await loadList();
    }
  }

  return { root, tick, destroy() { chart.destroy(); durations.destroy(); }, nav: 'queues' };
}
