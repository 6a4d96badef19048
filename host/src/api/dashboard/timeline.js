// @ts-check
// A job's run timeline (GET /api/queues/{q}/jobs/{id}/timeline) as an SVG chart: three lanes
// on one time axis from its enqueue, waits and durable sleeps ("queue"), attempts with their
// outbound HTTP requests and SQL statements as thinner bars inside them ("run"), step saves
// ("steps"); and the same story as an ordered list under it, with each span's duration. Drawn here: no chart library, SVG built through the DOM (the page's policy allows
// no inline style, so every look is an attribute or a class of app.css).

import { h } from './dom.js';
import { fmtDuration } from './format.js';

/** @typedef {import('./api.js').Segment} Segment */
/** @typedef {import('./api.js').TimelineView} TimelineView */

const SVG = 'http://www.w3.org/2000/svg';
const LANES = /** @type {const} */ (['queue', 'run', 'steps']);
const LANE_HEIGHT = 30;
const LEFT = 56;
const RIGHT = 12;
const TOP = 8;
const AXIS = 22;
/** Narrowest drawn span: a 2 ms attempt beside an hour's wait stays visible. */
const MIN_WIDTH = 4;

/**
 * An SVG element with attributes.
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

/** The lane a segment is drawn in: a call in its attempt's. @param {Segment} s */
const laneOf = (s) => (s.kind === 'attempt' || s.kind === 'call' ? 'run' : s.kind === 'step' ? 'steps' : 'queue');

/** Narrowest drawn call: many short calls side by side stay apart. */
const MIN_CALL_WIDTH = 2;

/**
 * Whether a call failed: an HTTP status of 400 or more, or no response (`denied`, `timeout`,
 * `error`); a SQL statement's `error`.
 * @param {Segment} s
 */
function callFailed(s) {
  const status = Number(s.outcome);
  return Number.isInteger(status) ? status >= 400 : s.outcome !== 'ok';
}

/** The class that colours an attempt by its outcome. @param {string | null} outcome */
function attemptClass(outcome) {
  if (outcome === 'ok') return 'ok';
  if (outcome === 'running') return 'running';
  if (outcome === 'suspended') return 'suspended';
  return 'failed';
}

/** One line of the list under the chart. @param {Segment} s @param {number} origin */
function describe(s, origin) {
  const at = `+${fmtDuration(s.start_ms - origin)}`;
  const span = fmtDuration(s.end_ms - s.start_ms);
  const open = s.open ? ' so far' : '';
  switch (s.kind) {
    case 'enqueued': return [at, 'enqueued'];
    case 'wait': {
      const why = { queued: 'waited to start', retry: 'waited to retry (backoff, then the queue)',
        after_sleep: 'waited for a host after the sleep', replayed: 'dead, then replayed; waited' }[s.reason ?? ''] ?? 'waited';
      return [at, `${why} ${span}${open}${s.due_ms !== null ? ` (due +${fmtDuration(s.due_ms - origin)})` : ''}`];
    }
    case 'attempt': {
      const dropped = s.calls_dropped ? ` (${s.calls_dropped} more calls, not recorded)` : '';
      return [at, `attempt ${s.attempt} ${s.outcome} ${span}${open}${s.host ? ` on ${s.host}` : ''}${dropped}`];
    }
    case 'call': return [at, `${s.name} → ${s.outcome} ${span} (attempt ${s.attempt})`];
    case 'sleep': return [at, `slept ${span} (${s.name})`];
    case 'step': return [at, `step ${s.name} saved (attempt ${s.attempt})`];
    case 'finished': return [at, s.outcome ?? 'finished'];
    default: return [at, s.kind];
  }
}

