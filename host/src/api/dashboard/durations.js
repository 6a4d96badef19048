// @ts-check
// Attempt durations per handler over the last hour (GET /api/queues/{q}/durations): one SVG
// chart per handler, p50, p95 and p99 per minute, with the hour's figures beside it. Drawn
// here, SVG through the DOM, like timeline.js.

import { h } from './dom.js';
import { fmtCount, fmtDuration } from './format.js';

/** @typedef {import('./api.js').DurationsView} DurationsView */
/** @typedef {import('./api.js').HandlerDurations} HandlerDurations */

export const WINDOW_S = 3600;
export const BUCKET_S = 60;

const SVG = 'http://www.w3.org/2000/svg';
const HEIGHT = 120;
const LEFT = 56;
const RIGHT = 12;
const TOP = 8;
const BOTTOM = 20;
const SERIES = /** @type {const} */ (['p50', 'p95', 'p99']);

/**
 * @param {string} tag
 * @param {Record<string, string | number>} attrs
 * @param {...(SVGElement | string)} children
 */
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const child of children) el.append(child);
  return el;
}

/** The axis' top: at least 2 ms, the next of 1, 2, 4 times a power of ten, so that its
 *  half (the middle rule) is a whole number of ms. @param {number} v */
function niceCeil(v) {
  if (v <= 2) return 2;
  const exp = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 4, 10]) if (m * exp >= v) return m * exp;
  return 10 * exp;
}

/** @param {SVGSVGElement} chart @param {HandlerDurations} hd @param {DurationsView} view */
function draw(chart, hd, view) {
  const width = Math.max(320, chart.clientWidth || chart.parentElement?.clientWidth || 900);
  chart.setAttribute('viewBox', `0 0 ${width} ${HEIGHT}`);
  chart.setAttribute('height', String(HEIGHT));
  const w = width - LEFT - RIGHT;
  const hgt = HEIGHT - TOP - BOTTOM;
  const max = niceCeil(Math.max(1, ...hd.buckets.map((b) => b.p99_ms)));
  const span = Math.max(1, view.until_ms - view.since_ms);
  // Each bucket at its middle.
  const x = (/** @type {number} */ start) => LEFT + ((start + view.bucket_ms / 2 - view.since_ms) / span) * w;
  const y = (/** @type {number} */ ms) => TOP + hgt - (ms / max) * hgt;
  /** @type {SVGElement[]} */
  const parts = [];
  for (const v of [0, max / 2, max]) {
    parts.push(svg('line', { x1: LEFT, x2: LEFT + w, y1: Math.round(y(v)) + 0.5, y2: Math.round(y(v)) + 0.5, class: 'grid' }));
    parts.push(svg('text', { x: LEFT - 6, y: y(v), class: 'axis', 'text-anchor': 'end', 'dominant-baseline': 'middle' }, fmtDuration(v)));
  }
  parts.push(svg('text', { x: LEFT, y: HEIGHT - 5, class: 'axis', 'text-anchor': 'start' }, `${Math.floor(span / 60_000)} min ago`));
  parts.push(svg('text', { x: LEFT + w, y: HEIGHT - 5, class: 'axis', 'text-anchor': 'end' }, 'now'));
  for (const p of SERIES) {
    const key = /** @type {'p50_ms' | 'p95_ms' | 'p99_ms'} */ (`${p}_ms`);
    const points = hd.buckets.map((b) => `${x(b.start_ms).toFixed(1)},${y(b[key]).toFixed(1)}`).join(' ');
    parts.push(svg('polyline', { points, class: `series ${p}`, 'data-p': p }));
    for (const b of hd.buckets) {
      parts.push(svg('circle', { cx: x(b.start_ms), cy: y(b[key]), r: 2.5, class: `series ${p}` },
        svg('title', {}, `${p} ${fmtDuration(b[key])} of ${b.count} attempts`)));
    }
  }
  chart.replaceChildren(...parts);
}

/** The durations panel of a queue's page: `update(view)` redraws it. */
export function durationsPanel() {
  const body = h('div', {});
  const note = h('p', { class: 'muted' });
  const el = h('section', { class: 'panel', 'data-chart': 'durations' },
    h('h2', {}, 'Attempt durations, last hour', h('span', { class: 'legend' },
      h('span', { class: 'key p50' }, 'p50'), h('span', { class: 'key p95' }, 'p95'),
      h('span', { class: 'key p99' }, 'p99'))),
    body, note);
  /** @type {{ chart: SVGSVGElement, hd: HandlerDurations }[]} */
  let charts = [];
  /** @type {DurationsView | null} */
  let last = null;
  const redraw = () => { if (last) for (const c of charts) draw(c.chart, c.hd, last); };
  window.addEventListener('resize', redraw);
  return {
    el,
    /** @param {DurationsView} view */
    update(view) {
      last = view;
      charts = view.handlers.map((hd) => ({
        hd,
        chart: /** @type {SVGSVGElement} */ (svg('svg', { class: 'durations', role: 'img', 'aria-label': `Attempt durations of ${hd.handler}` })),
      }));
      body.replaceChildren(...(charts.length
        ? charts.map(({ hd, chart }) => h('div', { class: 'handler-durations', 'data-handler': hd.handler, 'data-count': hd.count },
          h('h3', {}, h('a', { href: `#/handlers/${encodeURIComponent(hd.handler)}` }, hd.handler), ' ',
            h('span', { class: 'muted figures' },
              `${fmtCount(hd.count)} attempt${hd.count === 1 ? '' : 's'} · p50 ${fmtDuration(hd.p50_ms)} · p95 ${fmtDuration(hd.p95_ms)} · p99 ${fmtDuration(hd.p99_ms)} · max ${fmtDuration(hd.max_ms)}`)),
          h('div', { class: 'chart' }, chart)))
        : [h('p', { class: 'empty' }, 'No attempt of a job finished in the last hour (among the jobs the queue keeps).')]));
      redraw();
      note.textContent = `From the histories of ${fmtCount(view.jobs_read)} finished jobs the queue keeps (its retention decides how many).`
        + (view.truncated ? ' More finished in the hour than one read takes: the oldest are not counted.' : '')
        + (view.jobs_skipped ? ` ${fmtCount(view.jobs_skipped)} left out (a history too large to read, or a job gone as it was read).` : '');
    },
    destroy() { window.removeEventListener('resize', redraw); },
  };
}
