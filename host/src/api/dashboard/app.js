// The wasmq dashboard: plain JavaScript, no framework, no build step. Everything it shows or
// does goes through the JSON API (docs/api.md) with the token typed into the header, kept in
// this tab's sessionStorage. Views are hash routes:
//
//   #/                          queues, counts per state, throughput of all queues
//   #/queues/<q>?state=<s>      one queue: counts, throughput, jobs in a state (list endpoint)
//   #/queues/<q>/dlq            its dead-letter queue, with replay and purge
//   #/queues/<q>/jobs/<id>      one job: facts, payload, result, every attempt
//   #/handlers, #/handlers/<n>  handlers, their versions, rollback
//   #/schedules                 cron schedules, their next runs, pause and resume
//
// Data is never written as HTML: every string from the server goes in through textContent.

const POLL_MS = 1500;
const QUEUE_LIST_EVERY = 8; // polls between refreshes of the queue list
const REQUEST_TIMEOUT_MS = 15000;
const CHART_SECONDS = 60;
const EVENT_PAGE = 1000;
const EVENT_PAGES_PER_POLL = 5;
const CHARTED_QUEUES_MAX = 20;
const PAGE = 50;
const PREVIEW_CHARS = 4096;
const STATES = ['waiting', 'delayed', 'active', 'retry', 'completed', 'dead'];
const TOKEN_KEY = 'wasmq.api-token';

// ----- small helpers --------------------------------------------------------------------------

const $ = (selector, root = document) => root.querySelector(selector);

/** Builds an element: attributes (`class`, `data-*`, `on<event>` functions, others as given)
 *  and children (nodes, or strings as text; null and false are skipped). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const enc = encodeURIComponent;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const numberFormat = new Intl.NumberFormat('en-US');
const fmtCount = (n) => numberFormat.format(n);
const pad = (n, width = 2) => String(n).padStart(width, '0');

function fmtTime(ms) {
  if (ms === null || ms === undefined) return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1).replace(/\.0+$/, '')} s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
  if (ms < 86_400_000) return `${Math.floor(ms / 3_600_000)} h ${Math.round((ms % 3_600_000) / 60_000)} min`;
  return `${(ms / 86_400_000).toFixed(1)} days`;
}

function fmtRelative(ms) {
  const delta = ms - serverNow();
  const rounded = (d) => fmtDuration(d).replace(/\.\d+ s$/, ' s');
  if (Math.abs(delta) < 1000) return 'now';
  return delta < 0 ? `${rounded(-delta)} ago` : `in ${rounded(delta)}`;
}

/** "3 s ago" / "in 2 min", against the server's clock, kept current by each poll
 *  (updateRelativeTimes); the exact time goes in a title. */
function timeCell(ms, cls = 'nowrap') {
  if (ms === null || ms === undefined) return h('td', { class: `${cls} muted` }, '—');
  return h('td', { class: cls, title: fmtTime(ms), 'data-ms': ms }, fmtRelative(ms));
}

function updateRelativeTimes() {
  for (const cell of document.querySelectorAll('td[data-ms]')) {
    cell.textContent = fmtRelative(Number(cell.dataset.ms));
  }
}

/** Time of day to the millisecond (the date in a title): attempts of one job side by side. */
function clockCell(ms) {
  if (ms === null || ms === undefined) return h('td', { class: 'nowrap muted' }, '—');
  return h('td', { class: 'nowrap', title: fmtTime(ms) }, fmtTime(ms).slice(11));
}

function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function badge(text, cls) {
  return h('span', { class: `badge ${cls}` }, text);
}

const stateBadge = (state) => badge(state, `state-${state}`);

function outcomeBadge(outcome) {
  const cls = outcome === 'ok' ? 'outcome-ok' : outcome === 'fail' ? 'outcome-fail' : 'outcome-failure';
  return badge(outcome, cls);
}

// ----- the server's clock ---------------------------------------------------------------------

// Times in the API are on the Redis clock. The browser's clock may differ from it (another
// machine); the Date header of each answer bounds the difference to a second, which is all the
// chart's one-second buckets need. Under two seconds, we assume one clock.
const skewSamples = [];
let skewMs = 0;

function noteServerDate(header) {
  const server = Date.parse(header || '');
  if (!Number.isFinite(server)) return;
  skewSamples.push(server - Date.now());
  if (skewSamples.length > 20) skewSamples.shift();
  const estimate = Math.max(...skewSamples) + 500;
  skewMs = Math.abs(estimate) < 2000 ? 0 : estimate;
}

const serverNow = () => Date.now() + skewMs;