/** @param {SVGSVGElement} chart @param {TimelineView} view */
function draw(chart, view) {
  const width = Math.max(320, chart.clientWidth || chart.parentElement?.clientWidth || 900);
  const height = TOP + LANES.length * LANE_HEIGHT + AXIS;
  chart.setAttribute('viewBox', `0 0 ${width} ${height}`);
  chart.setAttribute('height', String(height));
  const origin = view.segments.length ? view.segments[0].start_ms : view.now_ms;
  const end = Math.max(origin + 1, ...view.segments.map((s) => s.end_ms));
  const w = width - LEFT - RIGHT;
  const x = (/** @type {number} */ ms) => LEFT + ((ms - origin) / (end - origin)) * w;
  /** @type {SVGElement[]} */
  const parts = [];
  LANES.forEach((lane, i) => {
    const y = TOP + i * LANE_HEIGHT;
    parts.push(svg('text', { x: LEFT - 8, y: y + LANE_HEIGHT / 2, class: 'lane-label', 'text-anchor': 'end', 'dominant-baseline': 'middle' }, lane));
    parts.push(svg('line', { x1: LEFT, x2: LEFT + w, y1: y + LANE_HEIGHT - 0.5, y2: y + LANE_HEIGHT - 0.5, class: 'lane-rule' }));
  });
  const axisY = TOP + LANES.length * LANE_HEIGHT;
  parts.push(svg('text', { x: LEFT, y: axisY + 15, class: 'axis', 'text-anchor': 'start' }, '+0'));
  parts.push(svg('text', { x: LEFT + w, y: axisY + 15, class: 'axis', 'text-anchor': 'end' }, `+${fmtDuration(end - origin)}`));
  for (const s of view.segments) {
    const lane = LANES.indexOf(laneOf(s));
    const y = TOP + lane * LANE_HEIGHT;
    const title = svg('title', {}, describe(s, origin).join(' '));
    /** @type {Record<string, string | number>} */
    const data = { 'data-kind': s.kind, 'data-start-ms': s.start_ms, 'data-duration-ms': s.end_ms - s.start_ms };
    if (s.attempt !== null) data['data-attempt'] = s.attempt;
    if (s.outcome !== null) data['data-outcome'] = s.outcome;
    if (s.kind === 'enqueued' || s.kind === 'finished') {
      const cx = x(s.start_ms);
      parts.push(svg('g', { ...data, class: `mark ${s.kind} ${s.outcome ?? ''}` },
        svg('line', { x1: cx, x2: cx, y1: TOP, y2: axisY }), title));
    } else if (s.kind === 'step') {
      const cx = x(s.start_ms);
      parts.push(svg('g', { ...data, class: 'seg step' },
        svg('path', { d: `M${cx} ${y + 6} l6 9 l-6 9 l-6 -9 z` }), title));
    } else if (s.kind === 'call') {
      // A thinner bar over its attempt's: teal for HTTP, amber for SQL, outlined red when it
      // failed.
      const x0 = x(s.start_ms);
      const width = Math.max(MIN_CALL_WIDTH, x(s.end_ms) - x0);
      data['data-call-kind'] = s.call_kind ?? '';
      data['data-name'] = s.name ?? '';
      const cls = `seg call ${s.call_kind === 'http' ? 'http' : 'sql'}${callFailed(s) ? ' call-failed' : ''}`;
      parts.push(svg('g', { ...data, class: cls },
        svg('rect', { x: x0, y: y + 10, width, height: LANE_HEIGHT - 20, rx: 1 }), title));
    } else {
      const x0 = x(s.start_ms);
      const width = Math.max(MIN_WIDTH, x(s.end_ms) - x0);
      const cls = s.kind === 'attempt' ? `attempt ${attemptClass(s.outcome)}` : s.kind;
      parts.push(svg('g', { ...data, class: `seg ${cls}${s.open ? ' open' : ''}` },
        svg('rect', { x: x0, y: y + 5, width, height: LANE_HEIGHT - 10, rx: 2 }), title));
    }
  }
  chart.replaceChildren(...parts);
}

/** The timeline panel of a job's page: `update(view)` redraws it. */
export function timelinePanel() {
  const chart = /** @type {SVGSVGElement} */ (svg('svg', { class: 'timeline', role: 'img', 'aria-label': "The job's run timeline" }));
  const list = h('ol', { class: 'timeline-list' });
  const note = h('p', { class: 'muted' });
  const el = h('section', { class: 'panel', 'data-chart': 'timeline' },
    h('h2', {}, 'Timeline', h('span', { class: 'legend' },
      h('span', { class: 'key waiting' }, 'waiting'), h('span', { class: 'key sleeping' }, 'sleeping'),
      h('span', { class: 'key completed' }, 'attempt ok'), h('span', { class: 'key failed' }, 'attempt failed'),
      h('span', { class: 'key running' }, 'running'), h('span', { class: 'key http' }, 'HTTP request'),
      h('span', { class: 'key sql' }, 'SQL statement'), h('span', { class: 'key step' }, 'step saved'))),
    h('div', { class: 'chart' }, chart), list, note);
  /** @type {TimelineView | null} */
  let last = null;
  const redraw = () => { if (last) draw(chart, last); };
  window.addEventListener('resize', redraw);
  return {
    el,
    /** @param {TimelineView} view */
    update(view) {
      last = view;
      redraw();
      const origin = view.segments.length ? view.segments[0].start_ms : view.now_ms;
      list.replaceChildren(...view.segments.map((s) => {
        const [at, what] = describe(s, origin);
        /** @type {Record<string, string | number>} */
        const data = { 'data-kind': s.kind };
        if (s.attempt !== null) data['data-attempt'] = s.attempt;
        return h('li', data, h('span', { class: 'at' }, at), ' ', what);
      }));
      const notes = ['A step shows when its result was saved; when it began is not recorded.'];
      if (!view.calls_recorded) {
        notes.unshift(view.state === 'active'
          ? 'The running attempt\'s outbound requests and SQL statements show once it ends.'
          : 'An attempt whose lease expired has no recorded calls: its host was lost.');
      }
      if (!view.steps_complete) {
        notes.unshift(view.steps_since_ms !== null
          ? `The events stream has trimmed its entries up to +${fmtDuration(view.steps_since_ms - origin)}: step saves before then may be missing.`
          : 'The events stream held more entries than one read takes: some step saves may be missing.');
      }
      note.textContent = notes.join(' ');
    },
    destroy() { window.removeEventListener('resize', redraw); },
  };
}
