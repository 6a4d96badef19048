// @ts-check
// Any other route.

import { h, title } from '../dom.js';

/** @typedef {import('../poll.js').View} View */

/** @param {string} what @returns {View} */
export function notFoundView(what) {
  return {
    root: h('div', {}, title('Not found'), h('p', {}, `Nothing here: ${what}. `, h('a', { href: '#/' }, 'Back to the queues'))),
    tick: async () => {},
    destroy() {},
    nav: null,
  };
}