// ----- API ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const token = () => sessionStorage.getItem(TOKEN_KEY) || '';

async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
  let response;
  try {
    response = await fetch(path, { ...init, signal: controller.signal });
  } catch (err) {
    throw new ApiError(0, err.name === 'AbortError'
      ? `the server did not answer within ${REQUEST_TIMEOUT_MS / 1000} s`
      : `cannot reach the server (${err.message})`);
  } finally {
    clearTimeout(timer);
  }
  noteServerDate(response.headers.get('Date'));
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const message = (data && data.error) || `${response.status} ${response.statusText}`;
    if (response.status === 401) {
      showBanner(`The server needs the API token for this: enter it at the top right. (${message})`);
    }
    throw new ApiError(response.status, message);
  }
  return data;
}

// ----- chrome: banner, toast, live marker, confirmation, token --------------------------------

function showBanner(message) {
  const banner = $('#banner');
  banner.textContent = message;
  banner.hidden = false;
}

function clearBanner() {
  $('#banner').hidden = true;
}

let toastTimer = 0;
function toast(message, { error = false } = {}) {
  const el = $('#toast');
  el.textContent = message;
  el.className = `toast shown${error ? ' error' : ''}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.className = 'toast'; }, error ? 8000 : 4000);
}

function setLive(ok, error) {
  const el = $('#live');
  el.classList.toggle('stale', !ok);
  el.textContent = ok ? 'live' : 'stale';
  el.title = ok ? `Refreshes every ${POLL_MS / 1000} s while this tab is visible`
    : `Last refresh failed: ${error?.message ?? error}`;
}

/** A modal confirmation; resolves true only when the operator pressed the action button. */
function confirmAction({ title, text, ok, danger = false }) {
  const dialog = $('#confirm');
  $('#confirm-title').textContent = title;
  $('#confirm-text').textContent = text;
  const okButton = $('#confirm-ok');
  okButton.textContent = ok;
  okButton.className = danger ? 'danger' : '';
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
    $('#confirm-cancel').focus();
  });
}

function setupToken() {
  const form = $('#token-form');
  const input = $('#token');
  const reflect = () => {
    form.classList.toggle('set', Boolean(token()));
    input.placeholder = token() ? 'set for this tab' : 'not set';
  };
  input.value = token();
  reflect();
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
    reflect();
    clearBanner();
    toast(value ? 'API token set for this tab' : 'API token cleared');
    refreshSoon();
  });
  $('#token-forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    input.value = '';
    reflect();
    toast('API token forgotten');
  });
}

/** Runs an action the operator asked for, with its outcome as a toast. */
async function act(button, work) {
  if (button) button.disabled = true;
  try {
    await work();
  } catch (err) {
    toast(err.message, { error: true });
  } finally {
    if (button) button.disabled = false;
  }
}

// ----- throughput: completed (and failed) per second, from the events stream ------------------

// One tracker per queue, kept across views so the chart does not start over on navigation.
// The events stream's ids are `<ms>-<n>` on the Redis clock, so each transition lands in the
// second it happened in, however late it is read. A `completed` event names every job one
// script call completed; `retried` and `dead` count as failures.
const trackers = new Map();

async function pollEvents(queue) {
  const now = serverNow();
  let t = trackers.get(queue);
  if (!t) {
    t = { after: `${Math.max(0, now - (CHART_SECONDS + 2) * 1000)}-0`, buckets: new Map(), polledAt: 0 };
    trackers.set(queue, t);
  }
  let full = false;
  for (let page = 0; page < EVENT_PAGES_PER_POLL; page += 1) {
    const res = await api(`/api/queues/${enc(queue)}/events?after=${enc(t.after)}&limit=${EVENT_PAGE}`);
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

/** The last CHART_SECONDS complete seconds, summed over `queues`. */
function series(queues) {
  // Up to the last second every charted queue has been read past (now, before any read).
  const polled = queues.length ? Math.min(...queues.map((q) => trackers.get(q)?.polledAt ?? 0)) : 0;
  const end = Math.floor((polled || serverNow()) / 1000) - 1;
  const completed = [];
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

function niceCeil(v) {
  if (v <= 5) return 5;
  const exp = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * exp >= v) return m * exp;
  return 10 * exp;
}

function drawChart(canvas, data) {
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const ctx = canvas.getContext('2d');
  ctx.scale(dpr, dpr);
  ctx.clearRect(0, 0, width, height);
  const left = 44;
  const right = 8;
  const top = 8;
  const bottom = 20;
  const w = width - left - right;
  const hgt = height - top - bottom;
  const max = niceCeil(1.1 * Math.max(1, ...data.completed, ...data.failed));
  const n = data.completed.length;
  const x = (i) => left + (n <= 1 ? 0 : (i / (n - 1)) * w);
  const y = (v) => top + hgt - (v / max) * hgt;

  ctx.font = '11px system-ui, sans-serif';
  ctx.fillStyle = '#8a93a6';
  ctx.strokeStyle = '#eceef2';
  ctx.lineWidth = 1;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  for (const v of [0, max / 2, max]) {
    ctx.beginPath();
    ctx.moveTo(left, Math.round(y(v)) + 0.5);
    ctx.lineTo(left + w, Math.round(y(v)) + 0.5);
    ctx.stroke();
    ctx.fillText(`${fmtCount(v)}/s`, left - 6, y(v));
  }
  ctx.textBaseline = 'top';
  ctx.textAlign = 'left';
  ctx.fillText(`${CHART_SECONDS} s ago`, left, top + hgt + 5);
  ctx.textAlign = 'center';
  ctx.fillText(`${CHART_SECONDS / 2} s`, left + w / 2, top + hgt + 5);
  ctx.textAlign = 'right';
  ctx.fillText('now', left + w, top + hgt + 5);

  const line = (values, stroke, fill) => {
    ctx.beginPath();
    values.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
    if (fill) {
      ctx.save();
      ctx.lineTo(x(n - 1), y(0));
      ctx.lineTo(x(0), y(0));
      ctx.closePath();
      ctx.fillStyle = fill;
      ctx.fill();
      ctx.restore();
      ctx.beginPath();
      values.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
    }
    ctx.strokeStyle = stroke;
    ctx.lineWidth = 1.8;
    ctx.lineJoin = 'round';
    ctx.stroke();
  };
  if (data.failed.some((v) => v > 0)) line(data.failed, '#c23434', null);
  line(data.completed, '#1f8a4c', 'rgba(31, 138, 76, 0.12)');
}

/** A throughput panel: rate now, legend, canvas. `update(queues, note)` redraws it. */
function throughputPanel(title) {
  const rate = h('div', { class: 'rate' }, '—');
  const note = h('p', { class: 'muted' });
  note.hidden = true;
  const canvas = h('canvas', { 'aria-label': 'Jobs completed per second, last minute', role: 'img' });
  const panel = h('section', { class: 'panel', 'data-chart': 'throughput' },
    h('h2', {}, title, h('span', { class: 'legend' },
      h('span', { class: 'key completed' }, 'completed/s'),
      h('span', { class: 'key failed' }, 'failed/s (retried or dead)'))),
    rate, h('div', { class: 'chart' }, canvas), note);
  let last = null;
  const redraw = () => { if (last) drawChart(canvas, last); };
  window.addEventListener('resize', redraw);
  return {
    el: panel,
    update(queues, message) {
      last = series(queues);
      const recent = last.completed.slice(-10);
      const failed = last.failed.slice(-10).reduce((a, b) => a + b, 0) / 10;
      const avg = recent.reduce((a, b) => a + b, 0) / recent.length;
      rate.replaceChildren(`${avg.toFixed(avg < 10 ? 1 : 0)} `,
        h('small', {}, `completed/s over the last 10 s${failed ? `, ${failed.toFixed(1)} failed/s` : ''}`));
      note.hidden = !message;
      note.textContent = message || '';
      redraw();
    },
    destroy() { window.removeEventListener('resize', redraw); },
  };
}

// ----- views ----------------------------------------------------------------------------------

let knownQueues = null;
let knownQueuesComplete = true;
let pollCount = 0;

async function queueList(force = false) {
  if (force || knownQueues === null || pollCount % QUEUE_LIST_EVERY === 0) {
    const res = await api('/api/queues');
    knownQueues = res.queues;
    knownQueuesComplete = res.complete;
  }
  return knownQueues;
}

function title(text, ...extra) {
  return h('div', { class: 'title' }, h('h1', {}, text), ...extra);
}

function crumbs(...links) {
  return h('div', { class: 'crumbs' }, links.flatMap((l, i) => (i ? [' / ', l] : [l])));
}

/** #/ : every queue with its counts, and the throughput of them all. */
function overviewView() {
  const chart = throughputPanel('Throughput, all queues');
  const tbody = h('tbody');
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
    const details = await Promise.all(names.map((q) => api(`/api/queues/${enc(q)}`)
      .catch((err) => ({ name: q, error: err }))));
    const charted = names.slice(0, CHARTED_QUEUES_MAX);
    await Promise.all(charted.map((q) => pollEvents(q).catch(() => {})));
    const trs = details.map((d) => {
      const entry = row(d.name);
      if (d.error) {
        entry.status.replaceChildren(badge('error', 'state-dead'));
        entry.status.title = d.error.message;
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
      if (trackers.has(d.name)) {
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

/** #/queues/<q> and #/queues/<q>/dlq : counts, throughput, and one state's jobs. */
function queueView(queue, { state, offset, dlq }) {
  const chart = throughputPanel('Throughput');
  const tiles = h('div', { class: 'tiles' });
  const pauseButton = h('button', { class: 'quiet' }, '…');
  const statusBadge = h('span');
  const list = h('section', { class: 'panel' });
  const root = h('div', {},
    crumbs(h('a', { href: '#/' }, 'Queues'), queue),
    title(queue, statusBadge, h('span', { class: 'spacer' }), pauseButton),
    tiles, chart.el, list);
  let paused = false;
  let lastCount = null;
  let listedAt = 0;
  let selected = new Set();
  let eventsOff = false;
  const shown = dlq ? 'dead' : state;

  pauseButton.addEventListener('click', () => act(pauseButton, async () => {
    if (!paused) {
      const ok = await confirmAction({
        title: `Pause ${queue}?`,
        text: 'Hosts stop starting its jobs; jobs running now finish. Enqueueing still works.',
        ok: 'Pause',
      });
      if (!ok) return;
    }
    const res = await api(`/api/queues/${enc(queue)}/${paused ? 'resume' : 'pause'}`, { method: 'POST' });
    toast(`${queue} ${res.paused ? 'paused' : 'resumed'}${res.changed ? '' : ' (it already was)'}`);
    await tick();
  }));

  // Built once and updated in place, so that a click is never lost to a refresh.
  const tileValues = {};
  tiles.append(...STATES.map((s) => {
    tileValues[s] = h('div', { class: 'value' }, '…');
    return h('a', {
      class: `tile state-${s}${s === shown ? ' selected' : ''}`,
      href: s === 'dead' ? `#/queues/${enc(queue)}/dlq` : `#/queues/${enc(queue)}?state=${s}`,
      'data-state': s,
    }, h('div', { class: 'label' }, s), tileValues[s]);
  }));

  async function loadList() {
    listedAt = Date.now();
    const page = dlq
      ? await api(`/api/queues/${enc(queue)}/dlq?offset=${offset}&limit=${PAGE}`)
      : await api(`/api/queues/${enc(queue)}/jobs?state=${enc(state)}&offset=${offset}&limit=${PAGE}`);
    selected = new Set([...selected].filter((id) => page.jobs.some((j) => j.id === id)));
    list.replaceChildren(
      dlq ? dlqTable(page.jobs) : h('div', {}, h('h2', {}, `${state[0].toUpperCase()}${state.slice(1)} jobs`), jobsTable(page.jobs)),
      pager(page.jobs.length));
  }

  function pager(count) {
    const base = dlq ? `#/queues/${enc(queue)}/dlq?` : `#/queues/${enc(queue)}?state=${state}&`;
    const prev = offset > 0 ? h('a', { href: `${base}offset=${Math.max(0, offset - PAGE)}` }, '← newer page') : null;
    const next = count === PAGE ? h('a', { href: `${base}offset=${offset + PAGE}` }, 'next page →') : null;
    const refresh = h('button', { class: 'quiet small', onclick: () => act(refresh, loadList) }, 'Refresh');
    return h('div', { class: 'pager' },
      count ? h('span', { class: 'muted' }, `${offset + 1}–${offset + count}`) : null, prev, next, refresh);
  }

  function jobsTable(jobs) {
    const when = { waiting: 'Created', delayed: 'Due', active: 'Lease expires', retry: 'Retry due', completed: 'Finished' }[state];
    const time = (j) => ({ waiting: j.created_at_ms, delayed: j.run_at_ms, retry: j.run_at_ms, active: j.lease_expires_at_ms, completed: j.finished_at_ms }[state]);
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
    const res = await api(`/api/queues/${enc(queue)}/dlq/${replay ? 'replay' : 'purge'}`, { method: 'POST', body: { ids } });
    const skipped = res.skipped.length ? `; ${res.skipped.length} skipped (no longer dead)` : '';
    toast(`${replay ? 'Replayed' : 'Purged'} ${res.done.length} job${res.done.length === 1 ? '' : 's'}${skipped}`);
    selected = new Set();
    await tick(true);
  }

  function dlqTable(jobs) {
    if (!jobs.length) return h('p', { class: 'empty' }, offset ? 'No more dead jobs.' : 'The dead-letter queue is empty.');
    const replaySelected = h('button', { class: 'small' }, 'Replay selected');
    const purgeSelected = h('button', { class: 'small danger' }, 'Purge selected');
    const all = h('input', { type: 'checkbox', 'aria-label': 'Select every job on this page' });
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
      api(`/api/queues/${enc(queue)}`),
      pollEvents(queue).catch(() => {}),
    ]);
    paused = q.paused;
    statusBadge.replaceChildren(paused ? badge('paused', 'paused') : '');
    pauseButton.textContent = paused ? 'Resume' : 'Pause';
    for (const s of STATES) {
      tileValues[s].textContent = fmtCount(q.counts[s]);
      tileValues[s].parentElement.classList.toggle('nonzero', q.counts[s] > 0);
    }
    eventsOff = q.config.events_maxlen === 0;
    chart.update([queue], eventsOff ? 'Events are off for this queue (events_maxlen 0): no throughput to chart.' : null);
    // The list is re-read when its state's count moved (at most every 3 s), not on every
    // poll: a page of jobs carries their payloads.
    const count = q.counts[shown];
    if (forceList || lastCount === null || (count !== lastCount && Date.now() - listedAt > 3000)) {
      lastCount = count;
      await loadList();
    }
  }

  return { root, tick, destroy: chart.destroy, nav: 'queues' };
}

