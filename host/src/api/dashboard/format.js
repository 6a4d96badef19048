// @ts-check
// Numbers, sizes, times and durations as the dashboard writes them.

import { serverNow } from './clock.js';

const numberFormat = new Intl.NumberFormat('en-US');

/** @param {number} n */
export const fmtCount = (n) => numberFormat.format(n);

const pad = (/** @type {number} */ n, width = 2) => String(n).padStart(width, '0');

/** Local date and time to the millisecond, or '—'. @param {number | null | undefined} ms */
export function fmtTime(ms) {
  if (ms === null || ms === undefined) return '—';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/** "250 ms", "1.5 s", "3 min 20 s", ..., or '—'. @param {number | null | undefined} ms */
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1).replace(/\.0+$/, '')} s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
  if (ms < 86_400_000) return `${Math.floor(ms / 3_600_000)} h ${Math.round((ms % 3_600_000) / 60_000)} min`;
  return `${(ms / 86_400_000).toFixed(1)} days`;
}

/** "3 s ago" / "in 2 min" / "now", against the server's clock. @param {number} ms */
export function fmtRelative(ms) {
  const delta = ms - serverNow();
  const rounded = (/** @type {number} */ d) => fmtDuration(d).replace(/\.\d+ s$/, ' s');
  if (Math.abs(delta) < 1000) return 'now';
  return delta < 0 ? `${rounded(-delta)} ago` : `in ${rounded(delta)}`;
}

/** "512 B", "1.5 KiB", ..., or '—'. @param {number | null | undefined} n */
export function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** An RFC 3339 time as the API gives it, easier to read: "2026-01-02 09:00:00 +09:00", and
 *  "2026-01-02 00:00:00 UTC" for UTC. @param {string} s */
export const fmtRfc3339 = (s) => s.replace('T', ' ').replace(/(\.\d+)?([+-]\d\d:\d\d|Z)$/,
  (_, /** @type {string | undefined} */ frac, /** @type {string} */ zone) =>
    `${frac ?? ''} ${zone === 'Z' || zone === '+00:00' ? 'UTC' : zone}`);
