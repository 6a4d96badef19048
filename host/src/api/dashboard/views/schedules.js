// @ts-check
// #/schedules : every cron schedule, its next runs (in its zone and in UTC), pause, resume.

import { listSchedules, pauseSchedule } from '../api.js';
import { act, confirmAction, toast } from '../chrome.js';
import { serverNow } from '../clock.js';
import { badge, enc, h, timeCell, title } from '../dom.js';
import { fmtRfc3339 } from '../format.js';
import { slowPollDue } from '../poll.js';

/** @typedef {import('../api.js').ScheduleView} ScheduleView */
/** @typedef {import('../poll.js').View} View */

/** @returns {View} */
export function schedulesView() {
  const body = h('section', { class: 'panel' }, h('p', { class: 'muted' }, 'Loading…'));
  const root = h('div', {}, title('Schedules'), body,
    h('p', { class: 'muted' }, 'Each schedule enqueues one job per tick of its cron expression, read in its ' +
      'time zone (wasmq schedule add; docs/schedules.md). Times are the next ticks; a paused schedule ' +
      'enqueues nothing until resumed.'));
  let loaded = false;
  let nextDue = Infinity;

  /** @param {ScheduleView} s @param {boolean} pause */
  async function setPaused(s, pause) {
    if (pause) {
      const ok = await confirmAction({
        title: `Pause schedule ${s.name}?`,
        text: `It enqueues no job until resumed. Ticks that fall while it is paused are missed: on resume, ` +
          (s.catch_up ? `the ${s.catch_up} most recent of them are enqueued, the rest skipped.` : 'they are skipped.'),
        ok: 'Pause',
      });
      if (!ok) return;
    }
    const res = await pauseSchedule(s.name, pause);
    toast(`Schedule ${s.name} ${res.paused ? 'paused' : 'resumed'}${res.changed ? '' : ' (it already was)'}`);
    loaded = false;
    await tick();
  }

  /** @param {ScheduleView} s */
  function runs(s) {
    if (!s.next_runs.length) return h('td', { class: 'muted' }, 'none');
    return h('td', { class: `runs${s.paused ? ' muted' : ''}` }, s.next_runs.map((r) => h('div', {
      class: 'run', 'data-local': r.local, 'data-utc': r.utc,
    }, h('span', { class: 'mono local' }, fmtRfc3339(r.local)),
    r.local === r.utc ? null : h('span', { class: 'mono utc' }, fmtRfc3339(r.utc)))));
  }

  /** @param {ScheduleView} s */
  function row(s) {
    const button = h('button', { class: s.paused ? 'small' : 'small quiet' }, s.paused ? 'Resume' : 'Pause');
    button.addEventListener('click', () => act(button, () => setPaused(s, !s.paused)));
    const next = s.next_runs.length ? Date.parse(s.next_runs[0].utc) : null;
    return h('tr', { 'data-schedule': s.name },
      h('td', { class: 'nowrap', title: s.payload ? `payload: ${s.payload.slice(0, 200)}` : null }, s.name),
      h('td', { class: 'mono nowrap' }, s.cron),
      h('td', { class: 'nowrap' }, s.tz),
      h('td', {}, h('a', { href: `#/queues/${enc(s.queue)}` }, s.queue)),
      h('td', {}, h('a', { href: `#/handlers/${enc(s.handler)}` }, s.handler)),
      h('td', { class: 'status' }, s.paused ? badge('paused', 'paused') : badge('active', 'running')),
      s.paused ? h('td', { class: 'nowrap muted', title: 'paused: it runs again once resumed' }, '—') : timeCell(next),
      runs(s),
      h('td', { class: 'num' }, s.catch_up),
      h('td', { class: 'actions' }, button));
  }

  async function tick() {
    // Read again every few polls, after an action, and once the first next run has passed.
    if (loaded && !slowPollDue() && serverNow() < nextDue) return;
    const res = await listSchedules();
    loaded = true;
    nextDue = Math.min(Infinity, ...res.schedules.filter((s) => s.next_runs.length)
      .map((s) => Date.parse(s.next_runs[0].utc) + 1000));
    body.replaceChildren(res.schedules.length
      ? h('div', { class: 'table-wrap' }, h('table', { class: 'schedules' },
        h('thead', {}, h('tr', {},
          h('th', {}, 'Schedule'), h('th', {}, 'Cron'), h('th', {}, 'Time zone'), h('th', {}, 'Queue'),
          h('th', {}, 'Handler'), h('th', {}, 'Status'), h('th', {}, 'Next run'),
          h('th', {}, 'Next runs (its zone · UTC)'), h('th', { class: 'num', title: 'Missed ticks enqueued on resume' }, 'Catch-up'),
          h('th'))),
        h('tbody', {}, res.schedules.map(row))))
      : h('p', { class: 'empty' }, 'No schedules yet: add one with wasmq schedule add, or POST /api/schedules/<name>.'));
  }
  return { root, tick, destroy() {}, nav: 'schedules' };
}