function preview(text, encoding) {
  if (text === null || text === undefined) return h('p', { class: 'muted' }, 'none');
  let shown = text;
  let note = encoding === 'base64' ? 'not UTF-8: shown as base64' : null;
  if (encoding === 'utf8' && /^\s*[[{]/.test(text) && text.length < 256 * 1024) {
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch { /* not JSON: as is */ }
  }
  const size = encoding === 'base64'
    ? Math.floor((text.length * 3) / 4) - (text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0)
    : new TextEncoder().encode(text).length;
  const pre = h('pre', { class: 'payload' }, shown.length > PREVIEW_CHARS ? `${shown.slice(0, PREVIEW_CHARS)}…` : shown);
  const more = shown.length > PREVIEW_CHARS
    ? h('button', { class: 'quiet small', onclick: (e) => { pre.textContent = shown; e.target.remove(); } }, 'Show all')
    : null;
  return h('div', {}, pre, h('p', { class: 'muted' }, `${fmtBytes(size)}`, note ? ` · ${note}` : '', ' ', more));
}

/** Log lines as the API may carry them: a string, or a list of strings or records. */
function logText(logs) {
  if (typeof logs === 'string') return logs;
  if (Array.isArray(logs)) return logs.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n');
  return JSON.stringify(logs, null, 2);
}

/** #/queues/<q>/jobs/<id> : one job. */
function jobView(queue, id) {
  const root = h('div', {},
    crumbs(h('a', { href: '#/' }, 'Queues'), h('a', { href: `#/queues/${enc(queue)}` }, queue), id),
    h('p', { class: 'muted' }, 'Loading…'));
  let job = null;

  async function cancel(button) {
    const ok = await confirmAction({
      title: `Cancel job ${id}?`,
      text: 'It has not started; it is deleted and will not run.',
      ok: 'Cancel job',
      danger: true,
    });
    if (!ok) return;
    await api(`/api/queues/${enc(queue)}/jobs/${enc(id)}`, { method: 'DELETE' });
    toast(`Cancelled job ${id}`);
    location.hash = `#/queues/${enc(queue)}`;
    button.disabled = true;
  }

  async function replay() {
    const ok = await confirmAction({
      title: `Replay job ${id}?`,
      text: 'It goes back to waiting with its attempts reset (history kept), and runs again.',
      ok: 'Replay',
    });
    if (!ok) return;
    const res = await api(`/api/queues/${enc(queue)}/dlq/replay`, { method: 'POST', body: { ids: [id] } });
    toast(res.done.length ? `Replayed job ${id}` : `Job ${id} was not dead any more`);
    job = null;
    await tick();
  }

  function render(j) {
    const actions = [];
    if (['waiting', 'delayed', 'retry'].includes(j.state)) {
      const b = h('button', { class: 'danger' }, 'Cancel job');
      b.addEventListener('click', () => act(b, () => cancel(b)));
      actions.push(b);
    }
    if (j.state === 'dead') {
      const b = h('button', {}, 'Replay');
      b.addEventListener('click', () => act(b, replay));
      actions.push(b);
    }
    const fact = (label, value) => [h('dt', {}, label), h('dd', {}, value ?? '—')];
    const backoff = j.backoff.kind === 'fixed'
      ? `fixed ${fmtDuration(j.backoff.delay_ms)}`
      : `exponential from ${fmtDuration(j.backoff.delay_ms)}${j.backoff.cap_ms ? ` up to ${fmtDuration(j.backoff.cap_ms)}` : ''}`;
    const progress = typeof j.progress === 'number'
      ? h('section', { class: 'panel' }, h('h2', {}, `Progress ${j.progress}%`),
        h('div', { class: 'progress' }, (() => { const bar = h('div'); bar.style.width = `${Math.max(0, Math.min(100, j.progress))}%`; return bar; })()))
      : null;

    const hasVersion = j.history.some((a) => a.version !== undefined && a.version !== null);
    const hasLogs = j.history.some((a) => a.logs !== undefined && a.logs !== null);
    const attempts = j.history.map((a) => {
      const row = h('tr', { 'data-attempt': a.attempt },
        h('td', { class: 'num' }, a.attempt),
        h('td', {}, outcomeBadge(a.outcome)),
        clockCell(a.started_at_ms),
        h('td', { class: 'num nowrap' }, fmtDuration(a.finished_at_ms - a.started_at_ms)),
        h('td', { class: 'mono' }, a.host),
        hasVersion ? h('td', { class: 'mono' }, a.version ?? '—') : null,
        h('td', { class: 'error' }, a.error));
      const logs = hasLogs && a.logs !== undefined && a.logs !== null
        ? h('tr', { class: 'logs' }, h('td'), h('td', { colspan: hasVersion ? 6 : 5 },
          h('pre', { class: 'payload logs' }, logText(a.logs))))
        : null;
      return [row, logs];
    });
    if (j.state === 'active') {
      attempts.push(h('tr', { 'data-attempt': j.attempt, class: 'running' },
        h('td', { class: 'num' }, j.attempt), h('td', {}, stateBadge('active')),
        clockCell(j.started_at_ms), h('td', { class: 'num nowrap' }, `running ${fmtDuration(serverNow() - j.started_at_ms)}`),
        h('td', { class: 'mono' }, j.host ?? ''), hasVersion ? h('td') : null,
        h('td', { class: 'muted' }, `lease expires ${fmtTime(j.lease_expires_at_ms)}`)));
    }
    const jobLogs = j.logs !== undefined && j.logs !== null
      ? h('section', { class: 'panel' }, h('h2', {}, 'Captured logs'), h('pre', { class: 'payload logs' }, logText(j.logs)))
      : null;

    root.replaceChildren();
    append(root, [
      crumbs(h('a', { href: '#/' }, 'Queues'), h('a', { href: `#/queues/${enc(queue)}` }, queue), `job ${id}`),
      title(`Job ${j.id}`, stateBadge(j.state), h('span', { class: 'spacer' }), actions),
      h('div', { class: 'grid2' },
        h('section', { class: 'panel' }, h('h2', {}, 'Job'), h('dl', { class: 'facts' },
          fact('Handler', h('a', { href: `#/handlers/${enc(j.handler)}` }, j.handler)),
          fact('Queue', h('a', { href: `#/queues/${enc(j.queue)}` }, j.queue)),
          fact('State', stateBadge(j.state)),
          fact('Attempt', `${j.attempt} of ${j.max_attempts}`),
          fact('Priority', String(j.priority)),
          fact('Group', j.group),
          fact('Backoff', backoff),
          fact('Timeout', j.timeout_ms === null ? "the handler's" : fmtDuration(j.timeout_ms)),
          fact('Replays', String(j.replays)))),
        h('section', { class: 'panel' }, h('h2', {}, 'Times'), h('dl', { class: 'facts' },
          fact('Created', fmtTime(j.created_at_ms)),
          fact('Due', j.run_at_ms === null ? null : fmtTime(j.run_at_ms)),
          fact('Started', j.started_at_ms === null ? null : fmtTime(j.started_at_ms)),
          fact('Finished', j.finished_at_ms === null ? null : fmtTime(j.finished_at_ms)),
          fact('Lease expires', j.lease_expires_at_ms === null ? null : fmtTime(j.lease_expires_at_ms)),
          fact('Host', j.host),
          fact('Last failure', j.last_outcome ? outcomeBadge(j.last_outcome) : null),
          fact('Its error', j.last_error)))),
      progress,
      h('section', { class: 'panel' },
        h('h2', {}, 'Attempts', h('span', { class: 'muted' }, `${j.history.length} finished`)),
        attempts.length
          ? h('div', { class: 'table-wrap' }, h('table', { class: 'attempts' },
            h('thead', {}, h('tr', {},
              h('th', { class: 'num' }, '#'), h('th', {}, 'Outcome'), h('th', {}, 'Started'),
              h('th', { class: 'num' }, 'Duration'), h('th', {}, 'Host'),
              hasVersion ? h('th', {}, 'Handler version') : null, h('th', {}, 'Error'))),
            h('tbody', {}, attempts)))
          : h('p', { class: 'empty' }, 'No attempt yet.')),
      jobLogs,
      h('div', { class: 'grid2' },
        h('section', { class: 'panel' }, h('h2', {}, 'Payload'), preview(j.payload, j.payload_encoding)),
        h('section', { class: 'panel' }, h('h2', {}, 'Result'), preview(j.result, j.result_encoding)))]);
  }

  async function tick() {
    // A finished job changes only by an operator's action: no need to re-read it each poll.
    if (job && ['completed', 'dead'].includes(job.state)) return;
    try {
      job = await api(`/api/queues/${enc(queue)}/jobs/${enc(id)}`);
    } catch (err) {
      if (err.status !== 404) throw err;
      root.replaceChildren(crumbs(h('a', { href: '#/' }, 'Queues'), h('a', { href: `#/queues/${enc(queue)}` }, queue), id),
        h('p', { class: 'empty' }, `No job ${id} in queue ${queue}: it was cancelled, purged, or removed by the queue's retention.`));
      job = { state: 'completed' };
      return;
    }
    render(job);
  }

  return { root, tick, destroy() {}, nav: 'queues' };
}

// Column titles of a handler version, with whether each is a number (right-aligned).
const handlerColumns = [['Deployed', false], ['SHA-256', false], ['Size', true], ['Memory', true],
  ['Timeout', true], ['Fuel', true], ['Attempts', true], ['Backoff', false], ['Concurrency', true],
  ['Grants', false]];
// What a version may reach outside its sandbox: outbound patterns, config keys, secret names,
// key-value buckets, databases with the secret holding each URL (the API never gives a
// config value, a secret or a URL), and where its child jobs may go besides its own queue.
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

/** #/handlers : the current version of every handler in the registry. */
function handlersView() {
  const body = h('section', { class: 'panel' }, h('p', { class: 'muted' }, 'Loading…'));
  const root = h('div', {}, title('Handlers'), body,
    h('p', { class: 'muted' }, 'Handlers deployed to the registry (wasmq handler deploy). ' +
      'Handlers a host was started with (--handler) override these on that host and are not listed.'));
  let loaded = false;
  async function tick() {
    if (loaded && pollCount % QUEUE_LIST_EVERY !== 0) return;
    const res = await api('/api/handlers');
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

/** #/handlers/<name> : every version, and rollback. */
function handlerView(name) {
  const body = h('section', { class: 'panel' }, h('p', { class: 'muted' }, 'Loading…'));
  const root = h('div', {}, crumbs(h('a', { href: '#/handlers' }, 'Handlers'), name), title(name), body);
  let loaded = false;

  async function makeCurrent(v, current) {
    const back = v.version < current;
    const ok = await confirmAction({
      title: `${back ? 'Roll back' : 'Switch'} ${name} to version ${v.version}?`,
      text: `Every host runs version ${v.version} for jobs that start from now on; jobs running now ` +
        `finish on the version they started with. Version ${current} stays in the registry.`,
      ok: back ? 'Roll back' : 'Switch',
    });
    if (!ok) return;
    const res = await api(`/api/handlers/${enc(name)}/rollback`, { method: 'POST', body: { version: v.version } });
    toast(`${name}: version ${res.version} is current`);
    loaded = false;
    await tick();
  }

  async function tick() {
    if (loaded && pollCount % QUEUE_LIST_EVERY !== 0) return;
    let res;
    try {
      res = await api(`/api/handlers/${enc(name)}/versions`);
    } catch (err) {
      if (err.status !== 404) throw err;
      body.replaceChildren(h('p', { class: 'empty' }, `No handler named ${name} in the registry.`));
      loaded = true;
      return;
    }
    loaded = true;
    body.replaceChildren(h('div', { class: 'table-wrap' }, h('table', { class: 'versions' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Version'), handlerHeads(), h('th'))),
      h('tbody', {}, [...res.versions].reverse().map((v) => {
        let action = null;
        if (!v.current) {
          action = h('button', { class: 'small quiet' }, v.version < res.current ? 'Roll back to this' : 'Make current');
          action.addEventListener('click', () => act(action, () => makeCurrent(v, res.current)));
        }
        return h('tr', { 'data-version': v.version },
          h('td', {}, `v${v.version} `, v.current ? badge('current', 'current') : null),
          handlerCells(v),
          h('td', { class: 'actions' }, action));
      })))));
  }
  return { root, tick, destroy() {}, nav: 'handlers' };
}

/** An RFC 3339 time as the API gives it, easier to read: "2026-01-02 09:00:00 +09:00", and
 *  "2026-01-02 00:00:00 UTC" for UTC. */
const fmtRfc3339 = (s) => s.replace('T', ' ').replace(/(\.\d+)?([+-]\d\d:\d\d|Z)$/,
  (_, frac, zone) => `${frac ?? ''} ${zone === 'Z' || zone === '+00:00' ? 'UTC' : zone}`);

/** #/schedules : every cron schedule, its next runs (in its zone and in UTC), pause, resume. */
function schedulesView() {
  const body = h('section', { class: 'panel' }, h('p', { class: 'muted' }, 'Loading…'));
  const root = h('div', {}, title('Schedules'), body,
    h('p', { class: 'muted' }, 'Each schedule enqueues one job per tick of its cron expression, read in its ' +
      'time zone (wasmq schedule add; docs/schedules.md). Times are the next ticks; a paused schedule ' +
      'enqueues nothing until resumed.'));
  let loaded = false;
  let nextDue = Infinity;

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
    const res = await api(`/api/schedules/${enc(s.name)}/${pause ? 'pause' : 'resume'}`, { method: 'POST' });
    toast(`Schedule ${s.name} ${res.paused ? 'paused' : 'resumed'}${res.changed ? '' : ' (it already was)'}`);
    loaded = false;
    await tick();
  }

  function runs(s) {
    if (!s.next_runs.length) return h('td', { class: 'muted' }, 'none');
    return h('td', { class: `runs${s.paused ? ' muted' : ''}` }, s.next_runs.map((r) => h('div', {
      class: 'run', 'data-local': r.local, 'data-utc': r.utc,
    }, h('span', { class: 'mono local' }, fmtRfc3339(r.local)),
    r.local === r.utc ? null : h('span', { class: 'mono utc' }, fmtRfc3339(r.utc)))));
  }

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
    if (loaded && pollCount % QUEUE_LIST_EVERY !== 0 && serverNow() < nextDue) return;
    const res = await api('/api/schedules');
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

function notFoundView(what) {
  return {
    root: h('div', {}, title('Not found'), h('p', {}, `Nothing here: ${what}. `, h('a', { href: '#/' }, 'Back to the queues'))),
    tick: async () => {},
    destroy() {},
    nav: null,
  };
}

// ----- routing and the poll loop --------------------------------------------------------------

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
  if (parts[0] === 'queues' && parts.length === 2) {
    const state = query.get('state') || 'waiting';
    if (!STATES.includes(state)) return notFoundView(`no state ${state}`);
    return queueView(parts[1], { state, offset, dlq: state === 'dead' });
  }
  if (parts[0] === 'queues' && parts.length === 3 && parts[2] === 'dlq') {
    return queueView(parts[1], { state: 'dead', offset, dlq: true });
  }
  if (parts[0] === 'queues' && parts.length === 4 && parts[2] === 'jobs') return jobView(parts[1], parts[3]);
  if (parts[0] === 'handlers' && parts.length === 1) return handlersView();
  if (parts[0] === 'handlers' && parts.length === 2) return handlerView(parts[1]);
  if (parts[0] === 'schedules' && parts.length === 1) return schedulesView();
  return notFoundView(hash);
}

let view = null;
let wake = null;

async function refresh(target) {
  try {
    await target.tick();
    updateRelativeTimes();
    if (target === view) setLive(true);
  } catch (err) {
    if (target !== view) return;
    setLive(false, err);
    if (err.status !== 401) showBanner(err.message);
  }
}

function show() {
  if (view) view.destroy();
  clearBanner();
  view = route();
  for (const link of document.querySelectorAll('[data-nav]')) {
    link.classList.toggle('current', link.dataset.nav === view.nav);
  }
  $('#view').replaceChildren(view.root);
  window.scrollTo(0, 0);
  refresh(view);
}

/** Runs the current view's next refresh now instead of at the next tick. */
function refreshSoon() {
  if (wake) wake();
}

async function pollLoop() {
  for (;;) {
    await Promise.race([sleep(POLL_MS), new Promise((resolve) => { wake = resolve; })]);
    wake = null;
    if (document.hidden || !view) continue;
    pollCount += 1;
    await refresh(view);
  }
}

setupToken();
window.addEventListener('hashchange', show);
show();
pollLoop();
