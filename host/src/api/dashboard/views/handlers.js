// @ts-check
// #/handlers : the current version of every handler in the registry; #/handlers/<name> : every
// version of one, and rollback. One module for both: they share the version columns.

import { handlerVersions, isStatus, listHandlers, rollback } from '../api.js';
import { act, confirmAction, toast } from '../chrome.js';
import { badge, crumbs, enc, h, timeCell, title } from '../dom.js';
import { fmtBytes, fmtDuration } from '../format.js';
import { slowPollDue } from '../poll.js';

/** @typedef {import('../api.js').VersionView} VersionView */
/** @typedef {import('../poll.js').View} View */

/** Column titles of a handler version, with whether each is a number (right-aligned).
 *  @type {[string, boolean][]} */
const handlerColumns = [['Deployed', false], ['SHA-256', false], ['Size', true], ['Memory', true],
  ['Timeout', true], ['Fuel', true], ['Attempts', true], ['Backoff', false], ['Concurrency', true],
  ['Grants', false]];

/** What a version may reach outside its sandbox: outbound patterns, config keys, secret names,
 *  key-value buckets, databases with the secret holding each URL (the API never gives a
 *  config value, a secret or a URL), and where its child jobs may go besides its own queue.
 *  @param {VersionView} v */
const grantsText = (v) => [
  ...(v.allow_outbound ?? []).map((p) => `outbound ${p}`),
  ...(v.config ?? []).map((k) => `config ${k}`),
  ...(v.secrets ?? []).map((s) => `secret ${s}`),
  ...(v.kv ?? []).map((b) => `kv ${b}`),
  ...Object.entries(v.databases ?? {}).map(([name, source]) => `database ${name} = ${source}`),
  ...(v.may_enqueue ?? []).map((t) => `may enqueue ${t}`),
  ...(v.may_enqueue_raw_ids ?? []).map((t) => `may enqueue ${t} (raw ids)`),
].join('\n') || '—';

const handlerHeads = () => handlerColumns.map(([c, num]) => h('th', { class: num ? 'num' : null }, c));

/** @param {VersionView} v */
const handlerCells = (v) => [
  timeCell(v.deployed_at_ms),
  h('td', { class: 'mono', title: v.sha256 }, v.sha256.slice(0, 12)),
  h('td', { class: 'num' }, fmtBytes(v.size)),
  h('td', { class: 'num' }, fmtBytes(v.memory)),
  h('td', { class: 'num' }, fmtDuration(v.timeout_ms)),
  h('td', { class: 'num' }, v.fuel ?? '—'),
  h('td', { class: 'num' }, v.max_attempts ?? '—'),
  h('td', {}, v.backoff ?? '—'),
  h('td', { class: 'num' }, v.concurrency ?? '—'),
  h('td', { class: 'grants' }, grantsText(v)),
];

/** #/handlers @returns {View} */
export function handlersView() {
  const body = h('section', { class: 'panel' }, h('p', { class: 'muted' }, 'Loading…'));
  const root = h('div', {}, title('Handlers'), body,
    h('p', { class: 'muted' }, 'Handlers deployed to the registry (wasmq handler deploy). ' +
      'Handlers a host was started with (--handler) override these on that host and are not listed.'));
  let loaded = false;
  async function tick() {
    if (loaded && !slowPollDue()) return;
    const res = await listHandlers();
    loaded = true;
    body.replaceChildren(res.handlers.length
      ? h('div', { class: 'table-wrap' }, h('table', { class: 'handlers' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Handler'), h('th', { class: 'num' }, 'Version'),
          handlerHeads())),
        h('tbody', {}, res.handlers.map((v) => h('tr', { 'data-handler': v.name },
          h('td', {}, h('a', { href: `#/handlers/${enc(v.name)}` }, v.name)),
          h('td', { class: 'num' }, `v${v.version}`),
          handlerCells(v))))))
      : h('p', { class: 'empty' }, 'No handler in the registry yet.'));
  }
  return { root, tick, destroy() {}, nav: 'handlers' };
}

/** #/handlers/<name> @param {string} name @returns {View} */
export function handlerView(name) {
  const body = h('section', { class: 'panel' }, h('p', { class: 'muted' }, 'Loading…'));
  const root = h('div', {}, crumbs(h('a', { href: '#/handlers' }, 'Handlers'), name), title(name), body);
  let loaded = false;

  /** @param {VersionView} v @param {number} current */
  async function makeCurrent(v, current) {
    const back = v.version < current;
    const ok = await confirmAction({
      title: `${back ? 'Roll back' : 'Switch'} ${name} to version ${v.version}?`,
      text: `Every host runs version ${v.version} for jobs that start from now on; jobs running now ` +
        `finish on the version they started with. Version ${current} stays in the registry.`,
      ok: back ? 'Roll back' : 'Switch',
    });
    if (!ok) return;
    const res = await rollback(name, v.version);
    toast(`${name}: version ${res.version} is current`);
    loaded = false;
    await tick();
  }

  async function tick() {
    if (loaded && !slowPollDue()) return;
    let res;
    try {
      res = await handlerVersions(name);
    } catch (err) {
      if (!isStatus(err, 404)) throw err;
      body.replaceChildren(h('p', { class: 'empty' }, `No handler named ${name} in the registry.`));
      loaded = true;
      return;
    }
    loaded = true;
    const current = res.current;
    body.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'versions' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Version'), handlerHeads(), h('th'))),
      h('tbody', {}, [...res.versions].reverse().map((v) => {
        let action = null;
        if (!v.current) {
          const button = h('button', { class: 'small quiet' }, v.version < current ? 'Roll back to this' : 'Make current');
          button.addEventListener('click', () => act(button, () => makeCurrent(v, current)));
          action = button;
        }
        return h('tr', { 'data-version': v.version },
          h('td', {}, `v${v.version} `, v.current ? badge('current', 'current') : null),
          handlerCells(v),
          h('td', { class: 'actions' }, action));
      })))));
  }
  return { root, tick, destroy() {}, nav: 'handlers' };
}
