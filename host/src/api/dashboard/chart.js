// @ts-check
// The throughput chart: a canvas of completed and failed jobs per second over the last
// minute, and the panel around it.

import { h } from './dom.js';
import { fmtCount } from './format.js';
import { CHART_SECONDS, series } from './throughput.js';

/** @typedef {import('./throughput.js').Series} Series */

/** The axis' top: 5, or the next of 1, 2, 2.5, 5 times a power of ten. @param {number} v */
function niceCeil(v) {
  if (v <= 5) return 5;
  const exp = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * exp >= v) return m * exp;
  return 10 * exp;
}

/** @param {HTMLCanvasElement} canvas @param {Series} data */
function drawChart(canvas, data) {
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
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
  const x = (/** @type {number} */ i) => left + (n <= 1 ? 0 : (i / (n - 1)) * w);
  const y = (/** @type {number} */ v) => top + hgt - (v / max) * hgt;

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

  /** @param {number[]} values @param {string} stroke @param {string | null} fill */
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

/**
 * A throughput panel: rate now, legend, canvas. `update(queues, note)` redraws it from the
 * queues' trackers (throughput.js), with `note` under it when given.
 * @param {string} title
 */
export function throughputPanel(title) {
  const rate = h('div', { class: 'rate' }, '—');
  const note = h('p', { class: 'muted' });
  note.hidden = true;
  const canvas = h('canvas', { 'aria-label': 'Jobs completed per second, last minute', role: 'img' });
  const panel = h('section', { class: 'panel', 'data-chart': 'throughput' },
    h('h2', {}, title, h('span', { class: 'legend' },
      h('span', { class: 'key completed' }, 'completed/s'),
      h('span', { class: 'key failed' }, 'failed/s (retried or dead)'))),
    rate, h('div', { class: 'chart' }, canvas), note);
  /** @type {Series | null} */
  let last = null;
  const redraw = () => { if (last) drawChart(canvas, last); };
  window.addEventListener('resize', redraw);
  return {
    el: panel,
    /** @param {string[]} queues @param {string | null} message */
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
