// @ts-check
// Building the page. Data is never written as HTML: every string from the server goes in as
// a text node or through textContent.

import { fmtRelative, fmtTime } from './format.js';

/** @typedef {import('./api.js').JobState} JobState */

/** An attribute's value; an `on<event>` attribute's is a listener.
 *  @typedef {string | number | boolean | null | undefined | ((event: Event) => unknown)} AttrValue */
/** A child of an element: a node, or text; null, undefined and false stand for none.
 *  @typedef {Node | string | number | null | undefined | false} Leaf */
/** What `h` and `append` take as children: leaves, or lists of leaves and lists of them.
 *  @typedef {Leaf | Array<Leaf | Leaf[]>} Child */

/**
 * The page's element matching `selector`, which index.html always holds, checked to be a `kind`.
 * @template {Element} T
 * @param {string} selector
 * @param {{ new (): T, prototype: T }} kind
 * @returns {T}
 */
export function $(selector, kind) {
  const el = document.querySelector(selector);
  if (!(el instanceof kind)) throw new Error(`the page has no ${kind.name} ${selector}`);
  return el;
}

/** A URL path segment or query value, for the hash links. */
export const enc = encodeURIComponent;

/**
 * Builds an element: attributes (`class`, `data-*`, `on<event>` functions, others as given)
 * and children (nodes, or strings as text; null and false are skipped).
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, AttrValue>} [attrs]
 * @param {...Child} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'class') {
      el.className = String(value);
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

/**
 * Appends `children` (as `h` takes them) to `el`.
 * @template {Element} E
 * @param {E} el
 * @param {Child[]} children
 * @returns {E}
 */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** "3 s ago" / "in 2 min", against the server's clock, kept current by each poll
 *  (updateRelativeTimes); the exact time goes in a title.
 *  @param {number | null | undefined} ms */
export function timeCell(ms, cls = 'nowrap') {
  if (ms === null || ms === undefined) return h('td', { class: `${cls} muted` }, '—');
  return h('td', { class: cls, title: fmtTime(ms), 'data-ms': ms }, fmtRelative(ms));
}

export function updateRelativeTimes() {
  for (const cell of document.querySelectorAll('td[data-ms]')) {
    if (cell instanceof HTMLElement) cell.textContent = fmtRelative(Number(cell.dataset.ms));
  }
}

/** Time of day to the millisecond (the date in a title): attempts of one job side by side.
 *  @param {number | null | undefined} ms */
export function clockCell(ms) {
  if (ms === null || ms === undefined) return h('td', { class: 'nowrap muted' }, '—');
  return h('td', { class: 'nowrap', title: fmtTime(ms) }, fmtTime(ms).slice(11));
}

/** @param {string} text @param {string} cls */
export function badge(text, cls) {
  return h('span', { class: `badge ${cls}` }, text);
}

/** @param {JobState} state */
export const stateBadge = (state) => badge(state, `state-${state}`);

/** @param {string} outcome `ok`, `fail`, or another failure class */
export function outcomeBadge(outcome) {
  const cls = outcome === 'ok' ? 'outcome-ok' : outcome === 'fail' ? 'outcome-fail' : 'outcome-failure';
  return badge(outcome, cls);
}

/** A view's heading, and what stands beside it. @param {string} text @param {...Child} extra */
export function title(text, ...extra) {
  return h('div', { class: 'title' }, h('h1', {}, text), ...extra);
}

/** The path to a view: links (or the last step as text), separated by slashes.
 *  @param {...(Node | string)} links */
export function crumbs(...links) {
  return h('div', { class: 'crumbs' }, links.flatMap((l, i) => (i ? [' / ', l] : [l])));
}
